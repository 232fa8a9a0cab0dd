/*
 * json.c - strict JSON reader (RFC 8259) and writer (see json.h).
 *
 * The reader is one iterative loop with an explicit stack of open containers
 * (at most JSON_MAX_DEPTH), so hostile nesting cannot blow the C stack. Items
 * of open arrays and objects are collected on a temporary stack of slots (the
 * first few on the C stack, then in the arena) and copied into one contiguous
 * arena array when the container closes, so the tree needs no linked lists and
 * no reallocation. Strings without escapes point into the input; strings with
 * escapes are validated and measured in one pass, then decoded into an arena
 * buffer of the exact size in a second pass that only handles the escapes.
 * Hot loops (string bodies, UTF-8 validation) skip 8 bytes at a time while no
 * byte needs attention (SWAR), and use tables otherwise.
 *
 * The writer reserves the worst case (6 output bytes per input byte) and then
 * escapes without bounds checks: whole words (16 bytes with SSE2, else 8) are
 * stored as loaded and the output advanced past their clean prefix; a short
 * string is checked with two overlapping 8-byte loads and copied with two
 * stores. A buffer that has failed or cannot reserve that much takes the
 * original checked loop, so what a capped buffer ends up holding is unchanged.
 *
 * Every read is bounds-checked against len: the input need not be terminated
 * and is never read past its end.
 */
#include "json/json.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "base/compiler.h"

/* ---- byte-level helpers ------------------------------------------------ */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Nonzero when some byte of w is zero (exact as to "some", not as to which). */
static inline uint64_t swar_has_zero(uint64_t w)
{
    return (w - ONES) & ~w & HIGHS;
}

/* Nonzero when some byte of w is below 0x20. */
static inline uint64_t swar_has_ctl(uint64_t w)
{
    return (w - ONES * 0x20) & ~w & HIGHS;
}

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

/* Nonzero when some byte of w needs the slow path inside a string literal:
 * '"', '\\', a control character or a non-ASCII byte. */
static inline uint64_t swar_str_special(uint64_t w)
{
    return swar_has_zero(w ^ (ONES * '"')) | swar_has_zero(w ^ (ONES * '\\')) | swar_has_ctl(w) |
           (w & HIGHS);
}

/* Bytes allowed verbatim inside a string literal: 0x20..0x7f but '"' and '\\'. */
static const unsigned char str_plain[256] = {
    [0x20 ... 0x21] = 1, /* 0x22 is '"' */
    [0x23 ... 0x5b] = 1, /* 0x5c is '\\' */
    [0x5d ... 0x7f] = 1,
};

/* Hex digit value plus one; 0 for a non-hex byte. */
static const unsigned char hex_val1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* Value of the 4 hex digits at p, or -1. */
static inline long hex4(const unsigned char *p)
{
    unsigned a = hex_val1[p[0]], b = hex_val1[p[1]], c = hex_val1[p[2]], d = hex_val1[p[3]];
    if (!a || !b || !c || !d)
        return -1;
    return (long)(((a - 1) << 12) | ((b - 1) << 8) | ((c - 1) << 4) | (d - 1));
}

/*
 * Length (2..4) of the well-formed UTF-8 sequence starting with the non-ASCII
 * byte s[0], of at most n bytes available; 0 when ill-formed (Unicode table
 * 3-7: no overlongs, no surrogates, nothing above U+10FFFF, no truncation).
 */
