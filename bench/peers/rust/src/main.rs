//! peer-rust: the benchmark subset of brisk's contract (GET /health, POST /users,
//! GET /users/{id}, POST /orders/process) in Rust, as a Rust team would write it
//! with the crates Debian 12 packages: tokio (multi-threaded runtime, one worker
//! per core), hyper 0.14, tokio-postgres (a small pool of pipelining clients with
//! prepared statements), serde_json, hmac + sha2, rayon for the CPU-bound batch.
//!
//! Configuration: BRISK_ADDR (default 127.0.0.1:8084), BRISK_DATABASE_URL
//! (postgres://...), BRISK_RECEIPT_KEY (default dev-receipt-key).
//!
//! For the TLS and HTTP/2 rows of the benchmark: BRISK_TLS_ADDR with BRISK_TLS_CERT
//! and BRISK_TLS_KEY (PEM) adds a TLS listener (tokio-rustls with rustls' safe
//! defaults, ALPN h2 and http/1.1, hyper's h2 for h2); BRISK_H2C_ADDR adds a cleartext
//! listener speaking HTTP/2 with prior knowledge. BRISK_ADDR stays HTTP/1.1 only.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, SERVER};
use hyper::service::{make_service_fn, service_fn};
use hyper::{Body, Method, Request, Response, Server, StatusCode};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio_postgres::{error::SqlState, Client, NoTls, Row, Statement};
use tokio_rustls::rustls;

type HmacSha256 = Hmac<Sha256>;

const MAX_BODY: u64 = 8 << 20;

struct PgConn {
    client: Client,
    insert_user: Statement,
    get_user: Statement,
}

/// Connections used round-robin. A tokio-postgres client pipelines concurrent
/// queries, so a few connections per core keep PostgreSQL busy without a
/// checkout/return protocol. Like pgxpool, one connection is made at start-up
/// (a wrong URL fails at once) and the others are added in the background.
struct Pool {
    conns: RwLock<Vec<Arc<PgConn>>>,
    next: AtomicUsize,
}

impl Pool {
    async fn connect(url: &str, n: usize) -> Result<Arc<Pool>, tokio_postgres::Error> {
        let first = Arc::new(Self::connect_one(url).await?);
        let pool = Arc::new(Pool { conns: RwLock::new(vec![first]), next: AtomicUsize::new(0) });
        let (bg, url) = (Arc::clone(&pool), url.to_owned());
        tokio::spawn(async move {
            for _ in 1..n {
                match Self::connect_one(&url).await {
                    Ok(c) => bg.conns.write().unwrap().push(Arc::new(c)),
                    Err(e) => eprintln!("postgres connect: {e}"),
                }
            }
        });
        Ok(pool)
    }

    async fn connect_one(url: &str) -> Result<PgConn, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres connection: {e}");
            }
        });
        let (insert_user, get_user) = futures::future::try_join(
            client.prepare(
                "INSERT INTO users (name, email) VALUES ($1, $2) \
                 RETURNING id, name, email, created_at",
            ),
            client.prepare("SELECT id, name, email, created_at FROM users WHERE id = $1"),
        )
        .await?;
        Ok(PgConn { client, insert_user, get_user })
    }

    fn get(&self) -> Arc<PgConn> {
        let conns = self.conns.read().unwrap();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
        Arc::clone(&conns[i])
    }
}

struct State {
    pool: Arc<Pool>,
    mac: HmacSha256, // keyed once; cloned per order
}

// ---------- responses ----------

fn with_headers(mut r: Response<Body>, ctype: &'static str, len: usize) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(SERVER, HeaderValue::from_static("peer-rust"));
    r
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    with_headers(r, "application/json", len)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: u16, msg: &str) -> Response<Body> {
    json(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        serde_json::to_vec(&ErrorBody { error: msg }).unwrap(),
    )
}

type ApiResult = Result<Response<Body>, Response<Body>>;

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Body>) -> Result<T, Response<Body>> {
    let ct = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(error(415, "content-type must be application/json"));
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.map_or(false, |n| n > MAX_BODY) {
        return Err(error(413, "request body too large"));
    }
    let body = hyper::body::to_bytes(req.into_body())
        .await
        .map_err(|_| error(400, "could not read body"))?;
    if body.len() as u64 > MAX_BODY {
        return Err(error(413, "request body too large"));
    }
    serde_json::from_slice(&body).map_err(|e| error(400, &format!("invalid json: {e}")))
}

// ---------- users ----------

#[derive(Deserialize)]
struct CreateUser {
    name: Option<String>,
    email: Option<String>,
}

