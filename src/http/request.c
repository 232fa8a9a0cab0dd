/*
 * request.c - the request object handlers see (see request.h), and what is
 * decided about a request whatever protocol carried it: route, method,
 * bearer token, body limit, request id, metrics and the access log.
 */
#define _GNU_SOURCE
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "base/log.h"
#include "http/http_int.h"
#include "http/metrics.h"
#include "net/cidr.h"

static char g_reqid_prefix[9];
static unsigned char g_token_hash[SHA256_DIGEST_LENGTH];
static bool g_auth;
static uint64_t g_default_max_body;

static struct cidr g_trusted[CIDR_MAX]; /* BRISK_TRUSTED_PROXIES */
static int g_ntrusted;

void http_request_setup(const struct server_config *cfg)
{
    unsigned char rnd[4];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        memset(rnd, 0, sizeof rnd);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof rnd; i++) {
        g_reqid_prefix[2 * i] = hex[rnd[i] >> 4];
        g_reqid_prefix[2 * i + 1] = hex[rnd[i] & 15];
    }
    g_reqid_prefix[8] = '\0';
    g_auth = cfg->api_token && cfg->api_token[0];
    if (g_auth)
        SHA256((const unsigned char *)cfg->api_token, strlen(cfg->api_token), g_token_hash);
    g_default_max_body = cfg->limits.max_body;
    char err[160];
    g_ntrusted = 0;
    if (cfg->trusted_proxies && cfg->trusted_proxies[0]) {
        int n = cidr_parse_list(cfg->trusted_proxies, g_trusted, CIDR_MAX, err, sizeof err);
        if (n < 0) /* config.c validated it already */
            log_warn("BRISK_TRUSTED_PROXIES: %s; X-Forwarded-For is not believed", err);
        g_ntrusted = n > 0 ? n : 0;
    }
}

void http_ctx_set_peer(struct http_ctx *c, const struct sockaddr *sa)
{
    const void *a = NULL;
    if (sa && sa->sa_family == AF_INET)
        a = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    else if (sa && sa->sa_family == AF_INET6)
        a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    if (!a || !inet_ntop(sa->sa_family, a, c->peer, sizeof c->peer))
        strcpy(c->peer, "-"); /* NOLINT: fits */
    c->peer_len = strlen(c->peer);
}

/*
 * The client for the access log: the peer, or - when the peer is a trusted
 * proxy - the first address from the right of X-Forwarded-For that is not
 * one (each proxy appends the address it saw, so only the entries our trusted
 * proxies wrote can be believed; everything left of the first untrusted one
 * may be forged). A malformed entry stops the walk at the last good hop.
 */
struct str http_client_addr(const struct http_ctx *c)
{
    struct str peer = {c->peer, c->peer_len};
    if (g_ntrusted == 0 || !cidr_match(g_trusted, g_ntrusted, peer.ptr, peer.len))
        return peer;
    struct str best = peer;
    /* several X-Forwarded-For fields are one list, in order (RFC 9110 5.3) */
    for (size_t h = c->req.num_headers; h-- > 0;) {
        const struct http_header *f = &c->req.headers[h];
        if (f->name.len != 15 || strncasecmp(f->name.ptr, "X-Forwarded-For", 15) != 0)
            continue;
        const char *s = f->value.ptr;
        size_t end = f->value.len;
        while (end > 0) {
            size_t b = end;
            while (b > 0 && s[b - 1] != ',')
                b--;
            size_t i = b, j = end;
            while (i < j && (s[i] == ' ' || s[i] == '\t'))
                i++;
            while (j > i && (s[j - 1] == ' ' || s[j - 1] == '\t'))
                j--;
            struct str hop = {s + i, j - i};
            if (!cidr_match(g_trusted, g_ntrusted, hop.ptr, hop.len))
                return cidr_is_addr(hop.ptr, hop.len) ? hop : best;
            best = hop;
            end = b > 0 ? b - 1 : 0;
        }
    }
    return best;
}

