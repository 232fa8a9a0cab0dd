/*
 * fuzz_http.c - libFuzzer harness for the HTTP/1.1 request parser and the
 * chunked decoder (src/http/parser.c).
 *
 *   clang -fsanitize=fuzzer,address,undefined -Isrc fuzz/fuzz_http.c \
 *         src/http/parser.c src/base/str.c -o fuzz_http
 *   ./fuzz_http -dict=fuzz/http.dict fuzz/corpus/http
 *
 * Input layout: byte 0 selects the mode and limits, byte 1 the split points,
 * the rest is a connection byte stream. Requests are parsed one after another
 * as a server would: head, then the body by Content-Length or through the
 * chunked decoder (fed in two pieces split at a point derived from the input
 * and compared with a one-call decode). Every copy handed to the code under
 * test is a heap block of exactly the input size, so ASan reports any read
 * past the end. Successful parses are checked against invariants, not just
 * "no crash".
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The harness's own code (copies, invariant checks, the driver) is not
 * instrumented for coverage: its comparisons were a tenth of the run time in
 * __sanitizer_cov_trace_*cmp* calls and its branches only added features that
 * say nothing about the parser. ASan and UBSan still apply to it.
 */
#ifdef __clang__
#define HARNESS __attribute__((no_sanitize("coverage")))
#else
#define HARNESS
#endif

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

HARNESS static char *dup_exact(const char *p, size_t n)
{
    char *b = malloc(n ? n : 1);
    if (!b)
        abort();
    if (n)
        memcpy(b, p, n);
    return b;
}

HARNESS static bool within(struct str s, const char *b, size_t n)
{
    return s.len == 0 || (s.ptr >= b && s.ptr + s.len <= b + n);
}

HARNESS static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

HARNESS static bool same_str(struct str a, struct str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

HARNESS static void check_request(const struct http_request *req, const char *b, size_t head,
                                  const struct http_limits *lim)
{
    CHECK(req->method_str.len > 0 && within(req->method_str, b, head));
    CHECK(req->method == http_method_from_str(req->method_str));
    const char *mname = http_method_name(req->method);
    if (req->method != HTTP_OTHER)
        CHECK(same_str(req->method_str, (struct str){mname, strlen(mname)}));
    else
        CHECK(strcmp(mname, "OTHER") == 0);
    for (size_t i = 0; i < req->method_str.len; i++)
        CHECK(is_tchar((unsigned char)req->method_str.ptr[i]));
    CHECK(req->target.len > 0 && within(req->target, b, head));
    for (size_t i = 0; i < req->target.len; i++) {
        unsigned char c = (unsigned char)req->target.ptr[i];
        CHECK(c > 0x20 && c < 0x7F && c != '#');
    }
    CHECK(req->path.len > 0);
    if (req->path.ptr[0] == '*') {
        CHECK(req->path.len == 1 && req->method == HTTP_OPTIONS && req->query.len == 0);
    } else {
        CHECK(req->path.ptr[0] == '/');
        /* only the static "/" of an absolute-form target may lie outside */
        CHECK(within(req->path, b, head) || (req->path.len == 1 && req->target.ptr[0] != '/'));
    }
    CHECK(within(req->query, b, head));
    if (req->query.ptr)
        CHECK(req->query.ptr > b && req->query.ptr[-1] == '?');
    CHECK(req->minor_version == 0 || req->minor_version == 1);
    CHECK(req->num_headers <= lim->max_headers);
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        CHECK(h->name.len > 0 && within(h->name, b, head) && within(h->value, b, head));
        for (size_t j = 0; j < h->name.len; j++)
            CHECK(is_tchar((unsigned char)h->name.ptr[j]));
        for (size_t j = 0; j < h->value.len; j++) {
            unsigned char c = (unsigned char)h->value.ptr[j];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7F));
        }
        if (h->value.len) {
            CHECK(h->value.ptr[0] != ' ' && h->value.ptr[0] != '\t');
            CHECK(h->value.ptr[h->value.len - 1] != ' ' && h->value.ptr[h->value.len - 1] != '\t');
        }
        if (i < 8) { /* header_get finds this field or an earlier one of the same name */
            char name[64];
            if (h->name.len < sizeof(name)) {
                memcpy(name, h->name.ptr, h->name.len);
                name[h->name.len] = '\0';
                struct str v;
                CHECK(http_header_get(req, name, &v));
                CHECK(v.ptr <= h->value.ptr && within(v, b, head));
            }
        }
    }
    struct str v;
    bool has = http_header_get(req, "Host", &v);
    if (req->minor_version == 1)
        CHECK(has);
    if (req->target.ptr[0] == '/' && has)
        CHECK(same_str(v, req->host));
    if (http_header_get(req, "content-type", &v))
        CHECK(same_str(v, req->content_type));
    else
        CHECK(req->content_type.len == 0);
    if (http_header_get(req, "AUTHORIZATION", &v))
        CHECK(same_str(v, req->authorization));
    if (http_header_get(req, "x-request-id", &v))
        CHECK(same_str(v, req->request_id));
    bool has_cl = http_header_get(req, "content-length", &v);
    bool has_te = http_header_get(req, "transfer-encoding", &v);
    CHECK(!(has_cl && has_te));
    switch (req->body_kind) {
    case HTTP_BODY_NONE:
        CHECK(!has_cl && !has_te && req->content_length == 0);
        break;
    case HTTP_BODY_LENGTH:
        CHECK(has_cl && req->content_length <= lim->max_body);
        break;
    case HTTP_BODY_CHUNKED:
        CHECK(has_te && req->minor_version == 1);
        break;
    }
    if (req->expect_continue)
        CHECK(req->minor_version == 1);
}

