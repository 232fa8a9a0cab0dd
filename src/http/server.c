/*
 * server.c - HTTP/1.1 connections on the event loops (see server.h).
 *
 * One struct http_ctx per connection; it is also the handler's context, since a
 * connection serves one request at a time (pipelined requests are parsed only
 * after the previous response is queued, which keeps responses in order and
 * keeps the slices of the current request valid).
 *
 * Connection life: HEAD (waiting for a complete request head) -> BODY (reading
 * a body) -> HANDLING (handler running, possibly waiting for the database) ->
 * back to HEAD, or CLOSING (flush what is queued, then close).
 */
#define _GNU_SOURCE
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "base/arena.h"
#include "base/log.h"
#include "db/db.h"
#include "http/metrics.h"
#include "net/loop.h"
#include "net/workpool.h"

#define READ_CHUNK 16384          /* free space ensured before each read */
#define OUT_HIGH_WATER (1u << 20) /* stop parsing pipelined requests above this backlog */
#define KEEP_BUF 65536            /* buffers larger than this are freed between requests */
#define ARENA_KEEP 65536
#define FREE_CONNS_MAX 256 /* connection structs kept per loop for reuse */
#define ACCEPT_BATCH 64
#define REQS_PER_TURN 32 /* pipelined requests answered before other connections get a turn */
#define ACCEPT_PAUSE_MS 100

enum conn_state { ST_HEAD, ST_BODY, ST_HANDLING, ST_CLOSING, ST_CLOSED };

struct worker;

struct http_ctx {
    struct loop_io io; /* first: the loop hands us this pointer */
    struct timer_node timer;
    struct worker *w;
    struct http_ctx *prev, *next; /* all connections of the worker */
    struct http_ctx *next_ready;  /* deferred-processing list */
    bool queued;

    enum conn_state state;
    bool can_read;
    bool rdhup; /* the peer shut down its side (or the socket failed) */
    bool in_process;
    unsigned turn_reqs; /* requests dispatched in the current conn_process call */
    bool dead;          /* closed while a handler still runs: free when it responds */
    bool close_after;   /* send Connection: close and close after this response */
    bool fresh;         /* no request completed yet on this connection */

    struct buf in; /* received bytes; the current request starts at in_start */
    size_t in_start;
    struct buf out; /* queued response bytes; out_off already written */
    size_t out_off;

    /* current request */
    struct http_request req;
    struct http_header *hdrs;
    size_t head_len;
    size_t body_len; /* body bytes (decoded) at in.data + in_start + head_len */
    struct http_chunked chunk;
    uint64_t body_limit; /* of the matched route */
    struct router_match m;
    bool head_only;
    uint64_t start_ns;
    char reqid[132];
    size_t reqid_len;

    /* response under construction */
    struct buf body;
    struct buf extra_hdrs;
    struct arena arena; /* request-scoped: decoded params, parsed JSON, handler state */
};

struct worker {
    struct loop *loop;
    int index;
    const struct server_config *cfg;
    struct http_limits parse_limits; /* max_body = the largest any route allows */
    struct loop_io listen;
    struct timer_node accept_timer; /* armed while accept is paused (EMFILE) */
    struct db *db;
    struct http_ctx *conns;
    size_t nconns;
    struct http_ctx *free_list;
    size_t nfree;
    size_t nowned;          /* closed connections whose handler still runs (pool, database) */
    struct http_ctx *ready; /* connections whose handler finished outside conn_process */
    uint64_t reqid_seq;
    pthread_t tid;
    int exit_code;
};

static struct worker *g_workers;
static int g_nworkers;
static char g_reqid_prefix[9];
static unsigned char g_token_hash[SHA256_DIGEST_LENGTH];
static bool g_auth;

static void conn_process(struct http_ctx *c);
static void conn_close(struct http_ctx *c);

/* ---------------------------------------------------------------- helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *reason(int status)
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

static void set_request_id(struct http_ctx *c, struct str sent)
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
    p = put_hex(p, (uint64_t)c->w->index);
    *p++ = '-';
    p = put_hex(p, ++c->w->reqid_seq);
    c->reqid_len = (size_t)(p - c->reqid);
}

static struct str route_label(int route)
{
    size_t n;
    const struct route *t = router_table(&n);
    if (route < 0 || (size_t)route >= n)
        return STR_LIT("-");
    return (struct str){t[route].pattern, strlen(t[route].pattern)};
}

/* ---------------------------------------------------------------- output */

/* Write queued output. Returns 0 (all written or EAGAIN) or -1 (connection broken). */
static int conn_flush(struct http_ctx *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->io.fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1; /* EPIPE, ECONNRESET, ...: the peer is gone */
        }
        c->out_off += (size_t)n;
    }
    c->out.len = 0;
    c->out_off = 0;
    buf_shrink(&c->out, KEEP_BUF);
    return 0;
}

static bool out_pending(const struct http_ctx *c)
{
    return c->out_off < c->out.len;
}

/*
 * Hand a big body (a batch's response) to the output buffer instead of
 * copying it there: the head, already in out (which holds nothing else),
 * moves in front of the body and the two buffers trade places. Saves a
 * second buffer of the body's size, and the page faults of filling it.
 */
