/*
 * timefmt.h - RFC 3339 UTC timestamps without locale or libc time zone state.
 */
#ifndef BRISK_TIMEFMT_H
#define BRISK_TIMEFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/str.h"

#define RFC3339_LEN 20 /* "2026-11-27T06:05:53Z" */

/* Write unix seconds as "YYYY-MM-DDTHH:MM:SSZ" into out (RFC3339_LEN bytes, no NUL). */
void fmt_rfc3339(char *out, int64_t unix_secs);

/* Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm). */
int64_t days_from_civil(int64_t y, unsigned m, unsigned d);

/*
 * Parse exactly "YYYY-MM-DDTHH:MM:SSZ" (the form every backend stores
 * timestamps in) into unix seconds, with calendar checks (month 1..12, day
 * within the month, leap years, 00..23:00..59:00..59). Pure arithmetic: no
 * timegm(), TZ or locale. Returns false and leaves *out unchanged on any other
 * input.
 */
bool parse_rfc3339_utc(struct str s, int64_t *out);

#endif