struct dec {
    ssize_t r;
    int status;
    char *out;
    size_t out_len;
    size_t left; /* leftover bytes counted from the end of the stream */
};

/*
 * Decode s[0..n) as a chunked body in pieces [0,cut) and [cut,n) (cut == n:
 * one call), each an exact heap copy, as a connection would.
 */
HARNESS static void decode(const char *s, size_t n, size_t cut, uint64_t max_body, size_t max_hdr,
                           struct dec *o)
{
    struct http_chunked d;
    memset(&d, 0, sizeof(d));
    o->r = -2;
    o->status = 0;
    o->out = malloc(n ? n : 1);
    o->out_len = 0;
    o->left = 0;
    size_t start = 0;
    for (int piece = 0; piece < 2; piece++) {
        size_t stop = piece == 0 ? cut : n;
        if (piece == 1 && cut == n)
            break;
        size_t plen = stop - start;
        char *b = dup_exact(s + start, plen);
        size_t len = plen;
        ssize_t r = http_chunked_decode(&d, b, &len, max_body, max_hdr, &o->status);
        CHECK(len <= plen);
        memcpy(o->out + o->out_len, b, len);
        o->out_len += len;
        CHECK(o->out_len <= max_body);
        if (r >= 0) {
            CHECK((size_t)r <= plen - len);
            /* leftover must be the bytes right after the body end */
            CHECK(r == 0 || memcmp(b + len, s + stop - (size_t)r, (size_t)r) == 0);
            o->left = (size_t)r + (n - stop);
            o->r = r;
            /* once complete, whatever is passed next is leftover */
            size_t again = plen;
            int st = 0;
            CHECK(http_chunked_decode(&d, b, &again, max_body, max_hdr, &st) == (ssize_t)plen);
            CHECK(again == 0);
            free(b);
            return;
        }
        CHECK(r == -1 || r == -2);
        if (r == -1) {
            CHECK(o->status == 400 || o->status == 413 || o->status == 431);
            o->r = -1;
            /* the error is sticky */
            size_t again = plen;
            int st = 0;
            CHECK(http_chunked_decode(&d, b, &again, max_body, max_hdr, &st) == -1);
            CHECK(st == o->status);
            free(b);
            return;
        }
        free(b);
        start = stop;
    }
}