static void adopt_body(struct http_ctx *c)
{
    struct buf *o = &c->out, *b = &c->body;
    size_t head = o->len;
    if (buf_reserve(b, head) != 0) {
        buf_append(o, b->data, b->len);
        return;
    }
    memmove(b->data + head, b->data, b->len);
    memcpy(b->data, o->data, head);
    char *data = o->data;
    size_t cap = o->cap;
    o->data = b->data;
    o->cap = b->cap;
    o->len = head + b->len;
    b->data = data;
    b->cap = cap;
    b->len = 0;
}

/*
 * Queue status line, headers and body for the current request, then count
 * and log it. The body is taken from c->body (nothing for 1xx/204/304; only
 * its length for HEAD).
 */
static void queue_response(struct http_ctx *c, int status, const char *ctype)
{
    struct buf *o = &c->out;
    bool nobody = status == 204 || status == 304;
    size_t before = o->len;
    if (c->body.failed) {
        /* the body outgrew its cap: replace it with an error we can always send */
        buf_reset(&c->body);
        buf_append_cstr(&c->body, "{\"error\":\"response too large\"}");
        status = 500;
        ctype = NULL;
    }
    buf_append_cstr(o, "HTTP/1.1 ");
    buf_append_u64(o, (uint64_t)status);
    buf_append_char(o, ' ');
    buf_append_cstr(o, reason(status));
    buf_append_cstr(o, "\r\nServer: brisk\r\nDate: ");
    buf_append(o, loop_date(c->w->loop), 29);
    if (!nobody) {
        buf_append_cstr(o, "\r\nContent-Type: ");
        buf_append_cstr(o, ctype ? ctype : "application/json");
        buf_append_cstr(o, "\r\nContent-Length: ");
        buf_append_u64(o, c->body.len);
    }
    buf_append_cstr(o, "\r\nX-Request-Id: ");
    buf_append(o, c->reqid, c->reqid_len);
    buf_append_cstr(o, "\r\n");
    if (c->extra_hdrs.len)
        buf_append(o, c->extra_hdrs.data, c->extra_hdrs.len);
    if (c->close_after || loop_stopping(c->w->loop))
        buf_append_cstr(o, "Connection: close\r\n");
    else if (c->req.minor_version == 0)
        buf_append_cstr(o, "Connection: keep-alive\r\n");
    buf_append_cstr(o, "\r\n");
    size_t body_len = c->body.len;
    if (!nobody && !c->head_only) {
        if (before == 0 && body_len > KEEP_BUF && !o->failed)
            adopt_body(c);
        else
            buf_append(o, c->body.data, body_len);
    }
    if (o->failed) {
        log_error("could not queue a response of %zu bytes", body_len);
        o->len = before;
        o->failed = 0;
        c->close_after = true;
    }

    uint64_t dur = now_ns() - c->start_ns;
    metrics_record(c->w->index, c->m.path_route, c->req.method, status, dur);
    struct access_entry e = {
        .method = c->req.method_str.len ? c->req.method_str : STR_LIT("-"),
        .route = route_label(c->m.path_route),
        .path = c->req.path.len ? c->req.path : STR_LIT("-"),
        .status = status,
        .duration_ms = (double)dur / 1e6,
        .bytes = o->len - before,
        .request_id = {c->reqid, c->reqid_len},
    };
    log_access(&e);
}

/* Reset per-request state after the response to the current request was queued. */
static void finish_request(struct http_ctx *c)
{
    c->in_start += c->head_len + c->body_len;
    if (c->in_start >= c->in.len) {
        c->in.len = 0;
        c->in_start = 0;
        buf_shrink(&c->in, KEEP_BUF); /* a big body's buffer is not kept for small requests */
    }
    c->head_len = 0;
    c->body_len = 0;
    memset(&c->chunk, 0, sizeof c->chunk);
    memset(&c->req, 0, sizeof c->req);
    c->req.headers = c->hdrs;
    c->m.route = c->m.path_route = -1;
    c->head_only = false;
    c->reqid_len = 0; /* a later timeout must not reuse this request's id */
    c->start_ns = 0;
    buf_reset(&c->body);
    buf_shrink(&c->body, KEEP_BUF);
    buf_reset(&c->extra_hdrs);
    arena_reset(&c->arena, ARENA_KEEP);
    c->fresh = false;
    loop_timer_disarm(c->w->loop, &c->timer);
    if (c->close_after || loop_stopping(c->w->loop))
        c->state = ST_CLOSING;
    else
        c->state = ST_HEAD;
}

/* Answer an error that ends the connection (framing errors, timeouts). */
static void respond_fatal(struct http_ctx *c, int status, const char *msg)
{
    if (!c->reqid_len)
        set_request_id(c, STR_NULL);
    if (!c->start_ns)
        c->start_ns = now_ns();
    c->close_after = true;
    buf_reset(&c->body);
    buf_append_cstr(&c->body, "{\"error\":");
    json_write_str(&c->body, msg, strlen(msg));
    buf_append_char(&c->body, '}');
    queue_response(c, status, NULL);
    c->head_len = c->body_len = 0;
    c->in.len = c->in_start = 0; /* refused bytes never reach another request */
    finish_request(c);
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
    return (struct str){c->in.data + c->in_start + c->head_len, c->body_len};
}

