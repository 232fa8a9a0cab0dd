/*
 * str.h - (pointer, length) slices.
 *
 * All parsed text (method, path, header names and values, JSON strings that
 * need no unescaping) points into the connection's read buffer; nothing is
 * NUL-terminated and nothing is copied.
 */
#ifndef BRISK_STR_H
#define BRISK_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct str {
    const char *ptr;
    size_t len;
};

#define STR_LIT(s) ((struct str){(s), sizeof(s) - 1})
#define STR_NULL ((struct str){NULL, 0})

/* True when a and b hold the same bytes. */
static inline bool str_eq(struct str a, struct str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* True when a equals the NUL-terminated literal lit, ASCII case-insensitively. */
static inline bool str_ieq_lit(struct str a, const char *lit)
{
    size_t n = strlen(lit);
    if (a.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a.ptr[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (c != (unsigned char)lit[i])
            return false;
    }
    return true;
}

/*
 * Parse a strictly positive decimal integer of 1..19 digits with no sign,
 * no leading zeros beyond "0" itself, no spaces, into *out. Returns false on any
 * other input or on a value above INT64_MAX.
 */
bool str_to_i64(struct str s, int64_t *out);

/* "00" "01" ... "99": the two digits of n at str_digit_pairs + 2 * n, for writers
 * that emit two decimal digits at a time (integers, timestamps). */
extern const char str_digit_pairs[200];

#endif