static inline size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0xC2)
        return 0; /* continuation byte or overlong 2-byte lead */
    if (c < 0xE0)
        return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3)
            return 0;
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (s[1] < lo || s[1] > hi || (s[2] & 0xC0) != 0x80)
            return 0;
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4)
            return 0;
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        if (s[1] < lo || s[1] > hi || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

static inline size_t utf8_len(unsigned long cp)
{
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

static inline char *utf8_put(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

bool json_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        while (i + 8 <= n && !(load64(s + i) & HIGHS))
            i += 8;
        while (i < n && s[i] < 0x80)
            i++;
        if (i == n)
            break;
        size_t k = utf8_seq(s + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

/* ---- duplicate-key detection ------------------------------------------ */

/*
 * SipHash-1-3 with a per-process random key: member names are chosen by the
 * client, so an unkeyed hash would let one craft colliding keys and turn the
 * duplicate check of a big object quadratic.
 */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t siphash13(const unsigned char *in, size_t len, uint64_t k0, uint64_t k1)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load64(in + i);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = full; i < len; i++)
        b |= (uint64_t)in[i] << (8 * (i - full));
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t hash_seed(void)
{
    /* Racing first calls may each pick a seed; any of them is fine, every
     * table reads the seed once. */
    static _Atomic uint64_t seed;
    uint64_t s = atomic_load_explicit(&seed, memory_order_relaxed);
    if (likely(s))
        return s;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uintptr_t)&ts;
    }
    s |= 1;
    atomic_store_explicit(&seed, s, memory_order_relaxed);
    return s;
}

/* ---- the reader --------------------------------------------------------- */

/* An item of a container that is still open. */
struct slot {
    struct str key; /* objects only */
    size_t key_off; /* offset of the key's opening quote, for error messages */
    struct json_value value;
};

struct frame {
    size_t base; /* index of this container's first slot */
    bool is_obj;
};

struct parser {
    const unsigned char *s;
    size_t len;
    struct arena *a;
    struct json_error *err;
    struct slot *slots; /* stack of items of open containers */
    size_t nslots, capslots;
};

#define LOCAL_SLOTS 32
#define SMALL_OBJECT 16 /* up to this many members, check duplicates pairwise */
#define KEY_IN_MSG 40   /* bytes of a duplicate key quoted in the message */

static int PRINTF_FMT(3, 4) fail(struct parser *p, size_t off, const char *fmt, ...)
{
    char what[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    p->err->offset = off;
    p->err->too_large = false;
    snprintf(p->err->msg, sizeof p->err->msg, "invalid json at offset %zu: %s", off, what);
    return -1;
}

static int fail_too_large(struct parser *p, size_t off)
{
    p->err->offset = off;
    p->err->too_large = true;
    snprintf(p->err->msg, sizeof p->err->msg, "json document too large");
    return -1;
}

/* Error for an unexpected byte (or the end of input) at off, where `want` was expected. */
static int fail_at(struct parser *p, size_t off, const char *want)
{
    if (off >= p->len)
        return fail(p, off, "unexpected end of input");
    return fail(p, off, "%s", want);
}

static int fail_dup(struct parser *p, const struct slot *sl)
{
    /* Quote at most KEY_IN_MSG bytes, cut on a character boundary, with control
     * characters replaced so the message stays printable and NUL-free. */
    char k[KEY_IN_MSG + 4];
    size_t n = sl->key.len;
    bool cut = n > KEY_IN_MSG;
    if (cut) {
        n = KEY_IN_MSG;
        while (n > 0 && ((unsigned char)sl->key.ptr[n] & 0xC0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)sl->key.ptr[i];
        k[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (cut) {
        memcpy(k + n, "...", 3);
        n += 3;
    }
    k[n] = '\0';
    p->err->offset = sl->key_off;
    p->err->too_large = false;
    snprintf(p->err->msg, sizeof p->err->msg, "duplicate key \"%s\"", k);
    return -1;
}

static inline size_t skip_ws(const unsigned char *s, size_t len, size_t pos)
{
    while (pos < len && s[pos] <= ' ' &&
           (s[pos] == ' ' || s[pos] == '\n' || s[pos] == '\r' || s[pos] == '\t'))
        pos++;
    return pos;
}

/* Push an empty slot; returns it or NULL when the arena cap is hit. */
static struct slot *push_slot(struct parser *p)
{
    if (unlikely(p->nslots == p->capslots)) {
        size_t ncap = p->capslots * 2;
        if (ncap > SIZE_MAX / sizeof(struct slot))
            return NULL;
        struct slot *ns = arena_alloc(p->a, ncap * sizeof(struct slot));
        if (!ns)
            return NULL;
        memcpy(ns, p->slots, p->nslots * sizeof(struct slot));
        p->slots = ns;
        p->capslots = ncap;
    }
    return &p->slots[p->nslots++];
}

/*
 * Parse the string literal whose opening quote is at s[pos] into *out; sets
 * *next to the offset after the closing quote. Returns 0 or -1 (err filled).
 */
static int parse_string(struct parser *p, size_t pos, struct str *out, size_t *next)
{
    const unsigned char *s = p->s;
    size_t len = p->len;
    size_t i = pos + 1;
    size_t saved = 0; /* bytes the escapes shrink by when decoded */
    bool escaped = false;

    for (;;) {
        while (i + 8 <= len && !swar_str_special(load64(s + i)))
            i += 8;
        while (i < len && str_plain[s[i]])
            i++;
        if (unlikely(i >= len))
            return fail(p, pos, "unterminated string");
        unsigned char c = s[i];
        if (c == '"')
            break;
        if (c >= 0x80) {
            size_t k = utf8_seq(s + i, len - i);
            if (!k)
                return fail(p, i, "invalid utf-8 in string");
            i += k;
            continue;
        }
        if (c < 0x20)
            return fail(p, i, "control character in string");
        /* backslash */
        escaped = true;
        if (i + 1 >= len)
            return fail(p, pos, "unterminated string");
        switch (s[i + 1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            saved += 1;
            i += 2;
            continue;
        case 'u':
            break;
        default:
            return fail(p, i, "invalid escape in string");
        }
        if (len - i < 6)
            return fail(p, pos, "unterminated string");
        long cp = hex4(s + i + 2);
        if (cp < 0)
            return fail(p, i, "invalid \\u escape in string");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            long lo = -1;
            if (len - i >= 12 && s[i + 6] == '\\' && s[i + 7] == 'u')
                lo = hex4(s + i + 8);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return fail(p, i, "lone surrogate in \\u escape");
            saved += 12 - 4;
            i += 12;
            continue;
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return fail(p, i, "lone surrogate in \\u escape");
        saved += 6 - utf8_len((unsigned long)cp);
        i += 6;
    }

    size_t raw = i - pos - 1;
    *next = i + 1;
    if (likely(!escaped)) {
        out->ptr = (const char *)s + pos + 1;
        out->len = raw;
        return 0;
    }

    /* Second pass: the literal is known to be valid, copy runs between escapes. */
    size_t dlen = raw - saved;
    char *buf = arena_alloc(p->a, dlen);
    if (!buf)
        return fail_too_large(p, pos);
    char *o = buf;
    const unsigned char *q = s + pos + 1, *end = s + i;
    while (q < end) {
        const unsigned char *bs = memchr(q, '\\', (size_t)(end - q));
        if (!bs) {
            memcpy(o, q, (size_t)(end - q));
            o += end - q;
            break;
        }
        memcpy(o, q, (size_t)(bs - q));
        o += bs - q;
        switch (bs[1]) {
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            unsigned long cp = (unsigned long)hex4(bs + 2);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned long lo = (unsigned long)hex4(bs + 8);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                bs += 6;
            }
            o = utf8_put(o, cp);
            q = bs + 6;
            continue;
        }
        default: /* '"', '\\', '/' */
            *o++ = (char)bs[1];
            break;
        }
        q = bs + 2;
    }
    out->ptr = buf;
    out->len = (size_t)(o - buf);
    return 0;
}

/* Parse the number starting at s[pos] into *v; sets *next past it. */
static int parse_number(struct parser *p, size_t pos, struct json_value *v, size_t *next)
{
    const unsigned char *s = p->s;
    size_t len = p->len;
    size_t i = pos;
    bool neg = false;
    if (s[i] == '-') {
        neg = true;
        i++;
    }
    uint64_t mag = 0;
    size_t digits_at = i;
    if (i < len && s[i] == '0') {
        i++;
        if (i < len && (unsigned)(s[i] - '0') < 10)
            return fail(p, pos, "leading zeros are not allowed in numbers");
    } else if (i < len && (unsigned)(s[i] - '1') < 9) {
        while (i < len && (unsigned)(s[i] - '0') < 10) {
            /* 19 digits cannot overflow uint64; more are never an int64 */
            if (i - digits_at < 19)
                mag = mag * 10 + (uint64_t)(s[i] - '0');
            i++;
        }
    } else {
        return fail_at(p, i, "expected a digit");
    }
    bool is_int = i - digits_at <= 19;
    if (i < len && s[i] == '.') {
        i++;
        if (i >= len || (unsigned)(s[i] - '0') >= 10)
            return fail_at(p, i, "expected a digit after '.'");
        while (i < len && (unsigned)(s[i] - '0') < 10)
            i++;
        is_int = false;
    }
    if (i < len && (s[i] | 0x20) == 'e') {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= len || (unsigned)(s[i] - '0') >= 10)
            return fail_at(p, i, "expected a digit in exponent");
        while (i < len && (unsigned)(s[i] - '0') < 10)
            i++;
        is_int = false;
    }
    int64_t iv = 0;
    if (is_int) {
        if (!neg && mag <= (uint64_t)INT64_MAX)
            iv = (int64_t)mag;
        else if (neg && mag <= (uint64_t)INT64_MAX)
            iv = -(int64_t)mag;
        else if (neg && mag == (uint64_t)INT64_MAX + 1)
            iv = INT64_MIN;
        else
            is_int = false;
    }
    v->type = JSON_NUMBER;
    v->u.num.raw.ptr = (const char *)s + pos;
    v->u.num.raw.len = i - pos;
    v->u.num.is_int = is_int;
    v->u.num.i = iv;
    *next = i;
    return 0;
}

/* Match the literal word (true/false/null) at s[pos]. */
static int parse_literal(struct parser *p, size_t pos, const char *word, size_t wlen)
{
    size_t avail = p->len - pos;
    if (avail >= wlen && memcmp(p->s + pos, word, wlen) == 0)
        return 0;
    if (avail < wlen && memcmp(p->s + pos, word, avail) == 0)
        return fail(p, p->len, "unexpected end of input");
    return fail(p, pos, "invalid literal");
}

/* Duplicate check of the n >= 2 member slots sl[0..n) of one object. */
static int check_dups(struct parser *p, const struct slot *sl, size_t n, size_t close_off)
{
    if (n <= SMALL_OBJECT) {
        for (size_t j = 1; j < n; j++)
            for (size_t i = 0; i < j; i++)
                if (str_eq(sl[i].key, sl[j].key))
                    return fail_dup(p, &sl[j]);
        return 0;
    }
    size_t cap = 64;
    while (cap < n * 2)
        cap *= 2;
    size_t *tab = arena_alloc(p->a, cap * sizeof *tab);
    if (!tab)
        return fail_too_large(p, close_off);
    memset(tab, 0, cap * sizeof *tab);
    uint64_t k0 = hash_seed(), k1 = k0 * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    size_t mask = cap - 1;
    for (size_t j = 0; j < n; j++) {
        size_t h = (size_t)siphash13((const unsigned char *)sl[j].key.ptr, sl[j].key.len, k0, k1);
        for (h &= mask; tab[h]; h = (h + 1) & mask)
            if (str_eq(sl[tab[h] - 1].key, sl[j].key))
                return fail_dup(p, &sl[j]);
        tab[h] = j + 1;
    }
    return 0;
}

int json_parse(const char *in, size_t len, struct arena *a, const struct json_value **out,
               struct json_error *err)
{
    struct slot local[LOCAL_SLOTS];
    struct frame fr[JSON_MAX_DEPTH];
    struct parser p = {
        .s = (const unsigned char *)in,
        .len = len,
        .a = a,
        .err = err,
        .slots = local,
        .nslots = 0,
        .capslots = LOCAL_SLOTS,
    };
    const unsigned char *s = p.s;
    size_t depth = 0;
    struct json_value v;
    struct slot *sl;
    size_t pos = skip_ws(s, len, 0);

    memset(&v, 0, sizeof v);
    if (pos == len) {
        err->offset = pos;
        err->too_large = false;
        snprintf(err->msg, sizeof err->msg, "invalid json: empty document");
        return -1;
    }

value: /* a value starts at pos (whitespace skipped) */
    if (unlikely(pos >= len))
        return fail(&p, pos, "unexpected end of input");
    switch (s[pos]) {
    case '"':
        v.type = JSON_STRING;
        if (parse_string(&p, pos, &v.u.str, &pos))
            return -1;
        goto have_value;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        if (parse_number(&p, pos, &v, &pos))
            return -1;
        goto have_value;
    case '{':
    case '[':
        if (depth == JSON_MAX_DEPTH) {
            err->offset = pos;
            err->too_large = false;
            snprintf(err->msg, sizeof err->msg, "nesting deeper than %d levels", JSON_MAX_DEPTH);
            return -1;
        }
        fr[depth].is_obj = s[pos] == '{';
        fr[depth].base = p.nslots;
        pos = skip_ws(s, len, pos + 1);
        if (pos < len && s[pos] == (fr[depth].is_obj ? '}' : ']')) {
            pos++;
            if (fr[depth].is_obj) {
                v.type = JSON_OBJECT;
                v.u.obj.members = NULL;
                v.u.obj.n = 0;
            } else {
                v.type = JSON_ARRAY;
                v.u.arr.items = NULL;
                v.u.arr.n = 0;
            }
            goto have_value;
        }
        if (fr[depth++].is_obj)
            goto key;
        if (!push_slot(&p))
            return fail_too_large(&p, pos);
        goto value;
    case 't':
        if (parse_literal(&p, pos, "true", 4))
            return -1;
        v.type = JSON_TRUE;
        pos += 4;
        goto have_value;
    case 'f':
        if (parse_literal(&p, pos, "false", 5))
            return -1;
        v.type = JSON_FALSE;
        pos += 5;
        goto have_value;
    case 'n':
        if (parse_literal(&p, pos, "null", 4))
            return -1;
        v.type = JSON_NULL;
        pos += 4;
        goto have_value;
    default:
        return fail(&p, pos, "expected a value");
    }

key: /* a member name starts at pos (whitespace skipped) */
    if (unlikely(pos >= len || s[pos] != '"')) {
        if (pos < len && s[pos] == '}' && p.nslots > fr[depth - 1].base)
            return fail(&p, pos, "trailing comma");
        return fail_at(&p, pos, "expected a string key");
    }
    sl = push_slot(&p);
    if (!sl)
        return fail_too_large(&p, pos);
    sl->key_off = pos;
    if (parse_string(&p, pos, &sl->key, &pos))
        return -1;
    pos = skip_ws(s, len, pos);
    if (unlikely(pos >= len || s[pos] != ':'))
        return fail_at(&p, pos, "expected ':'");
    pos = skip_ws(s, len, pos + 1);
    goto value;

have_value: /* v is complete and ends before pos */
    if (depth == 0)
        goto done;
    p.slots[p.nslots - 1].value = v;
    pos = skip_ws(s, len, pos);
    if (unlikely(pos >= len))
        return fail(&p, pos, "unexpected end of input");
    struct frame *f = &fr[depth - 1];
    if (s[pos] == ',') {
        pos = skip_ws(s, len, pos + 1);
        if (f->is_obj)
            goto key;
        if (pos < len && s[pos] == ']')
            return fail(&p, pos, "trailing comma");
        if (!push_slot(&p))
            return fail_too_large(&p, pos);
        goto value;
    }
    if (s[pos] != (f->is_obj ? '}' : ']'))
        return fail(&p, pos, f->is_obj ? "expected ',' or '}'" : "expected ',' or ']'");

    /* Close the container: copy its items out of the slot stack. */
    size_t n = p.nslots - f->base;
    struct slot *items = p.slots + f->base;
    if (f->is_obj) {
        if (n > 1 && check_dups(&p, items, n, pos))
            return -1;
        struct json_member *m = arena_alloc(a, n * sizeof *m);
        if (!m)
            return fail_too_large(&p, pos);
        for (size_t i = 0; i < n; i++) {
            m[i].key = items[i].key;
            m[i].value = items[i].value;
        }
        v.type = JSON_OBJECT;
        v.u.obj.members = m;
        v.u.obj.n = n;
    } else {
        struct json_value *arr = arena_alloc(a, n * sizeof *arr);
        if (!arr)
            return fail_too_large(&p, pos);
        for (size_t i = 0; i < n; i++)
            arr[i] = items[i].value;
        v.type = JSON_ARRAY;
        v.u.arr.items = arr;
        v.u.arr.n = n;
    }
    p.nslots = f->base;
    depth--;
    pos++;
    goto have_value;

done:
    pos = skip_ws(s, len, pos);
    if (pos != len)
        return fail(&p, pos, "unexpected data after the json value");
    struct json_value *root = arena_alloc(a, sizeof *root);
    if (!root)
        return fail_too_large(&p, pos);
    *root = v;
    *out = root;
    return 0;
}

const struct json_value *json_get(const struct json_value *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJECT)
        return NULL;
    struct str k = {key, strlen(key)};
    for (size_t i = 0; i < obj->u.obj.n; i++)
        if (str_eq(obj->u.obj.members[i].key, k))
            return &obj->u.obj.members[i].value;
    return NULL;
}

/* ---- the writer --------------------------------------------------------- */

/* Escape letter for bytes that need one: 'u' means \u00XX. */
static const char esc_letter[256] = {
    [0x00 ... 0x07] = 'u', ['\b'] = 'b', ['\t'] = 't',          ['\n'] = 'n', [0x0b] = 'u',
    ['\f'] = 'f',          ['\r'] = 'r', [0x0e ... 0x1f] = 'u', ['"'] = '"',  ['\\'] = '\\',
};

/* The writer's original loop: every piece through the checked appends. Used when
 * the buffer has already failed or cannot reserve the worst case, so the bytes
 * appended (and where a capped buffer stops) stay exactly what they always were. */
static void write_str_checked(struct buf *b, const char *str, size_t n, bool open_quote)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t run = 0, i = 0;
    if (open_quote)
        buf_append_char(b, '"');
    while (i < n) {
        /* Non-ASCII bytes are copied as they are: only '"', '\\' and controls stop us. */
        while (i + 8 <= n) {
            uint64_t w = load64(s + i);
            if (swar_has_zero(w ^ (ONES * '"')) | swar_has_zero(w ^ (ONES * '\\')) |
                swar_has_ctl(w))
                break;
            i += 8;
        }
        while (i < n && !esc_letter[s[i]])
            i++;
        if (i == n)
            break;
        if (i > run)
            buf_append(b, str + run, i - run);
        char e = esc_letter[s[i]];
        if (e == 'u') {
            char t[6] = {'\\', 'u', '0', '0', hex[s[i] >> 4], hex[s[i] & 15]};
            buf_append(b, t, sizeof t);
        } else {
            char t[2] = {'\\', e};
            buf_append(b, t, sizeof t);
        }
        run = ++i;
    }
    if (n > run)
        buf_append(b, str + run, n - run);
    buf_append_char(b, '"');
}

static inline void store64(char *p, uint64_t w)
{
    memcpy(p, &w, sizeof w);
}

static inline uint32_t load32(const unsigned char *p)
{
    uint32_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

static inline void store32(char *p, uint32_t w)
{
    memcpy(p, &w, sizeof w);
}

/* Nonzero when some byte of w needs an escape: '"', '\\' or a control character.
 * Every such byte has its high bit set in the result; a borrow may also flag the
 * byte just above one (never below), so the lowest flagged byte is always a real one. */
static inline uint64_t swar_needs_escape(uint64_t w)
{
    return swar_has_zero(w ^ (ONES * '"')) | swar_has_zero(w ^ (ONES * '\\')) | swar_has_ctl(w);
}

#ifdef __SSE2__
/* Bit i set exactly when byte i of v needs an escape. */
static inline unsigned sse_needs_escape(__m128i v)
{
    __m128i q = _mm_cmpeq_epi8(v, _mm_set1_epi8('"'));
    __m128i bs = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(q, bs), ctl));
}
#endif