uint64_t http_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void http_ctx_init_empty(struct http_ctx *c, const struct http_limits *lim)
{
    c->hdrs = NULL;
    buf_init(&c->body, 0);
    buf_init(&c->extra_hdrs, 8192);
    arena_init(&c->arena, (size_t)lim->max_body * 8 + 65536);
    memset(&c->req, 0, sizeof c->req);
    c->req.headers = c->hdrs;
    c->m.route = c->m.path_route = -1;
}

int http_ctx_init(struct http_ctx *c, const struct http_limits *lim)
{
    http_ctx_init_empty(c, lim);
    c->hdrs = calloc(lim->max_headers, sizeof *c->hdrs);
    if (!c->hdrs)
        return -1;
    c->req.headers = c->hdrs;
    return 0;
}

void http_ctx_free(struct http_ctx *c)
{
    free(c->hdrs);
    c->hdrs = NULL;
    buf_free(&c->body);
    buf_free(&c->extra_hdrs);
    arena_free(&c->arena);
}

void http_ctx_reset(struct http_ctx *c)
{
    memset(&c->req, 0, sizeof c->req);
    c->req.headers = c->hdrs;
    c->m.route = c->m.path_route = -1;
    c->body_in = STR_NULL;
    c->head_only = false;
    c->reqid_len = 0; /* a later timeout must not reuse this request's id */
    c->start_ns = 0;
    buf_reset(&c->body);
    buf_shrink(&c->body, HTTP_KEEP_BUF);
    buf_reset(&c->extra_hdrs);
    arena_reset(&c->arena, HTTP_ARENA_KEEP);
}

const char *http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* ---------------------------------------------------------------- request id */

/* X-Request-Id from the client is echoed only when it is 1..128 printable ASCII. */
static bool reqid_ok(struct str s)
{
    if (s.len == 0 || s.len > 128)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        if (ch < 0x20 || ch > 0x7e)
            return false;
    }
    return true;
}

/* Write v in lower-case hex without leading zeros at p (at most 16 bytes);
 * returns the end. */
static char *put_hex(char *p, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    int n = v ? (64 - __builtin_clzll(v) + 3) / 4 : 1;
    for (int i = n - 1; i >= 0; i--, v >>= 4)
        p[i] = digits[v & 15];
    return p + n;
}

void http_request_set_id(struct http_ctx *c, struct str sent)
{
    if (sent.ptr && reqid_ok(sent)) {
        memcpy(c->reqid, sent.ptr, sent.len);
        c->reqid_len = sent.len;
        return;
    }
    /* "<prefix>-<loop hex>-<seq hex>", written by hand: snprintf was a third of
     * the user-space instructions of a GET /health. */
    char *p = c->reqid;
    memcpy(p, g_reqid_prefix, 8);
    p += 8;
    *p++ = '-';
    p = put_hex(p, (uint64_t)c->hl->index);
    *p++ = '-';
    p = put_hex(p, ++c->hl->reqid_seq);
    c->reqid_len = (size_t)(p - c->reqid);
}

/* ---------------------------------------------------------------- handler API */

const struct http_request *http_req(const struct http_ctx *c)
{
    return &c->req;
}

struct str http_param(const struct http_ctx *c, size_t i)
{
    return i < c->m.nparams ? c->m.params[i] : STR_NULL;
}

struct str http_body_raw(const struct http_ctx *c)
{
    return c->body_in;
}

void *http_loop_state(const struct http_ctx *c)
{
    return c->hl->app_state;
}

struct loop *http_loop(const struct http_ctx *c)
{
    return c->hl->loop;
}

void *http_alloc(struct http_ctx *c, size_t n)
{
    void *p = arena_alloc(&c->arena, n);
    if (p)
        memset(p, 0, n);
    return p;
}

struct buf *http_body(struct http_ctx *c)
{
    return &c->body;
}

struct arena *http_arena(struct http_ctx *c)
{
    return &c->arena;
}

