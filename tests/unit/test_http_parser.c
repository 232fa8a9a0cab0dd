/*
 * test_http_parser.c - unit tests for the strict HTTP/1.1 request parser and
 * the chunked decoder (src/http/parser.c).
 *
 * Every input is copied so that it ends exactly at a PROT_NONE page: any read
 * past the end of the input faults at once (picohttpparser test.c style).
 * Valid requests are checked field by field; every rejection is checked for
 * its status; every proper prefix of valid requests must be "incomplete".
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http/parser.h"
#include "test.h"

/* ---- guard page -------------------------------------------------------- */

static char *guard_region; /* guard_span writable bytes, then a PROT_NONE page */
static size_t guard_span;

static void guard_init(void)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    guard_span = 64 * pg;
    char *m =
        mmap(NULL, guard_span + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + guard_span, pg, PROT_NONE) != 0) {
        perror("guard page");
        exit(2);
    }
    guard_region = m;
}

/* Copy n bytes so that they end exactly at the guard page; returns the copy. */
static char *guard_place(const void *src, size_t n)
{
    if (n > guard_span) {
        fprintf(stderr, "input too large for the guard region\n");
        exit(2);
    }
    char *p = guard_region + guard_span - n;
    if (n)
        memcpy(p, src, n);
    return p;
}

/* ---- helpers ----------------------------------------------------------- */

static const struct http_limits def_lim = {16384, 100, 8u << 20};

static struct http_header hdr_store[512];
static const char *last_buf; /* where the last parse() placed its input */

static int parse_lim(const char *raw, size_t n, const struct http_limits *lim,
                     struct http_request *req, int *status)
{
    memset(req, 0xA5, sizeof(*req)); /* garbage: the parser must set every field */
    req->headers = hdr_store;
    *status = 0;
    last_buf = guard_place(raw, n);
    return http_parse_request(last_buf, n, lim, req, status);
}

static int parse(const char *raw, struct http_request *req, int *status)
{
    return parse_lim(raw, strlen(raw), &def_lim, req, status);
}

static bool str_is(struct str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

/* A slice is either empty or lies inside buf[0..n). */
static bool in_buf(struct str s, const char *buf, size_t n)
{
    return s.len == 0 || (s.ptr >= buf && s.ptr + s.len <= buf + n);
}

static const char *show(struct str s)
{
    static char tmp[4][256];
    static int k;
    char *t = tmp[k++ & 3];
    if (!s.ptr) {
        snprintf(t, 256, "(null)");
        return t;
    }
    snprintf(t, 256, "\"%.*s\"", (int)(s.len < 200 ? s.len : 200), s.ptr);
    return t;
}

/* ---- valid requests, every field checked ---------------------------------- */

struct hv {
    const char *name, *value;
};

struct valid_case {
    const char *label;
    const char *raw;
    size_t head_len; /* 0: strlen(raw) */
    enum http_method method;
    const char *method_str, *target, *path;
    const char *query; /* NULL: absent (ptr NULL, len 0) */
    int minor;
    enum http_body_kind body;
    uint64_t cl;
    bool keep_alive, expect;
    const char *host, *ctype, *auth, *reqid; /* NULL: absent (len 0) */
    bool static_path;                        /* path is the static "/" */
    struct hv hdrs[12];                      /* up to {NULL} */
};

static const struct valid_case valid_cases[] = {
    {.label = "simple GET",
     .raw = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "/",
     .path = "/",
     .minor = 1,
     .keep_alive = true,
     .host = "example.com",
     .hdrs = {{"Host", "example.com"}}},
    {.label = "POST with body and common headers",
     .raw = "POST /users?x=1&y=2 HTTP/1.1\r\n"
            "host: api.local:8080\r\n"
            "Content-Type: application/json\r\n"
            "content-length: 13\r\n"
            "Authorization: Bearer abc.def\r\n"
            "X-Request-Id: req-42\r\n"
            "Connection: close\r\n"
            "\r\n"
            "{\"name\":\"a\"}\n",
     .head_len = 178,
     .method = HTTP_POST,
     .method_str = "POST",
     .target = "/users?x=1&y=2",
     .path = "/users",
     .query = "x=1&y=2",
     .minor = 1,
     .body = HTTP_BODY_LENGTH,
     .cl = 13,
     .keep_alive = false,
     .host = "api.local:8080",
     .ctype = "application/json",
     .auth = "Bearer abc.def",
     .reqid = "req-42",
     .hdrs = {{"host", "api.local:8080"},
              {"Content-Type", "application/json"},
              {"content-length", "13"},
              {"Authorization", "Bearer abc.def"},
              {"X-Request-Id", "req-42"},
              {"Connection", "close"}}},
    {.label = "HTTP/1.0 without Host, keep-alive",
     .raw = "GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "/health",
     .path = "/health",
     .minor = 0,
     .keep_alive = true,
     .hdrs = {{"Connection", "Keep-Alive"}}},
    {.label = "HTTP/1.0 defaults to close",
     .raw = "HEAD /x HTTP/1.0\r\nHost: h\r\n\r\n",
     .method = HTTP_HEAD,
     .method_str = "HEAD",
     .target = "/x",
     .path = "/x",
     .minor = 0,
     .keep_alive = false,
     .host = "h",
     .hdrs = {{"Host", "h"}}},
    {.label = "HTTP/1.0 close beats keep-alive",
     .raw = "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "/",
     .path = "/",
     .minor = 0,
     .keep_alive = false,
     .hdrs = {{"Connection", "keep-alive, close"}}},
    {.label = "chunked, case-insensitive",
     .raw = "PUT /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n",
     .method = HTTP_PUT,
     .method_str = "PUT",
     .target = "/a",
     .path = "/a",
     .minor = 1,
     .body = HTTP_BODY_CHUNKED,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}, {"Transfer-Encoding", "Chunked"}}},
    {.label = "TE with HTAB OWS is legal",
     .raw = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\t \r\n\r\n",
     .method = HTTP_POST,
     .method_str = "POST",
     .target = "/",
     .path = "/",
     .minor = 1,
     .body = HTTP_BODY_CHUNKED,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}, {"Transfer-Encoding", "chunked"}}},
    {.label = "OPTIONS *",
     .raw = "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = HTTP_OPTIONS,
     .method_str = "OPTIONS",
     .target = "*",
     .path = "*",
     .minor = 1,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}}},
    {.label = "absolute-form: host from authority",
     .raw = "GET http://example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "http://example.com:8080/a/b?x=1",
     .path = "/a/b",
     .query = "x=1",
     .minor = 1,
     .keep_alive = true,
     .host = "example.com:8080",
     .hdrs = {{"Host", "example.com"}}},
    {.label = "absolute-form without path",
     .raw = "DELETE http://h HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = HTTP_DELETE,
     .method_str = "DELETE",
     .target = "http://h",
     .path = "/",
     .static_path = true,
     .minor = 1,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}}},
    {.label = "absolute-form HTTPS scheme, query without path",
     .raw = "GET HTTPS://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "HTTPS://h?q=1",
     .path = "/",
     .query = "q=1",
     .static_path = true,
     .minor = 1,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}}},
    {.label = "one leading CRLF skipped",
     .raw = "\r\nGET /p HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "/p",
     .path = "/p",
     .minor = 1,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}}},
    {.label = "Expect 100-continue",
     .raw = "POST /o HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nExpect: 100-Continue\r\n\r\n",
     .method = HTTP_POST,
     .method_str = "POST",
     .target = "/o",
     .path = "/o",
     .minor = 1,
     .body = HTTP_BODY_LENGTH,
     .cl = 0,
     .keep_alive = true,
     .expect = true,
     .host = "h",
     .hdrs = {{"Host", "h"}, {"Content-Length", "0"}, {"Expect", "100-Continue"}}},
    {.label = "HTTP/1.2 served as 1.1 (RFC 9110 2.5)",
     .raw = "GET /v HTTP/1.2\r\nHost: h\r\n\r\n",
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "/v",
     .path = "/v",
     .minor = 1,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}}},
    {.label = "Expect 100-continue ignored in 1.0",
     .raw = "POST /o HTTP/1.0\r\nContent-Length: 007\r\nExpect: 100-continue\r\n\r\n",
     .method = HTTP_POST,
     .method_str = "POST",
     .target = "/o",
     .path = "/o",
     .minor = 0,
     .body = HTTP_BODY_LENGTH,
     .cl = 7,
     .keep_alive = false,
     .expect = false,
     .hdrs = {{"Content-Length", "007"}, {"Expect", "100-continue"}}},
    {.label = "empty query, values trimmed, obs-text, empty values",
     .raw = "PATCH /a%20b/{x}|y? HTTP/1.1\r\n"
            "Host: h\r\n"
            "X-Obs: caf\xc3\xa9 \t au  lait\t\r\n"
            "X-Empty:\r\n"
            "X-Blank: \t \r\n"
            "X!#$%&'*+-.^_`|~9:v\r\n"
            "\r\n",
     .method = HTTP_PATCH,
     .method_str = "PATCH",
     .target = "/a%20b/{x}|y?",
     .path = "/a%20b/{x}|y",
     .query = "",
     .minor = 1,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"},
              {"X-Obs", "caf\xc3\xa9 \t au  lait"},
              {"X-Empty", ""},
              {"X-Blank", ""},
              {"X!#$%&'*+-.^_`|~9", "v"}}},
    {.label = "unknown and lowercase methods are HTTP_OTHER",
     .raw = "get / HTTP/1.1\r\nHost: h\r\n\r\n",
     .method = HTTP_OTHER,
     .method_str = "get",
     .target = "/",
     .path = "/",
     .minor = 1,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}}},
    {.label = "Connection list with empty elements and close",
     .raw = "GET / HTTP/1.1\r\nHost: h\r\nConnection: ,, Upgrade ,CLOSE,\r\n\r\n",
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "/",
     .path = "/",
     .minor = 1,
     .keep_alive = false,
     .host = "h",
     .hdrs = {{"Host", "h"}, {"Connection", ",, Upgrade ,CLOSE,"}}},
    {.label = "Connection keep-alive in 1.1",
     .raw = "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\r\n",
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "/",
     .path = "/",
     .minor = 1,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}, {"Connection", "keep-alive, Upgrade"}}},
    {.label = "empty Host, duplicate X-Request-Id keeps first",
     .raw = "GET / HTTP/1.1\r\nHost:\r\nX-Request-Id: a\r\nx-request-id: b\r\n\r\n",
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "/",
     .path = "/",
     .minor = 1,
     .keep_alive = true,
     .host = "",
     .reqid = "a",
     .hdrs = {{"Host", ""}, {"X-Request-Id", "a"}, {"x-request-id", "b"}}},
    {.label = "IPv6 Host, CL at max_body, trailing OWS in CL",
     .raw = "POST / HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 8388608 \r\n\r\n",
     .method = HTTP_POST,
     .method_str = "POST",
     .target = "/",
     .path = "/",
     .minor = 1,
     .body = HTTP_BODY_LENGTH,
     .cl = 8388608,
     .keep_alive = true,
     .host = "[::1]:8080",
     .hdrs = {{"Host", "[::1]:8080"}, {"Content-Length", "8388608"}}},
    {.label = "not a TE header: Transfer_Encoding",
     .raw = "POST / HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\n\r\n",
     .method = HTTP_POST,
     .method_str = "POST",
     .target = "/",
     .path = "/",
     .minor = 1,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}, {"Transfer_Encoding", "chunked"}}},
    {.label = "pipelined: only the first head",
     .raw = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
     .head_len = 28,
     .method = HTTP_GET,
     .method_str = "GET",
     .target = "/1",
     .path = "/1",
     .minor = 1,
     .keep_alive = true,
     .host = "h",
     .hdrs = {{"Host", "h"}}},
};