/* Write the escape for byte c (esc_letter[c] != 0) at o; returns the end. */
static inline char *put_escape(char *o, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char e = esc_letter[c];
    o[0] = '\\';
    if (e == 'u') {
        o[1] = 'u';
        o[2] = '0';
        o[3] = '0';
        o[4] = hex[c >> 4];
        o[5] = hex[c & 15];
        return o + 6;
    }
    o[1] = e;
    return o + 2;
}

/* Any length, escapes or not. Whole words are stored as loaded and the output
 * advanced only past their clean prefix; the room (JSON_STR_BODY_MAX) covers it. */
static __attribute__((noinline)) char *put_str_general(char *o, const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t left = n - i;
#ifdef __SSE2__
        if (left >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i_u *)(const void *)(s + i));
            unsigned m = sse_needs_escape(v);
            _mm_storeu_si128((__m128i_u *)(void *)o, v);
            if (!m) {
                o += 16;
                i += 16;
                continue;
            }
            unsigned k = (unsigned)__builtin_ctz(m);
            o = put_escape(o + k, s[i + k]);
            i += k + 1;
            continue;
        }
#endif
        if (left >= 8) {
            uint64_t w = load64(s + i);
            store64(o, w);
            if (!swar_needs_escape(w)) {
                o += 8;
                i += 8;
                continue;
            }
            /* the word holds one: copy up to it */
            while (!esc_letter[s[i]])
                *o++ = (char)s[i++];
            o = put_escape(o, s[i++]);
            continue;
        }
        if (n >= 8) {
            /* 1..7 bytes left: load the last 8 bytes of the input and shift out the
             * 8 - left already written (flags only spill upwards, so the shifted mask
             * still has every byte that needs an escape); the byte order decides
             * which end the shift drops */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            unsigned k = (unsigned)(8 - left);
            uint64_t w = load64(s + n - 8);
            if (!(swar_needs_escape(w) >> (8 * k))) {
                store64(o, w >> (8 * k));
                return o + left;
            }
#endif
        }
        unsigned char c = s[i++];
        if (esc_letter[c])
            o = put_escape(o, c);
        else
            *o++ = (char)c;
    }
    return o;
}

