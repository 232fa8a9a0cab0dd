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

enum json_type {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT
};

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
            struct json_value *items; /* contiguous; NULL when n == 0 */
            size_t n;
        } arr; /* JSON_ARRAY */
        struct {
            struct json_member *members; /* in document order, contiguous; NULL when n == 0 */
            size_t n;
        } obj; /* JSON_OBJECT */
    } u;
};

struct json_member {
    struct str key; /* decoded */
    struct json_value value;
};

struct json_error {
    size_t offset;  /* byte offset of the problem in the input */
    char msg[128];  /* short lowercase message, e.g. "duplicate key \"email\"" */
    bool too_large; /* the arena cap was hit: answer 413, not 400 */
};

/*
 * Parse in[0..len) as one JSON document. On success returns 0 and sets *out to
 * the root value, allocated in arena a (valid until the arena is reset). On
 * failure returns -1 and fills *err; *out is untouched. Never reads past len.
 * The tree also points into in (strings without escapes, number literals), so
 * the input must outlive it. Reentrant: no global state but a lazily seeded
 * hash key.
 *
 * Error messages (err->msg, fit for a 400 body):
 *   "invalid json at offset N: <problem>"  syntax, bad escape, bad UTF-8, ...
 *   "invalid json: empty document"         nothing but whitespace
 *   "nesting deeper than 64 levels"        the 65th open array/object
 *   "duplicate key \"K\""                 K cut to 40 bytes (+ "..."), controls as '?'
 *   "json document too large"              too_large set: the arena cap was hit
 * err->offset is the byte offset of the problem (for a duplicate: of the second key).
 *
 * Memory: everything comes from the arena; the temporary stack of open
 * containers' items starts on the C stack and spills into the arena, so a
 * document costs at most about three times its tree size. Objects with more
 * than 16 members are checked for duplicates with a hash set (keyed SipHash)
 * in the arena; smaller ones pairwise.
 */
int json_parse(const char *in, size_t len, struct arena *a, const struct json_value **out,
               struct json_error *err);

/* Member of an object by key (exact bytes), or NULL if absent / not an object. */
const struct json_value *json_get(const struct json_value *obj, const char *key);

/*
 * Append a JSON string literal (with quotes) for the UTF-8 text s[0..n).
 * Escapes '"', '\\' and control characters (\b \f \n \r \t, others as \u00XX);
 * every other byte, DEL and non-ASCII included, is copied as is, so s must be
 * valid UTF-8 (json_utf8_valid) for the output to be valid JSON.
 */
void json_write_str(struct buf *b, const char *s, size_t n);

/*
 * Room json_put_str_body may write into for n input bytes: 6 per byte (the worst
 * case, \u00XX) plus 8 for whole-word stores past the end (bytes it leaves
 * unspecified beyond the returned pointer).
 */
#define JSON_STR_BODY_MAX(n) (6 * (size_t)(n) + 8)

/*
 * Unchecked writer for callers that reserved the room: escape s[0..n) exactly as
 * json_write_str does, without the quotes, into dst, which must have
 * JSON_STR_BODY_MAX(n) writable bytes. Returns the end of what was written.
 */
char *json_put_str_body(char *dst, const char *s, size_t n);

/*
 * Append any parsed value (compact form, no whitespace); numbers are written as
 * their literal (a hand-built number with an empty raw is written from i when
 * is_int, else as 0). Strings are escaped as by json_write_str. Recursive: the
 * depth of a parsed value is bounded by JSON_MAX_DEPTH. Check b->failed after.
 */
void json_write_value(struct buf *b, const struct json_value *v);

/* Validate UTF-8 text s[0..n) with the same strictness as the reader. */
bool json_utf8_valid(const char *s, size_t n);

#endif