void http_add_header(struct http_ctx *c, const char *name, struct str value)
{
    /* a CR or LF would let a value end the header block (response splitting) */
    if (value.len && (memchr(value.ptr, '\r', value.len) || memchr(value.ptr, '\n', value.len))) {
        log_error("response header %s: value with CR or LF not sent", name);
        return;
    }
    buf_append_cstr(&c->extra_hdrs, name);
    buf_append_cstr(&c->extra_hdrs, ": ");
    buf_append(&c->extra_hdrs, value.ptr, value.len);
    buf_append_cstr(&c->extra_hdrs, "\r\n");
}

void http_respond(struct http_ctx *c, int status, const char *content_type)
{
    if (c->handling) {
        c->handling = false;
        metrics_in_flight(c->hl->index, -1);
    }
    c->proto->respond(c, status, content_type);
}

/*
 * The JSON string escapes of json_write_str (", \, control characters; other
 * bytes as they are), so error bodies need no JSON module: the messages are
 * ours or short parser messages.
 */
void http_error_body(struct buf *b, const char *msg)
{
    static const char hex[] = "0123456789abcdef";
    buf_reset(b);
    buf_append_cstr(b, "{\"error\":\"");
    size_t run = 0, i = 0, n = strlen(msg);
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)msg[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        buf_append(b, msg + run, i - run);
        char e[6] = {'\\', (char)ch, 0, 0, 0, 0};
        size_t elen = 2;
        switch (ch) {
        case '"':
        case '\\':
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\t':
            e[1] = 't';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\f':
            e[1] = 'f';
            break;
        case '\r':
            e[1] = 'r';
            break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = hex[ch >> 4];
            e[5] = hex[ch & 15];
            elen = 6;
        }
        buf_append(b, e, elen);
        run = i + 1;
    }
    buf_append(b, msg + run, n - run);
    buf_append_cstr(b, "\"}");
}

void http_respond_error(struct http_ctx *c, int status, const char *msg)
{
    http_error_body(&c->body, msg);
    http_respond(c, status, NULL);
}

/* application/json, optionally followed by parameters (charset=utf-8). */
static bool is_json_type(struct str ct)
{
    static const char want[] = "application/json";
    size_t n = sizeof want - 1;
    if (ct.len < n)
        return false;
    if (!str_ieq_lit((struct str){ct.ptr, n}, want))
        return false;
    for (size_t i = n; i < ct.len; i++) {
        if (ct.ptr[i] == ';')
            return true;
        if (ct.ptr[i] != ' ' && ct.ptr[i] != '\t')
            return false;
    }
    return true;
}