struct db *http_db(const struct http_ctx *c)
{
    return c->w->db;
}

struct loop *http_loop(const struct http_ctx *c)
{
    return c->w->loop;
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

void http_add_header(struct http_ctx *c, const char *name, struct str value)
{
    buf_append_cstr(&c->extra_hdrs, name);
    buf_append_cstr(&c->extra_hdrs, ": ");
    buf_append(&c->extra_hdrs, value.ptr, value.len);
    buf_append_cstr(&c->extra_hdrs, "\r\n");
}

static void release(struct http_ctx *c);

/* Continue this connection after the current batch of events (once per loop iteration). */
static void queue_ready(struct http_ctx *c)
{
    if (c->queued)
        return;
    c->queued = true;
    c->next_ready = c->w->ready;
    c->w->ready = c;
}

void http_respond(struct http_ctx *c, int status, const char *content_type)
{
    if (c->dead) {
        /* the client went away while the handler waited: nothing to send */
        c->w->nowned--;
        release(c);
        return;
    }
    queue_response(c, status, content_type);
    finish_request(c);
    if (!c->in_process)
        queue_ready(c); /* finished from a database callback: continue after the current events */
}

void http_respond_error(struct http_ctx *c, int status, const char *msg)
{
    buf_reset(&c->body);
    buf_append_cstr(&c->body, "{\"error\":");
    json_write_str(&c->body, msg, strlen(msg));
    buf_append_char(&c->body, '}');
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
    if (c->body_len == 0 && c->req.body_kind == HTTP_BODY_NONE) {
        http_respond_error(c, 400, "request body is required");
        return false;
    }
    if (!is_json_type(c->req.content_type)) {
        http_respond_error(c, 415, "content-type must be application/json");
        return false;
    }
    return true;
}

struct arena *http_arena(struct http_ctx *c)
{
    return &c->arena;
}

const struct json_value *http_json_body(struct http_ctx *c)
{
    struct str body = http_body_raw(c);
    if (!http_require_json(c))
        return NULL;
    const struct json_value *v;
    struct json_error err;
    if (json_parse(body.ptr, body.len, &c->arena, &v, &err) != 0) {
        if (err.too_large)
            http_respond_error(c, 413, "request body too large to parse");
        else
            http_respond_error(c, 400, err.msg);
        return NULL;
    }
    return v;
}

/* ---------------------------------------------------------------- request flow */

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

/*
 * Checks made as soon as the head is complete, before any body is read, so a
 * client is not asked to upload a body we would refuse. Returns true when the
 * request may go on; otherwise the response is queued.
 */
static bool admit(struct http_ctx *c)
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
            if (c->req.method == HTTP_OPTIONS) {
                append_allow(c, c->m.allow);
                status = 204;
                msg = NULL;
            } else {
                append_allow(c, c->m.allow);
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
        return false;
    }
    size_t n;
    const struct route *rt = &router_table(&n)[c->m.route];
    if (g_auth && !(rt->flags & ROUTE_PUBLIC) && !authorized(c)) {
        http_add_header(c, "WWW-Authenticate", STR_LIT("Bearer"));
        if (c->req.body_kind != HTTP_BODY_NONE)
            c->close_after = true;
        http_respond_error(c, 401, "unauthorized");
        return false;
    }
    /* the parser checked against the largest limit; this route may allow less */
    c->body_limit =
        (rt->flags & ROUTE_BATCH_BODY) ? c->w->cfg->max_batch_body : c->w->cfg->limits.max_body;
    if (c->req.body_kind == HTTP_BODY_LENGTH && c->req.content_length > c->body_limit) {
        respond_fatal(c, 413, "request body too large");
        return false;
    }
    return true;
}

static void dispatch(struct http_ctx *c)
{
    size_t n;
    const struct route *rt = &router_table(&n)[c->m.route];
    c->state = ST_HANDLING;
    c->turn_reqs++;
    loop_timer_disarm(c->w->loop, &c->timer);
    rt->handler(c);
}

/* Move one slice that pointed into the old head at `from` to the same place at `to`. */
static void rebase_str(struct str *s, uintptr_t from, const char *to, size_t len)
{
    /* compared as integers: the old buffer may already be freed */
    uintptr_t p = (uintptr_t)s->ptr;
    if (s->ptr && p >= from && p < from + len)
        s->ptr = to + (p - from);
}

/*
 * The parsed head is a set of slices into the read buffer. When reading the
 * body compacts or reallocates the buffer, move them along with the bytes.
 */
static void rebase_request(struct http_ctx *c, const char *from, const char *to)
{
    uintptr_t f = (uintptr_t)from;
    const char *t = to;
    size_t n = c->head_len;
    struct http_request *r = &c->req;
    rebase_str(&r->method_str, f, t, n);
    rebase_str(&r->target, f, t, n);
    rebase_str(&r->path, f, t, n);
    rebase_str(&r->query, f, t, n);
    rebase_str(&r->host, f, t, n);
    rebase_str(&r->content_type, f, t, n);
    rebase_str(&r->authorization, f, t, n);
    rebase_str(&r->request_id, f, t, n);
    for (size_t i = 0; i < r->num_headers; i++) {
        rebase_str(&r->headers[i].name, f, t, n);
        rebase_str(&r->headers[i].value, f, t, n);
    }
    /* decoded route parameters live in the arena, or point into the path */
    for (size_t i = 0; i < c->m.nparams; i++)
        rebase_str(&c->m.params[i], f, t, n);
}