static void check_valid(const struct valid_case *c)
{
    struct http_request req;
    int status;
    size_t n = strlen(c->raw);
    size_t head = c->head_len ? c->head_len : n;
    int r = parse(c->raw, &req, &status);
    const char *b = last_buf;

    ok(r == (int)head, "%s: returns %d, want %zu (status %d)", c->label, r, head, status);
    if (r < 0)
        return;
    ok(req.method == c->method, "%s: method %d", c->label, req.method);
    ok(str_is(req.method_str, c->method_str), "%s: method_str %s", c->label, show(req.method_str));
    ok(str_is(req.target, c->target), "%s: target %s", c->label, show(req.target));
    ok(str_is(req.path, c->path), "%s: path %s", c->label, show(req.path));
    if (c->query)
        ok(str_is(req.query, c->query) && req.query.ptr != NULL, "%s: query %s", c->label,
           show(req.query));
    else
        ok(req.query.len == 0 && req.query.ptr == NULL, "%s: query absent %s", c->label,
           show(req.query));
    ok(req.minor_version == c->minor, "%s: minor %d", c->label, req.minor_version);
    ok(req.body_kind == c->body, "%s: body_kind %d", c->label, req.body_kind);
    ok(req.content_length == c->cl, "%s: content_length %llu", c->label,
       (unsigned long long)req.content_length);
    ok(req.keep_alive == c->keep_alive, "%s: keep_alive %d", c->label, req.keep_alive);
    ok(req.expect_continue == c->expect, "%s: expect %d", c->label, req.expect_continue);
    ok(str_is(req.host, c->host ? c->host : ""), "%s: host %s", c->label, show(req.host));
    ok(str_is(req.content_type, c->ctype ? c->ctype : ""), "%s: content_type %s", c->label,
       show(req.content_type));
    ok(str_is(req.authorization, c->auth ? c->auth : ""), "%s: authorization %s", c->label,
       show(req.authorization));
    ok(str_is(req.request_id, c->reqid ? c->reqid : ""), "%s: request_id %s", c->label,
       show(req.request_id));

    size_t nh = 0;
    while (nh < 12 && c->hdrs[nh].name)
        nh++;
    ok(req.num_headers == nh, "%s: num_headers %zu want %zu", c->label, req.num_headers, nh);
    for (size_t i = 0; i < nh && i < req.num_headers; i++) {
        ok(str_is(req.headers[i].name, c->hdrs[i].name), "%s: header %zu name %s", c->label, i,
           show(req.headers[i].name));
        ok(str_is(req.headers[i].value, c->hdrs[i].value), "%s: header %zu value %s", c->label, i,
           show(req.headers[i].value));
        ok(in_buf(req.headers[i].name, b, head) && in_buf(req.headers[i].value, b, head),
           "%s: header %zu inside the buffer", c->label, i);
    }

    /* zero-copy: every slice points into the head (the static "/" excepted) */
    ok(in_buf(req.method_str, b, head) && in_buf(req.target, b, head) &&
           in_buf(req.query, b, head) && in_buf(req.content_type, b, head) &&
           in_buf(req.authorization, b, head) && in_buf(req.request_id, b, head) &&
           in_buf(req.host, b, head),
       "%s: slices inside the buffer", c->label);
    if (c->static_path)
        ok(!in_buf(req.path, b, head) && str_is(req.path, "/"), "%s: static path", c->label);
    else
        ok(in_buf(req.path, b, head), "%s: path inside the buffer", c->label);

    struct str v;
    if (nh) {
        ok(http_header_get(&req, c->hdrs[0].name, &v) && str_is(v, c->hdrs[0].value),
           "%s: header_get first", c->label);
    }
}

