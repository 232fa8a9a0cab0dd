/*
 * test_timefmt.c - fmt_rfc3339 (src/base/timefmt.c) and fmt_u64 / buf_append_*64
 * (src/base/buf.c) against the straightforward versions they replaced.
 *
 * The references below are the original code (Howard Hinnant's civil_from_days
 * with the year clamped to 0..9999; digits by repeated division). Every day of
 * the fast range 1970..9999 is compared, every second of a few days, both sides of
 * each boundary, the clamped years outside it, and the per-thread date cache with
 * alternating days and two threads.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/timefmt.h"
#include "test.h"

#define FAST_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

static void ref_two(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

/* The original fmt_rfc3339, with the floor division written so that it cannot
 * overflow near INT64_MIN (the original computed t - 86399 and days * 86400). */
static void ref_rfc3339(char *out, int64_t t)
{
    int64_t days = t / 86400, secs = t % 86400;
    if (secs < 0) { /* floor; the original t - 86399 overflowed near INT64_MIN */
        secs += 86400;
        days--;
    }
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    if (y < 0)
        y = 0;
    if (y > 9999)
        y = 9999;
    ref_two(out, (unsigned)(y / 100));
    ref_two(out + 2, (unsigned)(y % 100));
    out[4] = '-';
    ref_two(out + 5, m);
    out[7] = '-';
    ref_two(out + 8, d);
    out[10] = 'T';
    ref_two(out + 11, (unsigned)(secs / 3600));
    out[13] = ':';
    ref_two(out + 14, (unsigned)(secs / 60 % 60));
    out[16] = ':';
    ref_two(out + 17, (unsigned)(secs % 60));
    out[19] = 'Z';
}

/* Compare fmt_rfc3339(t) with the reference; report only the first few mismatches. */
static int time_same(int64_t t)
{
    char got[RFC3339_LEN], want[RFC3339_LEN];
    fmt_rfc3339(got, t);
    ref_rfc3339(want, t);
    return memcmp(got, want, RFC3339_LEN) == 0;
}

static void check_range(const char *what, int64_t from, int64_t to, int64_t step)
{
    long bad = 0;
    int64_t first = 0;
    for (int64_t t = from;; t += step) {
        if (!time_same(t) && bad++ == 0)
            first = t;
        if (t > to - step)
            break;
    }
    ok(bad == 0, "%s: %ld mismatches, first at %" PRId64, what, bad, first);
}

