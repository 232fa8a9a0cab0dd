/*
 * timefmt.c - RFC 3339 formatting (see timefmt.h).
 *
 * Years 1970..9999 (every timestamp the service stores) take the fast path:
 * days from one multiply-by-reciprocal division, the civil date by Neri and
 * Schneider's Euclidean affine functions ("Euclidean affine functions and their
 * application to calendar algorithms", 2022: no division but by constants), and
 * two-digit table lookups. The date part is also kept per thread for the last day
 * formatted: a page of rows or orders mostly shares a handful of days. Anything
 * else goes through Howard Hinnant's civil_from_days on int64, clamping the year.
 */
#include "base/timefmt.h"

#include <string.h>

#include "base/compiler.h"
#include "base/str.h"

int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* v < 100 */
static inline void two(char *p, unsigned v)
{
    memcpy(p, str_digit_pairs + (size_t)2 * v, 2);
}

/* Unix seconds of 9999-12-31T23:59:59Z, the last instant with a four-digit year. */
#define FAST_MAX INT64_C(253402300799)

/* "YYYY-MM-DD" for days since 1970-01-01, 0 <= days <= 2932896 (9999-12-31). */
static void fmt_date(char *out, uint32_t days)
{
    /* Neri-Schneider to_date with the epoch shifted to 0000-03-01 (the paper's
     * K = 719468 and no negative-year shift, since days >= 0 here). */
    uint32_t n1 = 4 * (days + 719468) + 3;
    uint32_t c = n1 / 146097;
    uint32_t nc = n1 % 146097 / 4;
    uint64_t p2 = (uint64_t)2939745 * (4 * nc + 3);
    uint32_t z = (uint32_t)(p2 >> 32);
    uint32_t ny = (uint32_t)p2 / 2939745 / 4; /* day of the March-based year */
    uint32_t n3 = 2141 * ny + 197913;
    uint32_t m = n3 >> 16;
    uint32_t d = (n3 & 0xffff) / 2141 + 1;
    uint32_t j = ny >= 306; /* January or February: next civil year */
    uint32_t y = 100 * c + z + j;
    m = j ? m - 12 : m;
    two(out, y / 100);
    two(out + 2, y % 100);
    out[4] = '-';
    two(out + 5, m);
    out[7] = '-';
    two(out + 8, d);
}

static void fmt_rfc3339_any(char *out, int64_t t)
{
    int64_t days = t / 86400, secs = t % 86400;
    if (secs < 0) { /* floor; t - 86399 and days * 86400 overflow near INT64_MIN */
        secs += 86400;
        days--;
    }
    /* civil_from_days */
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
    two(out, (unsigned)(y / 100));
    two(out + 2, (unsigned)(y % 100));
    out[4] = '-';
    two(out + 5, m);
    out[7] = '-';
    two(out + 8, d);
    out[10] = 'T';
    two(out + 11, (unsigned)(secs / 3600));
    out[13] = ':';
    two(out + 14, (unsigned)(secs / 60 % 60));
    out[16] = ':';
    two(out + 17, (unsigned)(secs % 60));
    out[19] = 'Z';
}

/* The last date formatted by this thread ("YYYY-MM-DD" of day), UINT32_MAX: none. */
static _Thread_local struct {
    uint32_t day;
    char date[10];
} last_date = {UINT32_MAX, {0}};

void fmt_rfc3339(char *out, int64_t t)
{
    if (unlikely((uint64_t)t > (uint64_t)FAST_MAX)) {
        fmt_rfc3339_any(out, t);
        return;
    }
    uint64_t u = (uint64_t)t;
    uint32_t days = (uint32_t)(u / 86400);
    uint32_t secs = (uint32_t)(u - (uint64_t)days * 86400);
    if (days != last_date.day) {
        fmt_date(last_date.date, days);
        last_date.day = days;
    }
    memcpy(out, last_date.date, 10);
    uint32_t h = secs / 3600, ms = secs - h * 3600, mi = ms / 60;
    out[10] = 'T';
    two(out + 11, h);
    out[13] = ':';
    two(out + 14, mi);
    out[16] = ':';
    two(out + 17, ms - mi * 60);
    out[19] = 'Z';
}

/* Value of n decimal digits at p, or -1 if any is not a digit. */
static int digits(const char *p, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

bool parse_rfc3339_utc(struct str s, int64_t *out)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:ddZ";
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (!s.ptr || s.len != sizeof shape - 1)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        if (shape[i] != 'd' && s.ptr[i] != shape[i])
            return false;
    }
    int y = digits(s.ptr, 4), mo = digits(s.ptr + 5, 2), d = digits(s.ptr + 8, 2);
    int h = digits(s.ptr + 11, 2), mi = digits(s.ptr + 14, 2), sec = digits(s.ptr + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 ||
        sec > 59)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] + (mo == 2 && leap))
        return false;
    *out = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + (int64_t)h * 3600 +
           (int64_t)mi * 60 + sec;
    return true;
}