/* Decode one way and the split way; both must agree. Returns leftover or -1. */
HARNESS static ssize_t run_chunked(const char *s, size_t n, size_t cut, uint64_t max_body,
                                   size_t max_hdr)
{
    struct dec a, b;
    decode(s, n, n, max_body, max_hdr, &a);
    decode(s, n, cut, max_body, max_hdr, &b);
    CHECK((a.r >= 0) == (b.r >= 0) && (a.r == -1) == (b.r == -1));
    if (a.r == -1)
        CHECK(a.status == b.status);
    if (a.r >= 0)
        CHECK(a.left == b.left);
    /* same decoded bytes (on error the split run may have decoded a bit more or less) */
    if (a.r != -1) {
        CHECK(a.out_len == b.out_len);
        CHECK(a.out_len == 0 || memcmp(a.out, b.out, a.out_len) == 0);
    }
    ssize_t ret = a.r >= 0 ? (ssize_t)a.left : -1;
    free(a.out);
    free(b.out);
    return ret;
}

HARNESS int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t cfg = data[0], sp = data[1];
    const char *stream = (const char *)data + 2;
    size_t n_stream = size - 2;

    struct http_limits lim = {16384, 100, 1u << 20};
    if (cfg & 1) { /* small limits to reach 431 / 413 */
        lim.max_header_bytes = 32 + (size_t)(cfg >> 1) * 8;
        lim.max_headers = (size_t)(cfg >> 4);
        lim.max_body = (uint64_t)(cfg >> 2);
    }

    if ((cfg & 0x06) == 0x06) { /* raw mode: the stream is a chunked body */
        run_chunked(stream, n_stream, (size_t)sp * 0x9E37u % (n_stream + 1), lim.max_body,
                    lim.max_header_bytes);
        return 0;
    }

    size_t cap = lim.max_headers ? lim.max_headers : 1;
    struct http_header *hdrs = malloc(cap * sizeof(*hdrs));
    struct http_header *hdrs2 = malloc(cap * sizeof(*hdrs2));
    size_t off = 0;
    for (unsigned iter = 0; off < n_stream && iter < 32; iter++) {
        size_t n = n_stream - off;
        char *b = dup_exact(stream + off, n);
        struct http_request req;
        req.headers = hdrs;
        int st = 0;
        int r = http_parse_request(b, n, &lim, &req, &st);
        if (r == -2) {
            CHECK(n < lim.max_header_bytes);
            free(b);
            break;
        }
        if (r == -1) {
            CHECK(st == 400 || st == 413 || st == 417 || st == 431 || st == 501 || st == 505);
            free(b);
            break;
        }
        CHECK(r > 0 && (size_t)r <= n && (size_t)r <= lim.max_header_bytes);
        size_t head = (size_t)r;
        CHECK(b[head - 2] == '\r' && b[head - 1] == '\n');
        check_request(&req, b, head, &lim);

        /* the exact head parses the same; a proper prefix of it is incomplete */
        char *h = dup_exact(b, head);
        struct http_request req2;
        req2.headers = hdrs2;
        int st2 = 0;
        CHECK(http_parse_request(h, head, &lim, &req2, &st2) == r);
        CHECK(req2.num_headers == req.num_headers && req2.body_kind == req.body_kind &&
              req2.content_length == req.content_length && req2.keep_alive == req.keep_alive &&
              req2.expect_continue == req.expect_continue && req2.method == req.method &&
              req2.path.len == req.path.len && req2.host.len == req.host.len);
        free(h);
        size_t k = ((size_t)sp * 131u + iter * 7u) % head;
        h = dup_exact(b, k);
        st2 = 0;
        CHECK(http_parse_request(h, k, &lim, &req2, &st2) == -2 && st2 == 0);
        free(h);
        free(b);

        off += head;
        if (req.body_kind == HTTP_BODY_LENGTH) {
            if (req.content_length > n_stream - off)
                break;
            off += (size_t)req.content_length;
        } else if (req.body_kind == HTTP_BODY_CHUNKED) {
            size_t rest = n_stream - off;
            ssize_t left =
                run_chunked(stream + off, rest, ((size_t)sp * 0x9E37u + iter) % (rest + 1),
                            lim.max_body, lim.max_header_bytes);
            if (left < 0)
                break;
            off = n_stream - (size_t)left;
        }
    }
    free(hdrs);
    free(hdrs2);
    return 0;
}
