/*
 * h1.c - HTTP/1.1 connections: bytes from a transport become requests (the
 * struct http_ctx handlers see), responses become bytes again.
 *
 * A connection serves one request at a time, so it embeds its request object
 * (pipelined requests are parsed only after the previous response is queued,
 * which keeps responses in order and keeps the slices of the current request
 * valid).
 *
 * Connection life: HEAD (waiting for a complete request head) -> BODY (reading
 * a body) -> HANDLING (handler running, possibly waiting for the database) ->
 * back to HEAD, or CLOSING (flush what is queued, then close).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/compiler.h"
#include "base/log.h"
#include "http/compress.h"
#include "http/http_int.h"
#include "net/tls.h"
#include "net/transport.h"

#define READ_CHUNK 16384          /* free space ensured before each read */
#define OUT_HIGH_WATER (1u << 20) /* stop parsing pipelined requests above this backlog */
#define FREE_CONNS_MAX 256        /* connection structs kept per loop for reuse */
#define KITS_MAX 64               /* parked working memories kept per loop for reuse */
#define REQS_PER_TURN 32 /* pipelined requests answered before other connections get a turn */

/* ST_H2: the connection speaks HTTP/2; its session (h2.c) holds the request states */
enum conn_state { ST_HEAD, ST_BODY, ST_HANDLING, ST_CLOSING, ST_CLOSED, ST_H2 };

/* The client connection preface of HTTP/2 (RFC 9113 3.4): h2c by prior knowledge. */
static const char k_h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof k_h2_preface - 1)

struct h1_conn {
    struct loop_io io; /* first: the loop hands us this pointer; io.fd == t.fd */
    struct transport t;
    struct timer_node timer;
    struct http_loop *hl;
    struct h1_conn *prev, *next; /* all connections of the loop */
    struct h1_conn *next_ready;  /* deferred-processing list */
    bool queued;

    enum conn_state state;
    bool can_read;
    bool rdhup; /* the peer shut down its side (or the socket failed) */
    bool in_process;
    unsigned turn_reqs; /* requests dispatched in the current conn_process call */
    bool fresh;         /* no request completed yet on this connection */

    struct buf in; /* received bytes; the current request starts at in_start */
    size_t in_start;
    struct buf out; /* queued response bytes; out_off already written */
    size_t out_off;

    /* framing of the current request */
    size_t head_len;
    size_t body_len; /* body bytes (decoded) at in.data + in_start + head_len */
    struct http_chunked chunk;

    struct http_ctx rq; /* the request being served */

    struct h2_session *h2; /* ST_H2 */
    struct h2_link link;
    bool h2_failed; /* the session cannot go on: flush, then close */
    bool tls;
};

/*
 * The working memory of an HTTP/1.1 connection: its buffers, header array and
 * arena. An idle keep-alive connection (nothing buffered either way) parks it
 * in its loop's pool and holds only its struct (under 1 kB); the next bytes
 * take a kit back, so 10,000 idle clients cost 10,000 structs, not 10,000
 * sets of buffers, and a busy loop still allocates nothing per request.
 */
struct h1_kit {
    struct buf in, out, body, extra;
    struct http_header *hdrs;
    struct arena arena;
};

static void conn_process(struct h1_conn *k);
static void conn_close(struct h1_conn *k);
static void release(struct h1_conn *k);
static void h1_respond(struct http_ctx *c, int status, const char *content_type);
static void h2_process(struct h1_conn *k);

static const struct http_proto k_h1_proto = {.respond = h1_respond};

static struct h1_conn *conn_of(struct http_ctx *c)
{
    return container_of(c, struct h1_conn, rq);
}

/* ---------------------------------------------------------------- output */

/* Write queued output. Returns 0 (all written or EAGAIN) or -1 (connection broken). */
static int conn_flush(struct h1_conn *k)
{
    while (k->out_off < k->out.len) {
        struct iovec iov = {k->out.data + k->out_off, k->out.len - k->out_off};
        ssize_t n = transport_writev(&k->t, &iov, 1);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1; /* EPIPE, ECONNRESET, ...: the peer is gone */
        }
        k->out_off += (size_t)n;
    }
    k->out.len = 0;
    k->out_off = 0;
    buf_shrink(&k->out, HTTP_KEEP_BUF);
    return 0;
}

static bool out_pending(const struct h1_conn *k)
{
    return k->out_off < k->out.len;
}

