//! json-bench: serde_json ns/op for the two operations of bench/json:
//! encode the contract's user object, decode a POST /users body.
//! Output: one JSON object per line, {"lang":"rust","op":..,"ns_per_op":..}
//! (median of RUNS runs of ITERS iterations each).
//!   json-bench [ITERS [RUNS [encode|decode|both]]]
//! (one operation alone is for instruction counts under callgrind.)

use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Serialize)]
struct User<'a> {
    id: i64,
    name: &'a str,
    email: &'a str,
    created_at: &'a str,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct CreateUser<'a> {
    #[serde(borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    email: Option<std::borrow::Cow<'a, str>>,
}

/// std::hint::black_box (stable only since Rust 1.66; Debian 12 ships 1.63):
/// an empty asm block that takes the value's address, which the optimizer must
/// assume reads and writes it, as std's own implementation does.
#[inline(always)]
fn black_box<T>(x: T) -> T {
    unsafe { std::arch::asm!("/* {0} */", in(reg) &x as *const T, options(nostack, preserves_flags)) };
    x
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2_000_000);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(7);
    let op = args.get(3).map(String::as_str).unwrap_or("both");
    let (do_enc, do_dec) = (op != "decode", op != "encode");

    let user = User {
        id: 42,
        name: "Ada Lovelace",
        email: "ada@example.com",
        created_at: "2026-11-27T06:05:53Z",
    };
    let body = br#"{"name":"Ada Lovelace","email":"ada@example.com"}"#;

    // encode into a reused buffer, as a handler writing a response would
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut enc = Vec::new();
    for _ in 0..if do_enc { runs } else { 0 } {
        let t = Instant::now();
        for _ in 0..iters {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&user)).unwrap();
            black_box(&buf);
        }
        enc.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    let mut dec = Vec::new();
    for _ in 0..if do_dec { runs } else { 0 } {
        let t = Instant::now();
        for _ in 0..iters {
            let v: CreateUser = serde_json::from_slice(black_box(body)).unwrap();
            black_box(&v);
        }
        dec.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    if iters == 0 || !(do_enc && do_dec) {
        return;
    }
    println!("{}", String::from_utf8(buf).unwrap());
    println!(
        "{{\"lang\":\"rust\",\"lib\":\"serde_json\",\"op\":\"encode_user\",\"ns_per_op\":{:.1}}}",
        median(enc)
    );
    println!(
        "{{\"lang\":\"rust\",\"lib\":\"serde_json\",\"op\":\"decode_create_user\",\"ns_per_op\":{:.1}}}",
        median(dec)
    );
}
