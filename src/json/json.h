/*
 * json.h - strict JSON reader (RFC 8259) and a writer that appends to a buf.
 *
 * Reader: the whole document is parsed into a tree allocated from an arena.
 * Strict: valid UTF-8 only (no overlongs, no surrogates encoded in UTF-8),
 * escapes including surrogate pairs (lone surrogates rejected), no trailing
 * commas, no comments, no leading zeros, nesting at most JSON_MAX_DEPTH,
 * duplicate keys in one object rejected, only whitespace around the value.
 * Strings without escapes point into the input (zero-copy); others into the arena.
 *
 * Writer: appends straight into the response buffer with correct escaping.
 */
#ifndef BRISK_JSON_H
#define BRISK_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/str.h"

#define JSON_MAX_DEPTH 64

enum json_type { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json_member;

struct json_value {
    enum json_type type;
    union {
        struct str str; /* JSON_STRING: decoded UTF-8 (may contain U+0000 as a 0 byte) */
        struct {
            struct str raw; /* JSON_NUMBER: the literal as written */
            bool is_int;    /* integer literal (no fraction/exponent) within int64 */
            int64_t i;      /* valid when is_int */
        } num;
        struct {
            struct json_value *items;
            size_t n;
        } arr; /* JSON_ARRAY */
        struct {
            struct json_member *members; /* in document order */
            size_t n;
        } obj; /* JSON_OBJECT */
    } u;
};

struct json_member {
    struct str key; /* decoded */
    struct json_value value;
};

struct json_error {
    size_t offset;   /* byte offset of the problem in the input */
    char msg[128];   /* short lowercase message, e.g. "duplicate key \"email\"" */
    bool too_large;  /* the arena cap was hit: answer 413, not 400 */
};

/*
 * Parse in[0..len) as one JSON document. On success returns 0 and sets *out to
 * the root value, allocated in arena a (valid until the arena is reset). On
 * failure returns -1 and fills *err; *out is untouched. Never reads past len.
 */
int json_parse(const char *in, size_t len, struct arena *a, const struct json_value **out,
               struct json_error *err);

/* Member of an object by key (exact bytes), or NULL if absent / not an object. */
const struct json_value *json_get(const struct json_value *obj, const char *key);

/* Append a JSON string literal (with quotes) for the UTF-8 text s[0..n). */
void json_write_str(struct buf *b, const char *s, size_t n);

/* Append any parsed value (compact form); numbers are written as their literal. */
void json_write_value(struct buf *b, const struct json_value *v);

/* Validate UTF-8 text s[0..n) with the same strictness as the reader. */
bool json_utf8_valid(const char *s, size_t n);

#endif