/* Compact the read buffer and make room for a read. Returns 0 or -1 when full. */
static int make_room(struct http_ctx *c)
{
    const char *req_before = c->in.data + c->in_start;
    int rc = 0;
    if (c->in_start > 0) {
        buf_consume(&c->in, c->in_start);
        c->in_start = 0;
    }
    if (buf_reserve(&c->in, READ_CHUNK) != 0) {
        /* near the cap: any free byte will do */
        rc = c->in.cap > c->in.len || buf_reserve(&c->in, 1) == 0 ? 0 : -1;
    }
    if (c->state == ST_BODY && c->in.data != req_before)
        rebase_request(c, req_before, c->in.data);
    return rc;
}

/* Read once. Returns 1 when bytes arrived, 0 on EAGAIN, -1 on EOF or error. */
static int read_some(struct http_ctx *c)
{
    if (make_room(c) != 0)
        return -1; /* cannot happen within the limits; be safe */
    for (;;) {
        size_t room = c->in.cap - c->in.len;
        ssize_t n = recv(c->io.fd, c->in.data + c->in.len, room, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            /* A short read drained the socket: with edge-triggered epoll the next
             * arrival raises a new event, so skip the recv that would say EAGAIN. */
            if ((size_t)n < room && !c->rdhup)
                c->can_read = false;
            return 1;
        }
        if (n == 0)
            return -1;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return -1;
    }
}

/*
 * Advance the current request with the bytes we have. Returns 1 when progress
 * was made (call again), 0 when more bytes are needed.
 */