char *json_put_str_body(char *o, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    /* Short clean strings (names, emails): two overlapping loads cover the whole string
     * and, clean, two overlapping stores copy it. */
    if (n - 8 <= 8) { /* 8 <= n <= 16 */
#ifdef __SSE2__
        __m128i lo = _mm_loadl_epi64((const __m128i_u *)(const void *)s);
        __m128i hi = _mm_loadl_epi64((const __m128i_u *)(const void *)(s + n - 8));
        if (!sse_needs_escape(_mm_unpacklo_epi64(lo, hi))) {
            _mm_storel_epi64((__m128i_u *)(void *)o, lo);
            _mm_storel_epi64((__m128i_u *)(void *)(o + n - 8), hi);
            return o + n;
        }
#else
        uint64_t lo = load64(s), hi = load64(s + n - 8);
        if (!(swar_needs_escape(lo) | swar_needs_escape(hi))) {
            store64(o, lo);
            store64(o + n - 8, hi);
            return o + n;
        }
#endif
    } else if (n - 4 < 4) { /* 4 <= n < 8 */
        uint32_t lo = load32(s), hi = load32(s + n - 4);
        if (!swar_needs_escape((uint64_t)lo | (uint64_t)hi << 32)) {
            store32(o, lo);
            store32(o + n - 4, hi);
            return o + n;
        }
    }
    return put_str_general(o, s, n);
}