#[derive(Serialize)]
struct User {
    id: i64,
    name: String,
    email: String,
    created_at: String,
}

/// RFC 3339 UTC, second precision (days-to-civil after Howard Hinnant).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn user_from_row(row: &Row) -> User {
    User {
        id: row.get(0),
        name: row.get(1),
        email: row.get(2),
        created_at: rfc3339(row.get::<_, SystemTime>(3)),
    }
}

fn validate_name(n: &str) -> Result<(), &'static str> {
    let mut count = 0;
    for c in n.chars() {
        if c < '\u{20}' || ('\u{7f}'..='\u{9f}').contains(&c) {
            return Err("name must not contain control characters");
        }
        count += 1;
    }
    if !(1..=200).contains(&count) {
        return Err("name must be 1 to 200 characters");
    }
    Ok(())
}

fn validate_email(e: &str) -> Result<(), &'static str> {
    if e.len() < 3 || e.len() > 254 {
        return Err("email must be 3 to 254 bytes");
    }
    if e.bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return Err("email must not contain spaces or control characters");
    }
    match (e.find('@'), e.matches('@').count()) {
        (Some(at), 1) if at > 0 && at < e.len() - 1 => Ok(()),
        _ => Err("email must contain one @ with text on both sides"),
    }
}

async fn create_user(req: Request<Body>, st: &State) -> ApiResult {
    let body: CreateUser = read_json(req).await?;
    let name = body.name.ok_or_else(|| error(400, "name is required"))?;
    let email = body.email.ok_or_else(|| error(400, "email is required"))?;
    validate_name(&name).map_err(|m| error(400, m))?;
    validate_email(&email).map_err(|m| error(400, m))?;
    let c = st.pool.get();
    let row = c.client.query_one(&c.insert_user, &[&name, &email]).await.map_err(|e| {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            error(409, "email already exists")
        } else {
            eprintln!("insert user: {e}");
            error(503, "database unavailable")
        }
    })?;
    let user = user_from_row(&row);
    let mut r = json(StatusCode::CREATED, serde_json::to_vec(&user).unwrap());
    r.headers_mut()
        .insert(LOCATION, HeaderValue::try_from(format!("/users/{}", user.id)).unwrap());
    Ok(r)
}

fn parse_id(s: &str) -> Option<i64> {
    if !s.bytes().next().map_or(false, |b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok().filter(|&id| id > 0)
}

async fn get_user(id: &str, st: &State) -> ApiResult {
    let id = parse_id(id).ok_or_else(|| error(400, "invalid id"))?;
    let c = st.pool.get();
    let row = c.client.query_opt(&c.get_user, &[&id]).await.map_err(|e| {
        eprintln!("get user: {e}");
        error(503, "database unavailable")
    })?;
    let row = row.ok_or_else(|| error(404, "user not found"))?;
    Ok(json(StatusCode::OK, serde_json::to_vec(&user_from_row(&row)).unwrap()))
}

// ---------- orders ----------

#[derive(Deserialize)]
struct Line {
    sku: Option<String>,
    quantity: Option<i64>,
    unit_price_cents: Option<i64>,
}

#[derive(Deserialize)]
struct BatchOrder {
    id: Option<String>,
    user_id: Option<i64>,
    items: Option<Vec<Line>>,
}

#[derive(Deserialize)]
struct ProcessRequest {
    orders: Option<Vec<BatchOrder>>,
}

#[derive(Serialize)]
struct OrderResult<'a> {
    id: &'a str,
    subtotal_cents: i64,
    discount_cents: i64,
    tax_cents: i64,
    total_cents: i64,
    receipt: String,
}

#[derive(Serialize)]
struct ProcessResponse<'a> {
    results: Vec<OrderResult<'a>>,
}

