/*
 * json_bench.c - brisk's JSON codec, ns/op, for the comparison with Go's
 * encoding/json (bench/json/go) and serde_json (bench/peers/rust json-bench).
 *
 *   encode_user         the contract's user object written into a reused
 *                       response buffer exactly as src/app/users.c:write_user
 *                       does (buf_append_*, json_write_str, fmt_rfc3339 from
 *                       the unix time the database returns)
 *   decode_create_user  a POST /users body parsed by json_parse into the
 *                       request arena, then name and email looked up with
 *                       json_get (as read_user_fields does, before validation);
 *                       the arena is reset per request, as the server does
 *
 * Linked against brisk's own objects (src/json/json.c and src/base/).
 * Output: one JSON object per line; median of RUNS runs of ITERS iterations.
 *   json_bench [ITERS [RUNS [encode|decode|both]]]
 * (one operation alone is for instruction counts under callgrind: run it with
 * two ITERS values and divide the difference.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/timefmt.h"
#include "json/json.h"

struct user {
    int64_t id;
    const char *name, *email;
    size_t name_len, email_len;
    int64_t created_at;
};

/* Mirror of src/app/users.c:write_user (static there). */
static void write_user(struct buf *b, const struct user *u)
{
    char ts[RFC3339_LEN];
    buf_append_cstr(b, "{\"id\":");
    buf_append_i64(b, u->id);
    buf_append_cstr(b, ",\"name\":");
    json_write_str(b, u->name, u->name_len);
    buf_append_cstr(b, ",\"email\":");
    json_write_str(b, u->email, u->email_len);
    buf_append_cstr(b, ",\"created_at\":\"");
    fmt_rfc3339(ts, u->created_at);
    buf_append(b, ts, sizeof ts);
    buf_append_cstr(b, "\"}");
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Keep the compiler from dropping work whose result is unused. */
#define SINK(p) __asm__ volatile("" : : "g"(p) : "memory")

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    int runs = argc > 2 ? atoi(argv[2]) : 7;
    const char *op = argc > 3 ? argv[3] : "both";
    int do_enc = strcmp(op, "decode") != 0, do_dec = strcmp(op, "encode") != 0;
    if (iters < 0 || runs <= 0 || runs > 99)
        return 2;
    double enc[99], dec[99];

    struct user u = {42, "Ada Lovelace", "ada@example.com", 12, 15, 1795759553}; /* 2026-11-27T06:05:53Z */
    struct buf b;
    buf_init(&b, 0);
    for (int r = 0; r < runs && do_enc; r++) {
        double t = now_ns();
        for (long i = 0; i < iters; i++) {
            buf_reset(&b);
            write_user(&b, &u);
            SINK(b.data);
        }
        enc[r] = (now_ns() - t) / (double)iters;
    }

    static const char body[] = "{\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\"}";
    struct arena a;
    arena_init(&a, 1 << 20);
    for (int r = 0; r < runs && do_dec; r++) {
        double t = now_ns();
        for (long i = 0; i < iters; i++) {
            const struct json_value *v;
            struct json_error err;
            if (json_parse(body, sizeof body - 1, &a, &v, &err) != 0) {
                fprintf(stderr, "parse failed: %s\n", err.msg);
                return 1;
            }
            const struct json_value *name = json_get(v, "name"), *email = json_get(v, "email");
            SINK(name);
            SINK(email);
            arena_reset(&a, 16384);
        }
        dec[r] = (now_ns() - t) / (double)iters;
    }
    if (iters == 0 || !(do_enc && do_dec))
        return 0;
    qsort(enc, (size_t)runs, sizeof *enc, cmp_d);
    qsort(dec, (size_t)runs, sizeof *dec, cmp_d);
    printf("%.*s\n", (int)b.len, b.data);
    printf("{\"lang\":\"c\",\"lib\":\"brisk\",\"op\":\"encode_user\",\"ns_per_op\":%.1f}\n",
           enc[runs / 2]);
    printf("{\"lang\":\"c\",\"lib\":\"brisk\",\"op\":\"decode_create_user\",\"ns_per_op\":%.1f}\n",
           dec[runs / 2]);
    buf_free(&b);
    arena_free(&a);
    return 0;
}