static int advance(struct http_ctx *c)
{
    const struct http_limits *lim = &c->w->parse_limits;
    if (c->state == ST_HEAD) {
        size_t avail = c->in.len - c->in_start;
        if (avail == 0)
            return 0;
        int status = 0;
        int rc = http_parse_request(c->in.data + c->in_start, avail, lim, &c->req, &status);
        if (rc == -2)
            return 0;
        c->start_ns = now_ns();
        set_request_id(c, rc > 0 ? c->req.request_id : STR_NULL);
        if (rc < 0) {
            static const struct {
                int status;
                const char *msg;
            } msgs[] = {{400, "bad request"},
                        {413, "request body too large"},
                        {417, "expectation failed"},
                        {431, "request header fields too large"},
                        {501, "transfer-encoding not implemented"},
                        {505, "http version not supported"}};
            const char *msg = "bad request";
            for (size_t i = 0; i < ARRAY_LEN(msgs); i++)
                if (msgs[i].status == status)
                    msg = msgs[i].msg;
            respond_fatal(c, status ? status : 400, msg);
            return 1;
        }
        c->head_len = (size_t)rc;
        if (!c->req.keep_alive)
            c->close_after = true;
        if (!admit(c))
            return 1;
        if (c->req.body_kind == HTTP_BODY_NONE ||
            (c->req.body_kind == HTTP_BODY_LENGTH && c->req.content_length == 0)) {
            dispatch(c);
            return 1;
        }
        c->state = ST_BODY;
        loop_timer_arm(c->w->loop, &c->timer, TIMER_BODY);
        size_t have = c->in.len - c->in_start - c->head_len;
        if (c->req.body_kind == HTTP_BODY_LENGTH && have < c->req.content_length) {
            /* one allocation for the whole body (bounded by max_body, checked by the
             * parser) instead of doubling as it arrives; the head moves with it */
            const char *before = c->in.data + c->in_start;
            if (c->in_start > 0) {
                buf_consume(&c->in, c->in_start);
                c->in_start = 0;
            }
            if (buf_reserve(&c->in, c->head_len + (size_t)c->req.content_length + READ_CHUNK -
                                        c->in.len) != 0) {
                respond_fatal(c, 413, "request body too large");
                return 1;
            }
            if (c->in.data != before)
                rebase_request(c, before, c->in.data);
        }
        bool complete = c->req.body_kind == HTTP_BODY_LENGTH && have >= c->req.content_length;
        if (c->req.expect_continue && !complete && c->req.minor_version == 1)
            buf_append_cstr(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        return 1;
    }
    if (c->state != ST_BODY)
        return 0;
    char *body = c->in.data + c->in_start + c->head_len;
    if (c->req.body_kind == HTTP_BODY_LENGTH) {
        size_t have = c->in.len - c->in_start - c->head_len;
        if (have < c->req.content_length)
            return 0;
        c->body_len = (size_t)c->req.content_length;
        dispatch(c);
        return 1;
    }
    /* chunked: decode the bytes after the decoded part, in place */
    size_t n = c->in.len - c->in_start - c->head_len - c->body_len;
    if (n == 0)
        return 0;
    int status = 0;
    ssize_t r = http_chunked_decode(&c->chunk, body + c->body_len, &n, c->body_limit,
                                    lim->max_header_bytes, &status);
    c->body_len += n;
    if (r == -2) {
        c->in.len = c->in_start + c->head_len + c->body_len;
        return 0;
    }
    if (r < 0) {
        respond_fatal(c, status ? status : 400,
                      status == 413   ? "request body too large"
                      : status == 431 ? "chunked trailer section too large"
                                      : "malformed chunked body");
        return 1;
    }
    c->in.len = c->in_start + c->head_len + c->body_len + (size_t)r;
    dispatch(c);
    return 1;
}

static void update_timer(struct http_ctx *c)
{
    struct loop *l = c->w->loop;
    int want;
    if (c->state == ST_HANDLING || (c->state != ST_HEAD && c->state != ST_BODY && !out_pending(c)))
        want = -1; /* handler running (its own bound applies) or closing */
    else if (out_pending(c))
        want = TIMER_WRITE;
    else if (c->state == ST_BODY)
        want = TIMER_BODY;
    else if (c->fresh || c->in.len > c->in_start)
        want = TIMER_HEADER; /* a request has begun (or the connection is new) */
    else
        want = TIMER_IDLE;
    if (want < 0)
        loop_timer_disarm(l, &c->timer);
    else if (c->timer.cls != want)
        loop_timer_arm(l, &c->timer, (enum timer_class)want);
}

static void conn_process(struct http_ctx *c)
{
    c->in_process = true;
    c->turn_reqs = 0;
    for (;;) {
        if (c->state != ST_HEAD && c->state != ST_BODY)
            break;
        if (c->turn_reqs >= REQS_PER_TURN) {
            /* a deep pipeline must not hold the loop: the others get a turn first */
            queue_ready(c);
            break;
        }
        if (c->out.len - c->out_off > OUT_HIGH_WATER) {
            if (conn_flush(c) != 0) {
                c->state = ST_CLOSED;
                break;
            }
            if (c->out.len - c->out_off > OUT_HIGH_WATER)
                break; /* the client is not reading: wait for EPOLLOUT */
        }
        if (advance(c))
            continue;
        if (!c->can_read)
            break;
        int r = read_some(c);
        if (r == 0) {
            c->can_read = false;
            break;
        }
        if (r < 0) {
            /* EOF or reset: whatever is queued is still worth a try */
            c->close_after = true;
            if (c->state == ST_HEAD || c->state == ST_BODY)
                c->state = ST_CLOSING;
            break;
        }
    }
    c->in_process = false;
    if (c->state != ST_CLOSED && conn_flush(c) != 0) {
        if (c->state == ST_HANDLING) {
            conn_close(c); /* the handler still owns c: it is only marked dead */
            return;
        }
        c->state = ST_CLOSED;
    }
    if (c->state == ST_CLOSED || (c->state == ST_CLOSING && !out_pending(c))) {
        conn_close(c);
        return;
    }
    if (loop_stopping(c->w->loop) && c->state == ST_HEAD && c->in.len == c->in_start &&
        !out_pending(c)) {
        conn_close(c); /* draining: nothing in flight on this connection any more */
        return;
    }
    update_timer(c);
}

/* ---------------------------------------------------------------- connections */

static void on_conn_event(struct loop_io *io, uint32_t events)
{
    struct http_ctx *c = (struct http_ctx *)(void *)io;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->can_read = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->rdhup = true; /* read until EOF is seen: no further edge will come */
    if (c->state == ST_HANDLING) {
        if (events & EPOLLOUT)
            (void)conn_flush(c); /* errors surface on the next read */
        return;
    }
    conn_process(c);
}

static struct http_ctx *conn_new(struct worker *w, int fd)
{
    struct http_ctx *c = w->free_list;
    const struct http_limits *lim = &w->parse_limits;
    if (c) {
        w->free_list = c->next;
        w->nfree--;
    } else {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
        c->hdrs = calloc(lim->max_headers, sizeof *c->hdrs);
        if (!c->hdrs) {
            free(c);
            return NULL;
        }
        buf_init(&c->in, lim->max_header_bytes + lim->max_body + READ_CHUNK);
        buf_init(&c->out, 0);
        buf_init(&c->body, 0);
        buf_init(&c->extra_hdrs, 8192);
        arena_init(&c->arena, (size_t)lim->max_body * 8 + 65536);
    }
    c->io.fd = fd;
    c->io.on_event = on_conn_event;
    c->timer.prev = c->timer.next = NULL;
    c->timer.cls = -1;
    c->w = w;
    c->state = ST_HEAD;
    c->can_read = true;
    c->rdhup = false;
    c->in_process = c->dead = c->close_after = c->queued = false;
    c->fresh = true;
    c->in.len = c->in_start = c->out.len = c->out_off = 0;
    c->head_len = c->body_len = 0;
    memset(&c->chunk, 0, sizeof c->chunk);
    memset(&c->req, 0, sizeof c->req);
    c->req.headers = c->hdrs;
    c->m.route = c->m.path_route = -1;
    c->reqid_len = 0;
    c->start_ns = 0;
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    return c;
}

static void conn_destroy(struct http_ctx *c)
{
    free(c->hdrs);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->body);
    buf_free(&c->extra_hdrs);
    arena_free(&c->arena);
    free(c);
}