bool http_require_json(struct http_ctx *c)
{
    if (c->body_in.len == 0 && c->req.body_kind == HTTP_BODY_NONE) {
        http_respond_error(c, 400, "request body is required");
        return false;
    }
    if (!is_json_type(c->req.content_type)) {
        http_respond_error(c, 415, "content-type must be application/json");
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- admission */

static bool authorized(const struct http_ctx *c)
{
    struct str a = c->req.authorization;
    if (a.len < 7 || !str_ieq_lit((struct str){a.ptr, 7}, "bearer "))
        return false;
    /* compare digests in constant time, so neither content nor length leaks */
    unsigned char h[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)a.ptr + 7, a.len - 7, h);
    return CRYPTO_memcmp(h, g_token_hash, sizeof h) == 0;
}

static void append_allow(struct http_ctx *c, unsigned allow)
{
    static const enum http_method order[] = {HTTP_GET,   HTTP_HEAD,   HTTP_POST,   HTTP_PUT,
                                             HTTP_PATCH, HTTP_DELETE, HTTP_OPTIONS};
    if (allow & (1u << HTTP_GET))
        allow |= 1u << HTTP_HEAD;
    allow |= 1u << HTTP_OPTIONS;
    buf_append_cstr(&c->extra_hdrs, "Allow: ");
    bool first = true;
    for (size_t i = 0; i < ARRAY_LEN(order); i++) {
        if (!(allow & (1u << order[i])))
            continue;
        if (!first)
            buf_append_cstr(&c->extra_hdrs, ", ");
        buf_append_cstr(&c->extra_hdrs, http_method_name(order[i]));
        first = false;
    }
    buf_append_cstr(&c->extra_hdrs, "\r\n");
}

enum http_admit http_request_admit(struct http_ctx *c)
{
    enum http_method m = c->req.method == HTTP_HEAD ? HTTP_GET : c->req.method;
    c->head_only = c->req.method == HTTP_HEAD;
    char *scratch = arena_alloc(&c->arena, c->req.path.len + 1);
    if (!scratch || !router_match(m, c->req.path, scratch, &c->m)) {
        int status = 404;
        const char *msg = "not found";
        size_t nr;
        const struct route *pr = c->m.path_route >= 0 ? &router_table(&nr)[c->m.path_route] : NULL;
        if (pr && g_auth && !(pr->flags & ROUTE_PUBLIC) && !authorized(c)) {
            /* the path exists but its methods are not for anonymous eyes */
            http_add_header(c, "WWW-Authenticate", STR_LIT("Bearer"));
            status = 401;
            msg = "unauthorized";
        } else if (pr) {
            append_allow(c, c->m.allow);
            if (c->req.method == HTTP_OPTIONS) {
                status = 204;
                msg = NULL;
            } else {
                status = 405;
                msg = "method not allowed";
            }
        }
        if (c->req.body_kind != HTTP_BODY_NONE)
            c->close_after = true; /* do not read a body we refuse */
        if (msg)
            http_respond_error(c, status, msg);
        else
            http_respond(c, status, NULL);
        return HTTP_ADMIT_ANSWERED;
    }
    size_t n;
    const struct route *rt = &router_table(&n)[c->m.route];
    if (g_auth && !(rt->flags & ROUTE_PUBLIC) && !authorized(c)) {
        http_add_header(c, "WWW-Authenticate", STR_LIT("Bearer"));
        if (c->req.body_kind != HTTP_BODY_NONE)
            c->close_after = true;
        http_respond_error(c, 401, "unauthorized");
        return HTTP_ADMIT_ANSWERED;
    }
    /* the parser checked against the largest limit; this route may allow less */
    c->body_limit = rt->max_body ? rt->max_body : g_default_max_body;
    if (c->req.body_kind == HTTP_BODY_LENGTH && c->req.content_length > c->body_limit)
        return HTTP_ADMIT_TOO_LARGE;
    return HTTP_ADMIT_OK;
}

void http_request_dispatch(struct http_ctx *c)
{
    size_t n;
    const struct route *rt = &router_table(&n)[c->m.route];
    c->handling = true;
    metrics_in_flight(c->hl->index, 1);
    rt->handler(c);
}

/* ---------------------------------------------------------------- record */

static struct str route_label(int route)
{
    size_t n;
    const struct route *t = router_table(&n);
    if (route < 0 || (size_t)route >= n)
        return STR_LIT("unmatched"); /* the label /metrics uses too */
    return (struct str){t[route].pattern, strlen(t[route].pattern)};
}

void http_request_record(struct http_ctx *c, int status, size_t bytes)
{
    uint64_t dur = http_now_ns() - c->start_ns;
    metrics_record(c->hl->index, c->m.path_route, c->req.method, status, c->proto->h2, dur);
    struct access_entry e = {
        .method = c->req.method_str.len ? c->req.method_str : STR_LIT("-"),
        .route = route_label(c->m.path_route),
        .path = c->req.path.len ? c->req.path : STR_LIT("-"),
        .status = status,
        .duration_ms = (double)dur / 1e6,
        .bytes = bytes,
        .request_id = {c->reqid, c->reqid_len},
        .client = http_client_addr(c),
        .proto = c->proto->name              ? (struct str){c->proto->name, strlen(c->proto->name)}
                 : c->req.minor_version == 0 ? STR_LIT("HTTP/1.0")
                                             : STR_LIT("HTTP/1.1"),
        .bytes_in = c->bytes_in,
    };
    log_access(&e);
}