void json_write_str(struct buf *b, const char *str, size_t n)
{
    /* Largest piece escaped straight into reserved room: bounds the over-reservation
     * (6 bytes out per byte in) for long strings. */
    enum { CHUNK = 4096 };
    if (unlikely(b->failed)) {
        write_str_checked(b, str, n, true);
        return;
    }
    size_t done = 0;
    for (;;) {
        size_t piece = n - done < CHUNK ? n - done : CHUNK;
        bool last = piece == n - done;
        if (buf_reserve(b, JSON_STR_BODY_MAX(piece) + 2) != 0)
            break;
        char *o = b->data + b->len;
        if (done == 0)
            *o++ = '"';
        o = json_put_str_body(o, str + done, piece);
        done += piece;
        if (last) {
            *o++ = '"';
            b->len = (size_t)(o - b->data);
            return;
        }
        b->len = (size_t)(o - b->data);
    }
    /* The room was not there (capped buffer): finish with checked appends. What is
     * written so far is what the checked loop would have written too, and escapes
     * never straddle a piece, so the rest continues the same literal. */
    write_str_checked(b, str + done, n - done, done == 0);
}

void json_write_value(struct buf *b, const struct json_value *v)
{
    switch (v->type) {
    case JSON_NULL:
        buf_append(b, "null", 4);
        break;
    case JSON_FALSE:
        buf_append(b, "false", 5);
        break;
    case JSON_TRUE:
        buf_append(b, "true", 4);
        break;
    case JSON_NUMBER:
        if (v->u.num.raw.len)
            buf_append(b, v->u.num.raw.ptr, v->u.num.raw.len);
        else if (v->u.num.is_int)
            buf_append_i64(b, v->u.num.i);
        else
            buf_append_char(b, '0');
        break;
    case JSON_STRING:
        json_write_str(b, v->u.str.ptr, v->u.str.len);
        break;
    case JSON_ARRAY:
        buf_append_char(b, '[');
        for (size_t i = 0; i < v->u.arr.n; i++) {
            if (i)
                buf_append_char(b, ',');
            json_write_value(b, &v->u.arr.items[i]);
        }
        buf_append_char(b, ']');
        break;
    case JSON_OBJECT:
        buf_append_char(b, '{');
        for (size_t i = 0; i < v->u.obj.n; i++) {
            const struct json_member *m = &v->u.obj.members[i];
            if (i)
                buf_append_char(b, ',');
            json_write_str(b, m->key.ptr, m->key.len);
            buf_append_char(b, ':');
            json_write_value(b, &m->value);
        }
        buf_append_char(b, '}');
        break;
    }
}
