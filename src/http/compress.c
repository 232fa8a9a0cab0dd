/*
 * compress.c - Accept-Encoding negotiation and gzip of response bodies (see
 * compress.h; the rules in docs/http.md).
 *
 * The Accept-Encoding parser reads untrusted bytes (fuzz/fuzz_accept_encoding.c):
 * it never allocates, never reads past n, and keeps three numbers. The
 * compressor is libdeflate's whole-buffer one at level 1 (bench/compress:
 * faster than zlib at any level, and smaller output than zlib's default level
 * on the batch responses), one per event loop, created on the loop's first
 * compressed response.
 */
#include <libdeflate.h>
#include <stdlib.h>
#include <strings.h>

#include "base/log.h"
#include "http/compress.h"
#include "http/http_int.h"

#define GZIP_LEVEL 1
/*
 * Compression runs on the loop thread, where every connection of the loop
 * waits for it: bodies above this (a batch of more than ~5000 orders) go out
 * as they are. At the ~180 MB/s level 1 does on signed batch results that
 * bounds the stall to about 6 ms; JSON user lists compress at ~1 GB/s.
 */
#define COMPRESS_MAX_BYTES ((size_t)1 << 20)

struct http_compressor {
    struct libdeflate_compressor *ld;
    struct buf out; /* the compressed body, then trades places with c->body */
};

/* ---------------------------------------------------------------- Accept-Encoding */

void http_accept_enc_init(struct http_accept_enc *a)
{
    a->present = false;
    a->gzip = a->identity = a->star = -1;
}