static void test_known(void)
{
    static const struct {
        int64_t t;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00Z"},
        {-1, "1969-12-31T23:59:59Z"},
        {-86400, "1969-12-31T00:00:00Z"},
        {-86401, "1969-12-30T23:59:59Z"},
        {59, "1970-01-01T00:00:59Z"},
        {86399, "1970-01-01T23:59:59Z"},
        {86400, "1970-01-02T00:00:00Z"},
        {31535999, "1970-12-31T23:59:59Z"},
        {31536000, "1971-01-01T00:00:00Z"},
        {68169600, "1972-02-29T00:00:00Z"},
        {68256000, "1972-03-01T00:00:00Z"},
        {946684799, "1999-12-31T23:59:59Z"},
        {946684800, "2000-01-01T00:00:00Z"},
        {951782400, "2000-02-29T00:00:00Z"},
        {951868800, "2000-03-01T00:00:00Z"},
        {1709251199, "2024-02-29T23:59:59Z"},
        {1795759553, "2026-11-27T06:05:53Z"},
        {4107542399, "2100-02-28T23:59:59Z"},
        {4107542400, "2100-03-01T00:00:00Z"},
        {4102444800, "2100-01-01T00:00:00Z"},
        {253402214400, "9999-12-31T00:00:00Z"},
        {FAST_MAX, "9999-12-31T23:59:59Z"},
        /* outside 0000..9999 the year is clamped, month and day are the real ones */
        {FAST_MAX + 1, "9999-01-01T00:00:00Z"},
        {-62167219200, "0000-01-01T00:00:00Z"},
        {-62167219201, "0000-12-31T23:59:59Z"},
        {INT64_MAX, "9999-12-04T15:30:07Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[RFC3339_LEN + 1] = {0};
        fmt_rfc3339(out, cases[i].t);
        ok(strcmp(out, cases[i].want) == 0, "rfc3339(%" PRId64 ") = %s, want %s", cases[i].t, out,
           cases[i].want);
        ok(time_same(cases[i].t), "rfc3339(%" PRId64 ") as the reference", cases[i].t);
    }
    /* INT64_MIN: no overflow (UBSan) and the same clamped year as the reference */
    ok(time_same(INT64_MIN), "INT64_MIN as the reference");
    ok(time_same(INT64_MIN + 86399), "INT64_MIN + 86399 as the reference");
    ok(time_same(INT64_MAX - 86399), "INT64_MAX - 86399 as the reference");
}

static void test_ranges(void)
{
    /* every day of the fast range, at a second that moves through the day */
    long bad = 0;
    int64_t first = 0;
    for (int64_t day = 0; day <= FAST_MAX / 86400; day++) {
        int64_t t = day * 86400 + (day * 7919) % 86400;
        if (!time_same(t) && bad++ == 0)
            first = t;
        if (!time_same(day * 86400) && bad++ == 0)
            first = day * 86400;
    }
    ok(bad == 0, "every day 1970..9999: %ld mismatches, first at %" PRId64, bad, first);
    /* every second of some days: the epoch, a leap day, a century, the last day */
    check_range("1970-01-01 every second", 0, 86400, 1);
    check_range("2000-02-29 every second", 951782400, 951782400 + 86400, 1);
    check_range("2100-02-28 every second", 4107456000, 4107456000 + 86400, 1);
    check_range("9999-12-31 every second", 253402214400, FAST_MAX + 1, 1);
    /* both sides of both ends of the fast range */
    check_range("around 0", -200000, 200000, 1);
    check_range("around the end", FAST_MAX - 200000, FAST_MAX + 200000, 1);
    /* the slow path far outside: clamped years */
    check_range("negative years", -70000000000000, 0, 123456789);
    check_range("beyond 9999", FAST_MAX, INT64_MAX / 2, INT64_MAX / 1000);
}

/* The per-thread date cache must not leak one day into another. */
static void test_cache(void)
{
    static const int64_t ts[] = {
        1795759553, 1795759553 + 86400, 1795759553, 0,         1795759553 - 1, FAST_MAX,
        -1,         FAST_MAX,           0,          1795759553};
    long bad = 0;
    for (int rep = 0; rep < 3; rep++)
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            bad += !time_same(ts[i]);
    ok(bad == 0, "alternating days: %ld mismatches", bad);
}

struct thread_arg {
    int64_t base;
    long bad;
};

static void *time_thread(void *p)
{
    struct thread_arg *a = p;
    for (int64_t i = 0; i < 200000; i++)
        a->bad += !time_same(a->base + (i % 3) * 86400 + i);
    return NULL;
}

static void test_threads(void)
{
    struct thread_arg a[2] = {{946684800, 0}, {1795759553, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ok(pthread_create(&th[i], NULL, time_thread, &a[i]) == 0, "thread %d", i);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ok(a[0].bad == 0 && a[1].bad == 0, "two threads: %ld and %ld mismatches", a[0].bad, a[1].bad);
}

/* ---- integers ---- */

static void u64_case(uint64_t v)
{
    char got[24], want[24];
    memset(got, 'x', sizeof got);
    size_t n = fmt_u64(got, v);
    int wn = snprintf(want, sizeof want, "%" PRIu64, v);
    ok(n == (size_t)wn && memcmp(got, want, n) == 0 && got[n] == 'x', "fmt_u64(%s) = %.*s", want,
       (int)n, got);
}

static void test_u64(void)
{
    u64_case(0);
    u64_case(UINT64_MAX);
    u64_case(UINT64_MAX - 1);
    u64_case((uint64_t)INT64_MAX + 1);
    for (uint64_t p = 1;; p *= 10) {
        u64_case(p - 1);
        u64_case(p);
        u64_case(p + 1);
        u64_case(p * 5);
        if (p > UINT64_MAX / 10)
            break;
    }
    long bad = 0;
    for (uint64_t v = 0; v < 100000; v++) {
        char got[24], want[24];
        size_t n = fmt_u64(got, v);
        int wn = snprintf(want, sizeof want, "%" PRIu64, v);
        bad += n != (size_t)wn || memcmp(got, want, n) != 0;
    }
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t v = x >> (x & 63); /* every magnitude */
        char got[24], want[24];
        size_t n = fmt_u64(got, v);
        int wn = snprintf(want, sizeof want, "%" PRIu64, v);
        bad += n != (size_t)wn || memcmp(got, want, n) != 0;
    }
    ok(bad == 0, "fmt_u64 0..99999 and random: %ld mismatches", bad);

    static const int64_t is[] = {0, 1, -1, 9, -9, 10, -10, 42, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    struct buf b;
    buf_init(&b, 0);
    for (size_t i = 0; i < sizeof is / sizeof is[0]; i++) {
        char want[24];
        int wn = snprintf(want, sizeof want, "%" PRId64, is[i]);
        buf_reset(&b);
        buf_append_i64(&b, is[i]);
        ok(b.len == (size_t)wn && memcmp(b.data, want, b.len) == 0, "buf_append_i64(%s)", want);
    }
    buf_free(&b);
}

int main(void)
{
    test_known();
    test_ranges();
    test_cache();
    test_threads();
    test_u64();
    return test_done();
}