/* Return the struct to the free list (or free it). The fd is already closed. */
static void release(struct http_ctx *c)
{
    struct worker *w = c->w;
    if (w->nfree >= FREE_CONNS_MAX) {
        conn_destroy(c);
        return;
    }
    buf_reset(&c->body);
    buf_reset(&c->extra_hdrs);
    buf_shrink(&c->body, KEEP_BUF);
    c->in.len = 0;
    buf_shrink(&c->in, KEEP_BUF);
    c->out.len = 0;
    buf_shrink(&c->out, KEEP_BUF);
    arena_reset(&c->arena, ARENA_KEEP);
    c->next = w->free_list;
    w->free_list = c;
    w->nfree++;
}

static void conn_close(struct http_ctx *c)
{
    struct worker *w = c->w;
    if (c->io.fd < 0)
        return;
    loop_timer_disarm(w->loop, &c->timer);
    close(c->io.fd); /* also removes it from epoll */
    c->io.fd = -1;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    if (c->state == ST_HANDLING) {
        c->dead = true; /* the handler still owns it: released when it responds */
        w->nowned++;
        return;
    }
    c->state = ST_CLOSED;
    if (!c->queued)
        release(c);
}

/* Idle keep-alive and stalled writes: close without a word. */
static void on_close_timeout(struct loop *l, struct timer_node *t)
{
    (void)l;
    conn_close(container_of(t, struct http_ctx, timer));
}

static void on_header_timeout(struct loop *l, struct timer_node *t)
{
    (void)l;
    struct http_ctx *c = container_of(t, struct http_ctx, timer);
    if (c->state == ST_HEAD || c->state == ST_BODY) {
        respond_fatal(c, 408, "request timeout");
        if (conn_flush(c) != 0 || !out_pending(c)) {
            conn_close(c);
            return;
        }
        update_timer(c);
        return;
    }
    conn_close(c);
}

/* ---------------------------------------------------------------- accept */

static void pause_accept(struct worker *w)
{
    loop_mod(w->loop, &w->listen, 0);
    loop_timer_arm(w->loop, &w->accept_timer, TIMER_ACCEPT);
}

static void on_accept(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct worker *w = container_of(io, struct worker, listen);
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                static _Thread_local uint64_t last_warn;
                if (loop_now_ms(w->loop) - last_warn > 10000) {
                    last_warn = loop_now_ms(w->loop);
                    log_warn("accept: %s; pausing new connections (%zu open on loop %d)",
                             strerror(errno), w->nconns, w->index);
                }
                pause_accept(w);
                return;
            }
            log_error("accept failed: %s", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct http_ctx *c = conn_new(w, fd);
        if (!c) {
            close(fd);
            continue;
        }
        if (loop_add(w->loop, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) != 0) {
            log_error("epoll_ctl(add) failed: %s", strerror(errno));
            conn_close(c);
            continue;
        }
        loop_timer_arm(w->loop, &c->timer, TIMER_HEADER);
    }
}

static void on_accept_resume(struct loop *l, struct timer_node *t)
{
    struct worker *w = container_of(t, struct worker, accept_timer);
    if (!loop_stopping(l) && w->listen.fd >= 0)
        loop_mod(l, &w->listen, EPOLLIN);
}

/* ---------------------------------------------------------------- loop hooks */

static void after_events(struct loop *l, void *arg)
{
    (void)l;
    struct worker *w = arg;
    /* one pass over what is queued now; connections queued meanwhile wait for the
     * next iteration (after new events), so a pipelining client cannot starve others */
    struct http_ctx *list = w->ready;
    w->ready = NULL;
    while (list) {
        struct http_ctx *c = list;
        list = c->next_ready;
        c->queued = false;
        if (c->state == ST_CLOSED)
            release(c);
        else
            conn_process(c);
    }
    /* the storage work this turn deferred (SQLite: its user creates, one commit) */
    if (w->db)
        db_flush(w->db);
    log_flush();
}

static bool has_work(struct loop *l, void *arg)
{
    (void)l;
    return ((struct worker *)arg)->ready != NULL;
}

static void on_stop(struct loop *l, void *arg)
{
    struct worker *w = arg;
    if (w->listen.fd >= 0) {
        loop_del(l, &w->listen);
        close(w->listen.fd);
        w->listen.fd = -1;
    }
    loop_timer_disarm(l, &w->accept_timer);
    /* Idle keep-alive connections go now; requests in flight finish with
     * Connection: close. "Idle" is decided after one more read: a request the
     * client sent before the signal may still sit in the socket, unread while
     * the loop was busy - closing over it would reset the client. conn_process
     * answers it (and then closes), or finds nothing and closes. */
    for (struct http_ctx *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == ST_HEAD && c->in.len == c->in_start && !out_pending(c) && !c->queued) {
            c->can_read = true;
            conn_process(c);
        }
    }
}

static bool drained(struct loop *l, void *arg)
{
    (void)l;
    struct worker *w = arg;
    /* also wait for handlers still working for clients that left (a batch on
     * the pool): their completions are posted to this loop, and a loop that
     * exited would drop them with the request's memory */
    return w->nconns == 0 && w->nowned == 0;
}