fn visible_ascii(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn validate_orders(orders: &[BatchOrder]) -> Result<(), String> {
    if orders.is_empty() || orders.len() > 100_000 {
        return Err("orders must have 1 to 100000 entries".into());
    }
    for (i, o) in orders.iter().enumerate() {
        if !o.id.as_deref().map_or(false, |id| visible_ascii(id, 64)) {
            return Err(format!("orders[{i}].id must be 1 to 64 printable ascii characters"));
        }
        if !o.user_id.map_or(false, |u| u > 0) {
            return Err(format!("orders[{i}].user_id must be a positive integer"));
        }
        let items = o.items.as_deref().unwrap_or(&[]);
        if items.is_empty() || items.len() > 100 {
            return Err(format!("orders[{i}].items must have 1 to 100 lines"));
        }
        for (j, l) in items.iter().enumerate() {
            if !l.sku.as_deref().map_or(false, |s| visible_ascii(s, 64)) {
                return Err(format!(
                    "orders[{i}].items[{j}].sku must be 1 to 64 printable ascii characters (no spaces)"
                ));
            }
            if !l.quantity.map_or(false, |q| (1..=10_000).contains(&q)) {
                return Err(format!(
                    "orders[{i}].items[{j}].quantity must be an integer from 1 to 10000"
                ));
            }
            if !l.unit_price_cents.map_or(false, |p| (0..=100_000_000).contains(&p)) {
                return Err(format!(
                    "orders[{i}].items[{j}].unit_price_cents must be an integer from 0 to 100000000"
                ));
            }
        }
    }
    Ok(())
}

/// Totals and receipt of one validated order.
fn price<'a>(o: &'a BatchOrder, key: &HmacSha256) -> OrderResult<'a> {
    let id = o.id.as_deref().unwrap();
    let user_id = o.user_id.unwrap();
    let items = o.items.as_deref().unwrap();
    let subtotal: i64 = items.iter().map(|l| l.quantity.unwrap() * l.unit_price_cents.unwrap()).sum();
    let discount = if subtotal >= 10_000 { subtotal * 5 / 100 } else { 0 };
    let tax = ((subtotal - discount) * 21 + 50) / 100;
    let total = subtotal - discount + tax;

    let mut msg = String::with_capacity(64 + items.len() * 32);
    let _ = write!(msg, "{id}|{user_id}|");
    for (i, l) in items.iter().enumerate() {
        if i > 0 {
            msg.push(',');
        }
        let _ = write!(
            msg,
            "{}:{}:{}",
            l.sku.as_deref().unwrap(),
            l.quantity.unwrap(),
            l.unit_price_cents.unwrap()
        );
    }
    let _ = write!(msg, "|{total}");
    let mut mac = key.clone();
    mac.update(msg.as_bytes());
    OrderResult {
        id,
        subtotal_cents: subtotal,
        discount_cents: discount,
        tax_cents: tax,
        total_cents: total,
        receipt: hex::encode(mac.finalize().into_bytes()),
    }
}

async fn process_orders(req: Request<Body>, st: &Arc<State>) -> ApiResult {
    let body: ProcessRequest = read_json(req).await?;
    let orders = body.orders.ok_or_else(|| error(400, "orders is required"))?;
    validate_orders(&orders).map_err(|m| error(400, &m))?;
    // CPU-bound: price and sign on rayon's pool (one thread per core), keep
    // the async workers free, and serialize there too.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let st = Arc::clone(st);
    rayon::spawn(move || {
        let results: Vec<OrderResult> = orders.par_iter().map(|o| price(o, &st.mac)).collect();
        let _ = tx.send(serde_json::to_vec(&ProcessResponse { results }).unwrap());
    });
    let body = rx.await.map_err(|_| error(500, "internal error"))?;
    Ok(json(StatusCode::OK, body))
}

// ---------- routing ----------

async fn route(req: Request<Body>, st: Arc<State>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let r = match (method, path.as_str()) {
        (Method::GET | Method::HEAD, "/health") => {
            let r = Response::new(Body::from("ok"));
            Ok(with_headers(r, "text/plain", 2))
        }
        (Method::POST, "/users") => create_user(req, &st).await,
        (Method::GET, p) if p.starts_with("/users/") => get_user(&p[7..], &st).await,
        (Method::POST, "/orders/process") => process_orders(req, &st).await,
        (_, "/health") => Err(not_allowed("GET, HEAD")),
        (_, "/users" | "/orders/process") => Err(not_allowed("POST")),
        (_, p) if p.starts_with("/users/") => Err(not_allowed("GET")),
        _ => Err(error(404, "not found")),
    };
    Ok(r.unwrap_or_else(|e| e))
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = error(405, "method not allowed");
    r.headers_mut().insert("allow", HeaderValue::from_static(allow));
    r
}

