/*
 * buf.h - growable byte buffers with a hard cap.
 *
 * Used for connection read/write buffers and response bodies. A buffer is
 * reused across requests (buf_reset keeps the allocation); growth past `max`
 * fails instead of allocating, so no client can make us allocate without bound.
 * Allocation failure of the underlying realloc aborts (see docs/design.md, OOM policy).
 */
#ifndef BRISK_BUF_H
#define BRISK_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/compiler.h"

struct buf {
    char *data;
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
    size_t max; /* growth limit; 0 means SIZE_MAX/2 */
    int failed; /* sticky: set when an append hit max; appends then do nothing */
};

/* Initialise an empty buffer that may grow up to max bytes (0: no practical cap). */
void buf_init(struct buf *b, size_t max);

/*
 * Initialise an empty buffer over caller memory mem[0..cap) that never
 * allocates: appends past cap set failed instead. Never pass it to buf_free
 * or buf_shrink. log.c formats its lines this way, so that running out of
 * memory can still be logged.
 */
void buf_init_fixed(struct buf *b, char *mem, size_t cap);

/* Release the allocation; the buffer is left empty and may be reused. */
void buf_free(struct buf *b);

/* buf_reserve's growing half (out of line). */
int buf_reserve_slow(struct buf *b, size_t extra) WARN_UNUSED;

/*
 * Make room for at least `extra` more bytes after len. Returns 0, or -1 when
 * that would exceed max (the buffer is then unchanged).
 */
static inline WARN_UNUSED int buf_reserve(struct buf *b, size_t extra)
{
    if (likely(b->cap - b->len >= extra))
        return 0;
    return buf_reserve_slow(b, extra);
}

/* Drop the first n bytes (n <= len), moving the rest to the front. */
void buf_consume(struct buf *b, size_t n);

/* Free the allocation if it grew beyond keep bytes and holds nothing; keeps idle memory small. */
void buf_shrink(struct buf *b, size_t keep);

/*
 * Append helpers. When the cap would be exceeded nothing is appended and
 * b->failed is set (sticky, cleared by buf_reset), so a writer emitting many
 * pieces checks once at the end instead of after every call (SQLite's
 * mallocFailed pattern).
 */
void buf_append_slow(struct buf *b, const void *p, size_t n);
void buf_append_u64(struct buf *b, uint64_t v);
void buf_append_i64(struct buf *b, int64_t v);
void buf_printf(struct buf *b, const char *fmt, ...) PRINTF_FMT(2, 3);

/* Inline fast path: the common append fits in the allocation already there. */
static inline void buf_append(struct buf *b, const void *p, size_t n)
{
    if (likely(b->cap - b->len >= n && n && !b->failed)) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        return;
    }
    buf_append_slow(b, p, n);
}

/* Append a string literal (length known at compile time). */
#define BUF_LIT(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

static inline void buf_append_cstr(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

static inline void buf_append_char(struct buf *b, char c)
{
    if (likely(b->len < b->cap)) {
        b->data[b->len++] = c;
        return;
    }
    buf_append(b, &c, 1);
}

/* Empty the buffer, keep its allocation, clear the failed flag. */
static inline void buf_reset(struct buf *b)
{
    b->len = 0;
    b->failed = 0;
}

/* Write decimal v into dst (at least 20 bytes); returns the number of digits. */
size_t fmt_u64(char *dst, uint64_t v);

#endif
