/*
 * buf.c - growable byte buffers with a hard cap (see buf.h).
 */
#include "base/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/str.h"

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : SIZE_MAX / 2;
    b->failed = 0;
}

void buf_init_fixed(struct buf *b, char *mem, size_t cap)
{
    b->data = mem;
    b->len = 0;
    b->cap = cap;
    b->max = cap; /* reserve refuses before it would realloc mem */
    b->failed = 0;
}

/*
 * Out of memory: say so and abort. Plain write(2), not log.h: the logger is
 * built on these buffers (an arrow may point only one way).
 */
static void out_of_memory(void)
{
    static const char msg[] = "brisk: fatal: out of memory growing a buffer\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w; /* nothing is left to report a failing stderr to */
    abort();
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = 0;
}

int buf_reserve_slow(struct buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > b->max || b->len > b->max - extra)
        return -1;
    size_t need = b->len + extra;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 4 ? need : ncap * 2;
    if (ncap > b->max)
        ncap = b->max;
    char *p = realloc(b->data, ncap);
    if (!p)
        out_of_memory();
    b->data = p;
    b->cap = ncap;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void buf_shrink(struct buf *b, size_t keep)
{
    if (b->len == 0 && b->cap > keep) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

void buf_append_slow(struct buf *b, const void *p, size_t n)
{
    if (unlikely(b->failed))
        return;
    if (buf_reserve(b, n) != 0) {
        b->failed = 1;
        return;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

size_t fmt_u64(char *dst, uint64_t v)
{
    /* count the digits first (ids are small: a few compares), then write two at a time
     * from the right; p10 wraps only after the 20th digit, when the loop stops */
    size_t n = 1;
    for (uint64_t p10 = 10; n < 20 && v >= p10; p10 *= 10)
        n++;
    char *p = dst + n;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        p -= 2;
        memcpy(p, str_digit_pairs + (size_t)2 * r, 2);
    }
    if (v >= 10) {
        memcpy(p - 2, str_digit_pairs + (size_t)2 * v, 2);
    } else {
        p[-1] = (char)('0' + v);
    }
    return n;
}

void buf_append_u64(struct buf *b, uint64_t v)
{
    char tmp[20];
    buf_append(b, tmp, fmt_u64(tmp, v));
}

void buf_append_i64(struct buf *b, int64_t v)
{
    if (v < 0) {
        buf_append_char(b, '-');
        /* negate in unsigned arithmetic so INT64_MIN does not overflow */
        buf_append_u64(b, (uint64_t)0 - (uint64_t)v);
        return;
    }
    buf_append_u64(b, (uint64_t)v);
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n + 1) != 0) {
        b->failed = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}
