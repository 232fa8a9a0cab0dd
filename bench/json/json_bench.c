/*
 * json_bench.c - brisk's JSON codec, ns/op, for the comparison with Go's
 * encoding/json (bench/json/go) and serde_json (bench/peers/rust json-bench).
 *
 *   encode_user         the contract's user object written into a reused
 *                       response buffer by the server's own code
 *                       (user_write_json in src/app/user_json.h, which
 *                       src/app/users.c:write_user calls), from the row the
 *                       database returns (created_at as unix time)
 *   decode_create_user  a POST /users body parsed by json_parse into the
 *                       request arena, then name and email looked up with
 *                       json_get (as read_user_fields does, before validation);
 *                       the arena is reset per request, as the server does
 *
 * Linked against brisk's own objects (src/json/json.c and src/base/); the
 * user writer is a header (src/app/user_json.h) so no src/app object is needed.
 * Output: one JSON object per line; median of RUNS runs of ITERS iterations.
 *   json_bench [ITERS [RUNS [encode|decode|both]]]
 * (one operation alone is for instruction counts under callgrind: run it with
 * two ITERS values and divide the difference.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/user_json.h"
#include "base/arena.h"
#include "base/buf.h"
#include "json/json.h"

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

    struct db_user u = {42, STR_LIT("Ada Lovelace"), STR_LIT("ada@example.com"),
                        1795759553}; /* 2026-11-27T06:05:53Z */
    struct buf b;
    buf_init(&b, 0);
    for (int r = 0; r < runs && do_enc; r++) {
        double t = now_ns();
        for (long i = 0; i < iters; i++) {
            buf_reset(&b);
            SINK(&u); /* a fresh row each time: nothing about it is known at compile time */
            user_write_json(&b, &u);
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