/*
 * Give memory that bursts (big batches, large bodies) left free in malloc's
 * heaps back to the system, so RSS follows the load down: malloc_trim once a
 * second (glibc trims every arena). It walks and madvises every arena,
 * holding each one's lock, and took up to 16 ms after big batches: on loop 0
 * that stalled every connection of the loop once a second (the p99 of
 * POST /orders/process at a fixed rate). So it runs on the worker pool, at
 * most one at a time.
 *
 * Not done: a fixed M_MMAP_THRESHOLD (64 kB), so that big blocks are
 * mmapped and go back on free. Peak RSS stayed the same (the big blocks are
 * live at the peak anyway) and a 1000-order batch cost 3-4 times the CPU:
 * fresh pages to fault in and munmaps to shoot down on every request.
 */
static atomic_bool g_trim_queued;

static void trim_run(void *arg, size_t begin, size_t end)
{
    (void)arg;
    (void)begin;
    (void)end;
    malloc_trim((size_t)64 * 1024);
}

static void trim_done(void *arg)
{
    (void)arg;
    atomic_store_explicit(&g_trim_queued, false, memory_order_relaxed);
}

/*
 * Trim only once the pool has been idle for a tick: under steady batch load
 * the freed memory is reused by the next batch anyway, and a trim (up to
 * ~20 ms) on the pool's only worker - one CPU - delayed the batch behind it
 * (the fixed-rate p99). When the load stops, RSS still comes down within
 * about two seconds.
 */
static void trim_later(struct loop *l)
{
    static uint64_t seen; /* loop 0 only */
    uint64_t now = workpool_scheduled();
    if (now != seen) {
        seen = now;
        return;
    }
    if (atomic_exchange_explicit(&g_trim_queued, true, memory_order_relaxed))
        return;
    if (workpool_run(l, 1, 1, trim_run, trim_done, NULL) != 0)
        atomic_store_explicit(&g_trim_queued, false, memory_order_relaxed);
    seen = workpool_scheduled(); /* the trim itself is not load */
}

static void on_tick(struct loop *l, void *arg)
{
    (void)l;
    struct worker *w = arg;
    struct db_stats st = {0, 0};
    if (w->db) {
        db_tick(w->db);
        db_stats(w->db, &st);
    }
    metrics_set_db(w->index, st.connections, st.busy);
    if (w->index == 0)
        trim_later(l);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct loop_hooks hooks = {
        .after_events = after_events,
        .drained = drained,
        .on_stop = on_stop,
        .on_tick = on_tick,
        .has_work = has_work,
        .arg = w,
    };
    on_tick(w->loop, w);
    if (loop_run(w->loop, &hooks, w->cfg->drain_ms) != 0) {
        w->exit_code = -1;
        kill(getpid(), SIGTERM); /* bring the whole process down cleanly */
    }
    for (struct http_ctx *c = w->conns, *next; c; c = next) {
        next = c->next;
        conn_close(c);
    }
    /* The drain deadline passed with handlers still working (a batch on the
     * pool): their completions are posted to this loop, so turn it (one
     * iteration per call now that it is stopping) until they have all
     * answered - else they, and their requests' memory, would be dropped with
     * the loop. The pool always finishes; 30 s bounds a stuck database, whose
     * waits db_close then ends. */
    uint64_t give_up = loop_now_ms(w->loop) + 30000;
    while (w->nowned > 0 && loop_now_ms(w->loop) < give_up)
        loop_run(w->loop, &hooks, 0);
    if (w->nowned > 0)
        log_warn("loop %d: %zu handlers still running at exit", w->index, w->nowned);
    /* closing the handle completes what still waits on it (503), which releases
     * connections whose client left mid-query: before the free list goes */
    db_close(w->db);
    w->db = NULL;
    while (w->free_list) {
        struct http_ctx *c = w->free_list;
        w->free_list = c->next;
        conn_destroy(c);
    }
    log_thread_done();
    return NULL;
}

/* ---------------------------------------------------------------- start-up */

/* Fill *ss for host:port. Returns the address length, or 0 (logged) for a bad host. */
static socklen_t make_addr(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        return sizeof *s4;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        return sizeof *s6;
    }
    log_error("BRISK_ADDR: %s is not a numeric IPv4 or IPv6 address", host);
    return 0;
}

/*
 * Bind a socket to host:port. With reuseport the loops' listeners share the
 * port; without it the bind fails if anyone (another brisk included) holds it.
 * Returns the fd, or -1 after logging.
 */
static int bind_socket(const char *host, int port, bool reuseport)
{
    struct sockaddr_storage ss;
    socklen_t sl = make_addr(host, port, &ss);
    if (!sl)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)) {
        log_error("setsockopt(SO_REUSEADDR/SO_REUSEPORT): %s", strerror(errno));
        goto fail;
    }
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        log_error("cannot listen on %s:%d: %s", host, port, strerror(errno));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return -1;
}

/*
 * Claim the port for this process: a plain bind (no SO_REUSEPORT) fails when
 * another process listens there, even one using SO_REUSEPORT - otherwise a
 * second brisk started by mistake would silently take half the connections.
 * For port 0, picks the port all loops then share. Returns the port or -1.
 */
static int claim_port(const struct server_config *cfg)
{
    int fd = bind_socket(cfg->addr_host, cfg->port, false);
    if (fd < 0)
        return -1;
    int port = cfg->port;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl = sizeof ss;
    if (port == 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                             : ((struct sockaddr_in6 *)&ss)->sin6_port);
    close(fd);
    return port;
}

