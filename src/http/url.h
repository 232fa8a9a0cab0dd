/*
 * url.h - percent-decoding and query-string parsing for request targets.
 */
#ifndef BRISK_HTTP_URL_H
#define BRISK_HTTP_URL_H

#include <stdbool.h>
#include <stddef.h>

#include "base/str.h"

/*
 * Percent-decode in[0..n) into out (capacity >= n). With plus_is_space, '+'
 * becomes ' ' (query strings). Rejects a '%' not followed by two hex digits and
 * a decoded NUL byte. Returns true and sets *out_len on success.
 */
bool url_decode(const char *in, size_t n, char *out, size_t *out_len, bool plus_is_space);

/*
 * Iterate over the raw key=value pairs of a query string (split on '&'; a pair
 * without '=' has an empty value; empty pairs are skipped). *q is advanced.
 * Returns false when no pair is left. key/value are raw (still encoded).
 */
bool url_query_next(struct str *q, struct str *key, struct str *value);

#endif