#[tokio::main]
async fn main() {
    let addr: SocketAddr = std::env::var("BRISK_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8084".into())
        .parse()
        .unwrap_or_else(|_| {
            eprintln!("BRISK_ADDR must be host:port");
            std::process::exit(2)
        });
    let url = std::env::var("BRISK_DATABASE_URL").unwrap_or_default();
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        eprintln!("BRISK_DATABASE_URL must be a postgres:// URL");
        std::process::exit(2);
    }
    let key = std::env::var("BRISK_RECEIPT_KEY").unwrap_or_else(|_| "dev-receipt-key".into());
    let conns = (4 * num_cpus::get()).max(8);
    let pool = Pool::connect(&url, conns).await.unwrap_or_else(|e| {
        eprintln!("database: {e}");
        std::process::exit(1)
    });
    let mac = HmacSha256::new_from_slice(key.as_bytes()).expect("hmac accepts any key length");
    let st = Arc::new(State { pool, mac });

    let tls_addr = std::env::var("BRISK_TLS_ADDR").ok().filter(|a| !a.is_empty());
    if let Some(a) = tls_addr {
        let acceptor = tls_acceptor().unwrap_or_else(|e| {
            eprintln!("tls: {e}");
            std::process::exit(2)
        });
        let listener = tokio::net::TcpListener::bind(parse_addr(&a, "BRISK_TLS_ADDR")).await.unwrap_or_else(|e| {
            eprintln!("tls listen: {e}");
            std::process::exit(1)
        });
        tokio::spawn(serve_tls(listener, acceptor, Arc::clone(&st)));
    }
    if let Some(a) = std::env::var("BRISK_H2C_ADDR").ok().filter(|a| !a.is_empty()) {
        let st2 = Arc::clone(&st);
        let make_svc = make_service_fn(move |_conn| {
            let st = Arc::clone(&st2);
            async move { Ok::<_, Infallible>(service_fn(move |req| route(req, Arc::clone(&st)))) }
        });
        let h2c = Server::bind(&parse_addr(&a, "BRISK_H2C_ADDR")).http2_only(true).tcp_nodelay(true).serve(make_svc);
        tokio::spawn(async move {
            if let Err(e) = h2c.await {
                eprintln!("h2c server: {e}");
            }
        });
    }

    let make_svc = make_service_fn(move |_conn| {
        let st = Arc::clone(&st);
        async move { Ok::<_, Infallible>(service_fn(move |req| route(req, Arc::clone(&st)))) }
    });
    let server = Server::bind(&addr).http1_only(true).tcp_nodelay(true).serve(make_svc);
    if let Err(e) = server.await {
        eprintln!("server: {e}");
        std::process::exit(1);
    }
}

fn parse_addr(a: &str, name: &str) -> SocketAddr {
    a.parse().unwrap_or_else(|_| {
        eprintln!("{name} must be host:port");
        std::process::exit(2)
    })
}

// ---------- TLS ----------

/// rustls with its safe defaults (TLS 1.2 and 1.3, its cipher suites), the
/// certificate chain and key from BRISK_TLS_CERT / BRISK_TLS_KEY, ALPN h2 first.
fn tls_acceptor() -> Result<tokio_rustls::TlsAcceptor, String> {
    let cert_path = std::env::var("BRISK_TLS_CERT").map_err(|_| "BRISK_TLS_CERT is not set")?;
    let key_path = std::env::var("BRISK_TLS_KEY").map_err(|_| "BRISK_TLS_KEY is not set")?;
    let open = |p: &str| {
        std::fs::File::open(p).map(std::io::BufReader::new).map_err(|e| format!("{p}: {e}"))
    };
    let certs = rustls_pemfile::certs(&mut open(&cert_path)?)
        .map_err(|e| format!("{cert_path}: {e}"))?
        .into_iter()
        .map(rustls::Certificate)
        .collect::<Vec<_>>();
    let key = rustls_pemfile::read_all(&mut open(&key_path)?)
        .map_err(|e| format!("{key_path}: {e}"))?
        .into_iter()
        .find_map(|item| match item {
            rustls_pemfile::Item::PKCS8Key(k)
            | rustls_pemfile::Item::ECKey(k)
            | rustls_pemfile::Item::RSAKey(k) => Some(rustls::PrivateKey(k)),
            _ => None,
        })
        .ok_or_else(|| format!("{key_path}: no private key"))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_safe_defaults()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Accept loop of the TLS listener: one task per connection (handshake, then
/// hyper's HTTP/1.1 or HTTP/2 by the protocol ALPN chose).
async fn serve_tls(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, st: Arc<State>) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("tls accept: {e}");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, st) = (acceptor.clone(), Arc::clone(&st));
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(_) => return, // a failed handshake: the client's problem
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let svc = service_fn(move |req| route(req, Arc::clone(&st)));
            let mut http = hyper::server::conn::Http::new();
            if h2 {
                http.http2_only(true);
            } else {
                http.http1_only(true);
            }
            let _ = http.serve_connection(tls, svc).await;
        });
    }
}