/* One loop's listening socket on the claimed port. Returns the fd or -1 (logged). */
static int open_listener(const struct server_config *cfg, int port)
{
    int fd = bind_socket(cfg->addr_host, port, true);
    if (fd < 0)
        return -1;
    if (listen(fd, 4096) != 0) {
        log_error("listen: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void workers_free(int n)
{
    for (int i = 0; g_workers && i < n; i++) {
        struct worker *w = &g_workers[i];
        if (w->listen.fd >= 0)
            close(w->listen.fd);
        db_close(w->db);
        loop_destroy(w->loop);
    }
    free(g_workers);
    g_workers = NULL;
}

int server_run(const struct server_config *cfg)
{
    int rc = -1;
    int started = 0;
    sigset_t sigs;

    unsigned char rnd[4];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        memset(rnd, 0, sizeof rnd);
    snprintf(g_reqid_prefix, sizeof g_reqid_prefix, "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3]);
    g_auth = cfg->api_token && cfg->api_token[0];
    if (g_auth)
        SHA256((const unsigned char *)cfg->api_token, strlen(cfg->api_token), g_token_hash);

    loop_set_timeout(TIMER_HEADER, cfg->header_timeout_ms, on_header_timeout);
    loop_set_timeout(TIMER_BODY, cfg->body_timeout_ms, on_header_timeout);
    loop_set_timeout(TIMER_IDLE, cfg->idle_timeout_ms, on_close_timeout);
    loop_set_timeout(TIMER_WRITE, cfg->body_timeout_ms, on_close_timeout);
    loop_set_timeout(TIMER_ACCEPT, ACCEPT_PAUSE_MS, on_accept_resume);

    size_t nroutes;
    router_table(&nroutes);
    if (metrics_init(cfg->threads, nroutes) != 0) {
        log_error("out of memory allocating metrics");
        return -1;
    }

    /* Signals: SIGPIPE ignored (we also send with MSG_NOSIGNAL); TERM/INT are
     * blocked in every thread and taken by sigwait() below. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    if (workpool_start(cfg->threads) != 0)
        goto out_metrics;
    if (cfg->start_services && cfg->start_services() != 0)
        goto out_pool;

    g_nworkers = cfg->threads;
    g_workers = calloc((size_t)cfg->threads, sizeof *g_workers);
    if (!g_workers) {
        log_error("out of memory allocating workers");
        goto out_workers;
    }
    for (int i = 0; i < cfg->threads; i++)
        g_workers[i].listen.fd = -1;
    int port = claim_port(cfg);
    if (port < 0)
        goto out_workers;
    for (int i = 0; i < cfg->threads; i++) {
        struct worker *w = &g_workers[i];
        w->index = i;
        w->cfg = cfg;
        w->parse_limits = cfg->limits;
        if (cfg->max_batch_body > w->parse_limits.max_body)
            w->parse_limits.max_body = cfg->max_batch_body;
        w->accept_timer.cls = -1;
        w->loop = loop_create(i);
        if (!w->loop)
            goto out_workers;
        loop_set_data(w->loop, w);
        w->listen.fd = open_listener(cfg, port);
        if (w->listen.fd < 0)
            goto out_workers;
        w->listen.on_event = on_accept;
        if (loop_add(w->loop, &w->listen, EPOLLIN) != 0) {
            log_error("epoll_ctl(listener): %s", strerror(errno));
            goto out_workers;
        }
        w->db = db_open(cfg->db, w->loop);
        if (!w->db)
            goto out_workers;
    }
    if (cfg->harden && cfg->harden() != 0)
        goto out_workers;
    for (; started < cfg->threads; started++) {
        if (pthread_create(&g_workers[started].tid, NULL, worker_main, &g_workers[started]) != 0) {
            log_error("cannot start thread %d", started);
            break;
        }
    }
    if (started == cfg->threads)
        log_info("brisk %s listening on %s:%d with %d thread%s, database %s", BRISK_VERSION,
                 cfg->addr_host, port, cfg->threads, cfg->threads == 1 ? "" : "s",
                 db_backend_name(g_workers[0].db));

    if (started == cfg->threads) {
        int sig = 0;
        while (sigwait(&sigs, &sig) != 0)
            ;
        log_info("%s received: draining (at most %llu ms)", sig == SIGINT ? "SIGINT" : "SIGTERM",
                 (unsigned long long)cfg->drain_ms);
    }
    for (int i = 0; i < started; i++)
        loop_request_stop(g_workers[i].loop);
    rc = started == cfg->threads ? 0 : -1;
    for (int i = 0; i < started; i++) {
        pthread_join(g_workers[i].tid, NULL);
        if (g_workers[i].exit_code)
            rc = -1;
    }
out_workers:
    /* order matters: loops are joined, so no new work; the pool's last
     * completions are posted to loops that still exist until workers_free */
    if (cfg->stop_services)
        cfg->stop_services();
out_pool:
    workpool_stop();
    workers_free(cfg->threads);
    if (rc == 0)
        log_info("shutdown complete");
out_metrics:
    metrics_free();
    return rc;
}