static bool is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in thousandths; -1 if malformed. */
static int parse_qvalue(const char *s, size_t n)
{
    if (n == 0 || (s[0] != '0' && s[0] != '1'))
        return -1;
    int q = (s[0] - '0') * 1000;
    if (n == 1)
        return q;
    if (s[1] != '.' || n > 5)
        return -1;
    int scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        q += (s[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

/* One list element (OWS already trimmed at both ends): coding and q, or -1 when malformed. */
static int parse_element(const char *s, size_t n, struct str *coding)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0)
        return -1;
    *coding = (struct str){s, i};
    while (i < n && is_ows(s[i]))
        i++;
    if (i == n)
        return 1000;
    if (s[i] != ';')
        return -1;
    i++;
    while (i < n && is_ows(s[i]))
        i++;
    /* weight = OWS ";" OWS "q=" qvalue: the only parameter a coding has */
    if (n - i < 2 || (s[i] != 'q' && s[i] != 'Q') || s[i + 1] != '=')
        return -1;
    return parse_qvalue(s + i + 2, n - i - 2);
}

static void keep_lowest(int *slot, int q)
{
    if (*slot < 0 || q < *slot)
        *slot = q;
}

void http_accept_enc_parse(struct http_accept_enc *a, const char *s, size_t n)
{
    a->present = true;
    size_t i = 0;
    while (i <= n) {
        size_t end = i;
        while (end < n && s[end] != ',')
            end++;
        size_t b = i, e = end;
        while (b < e && is_ows(s[b]))
            b++;
        while (e > b && is_ows(s[e - 1]))
            e--;
        struct str coding;
        int q = b < e ? parse_element(s + b, e - b, &coding) : -1; /* empty elements: skipped */
        if (q >= 0) {
            if (str_ieq_lit(coding, "gzip") || str_ieq_lit(coding, "x-gzip"))
                keep_lowest(&a->gzip, q);
            else if (str_ieq_lit(coding, "identity"))
                keep_lowest(&a->identity, q);
            else if (coding.len == 1 && coding.ptr[0] == '*')
                keep_lowest(&a->star, q);
        }
        i = end + 1;
    }
}

enum http_coding http_accept_enc_choose(const struct http_accept_enc *a, size_t len,
                                        size_t min_bytes)
{
    if (min_bytes == 0 || !a->present)
        return HTTP_CODING_IDENTITY; /* off, or no preference: nothing unasked for */
    int gz = a->gzip >= 0 ? a->gzip : a->star >= 0 ? a->star : 0;
    /* identity is acceptable unless refused, but when not named it is preferred least */
    int id = a->identity >= 0 ? a->identity : a->star >= 0 ? a->star : 1;
    if (gz == 0)
        return HTTP_CODING_IDENTITY;
    if (id == 0)
        return HTTP_CODING_GZIP;
    if (gz < id || len < min_bytes)
        return HTTP_CODING_IDENTITY;
    return HTTP_CODING_GZIP;
}

/* ---------------------------------------------------------------- responses */

/* application/json with or without parameters (the content type NULL means it too). */
static bool is_json(const char *ctype)
{
    static const char json[] = "application/json";
    if (!ctype)
        return true;
    if (strncasecmp(ctype, json, sizeof json - 1) != 0)
        return false;
    char next = ctype[sizeof json - 1];
    return next == '\0' || next == ';' || is_ows(next);
}

static struct http_compressor *loop_compressor(struct http_loop *hl)
{
    if (hl->zc)
        return hl->zc;
    struct http_compressor *z = calloc(1, sizeof *z);
    if (!z)
        return NULL;
    z->ld = libdeflate_alloc_compressor(GZIP_LEVEL);
    if (!z->ld) {
        free(z);
        return NULL;
    }
    buf_init(&z->out, 0);
    hl->zc = z;
    return z;
}

void http_compressor_free(struct http_compressor *z)
{
    if (!z)
        return;
    libdeflate_free_compressor(z->ld);
    buf_free(&z->out);
    free(z);
}

static void swap_data(struct buf *a, struct buf *b)
{
    struct buf t = *a;
    a->data = b->data;
    a->len = b->len;
    a->cap = b->cap;
    b->data = t.data;
    b->len = t.len;
    b->cap = t.cap;
}

enum http_body_coding http_compress_response(struct http_ctx *c, int status, const char *ctype,
                                             bool head_parsed)
{
    size_t min_bytes = (size_t)c->hl->cfg->compress_min_bytes;
    if (min_bytes == 0 || status == 204 || status == 304 || (status >= 100 && status < 200) ||
        !is_json(ctype))
        return HTTP_BODY_PLAIN;
    struct http_accept_enc a;
    http_accept_enc_init(&a);
    for (size_t i = 0; head_parsed && i < c->req.num_headers; i++) {
        const struct http_header *h = &c->req.headers[i];
        if (str_ieq_lit(h->name, "accept-encoding"))
            http_accept_enc_parse(&a, h->value.ptr, h->value.len);
    }
    if (c->body.len > COMPRESS_MAX_BYTES ||
        http_accept_enc_choose(&a, c->body.len, min_bytes) != HTTP_CODING_GZIP)
        return HTTP_BODY_NEGOTIATED;
    bool must = a.identity == 0 || (a.identity < 0 && a.star == 0);
    struct http_compressor *z = loop_compressor(c->hl);
    if (!z) {
        log_error("cannot allocate a gzip compressor: response sent uncompressed");
        return HTTP_BODY_NEGOTIATED;
    }
    size_t bound = libdeflate_gzip_compress_bound(z->ld, c->body.len);
    buf_reset(&z->out);
    if (buf_reserve(&z->out, bound) != 0)
        return HTTP_BODY_NEGOTIATED;
    size_t n = libdeflate_gzip_compress(z->ld, c->body.data, c->body.len, z->out.data, bound);
    if (n == 0 || (n >= c->body.len && !must))
        return HTTP_BODY_NEGOTIATED; /* it would not shrink: not worth the client's CPU */
    z->out.len = n;
    swap_data(&z->out, &c->body);
    /* the uncompressed body's buffer is the loop's next output buffer, unless it is big */
    buf_reset(&z->out);
    buf_shrink(&z->out, HTTP_KEEP_BUF);
    return HTTP_BODY_GZIP;
}