/* ---- rejections ---------------------------------------------------------- */

struct bad_case {
    const char *label;
    const char *raw;
    size_t len; /* raw may hold NUL bytes */
    int status;
};

#define B(label, raw, status)                                                                      \
    {                                                                                              \
        label, raw, sizeof(raw) - 1, status                                                        \
    }

#define H "Host: h\r\n"

static const struct bad_case bad_cases[] = {
    /* request line */
    B("two SP after method", "GET  / HTTP/1.1\r\n" H "\r\n", 400),
    B("two SP before version", "GET /  HTTP/1.1\r\n" H "\r\n", 400),
    B("SP after version", "GET / HTTP/1.1 \r\n" H "\r\n", 400),
    B("leading SP", " GET / HTTP/1.1\r\n" H "\r\n", 400),
    B("HTAB separator", "GET\t/ HTTP/1.1\r\n" H "\r\n", 400),
    B("empty method", " / HTTP/1.1\r\n" H "\r\n", 400),
    B("non-tchar in method", "G@T / HTTP/1.1\r\n" H "\r\n", 400),
    B("lowercase http", "GET / http/1.1\r\n" H "\r\n", 400),
    B("HTTP/2.0", "GET / HTTP/2.0\r\n" H "\r\n", 505),
    B("HTTP/1.9 without Host (served as 1.1)", "GET / HTTP/1.9\r\n\r\n", 400),
    B("HTTP/0.9 version", "GET / HTTP/0.9\r\n" H "\r\n", 505),
    B("HTTP/1.10", "GET / HTTP/1.10\r\n" H "\r\n", 400),
    B("HTTP/11.1", "GET / HTTP/11.1\r\n" H "\r\n", 400),
    B("HTTP/1", "GET / HTTP/1\r\n" H "\r\n", 400),
    B("HTTP/1.x", "GET / HTTP/1.x\r\n" H "\r\n", 400),
    B("no version", "GET /\r\n" H "\r\n", 400),
    B("bare LF after version", "GET / HTTP/1.1\n" H "\r\n", 400),
    B("bare CR after version", "GET / HTTP/1.1\rHost: h\r\n\r\n", 400),
    B("two leading CRLF", "\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", 400),
    B("leading bare LF", "\nGET / HTTP/1.1\r\n" H "\r\n", 400),
    B("leading bare CR", "\rGET / HTTP/1.1\r\n" H "\r\n", 400),
    B("fragment in target", "GET /a#b HTTP/1.1\r\n" H "\r\n", 400),
    B("DEL in target", "GET /a\x7f HTTP/1.1\r\n" H "\r\n", 400),
    B("obs-text in target", "GET /caf\xc3\xa9 HTTP/1.1\r\n" H "\r\n", 400),
    B("HTAB in target", "GET /a\tb HTTP/1.1\r\n" H "\r\n", 400),
    B("CTL in target", "GET /a\x01 HTTP/1.1\r\n" H "\r\n", 400),
    B("* for GET", "GET * HTTP/1.1\r\n" H "\r\n", 400),
    B("*x for OPTIONS", "OPTIONS *x HTTP/1.1\r\n" H "\r\n", 400),
    B("authority-form", "CONNECT example.com:443 HTTP/1.1\r\n" H "\r\n", 400),
    B("relative target", "GET a/b HTTP/1.1\r\n" H "\r\n", 400),
    B("empty authority", "GET http:///x HTTP/1.1\r\n" H "\r\n", 400),
    B("scheme only", "GET http:// HTTP/1.1\r\n" H "\r\n", 400),
    B("userinfo", "GET http://u@h/ HTTP/1.1\r\n" H "\r\n", 400),
    B("ftp scheme", "GET ftp://h/ HTTP/1.1\r\n" H "\r\n", 400),
    B("http:/ single slash", "GET http:/h HTTP/1.1\r\n" H "\r\n", 400),
    /* field lines */
    B("bare CR in value", "GET / HTTP/1.1\r\n" H "X: a\rb\r\n\r\n", 400),
    B("bare LF ends field", "GET / HTTP/1.1\r\n" H "X: a\nY: b\r\n\r\n", 400),
    B("bare LF ends head", "GET / HTTP/1.1\r\n" H "X: a\r\n\n", 400),
    B("bare LF only line ends", "GET / HTTP/1.1\nHost: h\n\n", 400),
    B("CR CR LF", "GET / HTTP/1.1\r\n" H "X: a\r\r\n\r\n", 400),
    B("final CR without LF", "GET / HTTP/1.1\r\n" H "\rX", 400),
    B("NUL in value",
      "GET / HTTP/1.1\r\n" H "X: a\x00"
      "b\r\n\r\n",
      400),
    B("CTL in value", "GET / HTTP/1.1\r\n" H "X: \x01\r\n\r\n", 400),
    B("VT in value",
      "GET / HTTP/1.1\r\n" H "X: a\x0b"
      "b\r\n\r\n",
      400),
    B("DEL in value", "GET / HTTP/1.1\r\n" H "X: a\x7f\r\n\r\n", 400),
    B("DEL in long value", "GET / HTTP/1.1\r\n" H "X: abcdefghijklmnop\x7fqrstuvwxyz\r\n\r\n", 400),
    B("NUL in long value", "GET / HTTP/1.1\r\n" H "X: abcdefghijklmnopq\x00rstuvwxyz\r\n\r\n", 400),
    B("obs-fold SP", "GET / HTTP/1.1\r\n" H "X: a\r\n b\r\n\r\n", 400),
    B("obs-fold HTAB", "GET / HTTP/1.1\r\n" H "X: a\r\n\tb\r\n\r\n", 400),
    B("SP line after request line", "GET / HTTP/1.1\r\n " H "\r\n", 400),
    B("empty header name", "GET / HTTP/1.1\r\n" H ": v\r\n\r\n", 400),
    B("missing colon", "GET / HTTP/1.1\r\n" H "Foo\r\n\r\n", 400),
    B("missing colon with value", "GET / HTTP/1.1\r\n" H "Foo bar\r\n\r\n", 400),
    B("SP before colon", "GET / HTTP/1.1\r\n" H "X : v\r\n\r\n", 400),
    B("TE with SP before colon", "POST / HTTP/1.1\r\n" H "Transfer-Encoding : chunked\r\n\r\n",
      400),
    B("HTAB before colon", "GET / HTTP/1.1\r\n" H "X\t: v\r\n\r\n", 400),
    B("non-tchar in name", "GET / HTTP/1.1\r\n" H "X(y): v\r\n\r\n", 400),
    B("NUL in name", "GET / HTTP/1.1\r\n" H "X\x00: v\r\n\r\n", 400),
    B("obs-text in name", "GET / HTTP/1.1\r\n" H "X\xc3\xa9: v\r\n\r\n", 400),
    /* Host */
    B("1.1 without Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
    B("1.1 without any header", "GET / HTTP/1.1\r\n\r\n", 400),
    B("duplicate Host equal", "GET / HTTP/1.1\r\nHost: h\r\nhost: h\r\n\r\n", 400),
    B("duplicate Host different", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    B("1.0 duplicate Host", "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    B("Host with SP", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    B("Host with HTAB", "GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", 400),
    B("Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    B("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    B("Host IPv6 unclosed", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    B("Host IPv6 unopened", "GET / HTTP/1.1\r\nHost: ::1]\r\n\r\n", 400),
    B("Host IPv6 junk after", "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 400),
    B("Host IPv6 two ports", "GET / HTTP/1.1\r\nHost: [::1]:80:80\r\n\r\n", 400),
    B("Host two ports", "GET / HTTP/1.1\r\nHost: x:80:80\r\n\r\n", 400),
    B("Host port not digits", "GET / HTTP/1.1\r\nHost: x:port\r\n\r\n", 400),
    B("Host port only", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
    B("Host empty brackets", "GET / HTTP/1.1\r\nHost: []\r\n\r\n", 400),
    B("Host with obs-text", "GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", 400),
    /* Content-Length */
    B("CL +5", "POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\n", 400),
    B("CL -5", "POST / HTTP/1.1\r\n" H "Content-Length: -5\r\n\r\n", 400),
    B("CL -48", "POST / HTTP/1.1\r\n" H "Content-Length: -48\r\n\r\n", 400),
    B("CL 0x5", "POST / HTTP/1.1\r\n" H "Content-Length: 0x5\r\n\r\n", 400),
    B("CL 1Z", "POST / HTTP/1.1\r\n" H "Content-Length: 1Z\r\n\r\n", 400),
    B("CL inner space", "POST / HTTP/1.1\r\n" H "Content-Length: 1 2\r\n\r\n", 400),
    B("CL empty", "POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", 400),
    B("CL blank", "POST / HTTP/1.1\r\n" H "Content-Length:  \r\n\r\n", 400),
    B("CL comma list", "POST / HTTP/1.1\r\n" H "Content-Length: 5, 5\r\n\r\n", 400),
    B("CL 5.0", "POST / HTTP/1.1\r\n" H "Content-Length: 5.0\r\n\r\n", 400),
    B("CL duplicate equal",
      "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
    B("CL duplicate different",
      "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\ncontent-length: 6\r\n\r\n", 400),
    B("CL overflow", "POST / HTTP/1.1\r\n" H "Content-Length: 99999999999999999999999\r\n\r\n",
      400),
    B("CL INT64_MAX+1", "POST / HTTP/1.1\r\n" H "Content-Length: 9223372036854775808\r\n\r\n", 400),
    B("CL UINT64_MAX+1", "POST / HTTP/1.1\r\n" H "Content-Length: 18446744073709551616\r\n\r\n",
      400),
    B("CL INT64_MAX too large",
      "POST / HTTP/1.1\r\n" H "Content-Length: 9223372036854775807\r\n\r\n", 413),
    B("CL max_body+1", "POST / HTTP/1.1\r\n" H "Content-Length: 8388609\r\n\r\n", 413),
    /* Transfer-Encoding */
    B("CL and TE",
      "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    B("TE and CL",
      "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
    B("TE and bad CL",
      "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\nContent-Length: x\r\n\r\n", 400),
    B("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    B("TE gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\n", 400),
    B("TE identity", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: identity\r\n\r\n", 400),
    B("TE xchunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: xchunked\r\n\r\n", 400),
    B("TE chunkedx", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunkedx\r\n\r\n", 400),
    B("TE chunked, chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, chunked\r\n\r\n",
      501),
    B("TE chunked, identity",
      "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, identity\r\n\r\n", 400),
    B("TE gzip, chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    B("TE chunked with param", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked;q=1\r\n\r\n",
      400),
    B("TE quoted param",
      "POST / HTTP/1.1\r\n" H "Transfer-Encoding: x; a=\"b,c\" , chunked\r\n\r\n", 501),
    B("TE duplicate fields",
      "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
      501),
    B("TE duplicate fields gzip",
      "POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    B("TE ,chunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: ,chunked\r\n\r\n", 400),
    B("TE chunked,", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked,\r\n\r\n", 400),
    B("TE chunked,,gzip", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked,,gzip\r\n\r\n", 400),
    B("TE empty", "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\r\n\r\n", 400),
    B("TE chu nked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chu nked\r\n\r\n", 400),
    B("TE quoted", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: \"chunked\"\r\n\r\n", 400),
    B("TE empty param", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked;\r\n\r\n", 400),
    B("TE param without value", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked;a\r\n\r\n",
      400),
    B("TE unterminated quote", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: x;a=\"b\r\n\r\n", 400),
    B("TE vertical tab",
      "POST / HTTP/1.1\r\n" H "Transfer-Encoding: \x0b"
      "chunked\r\n\r\n",
      400),
    B("TE bad + good field",
      "POST / HTTP/1.1\r\n" H "Transfer-Encoding: ,\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    /* Connection, Expect, singletons */
    B("Connection non-token", "GET / HTTP/1.1\r\n" H "Connection: close x\r\n\r\n", 400),
    B("duplicate Content-Type",
      "POST / HTTP/1.1\r\n" H "Content-Type: a/b\r\nContent-Type: c/d\r\n\r\n", 400),
    B("duplicate Authorization",
      "GET / HTTP/1.1\r\n" H "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n", 400),
    B("Expect other", "POST / HTTP/1.1\r\n" H "Expect: foo\r\n\r\n", 417),
    B("Expect 100-continueX", "POST / HTTP/1.1\r\n" H "Expect: 100-continueX\r\n\r\n", 417),
    B("Expect empty", "POST / HTTP/1.1\r\n" H "Expect:\r\n\r\n", 417),
    B("Expect in 1.0", "POST / HTTP/1.0\r\nExpect: 200-ok\r\n\r\n", 417),
    B("Expect + CL too large: 413 first",
      "POST / HTTP/1.1\r\n" H "Expect: x\r\nContent-Length: 9999999999\r\n\r\n", 413),
};

static void check_bad(const struct bad_case *c)
{
    struct http_request req;
    int status;
    int r = parse_lim(c->raw, c->len, &def_lim, &req, &status);
    ok(r == -1 && status == c->status, "%s: returns %d status %d, want -1 / %d", c->label, r,
       status, c->status);

    /* A prefix is either incomplete or already rejected with the same status. */
    for (size_t k = 0; k < c->len; k++) {
        r = parse_lim(c->raw, k, &def_lim, &req, &status);
        if (!(r == -2 || (r == -1 && status == c->status))) {
            ok(0, "%s: prefix %zu returns %d status %d", c->label, k, r, status);
            return;
        }
    }
    ok(1, "%s: prefixes", c->label);
}

/* Invalid bytes are reported as soon as they are seen, without waiting for the head's end. */
static void test_early_reject(void)
{
    static const struct bad_case early[] = {
        B("fragment", "GET /a#", 400),
        B("bad version prefix", "GET / HTTX", 400),
        B("NUL in value", "GET / HTTP/1.1\r\nX: \x00", 400),
        B("obs-fold", "GET / HTTP/1.1\r\nHost: h\r\n b", 400),
        B("bare LF", "GET / HTTP/1.1\n", 400),
        B("SP before colon", "GET / HTTP/1.1\r\nHost :", 400),
        B("two SP", "GET  ", 400),
        B("505 before headers", "GET / HTTP/3.0\r\n", 505),
    };
    for (size_t i = 0; i < sizeof(early) / sizeof(early[0]); i++) {
        struct http_request req;
        int status;
        int r = parse_lim(early[i].raw, early[i].len, &def_lim, &req, &status);
        ok(r == -1 && status == early[i].status, "early %s: %d %d", early[i].label, r, status);
    }

    /* method/path stay valid on -1 for logging */
    struct http_request req;
    int status;
    int r = parse("POST /users?a=1 HTTP/1.1\r\nX: a\x01\r\n\r\n", &req, &status);
    ok(r == -1 && status == 400 && req.method == HTTP_POST && str_is(req.path, "/users") &&
           str_is(req.method_str, "POST"),
       "method and path kept on error");
}

/* ---- every prefix of valid requests is incomplete --------------------------- */

static char *build_many_headers(size_t n_extra, size_t *out_len)
{
    size_t cap = 64 + n_extra * 80;
    char *s = malloc(cap);
    size_t o = 0;
    o += (size_t)snprintf(s + o, cap - o, "POST /many HTTP/1.1\r\nHost: h\r\n");
    for (size_t i = 0; i < n_extra; i++) {
        /* varied lengths so the 8-byte value scan meets every alignment */
        o += (size_t)snprintf(s + o, cap - o, "X-H%zu: %.*s\r\n", i, (int)(i % 23),
                              "abcdefghij\tklmnopqrstuvwxyz");
    }
    o += (size_t)snprintf(s + o, cap - o, "\r\n");
    *out_len = o;
    return s;
}

static void check_prefixes(const char *label, const char *raw, size_t n, size_t head)
{
    struct http_request req;
    int status;
    size_t bad = 0;
    for (size_t k = 0; k < head; k++) {
        int r = parse_lim(raw, k, &def_lim, &req, &status);
        if (r != -2 || status != 0) {
            if (bad++ < 3)
                ok(0, "%s: prefix %zu/%zu returns %d status %d", label, k, head, r, status);
        }
    }
    ok(bad == 0, "%s: all %zu proper prefixes incomplete", label, head);
    for (size_t k = head; k <= n; k++) {
        int r = parse_lim(raw, k, &def_lim, &req, &status);
        if (r != (int)head) {
            ok(0, "%s: %zu bytes return %d, want %zu", label, k, r, head);
            return;
        }
    }
    ok(1, "%s: complete head with %zu..%zu bytes", label, head, n);
}

static void test_prefixes(void)
{
    for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
        const struct valid_case *c = &valid_cases[i];
        size_t n = strlen(c->raw);
        check_prefixes(c->label, c->raw, n, c->head_len ? c->head_len : n);
    }
    size_t n;
    char *s = build_many_headers(98, &n);
    check_prefixes("99 headers", s, n, n);
    free(s);

    static const char body[] =
        "POST /orders HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        "Content-Length: 11\r\n\r\n{\"a\":12345}";
    check_prefixes("head of a request with a body", body, sizeof(body) - 1, sizeof(body) - 1 - 11);
}

/* ---- limits ------------------------------------------------------------------ */

static void test_limits(void)
{
    struct http_request req;
    int status, r;
    size_t n;
    char *s;

    s = build_many_headers(99, &n); /* Host + 99 = 100 fields */
    r = parse_lim(s, n, &def_lim, &req, &status);
    ok(r == (int)n && req.num_headers == 100, "100 headers accepted: %d", r);
    free(s);
    s = build_many_headers(100, &n); /* 101 fields */
    r = parse_lim(s, n, &def_lim, &req, &status);
    ok(r == -1 && status == 431, "101 headers: 431 (%d %d)", r, status);
    free(s);

    struct http_limits small = {64, 2, 10};
    r = parse_lim("GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n", 33, &small, &req, &status);
    ok(r == 33 && req.num_headers == 2, "2 headers with max 2: %d", r);
    r = parse_lim("GET / HTTP/1.1\r\nHost: h\r\nA: b\r\nC:", 33, &small, &req, &status);
    ok(r == -1 && status == 431, "3rd header with max 2: 431 (%d %d)", r, status);
    r = parse_lim("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", 48, &small, &req,
                  &status);
    ok(r == -1 && status == 413, "CL 11 with max_body 10: 413 (%d %d)", r, status);
    r = parse_lim("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n", 48, &small, &req,
                  &status);
    ok(r == 48 && req.content_length == 10, "CL 10 with max_body 10 (%d)", r);

    /* head size: exactly the limit is fine, one more byte is 431 */
    char big[20000];
    const char *pre = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
    size_t pl = strlen(pre);
    for (size_t total = 16383; total <= 16386; total++) {
        memcpy(big, pre, pl);
        memset(big + pl, 'a', total - pl - 4);
        memcpy(big + total - 4, "\r\n\r\n", 4);
        r = parse_lim(big, total, &def_lim, &req, &status);
        if (total <= 16384)
            ok(r == (int)total, "head of %zu bytes accepted (%d)", total, r);
        else
            ok(r == -1 && status == 431, "head of %zu bytes: 431 (%d %d)", total, r, status);
        /* complete head within the limit followed by more bytes */
        memcpy(big + total, "GET", 3);
        r = parse_lim(big, total + 3, &def_lim, &req, &status);
        if (total <= 16384)
            ok(r == (int)total, "head of %zu bytes + pipelined bytes (%d)", total, r);
        else
            ok(r == -1 && status == 431, "head of %zu bytes + more: 431 (%d %d)", total, r, status);
    }
    /* incomplete: -2 below the limit, 431 once len reaches it */
    memcpy(big, pre, pl);
    memset(big + pl, 'a', sizeof(big) - pl);
    r = parse_lim(big, 16383, &def_lim, &req, &status);
    ok(r == -2, "incomplete 16383 bytes: -2 (%d)", r);
    r = parse_lim(big, 16384, &def_lim, &req, &status);
    ok(r == -1 && status == 431, "incomplete 16384 bytes: 431 (%d %d)", r, status);
    r = parse_lim(big, 20000, &def_lim, &req, &status);
    ok(r == -1 && status == 431, "incomplete 20000 bytes: 431 (%d %d)", r, status);
    /* a long request line counts as well */
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', sizeof(big) - 5);
    r = parse_lim(big, 16384, &def_lim, &req, &status);
    ok(r == -1 && status == 431, "long target: 431 (%d %d)", r, status);
    r = parse_lim(big, 0, &def_lim, &req, &status);
    ok(r == -2, "empty input: -2 (%d)", r);
}

/* ---- small API ------------------------------------------------------------- */

static void test_methods(void)
{
    static const char *const names[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (int m = 0; m < 7; m++) {
        ok(http_method_from_str((struct str){names[m], strlen(names[m])}) == (enum http_method)m,
           "method_from_str %s", names[m]);
        ok(strcmp(http_method_name((enum http_method)m), names[m]) == 0, "method_name %s",
           names[m]);
    }
    ok(http_method_from_str(STR_LIT("GETX")) == HTTP_OTHER, "GETX is other");
    ok(http_method_from_str(STR_LIT("get")) == HTTP_OTHER, "get is other");
    ok(http_method_from_str(STR_LIT("TRACE")) == HTTP_OTHER, "TRACE is other");
    ok(http_method_from_str(STR_LIT("POS")) == HTTP_OTHER, "POS is other");
    ok(http_method_from_str(STR_NULL) == HTTP_OTHER, "empty is other");
    ok(strcmp(http_method_name(HTTP_OTHER), "OTHER") == 0, "name of OTHER");
    ok(strcmp(http_method_name(HTTP_METHOD_COUNT), "OTHER") == 0, "name out of range");
}

static void test_header_get(void)
{
    struct http_request req;
    int status;
    int r = parse("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-Long-Name: v\r\n\r\n", &req,
                  &status);
    struct str v = STR_NULL;
    ok(r > 0, "header_get request parses");
    ok(http_header_get(&req, "x-A", &v) && str_is(v, "1"), "first of duplicates, any case");
    ok(http_header_get(&req, "X-LONG-NAME", &v) && str_is(v, "v"), "upper-case lookup");
    ok(!http_header_get(&req, "X-Long", &v), "prefix does not match");
    ok(!http_header_get(&req, "X-Long-Name2", &v), "longer name does not match");
    ok(!http_header_get(&req, "Content-Length", &v), "absent");
}

/* ---- chunked decoder --------------------------------------------------------- */

#define CK_MAX_BODY (8u << 20)
#define CK_MAX_HDR 16384

struct feed_result {
    ssize_t r;
    int status;
    char out[16384];
    size_t out_len;
    char left[4096]; /* leftover bytes after the body end */
    size_t left_len;
};

/*
 * Feed raw[0..n) to a fresh decoder in pieces ending at cuts[0..ncuts) and n,
 * each piece placed against the guard page, collecting the decoded bytes the
 * way a connection would. Stops at the first result other than -2.
 */
static void feed(const char *raw, size_t n, const size_t *cuts, size_t ncuts, uint64_t max_body,
                 size_t max_hdr, struct feed_result *fr)
{
    struct http_chunked d;
    memset(&d, 0, sizeof(d));
    fr->r = -2;
    fr->status = 0;
    fr->out_len = 0;
    fr->left_len = 0;
    size_t start = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t stop = i < ncuts ? cuts[i] : n;
        size_t plen = stop - start;
        char *p = guard_place(raw + start, plen);
        size_t len = plen;
        ssize_t r = http_chunked_decode(&d, p, &len, max_body, max_hdr, &fr->status);
        if (len > plen || fr->out_len + len > sizeof(fr->out)) {
            fr->r = -100; /* contract broken */
            return;
        }
        memcpy(fr->out + fr->out_len, p, len);
        fr->out_len += len;
        if (r >= 0) {
            if ((size_t)r > plen - len) {
                fr->r = -101;
                return;
            }
            memcpy(fr->left, p + len, (size_t)r);
            memcpy(fr->left + r, raw + stop, n - stop);
            fr->left_len = (size_t)r + n - stop;
            fr->r = r;
            return;
        }
        if (r == -1) {
            fr->r = -1;
            return;
        }
        start = stop;
    }
}

struct chunk_ok {
    const char *label;
    const char *raw;
    size_t len;
    const char *body;
    size_t body_len;
    const char *left; /* leftover after the body (next request bytes) */
};

#define CKOK(label, raw, body, left)                                                               \
    {                                                                                              \
        label, raw, sizeof(raw) - 1, body, sizeof(body) - 1, left                                  \
    }

static const struct chunk_ok chunk_ok_cases[] = {
    CKOK("one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello", ""),
    CKOK("two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", ""),
    CKOK("upper-case hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", ""),
    CKOK("lower-case hex, 16 bytes", "10\r\n0123456789abcdef\r\n0\r\n\r\n", "0123456789abcdef", ""),
    CKOK("leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello", ""),
    CKOK("empty body", "0\r\n\r\n", "", ""),
    CKOK("chunk-ext", "a;name=value\r\n0123456789\r\n0;last\r\n\r\n", "0123456789", ""),
    CKOK("chunk-ext quoted", "3;a=\"b c\";d\r\nxyz\r\n0\r\n\r\n", "xyz", ""),
    CKOK("chunk-ext BWS after ;", "3; a=b\r\nxyz\r\n0\r\n\r\n", "xyz", ""),
    CKOK("chunk-ext BWS around =", "3;a = b ;c\t;d=\"\"\r\nxyz\r\n0\r\n\r\n", "xyz", ""),
    CKOK("chunk-ext quoted-pair", "3;a=\"q\\\"\\\\;x\"\r\nxyz\r\n0\r\n\r\n", "xyz", ""),
    CKOK("chunk-ext token chars", "3;!#$%&'*+-.^_`|~09aZ=!#$%&'*+-.^_`|~\r\nxyz\r\n0\r\n\r\n",
         "xyz", ""),
    CKOK("trailers", "3\r\nabc\r\n0\r\nX-Trailer: v\r\nY:\r\nZ: a\tb \r\n\r\n", "abc", ""),
    CKOK("data with CRLF and NUL", "6\r\n\r\n\x00\r\n\r\r\n0\r\n\r\n", "\r\n\x00\r\n\r", ""),
    CKOK("pipelined next request", "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "abc",
         "GET / HTTP/1.1\r\n"),
    CKOK("pipelined after trailers", "1\r\nZ\r\n0\r\nT: 1\r\n\r\nPOST", "Z", "POST"),
};

static void check_chunk_ok(const struct chunk_ok *c)
{
    static struct feed_result fr;
    size_t left_len = strlen(c->left);
    size_t cuts[8192];

    /* one call */
    feed(c->raw, c->len, NULL, 0, CK_MAX_BODY, CK_MAX_HDR, &fr);
    ok(fr.r == (ssize_t)left_len && fr.out_len == c->body_len &&
           memcmp(fr.out, c->body, c->body_len) == 0 && fr.left_len == left_len &&
           memcmp(fr.left, c->left, left_len) == 0,
       "chunked %s: one call r=%zd out=%zu left=%zu", c->label, fr.r, fr.out_len, fr.left_len);

    /* byte by byte */
    for (size_t i = 1; i < c->len; i++)
        cuts[i - 1] = i;
    feed(c->raw, c->len, cuts, c->len - 1, CK_MAX_BODY, CK_MAX_HDR, &fr);
    ok(fr.r >= 0 && fr.out_len == c->body_len && memcmp(fr.out, c->body, c->body_len) == 0 &&
           fr.left_len == left_len && memcmp(fr.left, c->left, left_len) == 0,
       "chunked %s: byte by byte r=%zd out=%zu left=%zu", c->label, fr.r, fr.out_len, fr.left_len);

    /* every split into two calls; and every proper prefix alone is incomplete */
    size_t body_end = c->len - left_len;
    size_t bad = 0;
    for (size_t k = 0; k <= c->len; k++) {
        cuts[0] = k;
        feed(c->raw, c->len, cuts, 1, CK_MAX_BODY, CK_MAX_HDR, &fr);
        if (!(fr.r >= 0 && fr.out_len == c->body_len && memcmp(fr.out, c->body, c->body_len) == 0 &&
              fr.left_len == left_len && memcmp(fr.left, c->left, left_len) == 0)) {
            if (bad++ < 3)
                ok(0, "chunked %s: split at %zu r=%zd out=%zu", c->label, k, fr.r, fr.out_len);
        }
        if (k < body_end) {
            feed(c->raw, k, NULL, 0, CK_MAX_BODY, CK_MAX_HDR, &fr);
            if (fr.r != -2 || fr.out_len > c->body_len || memcmp(fr.out, c->body, fr.out_len)) {
                if (bad++ < 3)
                    ok(0, "chunked %s: prefix %zu r=%zd", c->label, k, fr.r);
            }
        }
    }
    ok(bad == 0, "chunked %s: all splits and prefixes", c->label);
}

struct chunk_bad {
    const char *label;
    const char *raw;
    size_t len;
    int status;
    uint64_t max_body;
    size_t max_hdr;
};

#define CKBAD_LIM(label, raw, st, mb, mh)                                                          \
    {                                                                                              \
        label, raw, sizeof(raw) - 1, st, mb, mh                                                    \
    }
#define CKBAD(label, raw, st) CKBAD_LIM(label, raw, st, CK_MAX_BODY, CK_MAX_HDR)

static const struct chunk_bad chunk_bad_cases[] = {
    CKBAD("empty size", "\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("empty size before ext", ";a\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("leading SP", " 5\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("trailing SP", "5 \r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("SP before ext", "5 ;a\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("HTAB after size", "5\t\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("negative", "-5\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("plus", "+5\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("0_2e", "0_2e\r\n", 400),
    CKBAD("non-hex g", "5g\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("overflow", "ffffffffffffffffff\r\n", 400),
    CKBAD("overflow 17 digits", "10000000000000000\r\n", 400),
    CKBAD("bare LF after size", "5\nhello\r\n0\r\n\r\n", 400),
    CKBAD("bare CR after size", "5\rhello\r\n0\r\n\r\n", 400),
    CKBAD("bare LF after data", "5\r\nhello\n0\r\n\r\n", 400),
    CKBAD("missing CRLF after data", "5\r\nhello0\r\n\r\n", 400),
    CKBAD("data longer than size", "5\r\nhelloX\r\n0\r\n\r\n", 400),
    CKBAD("bare CR after data", "5\r\nhello\r0\r\n\r\n", 400),
    CKBAD("CR in chunk-ext", "5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("LF in chunk-ext", "5;a\nb\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("NUL in chunk-ext", "5;a=\x00\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("DEL in chunk-ext", "5;a=\x7f\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("empty chunk-ext", "5;\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext starts with =", "5;=a\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext name with @", "5;a@b\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext name with /", "5;a/b=c\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext name with obs-text", "5;caf\xc3\xa9\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext two names", "5;a b\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext value with space", "5;a=b c\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext value with (", "5;a=(b)\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext empty value", "5;a=\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext two =", "5;a==b\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext unterminated quote", "5;a=\"b\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext text after quote", "5;a=\"b\"c\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext CTL in quote", "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext bare LF after value", "5;a=b\nhello\r\n0\r\n\r\n", 400),
    CKBAD("chunk-ext on last chunk, bad name", "5\r\nhello\r\n0;a,b\r\n\r\n", 400),
    CKBAD("bare LF after last chunk", "0\n\r\n", 400),
    CKBAD("bare LF final", "0\r\n\n", 400),
    CKBAD("CR CR final", "0\r\n\r\r", 400),
    CKBAD("trailer obs-fold", "0\r\nX: a\r\n b\r\n\r\n", 400),
    CKBAD("trailer without colon", "0\r\nX\r\n\r\n", 400),
    CKBAD("trailer empty name", "0\r\n: a\r\n\r\n", 400),
    CKBAD("trailer SP before colon", "0\r\nX : a\r\n\r\n", 400),
    CKBAD("trailer bare LF", "0\r\nX: a\n\r\n", 400),
    CKBAD("trailer bare CR", "0\r\nX: a\rb\r\n\r\n", 400),
    CKBAD("trailer NUL", "0\r\nX: a\x00\r\n\r\n", 400),
    CKBAD("trailer leading SP", "0\r\n X: a\r\n\r\n", 400),
    CKBAD_LIM("body > max_body", "6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n", 413, 10, CK_MAX_HDR),
    CKBAD_LIM("single chunk > max_body", "b\r\n", 413, 10, CK_MAX_HDR),
    CKBAD_LIM("huge chunk > max_body", "ffffffffffffffff\r\n", 413, CK_MAX_BODY, CK_MAX_HDR),
    CKBAD_LIM("trailers > max_header_bytes", "0\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
              431, CK_MAX_BODY, 32),
};

static void check_chunk_bad(const struct chunk_bad *c)
{
    static struct feed_result fr;
    size_t cuts[8192];

    feed(c->raw, c->len, NULL, 0, c->max_body, c->max_hdr, &fr);
    ok(fr.r == -1 && fr.status == c->status, "chunked %s: one call r=%zd status %d", c->label, fr.r,
       fr.status);
    for (size_t i = 1; i < c->len; i++)
        cuts[i - 1] = i;
    feed(c->raw, c->len, cuts, c->len - 1, c->max_body, c->max_hdr, &fr);
    ok(fr.r == -1 && fr.status == c->status, "chunked %s: byte by byte r=%zd status %d", c->label,
       fr.r, fr.status);
    size_t bad = 0;
    for (size_t k = 0; k <= c->len; k++) {
        cuts[0] = k;
        feed(c->raw, c->len, cuts, 1, c->max_body, c->max_hdr, &fr);
        if (!(fr.r == -1 && fr.status == c->status) && bad++ < 3)
            ok(0, "chunked %s: split at %zu r=%zd status %d", c->label, k, fr.r, fr.status);
    }
    ok(bad == 0, "chunked %s: every split", c->label);
}

static void test_chunked_misc(void)
{
    static struct feed_result fr;
    static char raw[9000];
    size_t n;

    /* decoded data before the 413 is reported in *len */
    {
        struct http_chunked d = {0};
        char b[] = "6\r\nabcdef\r\n5\r\nghijk\r\n";
        size_t len = sizeof(b) - 1;
        int st = 0;
        ssize_t r = http_chunked_decode(&d, b, &len, 10, CK_MAX_HDR, &st);
        ok(r == -1 && st == 413 && len == 6 && memcmp(b, "abcdef", 6) == 0,
           "413 keeps decoded prefix: r=%zd len=%zu", r, len);
        len = 3;
        st = 0;
        r = http_chunked_decode(&d, b, &len, 10, CK_MAX_HDR, &st);
        ok(r == -1 && st == 413, "after 413 further calls fail with 413 (%zd %d)", r, st);
    }
    /* total exactly max_body is fine */
    {
        static const char b[] = "6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n";
        feed(b, sizeof(b) - 1, NULL, 0, 10, CK_MAX_HDR, &fr);
        ok(fr.r == 0 && fr.out_len == 10, "body of exactly max_body (%zd %zu)", fr.r, fr.out_len);
    }
    /* after completion every byte passed is leftover */
    {
        struct http_chunked d = {0};
        char b[] = "0\r\n\r\nGET";
        size_t len = sizeof(b) - 1;
        int st = 0;
        ssize_t r = http_chunked_decode(&d, b, &len, 10, CK_MAX_HDR, &st);
        ok(r == 3 && len == 0 && memcmp(b, "GET", 3) == 0, "leftover moved to the front");
        len = 3;
        r = http_chunked_decode(&d, b, &len, 10, CK_MAX_HDR, &st);
        ok(r == 3 && len == 0, "call after completion returns input as leftover");
        len = 0;
        r = http_chunked_decode(&d, b, &len, 10, CK_MAX_HDR, &st);
        ok(r == 0 && len == 0, "empty call after completion");
    }
    /* empty input is incomplete */
    {
        struct http_chunked d = {0};
        size_t len = 0;
        int st = 0;
        char b[1];
        ok(http_chunked_decode(&d, b, &len, 10, CK_MAX_HDR, &st) == -2 && len == 0,
           "empty input incomplete");
    }
    /* chunk-size line limit: 4096 bytes including CRLF */
    for (size_t line = 4095; line <= 4097; line++) {
        n = 0;
        memcpy(raw, "1;", 2);
        n = 2;
        memset(raw + n, 'a', line - 4);
        n += line - 4;
        memcpy(raw + n, "\r\nZ\r\n0\r\n\r\n", 10);
        n += 10;
        feed(raw, n, NULL, 0, CK_MAX_BODY, CK_MAX_HDR, &fr);
        if (line <= 4096)
            ok(fr.r == 0 && fr.out_len == 1 && fr.out[0] == 'Z', "size line of %zu bytes ok", line);
        else
            ok(fr.r == -1 && fr.status == 400, "size line of %zu bytes: 400 (%zd %d)", line, fr.r,
               fr.status);
    }
    /* trailer section limit is inclusive */
    {
        static const char b[] = "0\r\nX: 12345\r\n\r\n"; /* trailer section: 12 bytes */
        feed(b, sizeof(b) - 1, NULL, 0, 10, 12, &fr);
        ok(fr.r == 0, "trailer section of exactly the limit (%zd)", fr.r);
        feed(b, sizeof(b) - 1, NULL, 0, 10, 11, &fr);
        ok(fr.r == -1 && fr.status == 431, "trailer section one over the limit (%zd %d)", fr.r,
           fr.status);
    }
    /* a large body in many chunks, split in three */
    {
        n = 0;
        char expect[4000];
        size_t el = 0;
        for (int i = 1; i <= 60; i++) {
            n += (size_t)snprintf(raw + n, sizeof(raw) - n, "%x\r\n", i);
            for (int j = 0; j < i; j++) {
                raw[n++] = (char)('a' + (i + j) % 26);
                expect[el++] = (char)('a' + (i + j) % 26);
            }
            raw[n++] = '\r';
            raw[n++] = '\n';
        }
        memcpy(raw + n, "0\r\n\r\n", 5);
        n += 5;
        size_t bad = 0;
        for (size_t k = 0; k < n; k += 7) {
            size_t cuts[2] = {k, k + (n - k) / 2};
            feed(raw, n, cuts, 2, CK_MAX_BODY, CK_MAX_HDR, &fr);
            if (!(fr.r == 0 && fr.out_len == el && memcmp(fr.out, expect, el) == 0))
                bad++;
        }
        ok(bad == 0, "60 chunks split in three everywhere (%zu bad)", bad);
    }
}

/* Host values that are valid authorities are accepted and kept as sent. */
static void test_host_forms(void)
{
    static const char *const hosts[] = {
        "example.com", "example.com:8080", "127.0.0.1:80", "[::1]",
        "[::1]:8080",  "[2001:db8::1]",    "h:",           "xn--bcher-kva.example",
        "a.b-c_d~e"};
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        char raw[256];
        int n = snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", hosts[i]);
        struct http_header hdrs[8];
        struct http_request req = {.headers = hdrs};
        struct http_limits lim = {16384, 8, 1024};
        int status = 0;
        int rc = http_parse_request(raw, (size_t)n, &lim, &req, &status);
        ok(rc == n && req.host.len == strlen(hosts[i]) &&
               memcmp(req.host.ptr, hosts[i], req.host.len) == 0,
           "Host: %s accepted (rc %d status %d)", hosts[i], rc, status);
    }
}

int main(void)
{
    guard_init();
    test_host_forms();

    for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++)
        check_valid(&valid_cases[i]);
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
        check_bad(&bad_cases[i]);
    test_early_reject();
    test_prefixes();
    test_limits();
    test_methods();
    test_header_get();

    for (size_t i = 0; i < sizeof(chunk_ok_cases) / sizeof(chunk_ok_cases[0]); i++)
        check_chunk_ok(&chunk_ok_cases[i]);
    for (size_t i = 0; i < sizeof(chunk_bad_cases) / sizeof(chunk_bad_cases[0]); i++)
        check_chunk_bad(&chunk_bad_cases[i]);
    test_chunked_misc();

    return test_done();
}