/*
 * Hand a big body (a batch's response) to the output buffer instead of
 * copying it there: the head, already in out (which holds nothing else),
 * moves in front of the body and the two buffers trade places. Saves a
 * second buffer of the body's size, and the page faults of filling it.
 */
static void adopt_body(struct buf *o, struct buf *b)
{
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
 * and log it. The body is taken from rq.body (nothing for 1xx/204/304; only
 * its length for HEAD), gzip'd first when the client asked (compress.h).
 */
static void queue_response(struct h1_conn *k, int status, const char *ctype)
{
    struct http_ctx *c = &k->rq;
    struct buf *o = &k->out;
    bool nobody = status == 204 || status == 304;
    size_t before = o->len;
    if (c->body.failed) {
        /* the body outgrew its cap: replace it with an error we can always send */
        buf_reset(&c->body);
        buf_append_cstr(&c->body, "{\"error\":\"response too large\"}");
        status = 500;
        ctype = NULL;
    }
    /* before Content-Length: a gzip'd body has its own length (HEAD's too) */
    enum http_body_coding coding = http_compress_response(c, status, ctype, k->head_len > 0);
    buf_append_cstr(o, "HTTP/1.1 ");
    buf_append_u64(o, (uint64_t)status);
    buf_append_char(o, ' ');
    buf_append_cstr(o, http_reason(status));
    buf_append_cstr(o, "\r\nServer: brisk\r\nDate: ");
    buf_append(o, loop_date(k->hl->loop), 29);
    if (!nobody) {
        buf_append_cstr(o, "\r\nContent-Type: ");
        buf_append_cstr(o, ctype ? ctype : "application/json");
        buf_append_cstr(o, "\r\nContent-Length: ");
        buf_append_u64(o, c->body.len);
    }
    if (coding == HTTP_BODY_GZIP)
        buf_append_cstr(o, "\r\nContent-Encoding: gzip");
    if (coding != HTTP_BODY_PLAIN)
        buf_append_cstr(o, "\r\nVary: Accept-Encoding");
    buf_append_cstr(o, "\r\nX-Request-Id: ");
    buf_append(o, c->reqid, c->reqid_len);
    buf_append_cstr(o, "\r\n");
    if (c->extra_hdrs.len)
        buf_append(o, c->extra_hdrs.data, c->extra_hdrs.len);
    if (c->close_after || loop_stopping(k->hl->loop))
        buf_append_cstr(o, "Connection: close\r\n");
    else if (c->req.minor_version == 0)
        buf_append_cstr(o, "Connection: keep-alive\r\n");
    buf_append_cstr(o, "\r\n");
    size_t body_len = c->body.len;
    if (!nobody && !c->head_only) {
        if (before == 0 && body_len > HTTP_KEEP_BUF && !o->failed)
            adopt_body(o, &c->body);
        else
            buf_append(o, c->body.data, body_len);
    }
    if (o->failed) {
        log_error("could not queue a response of %zu bytes", body_len);
        o->len = before;
        o->failed = 0;
        c->close_after = true;
    }
    c->bytes_in = k->head_len + k->body_len;
    http_request_record(c, status, o->len - before);
}

/* Reset per-request state after the response to the current request was queued. */
static void finish_request(struct h1_conn *k)
{
    k->in_start += k->head_len + k->body_len;
    if (k->in_start >= k->in.len) {
        k->in.len = 0;
        k->in_start = 0;
        buf_shrink(&k->in, HTTP_KEEP_BUF); /* a big body's buffer is not kept for small requests */
    }
    k->head_len = 0;
    k->body_len = 0;
    memset(&k->chunk, 0, sizeof k->chunk);
    http_ctx_reset(&k->rq);
    k->fresh = false;
    loop_timer_disarm(k->hl->loop, &k->timer);
    if (k->rq.close_after || loop_stopping(k->hl->loop))
        k->state = ST_CLOSING;
    else
        k->state = ST_HEAD;
}

/* Answer an error that ends the connection (framing errors, timeouts). */
static void respond_fatal(struct h1_conn *k, int status, const char *msg)
{
    struct http_ctx *c = &k->rq;
    if (!c->reqid_len)
        http_request_set_id(c, STR_NULL);
    if (!c->start_ns)
        c->start_ns = http_now_ns();
    c->close_after = true;
    http_error_body(&c->body, msg);
    queue_response(k, status, NULL);
    k->head_len = k->body_len = 0;
    k->in.len = k->in_start = 0; /* refused bytes never reach another request */
    finish_request(k);
}

/* Continue this connection after the current batch of events (once per loop iteration). */
static void queue_ready(struct h1_conn *k)
{
    if (k->queued)
        return;
    k->queued = true;
    k->next_ready = k->hl->ready;
    k->hl->ready = k;
}

static void h1_respond(struct http_ctx *c, int status, const char *content_type)
{
    struct h1_conn *k = conn_of(c);
    if (c->dead) {
        /* the client went away while the handler waited: nothing to send */
        k->hl->nowned--;
        if (k->queued) {
            k->state = ST_CLOSED; /* still on the ready list: h1_run_ready releases it */
            return;
        }
        release(k);
        return;
    }
    queue_response(k, status, content_type);
    finish_request(k);
    if (!k->in_process)
        queue_ready(k); /* finished from a callback: continue after the current events */
}

/* ---------------------------------------------------------------- request flow */

static void dispatch(struct h1_conn *k)
{
    k->state = ST_HANDLING;
    k->turn_reqs++;
    loop_timer_disarm(k->hl->loop, &k->timer);
    k->rq.body_in = (struct str){k->in.data + k->in_start + k->head_len, k->body_len};
    http_request_dispatch(&k->rq);
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
static void rebase_request(struct h1_conn *k, const char *from, const char *to)
{
    uintptr_t f = (uintptr_t)from;
    const char *t = to;
    size_t n = k->head_len;
    struct http_request *r = &k->rq.req;
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
    for (size_t i = 0; i < k->rq.m.nparams; i++)
        rebase_str(&k->rq.m.params[i], f, t, n);
}

/* Compact the read buffer and make room for a read. Returns 0 or -1 when full. */
static int make_room(struct h1_conn *k)
{
    const char *req_before = k->in.data + k->in_start;
    int rc = 0;
    if (k->in_start > 0) {
        buf_consume(&k->in, k->in_start);
        k->in_start = 0;
    }
    if (buf_reserve(&k->in, READ_CHUNK) != 0) {
        /* near the cap: any free byte will do */
        rc = k->in.cap > k->in.len || buf_reserve(&k->in, 1) == 0 ? 0 : -1;
    }
    if (k->state == ST_BODY && k->in.data != req_before)
        rebase_request(k, req_before, k->in.data);
    return rc;
}

/* Read once. Returns 1 when bytes arrived, 0 on EAGAIN, -1 on EOF or error. */
static int read_some(struct h1_conn *k)
{
    if (make_room(k) != 0)
        return -1; /* cannot happen within the limits; be safe */
    size_t room = k->in.cap - k->in.len;
    ssize_t n = transport_read(&k->t, k->in.data + k->in.len, room);
    if (n > 0) {
        k->in.len += (size_t)n;
        /* A short read drained the socket: with edge-triggered epoll the next
         * arrival raises a new event, so skip the read that would say EAGAIN
         * (unless the transport holds decoded bytes of its own). */
        if ((size_t)n < room && !k->rdhup && !transport_has_pending(&k->t))
            k->can_read = false;
        return 1;
    }
    if (n == 0)
        return -1;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
    return -1;
}

/* The status and message of a request head the parser refused. */
static const char *parse_error_msg(int status)
{
    static const struct {
        int status;
        const char *msg;
    } msgs[] = {{400, "bad request"},
                {413, "request body too large"},
                {417, "expectation failed"},
                {431, "request header fields too large"},
                {501, "transfer-encoding not implemented"},
                {505, "http version not supported"}};
    for (size_t i = 0; i < ARRAY_LEN(msgs); i++)
        if (msgs[i].status == status)
            return msgs[i].msg;
    return "bad request";
}

/* A complete head was parsed (head_len set): admit it, then dispatch or start the body. */
static void start_request(struct h1_conn *k)
{
    struct http_ctx *c = &k->rq;
    if (!c->req.keep_alive)
        c->close_after = true;
    enum http_admit a = http_request_admit(c);
    if (a == HTTP_ADMIT_ANSWERED)
        return;
    if (a == HTTP_ADMIT_TOO_LARGE) {
        respond_fatal(k, 413, "request body too large");
        return;
    }
    if (c->req.body_kind == HTTP_BODY_NONE ||
        (c->req.body_kind == HTTP_BODY_LENGTH && c->req.content_length == 0)) {
        dispatch(k);
        return;
    }
    k->state = ST_BODY;
    loop_timer_arm(k->hl->loop, &k->timer, HTTP_TIMER_BODY);
    size_t have = k->in.len - k->in_start - k->head_len;
    if (c->req.body_kind == HTTP_BODY_LENGTH && have < c->req.content_length) {
        /* one allocation for the whole body (bounded by max_body, checked by the
         * parser) instead of doubling as it arrives; the head moves with it */
        const char *before = k->in.data + k->in_start;
        if (k->in_start > 0) {
            buf_consume(&k->in, k->in_start);
            k->in_start = 0;
        }
        if (buf_reserve(&k->in, k->head_len + (size_t)c->req.content_length + READ_CHUNK -
                                    k->in.len) != 0) {
            respond_fatal(k, 413, "request body too large");
            return;
        }
        if (k->in.data != before)
            rebase_request(k, before, k->in.data);
    }
    bool complete = c->req.body_kind == HTTP_BODY_LENGTH && have >= c->req.content_length;
    if (c->req.expect_continue && !complete && c->req.minor_version == 1)
        buf_append_cstr(&k->out, "HTTP/1.1 100 Continue\r\n\r\n");
}

/*
 * Does the first request on this connection come as HTTP/2? 1: yes (ALPN chose h2, or
 * the bytes are the preface), 0: no, -1: the bytes so far are a prefix of the preface.
 */
static int wants_h2(const struct h1_conn *k, size_t avail)
{
    if (k->tls)
        return tls_transport_is_h2(&k->t) ? 1 : 0;
    size_t n = avail < H2_PREFACE_LEN ? avail : H2_PREFACE_LEN;
    if (memcmp(k->in.data, k_h2_preface, n) != 0)
        return 0;
    return n < H2_PREFACE_LEN ? -1 : 1;
}

static void h2_wake(struct h2_link *link)
{
    struct h1_conn *k = container_of(link, struct h1_conn, link);
    if (!k->in_process)
        queue_ready(k);
}

/* Hand the connection to an HTTP/2 session (the bytes read so far are its first). */
static int start_h2(struct h1_conn *k)
{
    k->link.wake = h2_wake;
    k->h2 = h2_session_new(k->hl, &k->link, k->rq.peer, k->rq.peer_len);
    if (!k->h2) {
        log_error("out of memory for an HTTP/2 session");
        k->state = ST_CLOSED;
        return 0;
    }
    k->state = ST_H2;
    k->fresh = false;
    loop_timer_disarm(k->hl->loop, &k->timer);
    return 0;
}

/*
 * Advance the current request with the bytes we have. Returns 1 when progress
 * was made (call again), 0 when more bytes are needed.
 */
static int advance(struct h1_conn *k)
{
    struct http_ctx *c = &k->rq;
    const struct http_limits *lim = &k->hl->parse_limits;
    if (k->state == ST_HEAD) {
        size_t avail = k->in.len - k->in_start;
        if (avail == 0)
            return 0;
        if (k->fresh && k->in_start == 0 && h2_enabled()) {
            int h2 = wants_h2(k, avail);
            if (h2 < 0)
                return 0; /* a prefix of the preface: wait for the rest */
            if (h2 > 0)
                return start_h2(k);
        }
        int status = 0;
        int rc = http_parse_request(k->in.data + k->in_start, avail, lim, &c->req, &status);
        if (rc == -2)
            return 0;
        c->start_ns = http_now_ns();
        http_request_set_id(c, rc > 0 ? c->req.request_id : STR_NULL);
        if (rc < 0) {
            respond_fatal(k, status ? status : 400, parse_error_msg(status));
            return 1;
        }
        k->head_len = (size_t)rc;
        start_request(k);
        return 1;
    }
    if (k->state != ST_BODY)
        return 0;
    char *body = k->in.data + k->in_start + k->head_len;
    if (c->req.body_kind == HTTP_BODY_LENGTH) {
        size_t have = k->in.len - k->in_start - k->head_len;
        if (have < c->req.content_length)
            return 0;
        k->body_len = (size_t)c->req.content_length;
        dispatch(k);
        return 1;
    }
    /* chunked: decode the bytes after the decoded part, in place */
    size_t n = k->in.len - k->in_start - k->head_len - k->body_len;
    if (n == 0)
        return 0;
    int status = 0;
    ssize_t r = http_chunked_decode(&k->chunk, body + k->body_len, &n, c->body_limit,
                                    lim->max_header_bytes, &status);
    k->body_len += n;
    if (r == -2) {
        k->in.len = k->in_start + k->head_len + k->body_len;
        return 0;
    }
    if (r < 0) {
        respond_fatal(k, status ? status : 400,
                      status == 413   ? "request body too large"
                      : status == 431 ? "chunked trailer section too large"
                                      : "malformed chunked body");
        return 1;
    }
    k->in.len = k->in_start + k->head_len + k->body_len + (size_t)r;
    dispatch(k);
    return 1;
}

static void update_timer(struct h1_conn *k)
{
    struct loop *l = k->hl->loop;
    int want;
    if (k->state == ST_HANDLING || (k->state != ST_HEAD && k->state != ST_BODY && !out_pending(k)))
        want = -1; /* handler running (its own bound applies) or closing */
    else if (out_pending(k))
        want = HTTP_TIMER_WRITE;
    else if (k->state == ST_BODY)
        want = HTTP_TIMER_BODY;
    else if (k->fresh || k->in.len > k->in_start)
        want = HTTP_TIMER_HEADER; /* a request has begun (or the connection is new) */
    else
        want = HTTP_TIMER_IDLE;
    if (want < 0)
        loop_timer_disarm(l, &k->timer);
    else if (k->timer.cls != want)
        loop_timer_arm(l, &k->timer, want);
}

static void kit_free(struct h1_kit *t)
{
    buf_free(&t->in);
    buf_free(&t->out);
    buf_free(&t->body);
    buf_free(&t->extra);
    free(t->hdrs);
    arena_free(&t->arena);
}

/* Give k a kit (a parked one, else a fresh header array and empty buffers) when it
 * has none. Returns 0 or -1 (out of memory). */
static int kit_take(struct h1_conn *k)
{
    struct http_loop *hl = k->hl;
    if (k->rq.hdrs)
        return 0;
    if (hl->nkits > 0) {
        /* buffers a kit-less connection grew (a 408 to a client that sent nothing) */
        struct h1_kit own = {k->in, k->out, k->rq.body, k->rq.extra_hdrs, NULL, k->rq.arena};
        kit_free(&own);
        struct h1_kit *t = &hl->kits[--hl->nkits];
        k->in = t->in;
        k->out = t->out;
        k->rq.body = t->body;
        k->rq.extra_hdrs = t->extra;
        k->rq.hdrs = t->hdrs;
        k->rq.arena = t->arena;
    } else {
        k->rq.hdrs = calloc(hl->parse_limits.max_headers, sizeof *k->rq.hdrs);
        if (!k->rq.hdrs)
            return -1;
    }
    k->rq.req.headers = k->rq.hdrs;
    return 0;
}

/* Park k's kit in the loop's pool (or free it when the pool is full, and free
 * whatever buffers a kit-less k grew); k must hold no bytes in either direction and
 * no request. */
static void kit_park(struct h1_conn *k)
{
    struct http_loop *hl = k->hl;
    k->in.len = k->in_start = 0;
    k->out.len = k->out_off = 0;
    buf_shrink(&k->in, HTTP_KEEP_BUF);
    buf_shrink(&k->out, HTTP_KEEP_BUF);
    struct h1_kit t = {k->in, k->out, k->rq.body, k->rq.extra_hdrs, k->rq.hdrs, k->rq.arena};
    if (!hl->kits)
        hl->kits = calloc(KITS_MAX, sizeof *hl->kits);
    if (t.hdrs && hl->kits && hl->nkits < KITS_MAX)
        hl->kits[hl->nkits++] = t;
    else
        kit_free(&t);
    buf_init(&k->in, t.in.max);
    buf_init(&k->out, t.out.max);
    buf_init(&k->rq.body, t.body.max);
    buf_init(&k->rq.extra_hdrs, t.extra.max);
    k->rq.hdrs = NULL;
    k->rq.req.headers = NULL;
    arena_init(&k->rq.arena, t.arena.cap);
}

static void conn_process(struct h1_conn *k)
{
    if (k->t.fd < 0)
        return; /* closed while its handler ran (queued before): nothing to read or write */
    if (k->state == ST_H2) {
        h2_process(k);
        return;
    }
    if (kit_take(k) != 0) {
        conn_close(k);
        return;
    }
    k->in_process = true;
    k->turn_reqs = 0;
    for (;;) {
        if (k->state != ST_HEAD && k->state != ST_BODY)
            break;
        if (k->turn_reqs >= REQS_PER_TURN) {
            /* a deep pipeline must not hold the loop: the others get a turn first */
            queue_ready(k);
            break;
        }
        if (k->out.len - k->out_off > OUT_HIGH_WATER) {
            if (conn_flush(k) != 0) {
                k->state = ST_CLOSED;
                break;
            }
            if (k->out.len - k->out_off > OUT_HIGH_WATER)
                break; /* the client is not reading: wait for EPOLLOUT */
        }
        if (advance(k))
            continue;
        if (!k->can_read)
            break;
        int r = read_some(k);
        if (r == 0) {
            k->can_read = false;
            break;
        }
        if (r < 0) {
            /* EOF or reset: whatever is queued is still worth a try */
            k->rq.close_after = true;
            if (k->state == ST_HEAD || k->state == ST_BODY)
                k->state = ST_CLOSING;
            break;
        }
    }
    k->in_process = false;
    if (k->state == ST_H2) {
        h2_process(k); /* the preface arrived: the session takes the bytes from here */
        return;
    }
    if (k->state != ST_CLOSED && conn_flush(k) != 0) {
        if (k->state == ST_HANDLING) {
            conn_close(k); /* the handler still owns the request: it is only marked dead */
            return;
        }
        k->state = ST_CLOSED;
    }
    if (k->state == ST_CLOSED || (k->state == ST_CLOSING && !out_pending(k))) {
        conn_close(k);
        return;
    }
    if (k->hl->close_idle && !k->fresh && k->state == ST_HEAD && k->in.len == k->in_start &&
        !out_pending(k)) {
        conn_close(k); /* draining: nothing in flight on this connection any more */
        return;
    }
    if (k->state == ST_HEAD && k->in.len == k->in_start && !out_pending(k))
        kit_park(k); /* idle: wait holding only the struct */
    update_timer(k);
}

/* ---------------------------------------------------------------- HTTP/2 */

static void h2_update_timer(struct h1_conn *k)
{
    bool progress;
    int want = h2_session_timer(k->h2, &progress);
    if (out_pending(k) || k->h2_failed)
        want = HTTP_TIMER_WRITE;
    if (want < 0)
        loop_timer_disarm(k->hl->loop, &k->timer);
    else if (k->timer.cls != want || (want == HTTP_TIMER_WRITE && progress))
        loop_timer_arm(k->hl->loop, &k->timer, want);
}

/*
 * Move bytes between the socket and the session until neither has more to give:
 * received bytes in, frames out. Reading stops while output is pending, so a client
 * that does not read what it asked for cannot make us buffer more.
 */
static void h2_process(struct h1_conn *k)
{
    bool closed = false;
    k->in_process = true;
    for (;;) {
        if (k->in.len > k->in_start && !k->h2_failed &&
            h2_session_recv(k->h2, k->in.data + k->in_start, k->in.len - k->in_start) != 0)
            k->h2_failed = true;
        k->in.len = k->in_start = 0;
        if (h2_session_send(k->h2, &k->out, OUT_HIGH_WATER) != 0) {
            closed = true;
            break;
        }
        bool filled = k->out.len >= OUT_HIGH_WATER; /* the session may hold more */
        if (conn_flush(k) != 0) {
            closed = true;
            break;
        }
        /* the buffer was full, so the session stopped short, and the socket took it all
         * without EAGAIN: no EPOLLOUT edge will come, so ask the session for more now */
        if (filled && !out_pending(k))
            continue;
        if (out_pending(k) || k->h2_failed || !k->can_read)
            break;
        int r = read_some(k);
        if (r == 0) {
            k->can_read = false;
            break;
        }
        if (r < 0) {
            closed = true; /* EOF or reset: the client is gone, its streams with it */
            break;
        }
    }
    k->in_process = false;
    if (closed || ((k->h2_failed || h2_session_done(k->h2)) && !out_pending(k))) {
        conn_close(k);
        return;
    }
    h2_update_timer(k);
}

/* ---------------------------------------------------------------- connections */

static void on_conn_event(struct loop_io *io, uint32_t events)
{
    struct h1_conn *k = (struct h1_conn *)(void *)io;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        k->can_read = true;
    /* a transport whose read waits for the socket to become writable (TLS) */
    if ((events & EPOLLOUT) && (k->t.read_want & TRANSPORT_WANT_WRITE) && k->state != ST_HANDLING)
        k->can_read = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        k->rdhup = true; /* read until EOF is seen: no further edge will come */
    if (k->state == ST_H2 && (events & EPOLLOUT) && (k->t.read_want & TRANSPORT_WANT_WRITE))
        k->can_read = true;
    if (k->state == ST_HANDLING) {
        if (events & EPOLLOUT)
            (void)conn_flush(k); /* errors surface on the next read */
        return;
    }
    conn_process(k);
}

/* A connection for fd (owned from now: closed on failure), over TLS when tls. */
static struct h1_conn *conn_new(struct http_loop *hl, int fd, bool tls)
{
    struct h1_conn *k = hl->free_list;
    const struct http_limits *lim = &hl->parse_limits;
    if (k) {
        hl->free_list = k->next;
        hl->nfree--;
    } else {
        k = calloc(1, sizeof *k);
        if (!k) {
            close(fd);
            return NULL;
        }
        http_ctx_init_empty(&k->rq, lim); /* the header array comes with a kit */
        k->rq.proto = &k_h1_proto;
        k->rq.hl = hl;
        buf_init(&k->in, lim->max_header_bytes + lim->max_body + READ_CHUNK);
        buf_init(&k->out, 0);
    }
    k->hl = hl;
    k->h2 = NULL;
    k->h2_failed = false;
    k->tls = tls;
    if (!tls) {
        transport_socket_init(&k->t, fd);
    } else if (tls_transport_init(&k->t, fd, k->rq.peer) != 0) {
        release(k); /* fd is closed */
        return NULL;
    }
    k->io.fd = fd;
    k->io.on_event = on_conn_event;
    k->timer.prev = k->timer.next = NULL;
    k->timer.cls = -1;
    k->hl = hl;
    k->state = ST_HEAD;
    k->can_read = true;
    k->rdhup = false;
    k->in_process = k->queued = false;
    k->rq.dead = k->rq.close_after = false;
    k->fresh = true;
    k->in.len = k->in_start = k->out.len = k->out_off = 0;
    k->head_len = k->body_len = 0;
    memset(&k->chunk, 0, sizeof k->chunk);
    http_ctx_reset(&k->rq);
    k->prev = NULL;
    k->next = hl->conns;
    if (hl->conns)
        hl->conns->prev = k;
    hl->conns = k;
    hl->nconns++;
    return k;
}

static void conn_destroy(struct h1_conn *k)
{
    http_ctx_free(&k->rq);
    buf_free(&k->in);
    buf_free(&k->out);
    free(k);
}

/* Return the struct to the free list (or free it). The transport is already closed. */
static void release(struct h1_conn *k)
{
    struct http_loop *hl = k->hl;
    if (hl->nfree >= FREE_CONNS_MAX) {
        conn_destroy(k);
        return;
    }
    http_ctx_reset(&k->rq);
    kit_park(k); /* a struct on the free list holds no buffers */
    k->next = hl->free_list;
    hl->free_list = k;
    hl->nfree++;
}

static void conn_close(struct h1_conn *k)
{
    struct http_loop *hl = k->hl;
    if (k->t.fd < 0)
        return;
    loop_timer_disarm(hl->loop, &k->timer);
    if (k->h2) {
        h2_session_free(k->h2); /* streams whose handler runs stay, marked dead */
        k->h2 = NULL;
    }
    transport_close(&k->t); /* closing the socket also removes it from epoll */
    k->io.fd = -1;
    if (k->prev)
        k->prev->next = k->next;
    else
        hl->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    hl->nconns--;
    if (k->state == ST_HANDLING) {
        k->rq.dead = true; /* the handler still owns it: released when it responds */
        hl->nowned++;
        return;
    }
    k->state = ST_CLOSED;
    if (!k->queued)
        release(k);
}

/* Stalled writes: close without a word. */
static void on_write_timeout(struct loop *l, struct timer_node *t)
{
    (void)l;
    conn_close(container_of(t, struct h1_conn, timer));
}

/* A timer of an HTTP/2 connection other than the write timer: the session acts (408 for
 * late requests, GOAWAY when idle), then its frames go out. Returns true for ST_H2. */
static bool h2_timeout(struct h1_conn *k, int cls)
{
    if (k->state != ST_H2)
        return false;
    h2_session_timeout(k->h2, cls);
    h2_process(k);
    return true;
}

/* Idle keep-alive: close without a word (HTTP/2: GOAWAY first). */
static void on_idle_timeout(struct loop *l, struct timer_node *t)
{
    (void)l;
    struct h1_conn *k = container_of(t, struct h1_conn, timer);
    if (!h2_timeout(k, HTTP_TIMER_IDLE))
        conn_close(k);
}

static void request_timeout(struct h1_conn *k)
{
    if (k->state == ST_HEAD || k->state == ST_BODY) {
        respond_fatal(k, 408, "request timeout");
        if (conn_flush(k) != 0 || !out_pending(k)) {
            conn_close(k);
            return;
        }
        update_timer(k);
        return;
    }
    conn_close(k);
}

/* ---------------------------------------------------------------- the server's calls */

static void on_header_timeout(struct loop *l, struct timer_node *t)
{
    (void)l;
    struct h1_conn *k = container_of(t, struct h1_conn, timer);
    if (!h2_timeout(k, HTTP_TIMER_HEADER))
        request_timeout(k);
}

static void on_body_timeout(struct loop *l, struct timer_node *t)
{
    (void)l;
    struct h1_conn *k = container_of(t, struct h1_conn, timer);
    if (!h2_timeout(k, HTTP_TIMER_BODY))
        request_timeout(k);
}

void h1_setup(const struct server_config *cfg)
{
    loop_set_timeout(HTTP_TIMER_HEADER, cfg->header_timeout_ms, on_header_timeout);
    loop_set_timeout(HTTP_TIMER_BODY, cfg->body_timeout_ms, on_body_timeout);
    loop_set_timeout(HTTP_TIMER_IDLE, cfg->idle_timeout_ms, on_idle_timeout);
    loop_set_timeout(HTTP_TIMER_WRITE, cfg->body_timeout_ms, on_write_timeout);
}

int h1_accept(struct http_loop *hl, int fd, const struct sockaddr *peer, bool tls)
{
    struct h1_conn *k = conn_new(hl, fd, tls);
    if (!k)
        return -1; /* conn_new closed fd */
    http_ctx_set_peer(&k->rq, peer);
    if (loop_add(hl->loop, &k->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET) != 0) {
        log_error("epoll_ctl(add) failed: %s", strerror(errno));
        conn_close(k);
        return -1;
    }
    loop_timer_arm(hl->loop, &k->timer, HTTP_TIMER_HEADER);
    return 0;
}

void h1_run_ready(struct http_loop *hl)
{
    /* one pass over what is queued now; connections queued meanwhile wait for the
     * next iteration (after new events), so a pipelining client cannot starve others */
    struct h1_conn *list = hl->ready;
    hl->ready = NULL;
    while (list) {
        struct h1_conn *k = list;
        list = k->next_ready;
        k->queued = false;
        if (k->state == ST_CLOSED)
            release(k);
        else
            conn_process(k);
    }
}

void h1_stop(struct http_loop *hl)
{
    /* Idle keep-alive connections go now; requests in flight finish with
     * Connection: close. "Idle" is decided after one more read: a request the
     * client sent before the signal may still sit in the socket, unread while
     * the loop was busy - closing over it would reset the client. conn_process
     * answers it (and then closes), or finds nothing and closes. A fresh
     * connection (just accepted, nothing sent yet) is not idle: its peer
     * connected to send a request, which is answered with Connection: close;
     * the header timeout and the drain deadline bound the wait. */
    hl->close_idle = true;
    for (struct h1_conn *k = hl->conns, *next; k; k = next) {
        next = k->next;
        if (k->state == ST_H2) {
            h2_session_shutdown(k->h2); /* GOAWAY: streams in flight finish */
            if (!k->queued)
                h2_process(k);
            continue;
        }
        if (k->state == ST_HEAD && k->in.len == k->in_start && !out_pending(k) && !k->queued &&
            !k->fresh) {
            k->can_read = true;
            conn_process(k);
        }
    }
}

void h1_drain_notice(struct http_loop *hl)
{
    for (struct h1_conn *k = hl->conns, *next; k; k = next) {
        next = k->next;
        if (k->state == ST_H2) {
            h2_session_notice(k->h2);
            if (!k->queued)
                h2_process(k);
        }
    }
}

void h1_close_all(struct http_loop *hl)
{
    for (struct h1_conn *k = hl->conns, *next; k; k = next) {
        next = k->next;
        conn_close(k);
    }
}

void h1_free_pool(struct http_loop *hl)
{
    while (hl->free_list) {
        struct h1_conn *k = hl->free_list;
        hl->free_list = k->next;
        conn_destroy(k);
    }
    while (hl->nkits > 0)
        kit_free(&hl->kits[--hl->nkits]);
    free(hl->kits);
    hl->kits = NULL;
}
