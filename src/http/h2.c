/*
 * h2.c - HTTP/2 (RFC 9113) on a connection of h1.c: libnghttp2 does the
 * framing, HPACK, flow control and stream states; this file turns each
 * stream into the struct http_ctx handlers see, turns its response back into
 * HEADERS and DATA, and adds the bounds nghttp2 leaves to the application.
 *
 * Bytes in and out go through the connection's buffers (h2_session_recv,
 * h2_session_send); the connection keeps the socket, the transport and the
 * timer, so cleartext (h2c by prior knowledge) and TLS (ALPN "h2") share all
 * of this.
 *
 * The bounds (each a test in tests/blackbox/test_h2.py):
 *  - streams in flight: nghttp2 counts open streams only, so a client that
 *    resets a stream whose handler still runs could start unbounded work
 *    (rapid reset, CVE-2023-44487). Streams whose handler still runs count
 *    here until it answers; past max_streams a new stream is refused
 *    (REFUSED_STREAM) and reset floods end in GOAWAY (nghttp2's reset rate limit).
 *  - header blocks: the encoded bytes of one block (HEADERS + CONTINUATION)
 *    and the decoded field bytes are both bounded by max_header_bytes, so
 *    neither endless CONTINUATION frames nor an HPACK bomb (a small block
 *    decoding to a huge list) costs more than the limit: a decoded list past
 *    the limit is answered 431, an encoded block past its bound ends the
 *    connection.
 *  - control frames (PING, SETTINGS, PRIORITY, WINDOW_UPDATE, empty DATA) draw
 *    on a budget refilled with time and with the responses sent; a flood
 *    exhausts it and gets GOAWAY(ENHANCE_YOUR_CALM).
 *  - bodies: the route's limit per stream (413), DATA beyond a stated
 *    content-length is a stream error (nghttp2's HTTP messaging checks), and
 *    the connection window only reopens as finished streams free their
 *    bodies, so one connection buffers at most about one body limit.
 *  - a response the client never opens its window for is bounded by the write
 *    timeout (re-armed only when DATA moves).
 */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "base/compiler.h"
#include "base/log.h"
#include "http/compress.h"
#include "http/http_int.h"

#define H2_BUDGET_MAX 1000    /* control frames a connection may send in a burst */
#define H2_BUDGET_PER_SEC 200 /* refill per second */
#define H2_BUDGET_PER_RESP 8  /* refill per response sent (its WINDOW_UPDATEs, PINGs) */
#define H2_FREE_STREAMS 4     /* finished streams kept per session for reuse */
#define H2_RESET_BURST 200    /* RST_STREAM frames a client may send in a burst ... */
#define H2_RESET_PER_SEC 33   /* ... and per second after it (nghttp2's rate limit) */
#define H2_WINDOW_MAX 0x7fffffff

enum stream_state {
    SS_HEADERS, /* header block arriving */
    SS_BODY,    /* DATA arriving */
    SS_HANDLING,
    SS_SENDING, /* response submitted, not all sent */
};

struct h2_stream {
    struct http_ctx rq;
    struct h2_session *s;
    struct h2_stream *prev, *next; /* the session's streams (live or owned by a handler) */
    int32_t id;
    enum stream_state state;
    int refuse;        /* status to answer at the end of the header block (431, 400), 0 = none */
    bool answered;     /* a response was submitted (maybe before the request ended) */
    bool req_done;     /* END_STREAM received from the client */
    bool gone;         /* nghttp2 closed the stream */
    size_t hdr_bytes;  /* decoded field bytes of the header block (name + value + 4) */
    size_t sent_off;   /* response body bytes handed to nghttp2 */
    size_t unconsumed; /* DATA bytes buffered and not yet returned to the connection window */
    char *head;        /* copies of the request's field names and values */
    size_t head_len, head_cap;
    struct buf reqbody;
    bool has_cl;
};

struct h2_session {
    nghttp2_session *ng;
    struct http_loop *hl;
    struct h2_link *link;
    struct h2_stream *streams; /* live streams and those whose handler still runs */
    size_t nstreams;
    size_t nhandling; /* of them, handlers that have not answered */
    struct h2_stream *free_list;
    size_t nfree;
    struct buf *out; /* the connection's output buffer during h2_session_send */
    size_t out_high;
    size_t block_bytes; /* encoded bytes of the header block being received */
    double budget;
    uint64_t budget_ms; /* last refill */
    uint64_t data_sent; /* DATA payload bytes queued so far: the write timer's progress */
    uint64_t data_seen; /* data_sent when h2_session_timer last looked */
    bool any_request;   /* a stream was opened (the header timeout applies before) */
    bool closed;        /* the connection is gone; freed when the last handler answers */
    char peer[48];
    size_t peer_len;
};

static struct {
    size_t max_streams;
    size_t max_header_bytes;
    size_t max_headers;
    uint64_t max_body; /* the largest any route allows */
    uint64_t body_timeout_ms;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
} g_h2;

static void h2_respond(struct http_ctx *c, int status, const char *content_type);
static const struct http_proto k_h2_proto = {.respond = h2_respond, .name = "HTTP/2.0", .h2 = true};

static struct h2_stream *stream_of(struct http_ctx *c)
{
    return container_of(c, struct h2_stream, rq);
}

static struct h2_stream *get_stream(struct h2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s->ng, id);
}

/* ---------------------------------------------------------------- streams */

static void stream_destroy(struct h2_stream *st)
{
    http_ctx_free(&st->rq);
    buf_free(&st->reqbody);
    free(st->head);
    free(st);
}

static void session_destroy(struct h2_session *s)
{
    while (s->free_list) {
        struct h2_stream *st = s->free_list;
        s->free_list = st->next;
        stream_destroy(st);
    }
    if (s->ng)
        nghttp2_session_del(s->ng);
    free(s);
}

static struct h2_stream *stream_new(struct h2_session *s, int32_t id)
{
    struct h2_stream *st = s->free_list;
    if (st) {
        s->free_list = st->next;
        s->nfree--;
    } else {
        st = calloc(1, sizeof *st);
        if (!st)
            return NULL;
        if (http_ctx_init(&st->rq, &s->hl->parse_limits) != 0) {
            free(st);
            return NULL;
        }
        st->rq.proto = &k_h2_proto;
        st->rq.hl = s->hl;
        buf_init(&st->reqbody, 0);
    }
    st->s = s;
    st->id = id;
    st->state = SS_HEADERS;
    st->refuse = 0;
    st->answered = st->req_done = st->gone = st->has_cl = false;
    st->hdr_bytes = st->sent_off = st->unconsumed = st->head_len = 0;
    st->rq.dead = st->rq.close_after = false;
    http_ctx_reset(&st->rq);
    memcpy(st->rq.peer, s->peer, sizeof st->rq.peer);
    st->rq.peer_len = s->peer_len;
    st->rq.start_ns = http_now_ns();
    st->prev = NULL;
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    s->nstreams++;
    return st;
}

/* Take st off its session's list. */
static void stream_unlink(struct h2_stream *st)
{
    struct h2_session *s = st->s;
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    s->nstreams--;
}

/* The stream is over for us (answered and closed, or its handler answered after the
 * connection or the stream went): give its window back, keep or free the struct. */
static void stream_release(struct h2_stream *st)
{
    struct h2_session *s = st->s;
    if (st->unconsumed && !s->closed)
        (void)nghttp2_session_consume_connection(s->ng, st->unconsumed);
    stream_unlink(st);
    if (s->nfree >= H2_FREE_STREAMS || s->closed) {
        stream_destroy(st);
    } else {
        http_ctx_reset(&st->rq);
        st->reqbody.len = 0;
        buf_shrink(&st->reqbody, HTTP_KEEP_BUF);
        st->rq.body.len = 0;
        buf_shrink(&st->rq.body, HTTP_KEEP_BUF);
        st->next = s->free_list;
        s->free_list = st;
        s->nfree++;
    }
    if (s->closed && s->nstreams == 0)
        session_destroy(s);
}

/* Copy n bytes into the stream's field storage; NULL when it is full (the limit). */
static const char *head_copy(struct h2_stream *st, const uint8_t *p, size_t n)
{
    if (st->head_cap == 0) {
        /* sized once for the limit, so the slices handed out never move */
        st->head_cap = g_h2.max_header_bytes;
        st->head = malloc(st->head_cap);
        if (!st->head) {
            st->head_cap = 0;
            return NULL;
        }
    }
    if (n > st->head_cap - st->head_len)
        return NULL;
    char *d = st->head + st->head_len;
    memcpy(d, p, n);
    st->head_len += n;
    return d;
}

/* ---------------------------------------------------------------- budget */

/* Charge one control frame; false (and GOAWAY queued) when the budget is gone. */
static bool budget_charge(struct h2_session *s, double cost)
{
    uint64_t now = loop_now_ms(s->hl->loop);
    if (now > s->budget_ms) {
        s->budget += (double)(now - s->budget_ms) * H2_BUDGET_PER_SEC / 1000.0;
        if (s->budget > H2_BUDGET_MAX)
            s->budget = H2_BUDGET_MAX;
        s->budget_ms = now;
    }
    s->budget -= cost;
    if (s->budget >= 0)
        return true;
    log_debug("h2: %.*s: control frame flood, GOAWAY", (int)s->peer_len, s->peer);
    (void)nghttp2_session_terminate_session(s->ng, NGHTTP2_ENHANCE_YOUR_CALM);
    return false;
}

/* ---------------------------------------------------------------- responses */

/* Lower-case ASCII in place (HTTP/2 field names must be lower case). */
static void lower(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 'A' && p[i] <= 'Z')
            p[i] = (char)(p[i] + 32);
}

static ssize_t on_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)id;
    (void)buf;
    (void)ud;
    struct h2_stream *st = src->ptr;
    size_t left = st->rq.body.len - st->sent_off;
    size_t n = left < length ? left : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY; /* on_send_data appends straight from the body */
    if (n == left)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *ud)
{
    (void)ng;
    (void)f; /* never padded: no select_padding callback */
    struct h2_session *s = ud;
    struct h2_stream *st = src->ptr;
    if (s->out->len >= s->out_high)
        return NGHTTP2_ERR_WOULDBLOCK;
    buf_append(s->out, framehd, 9);
    buf_append(s->out, st->rq.body.data + st->sent_off, length);
    if (s->out->failed)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    st->sent_off += length;
    s->data_sent += length;
    s->budget += 2; /* the client may answer each DATA frame with two WINDOW_UPDATEs */
    return 0;
}

/* The response's field lines: ours, then the handler's (c->extra_hdrs, names lower-cased). */
static size_t build_fields(struct h2_stream *st, nghttp2_nv *nv, size_t cap, const char *status,
                           const char *ctype, const char *clen, enum http_body_coding coding,
                           bool nobody)
{
    struct http_ctx *c = &st->rq;
    size_t n = 0;
#define NV(nm, val, vlen)                                                                          \
    nv[n++] = (nghttp2_nv){(uint8_t *)(nm), (uint8_t *)(val), sizeof(nm) - 1, (vlen),              \
                           NGHTTP2_NV_FLAG_NO_COPY_NAME}
    NV(":status", status, 3);
    NV("server", "brisk", 5);
    NV("date", loop_date(st->s->hl->loop), 29);
    if (!nobody) {
        NV("content-type", ctype, strlen(ctype));
        NV("content-length", clen, strlen(clen));
    }
    if (coding == HTTP_BODY_GZIP)
        NV("content-encoding", "gzip", 4);
    if (coding != HTTP_BODY_PLAIN)
        NV("vary", "accept-encoding", 15);
    NV("x-request-id", c->reqid, c->reqid_len);
#undef NV
    /* "Name: value\r\n" lines (request.c keeps CR and LF out of values); no lines: the
     * buffer may be unallocated, and NULL + 0 is undefined */
    char *p = c->extra_hdrs.data, *end = p ? p + c->extra_hdrs.len : p;
    while (p < end && n < cap) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        char *colon = memchr(p, ':', (size_t)(end - p));
        if (!eol || !colon || colon > eol)
            break;
        size_t nlen = (size_t)(colon - p);
        char *v = colon + 1;
        while (v < eol && *v == ' ')
            v++;
        size_t vlen = (size_t)(eol - v);
        if (vlen && v[vlen - 1] == '\r')
            vlen--;
        lower(p, nlen);
        nv[n++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)v, nlen, vlen, NGHTTP2_NV_FLAG_NONE};
        p = eol + 1;
    }
    return n;
}

/* Queue the response of st (status, body in st->rq.body), count and log it. */
static void submit_response(struct h2_stream *st, int status, const char *ctype)
{
    struct http_ctx *c = &st->rq;
    struct h2_session *s = st->s;
    if (c->body.failed) {
        buf_reset(&c->body);
        buf_append_cstr(&c->body, "{\"error\":\"response too large\"}");
        status = 500;
        ctype = NULL;
    }
    bool nobody = status == 204 || status == 304;
    enum http_body_coding coding = http_compress_response(c, status, ctype, true);
    size_t nextra = 0;
    for (size_t i = 0; i < c->extra_hdrs.len; i++)
        nextra += c->extra_hdrs.data[i] == '\n';
    nghttp2_nv fixed[16];
    size_t cap = 8 + nextra;
    nghttp2_nv *nv = cap <= ARRAY_LEN(fixed) ? fixed : arena_alloc(&c->arena, cap * sizeof *nv);
    if (!nv) {
        nv = fixed; /* the handler's extra fields do not fit the arena: ours only */
        cap = 8;
    }
    char st_s[4] = {(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10), 0};
    char clen[24];
    clen[fmt_u64(clen, c->body.len)] = 0;
    size_t n =
        build_fields(st, nv, cap, st_s, ctype ? ctype : "application/json", clen, coding, nobody);
    bool with_body = !nobody && !c->head_only && c->body.len > 0;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = on_read_body};
    st->sent_off = 0;
    st->answered = true;
    st->state = SS_SENDING;
    int rv = nghttp2_submit_response(s->ng, st->id, nv, n, with_body ? &prd : NULL);
    if (rv != 0)
        log_debug("h2: stream %d: response not queued: %s", st->id, nghttp2_strerror(rv));
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += nv[i].namelen + nv[i].valuelen + 2;
    c->bytes_in = st->hdr_bytes + st->reqbody.len;
    http_request_record(c, status, bytes + (with_body ? c->body.len : 0));
}

static void h2_respond(struct http_ctx *c, int status, const char *content_type)
{
    struct h2_stream *st = stream_of(c);
    struct h2_session *s = st->s;
    if (st->state == SS_HANDLING)
        s->nhandling--;
    if (c->dead) {
        /* the stream (or the whole connection) went while the handler ran */
        s->hl->nowned--;
        stream_release(st);
        return;
    }
    submit_response(st, status, content_type);
    s->link->wake(s->link);
}

/* ---------------------------------------------------------------- requests */

static void stream_dispatch(struct h2_stream *st)
{
    struct http_ctx *c = &st->rq;
    st->state = SS_HANDLING;
    st->s->nhandling++;
    c->body_in = (struct str){st->reqbody.data, st->reqbody.len};
    if (c->req.body_kind != HTTP_BODY_NONE || st->reqbody.len) {
        /* the length is known now: the handlers see what an HTTP/1.1 request would say */
        c->req.body_kind = HTTP_BODY_LENGTH;
        c->req.content_length = st->reqbody.len;
    }
    http_request_dispatch(c);
}

/* Answer before the request is complete (its remaining DATA is dropped, and the stream
 * reset with NO_ERROR once the response is out: on_frame_send). */
static void answer_early(struct h2_stream *st, int status, const char *msg)
{
    struct http_ctx *c = &st->rq;
    if (!c->reqid_len)
        http_request_set_id(c, STR_NULL);
    http_respond_error(c, status, msg);
}

/* The request's header block is complete. */
static void stream_headers_done(struct h2_stream *st, bool end_stream)
{
    struct http_ctx *c = &st->rq;
    struct http_request *r = &c->req;
    st->req_done = end_stream;
    http_request_set_id(c, r->request_id);
    if (!st->refuse && (!r->method_str.len || !r->path.len))
        st->refuse = 400; /* nghttp2 checks the pseudo-header fields; be safe */
    if (st->refuse) {
        answer_early(st, st->refuse,
                     st->refuse == 431 ? "request header fields too large" : "bad request");
        return;
    }
    r->minor_version = 1;
    r->keep_alive = true;
    r->body_kind = end_stream   ? HTTP_BODY_NONE
                   : st->has_cl ? HTTP_BODY_LENGTH
                                : HTTP_BODY_CHUNKED; /* length unknown until END_STREAM */
    enum http_admit a = http_request_admit(c);
    if (a == HTTP_ADMIT_ANSWERED)
        return;
    if (a == HTTP_ADMIT_TOO_LARGE) {
        answer_early(st, 413, "request body too large");
        return;
    }
    if (end_stream)
        stream_dispatch(st);
    else
        st->state = SS_BODY;
}

static bool name_is(const uint8_t *name, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(name, lit, len) == 0;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2_session *s = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    s->any_request = true;
    /* counts streams whose handler still runs after the client reset them */
    struct h2_stream *st = s->nstreams < g_h2.max_streams ? stream_new(s, f->hd.stream_id) : NULL;
    if (!st) {
        (void)nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                                        NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    (void)nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)flags;
    struct h2_session *s = ud;
    struct h2_stream *st = get_stream(s, f->hd.stream_id);
    (void)ng;
    if (!st || st->answered)
        return 0;
    st->hdr_bytes += nlen + vlen + 4; /* as "name: value\r\n" in HTTP/1.1 */
    if (st->hdr_bytes > g_h2.max_header_bytes && !st->refuse)
        st->refuse = 431; /* decoding goes on (HPACK state), the fields are dropped */
    if (st->refuse || st->state != SS_HEADERS)
        return 0; /* trailers: counted, then discarded as in HTTP/1.1 */
    struct http_request *r = &st->rq.req;
    const char *n = head_copy(st, name, nlen);
    const char *v = head_copy(st, value, vlen);
    if (!n || !v) {
        st->refuse = 431;
        return 0;
    }
    struct str sv = {v, vlen};
    if (nlen > 0 && name[0] == ':') {
        if (name_is(name, nlen, ":method")) {
            r->method_str = sv;
            r->method = http_method_from_str(sv);
        } else if (name_is(name, nlen, ":path")) {
            r->target = sv;
            const char *q = memchr(v, '?', vlen);
            r->path = (struct str){v, q ? (size_t)(q - v) : vlen};
            r->query = q ? (struct str){q + 1, vlen - (size_t)(q - v) - 1} : STR_NULL;
        } else if (name_is(name, nlen, ":authority")) {
            r->host = sv;
        }
        return 0;
    }
    if (r->num_headers >= g_h2.max_headers) {
        st->refuse = 431;
        return 0;
    }
    r->headers[r->num_headers++] = (struct http_header){{n, nlen}, sv};
    if (name_is(name, nlen, "host")) {
        if (!r->host.len)
            r->host = sv;
    } else if (name_is(name, nlen, "content-type")) {
        if (r->content_type.ptr)
            st->refuse = 400; /* as the HTTP/1.1 parser: a duplicate is ambiguous */
        r->content_type = sv;
    } else if (name_is(name, nlen, "authorization")) {
        if (r->authorization.ptr)
            st->refuse = 400;
        r->authorization = sv;
    } else if (name_is(name, nlen, "x-request-id")) {
        if (!r->request_id.ptr)
            r->request_id = sv;
    } else if (name_is(name, nlen, "content-length")) {
        uint64_t cl = 0; /* digits only: nghttp2 checked */
        for (size_t i = 0; i < vlen && cl < ((uint64_t)1 << 60); i++)
            cl = cl * 10 + (uint64_t)(v[i] - '0');
        r->content_length = cl;
        st->has_cl = true;
    }
    return 0;
}

static int on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *ud)
{
    struct h2_session *s = ud;
    if (hd->type == NGHTTP2_HEADERS)
        s->block_bytes = hd->length;
    else if (hd->type == NGHTTP2_CONTINUATION)
        s->block_bytes += hd->length;
    else
        return 0;
    /* HPACK may spend up to ~4 encoded bytes on a rare byte (Huffman): beyond that a
     * block cannot decode within the limit, and endless CONTINUATION ends here */
    if (s->block_bytes > 4 * g_h2.max_header_bytes + 1024) {
        log_debug("h2: %.*s: header block over %zu bytes, GOAWAY", (int)s->peer_len, s->peer,
                  s->block_bytes);
        (void)nghttp2_session_terminate_session(ng, NGHTTP2_ENHANCE_YOUR_CALM);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static void stream_body_done(struct h2_stream *st)
{
    st->req_done = true;
    if (st->state == SS_BODY && !st->answered)
        stream_dispatch(st);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    (void)ng;
    struct h2_session *s = ud;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    struct h2_stream *st;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        st = get_stream(s, f->hd.stream_id);
        if (!st)
            break;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
            stream_headers_done(st, end);
        else if (end)
            stream_body_done(st); /* trailers end the request */
        break;
    case NGHTTP2_DATA:
        if (f->hd.length == 0 && !end && !budget_charge(s, 1))
            break;
        st = get_stream(s, f->hd.stream_id);
        if (st && end)
            stream_body_done(st);
        break;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
            (void)budget_charge(s, 1);
        break;
    case NGHTTP2_PRIORITY:
    case NGHTTP2_WINDOW_UPDATE:
        (void)budget_charge(s, 1);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    struct h2_session *s = ud;
    struct h2_stream *st = get_stream(s, id);
    if (!st || st->answered || st->state != SS_BODY) {
        (void)nghttp2_session_consume(ng, id, len); /* dropped: the window is the client's again */
        return 0;
    }
    if (st->reqbody.len + len > st->rq.body_limit) {
        (void)nghttp2_session_consume(ng, id, len);
        answer_early(st, 413, "request body too large");
        return 0;
    }
    buf_append(&st->reqbody, data, len);
    if (st->reqbody.failed) {
        (void)nghttp2_session_consume(ng, id, len);
        answer_early(st, 413, "request body too large");
        return 0;
    }
    /* the connection window reopens when the body is freed (stream_release) */
    st->unconsumed += len;
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct h2_session *s = ud;
    if ((f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    s->budget += H2_BUDGET_PER_RESP;
    if (s->budget > H2_BUDGET_MAX)
        s->budget = H2_BUDGET_MAX;
    struct h2_stream *st = get_stream(s, f->hd.stream_id);
    if (st && !st->req_done) /* answered early: the rest of the request is not wanted */
        (void)nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t err, void *ud)
{
    (void)ng;
    (void)err;
    struct h2_session *s = ud;
    struct h2_stream *st = get_stream(s, id);
    if (!st)
        return 0;
    st->gone = true;
    if (st->state == SS_HANDLING) {
        st->rq.dead = true; /* released when its handler answers */
        s->hl->nowned++;
        return 0;
    }
    stream_release(st);
    return 0;
}

static ssize_t on_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)ng;
    (void)flags;
    struct h2_session *s = ud;
    if (s->out->len >= s->out_high)
        return NGHTTP2_ERR_WOULDBLOCK;
    buf_append(s->out, data, len);
    return s->out->failed ? NGHTTP2_ERR_CALLBACK_FAILURE : (ssize_t)len;
}

/* ---------------------------------------------------------------- the connection's calls */

int h2_setup(const struct server_config *cfg, const struct http_limits *lim)
{
    g_h2.max_streams = cfg->h2_max_streams;
    g_h2.max_header_bytes = lim->max_header_bytes;
    g_h2.max_headers = lim->max_headers;
    g_h2.max_body = lim->max_body;
    g_h2.body_timeout_ms = cfg->body_timeout_ms;
    if (g_h2.max_streams == 0 || g_h2.cbs)
        return 0;
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, on_send_data);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return -1;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1); /* the window follows our buffers */
    nghttp2_option_set_stream_reset_rate_limit(opt, H2_RESET_BURST, H2_RESET_PER_SEC);
    g_h2.cbs = cb;
    g_h2.opt = opt;
    return 0;
}

bool h2_enabled(void)
{
    return g_h2.cbs != NULL && g_h2.max_streams > 0;
}

void h2_teardown(void)
{
    if (g_h2.cbs)
        nghttp2_session_callbacks_del(g_h2.cbs);
    if (g_h2.opt)
        nghttp2_option_del(g_h2.opt);
    g_h2.cbs = NULL;
    g_h2.opt = NULL;
}

struct h2_session *h2_session_new(struct http_loop *hl, struct h2_link *link, const char *peer,
                                  size_t peer_len)
{
    struct h2_session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->hl = hl;
    s->link = link;
    s->peer_len = peer_len < sizeof s->peer ? peer_len : sizeof s->peer - 1;
    memcpy(s->peer, peer, s->peer_len);
    s->peer[s->peer_len] = 0;
    s->budget = H2_BUDGET_MAX;
    s->budget_ms = loop_now_ms(hl->loop);
    if (nghttp2_session_server_new2(&s->ng, g_h2.cbs, s, g_h2.opt) != 0) {
        free(s);
        return NULL;
    }
    /* windows sized for the largest body a route allows (and a frame more, so a body
     * past the limit is seen and answered 413 instead of stalling) */
    uint64_t win = g_h2.max_body + 16384;
    if (win > H2_WINDOW_MAX)
        win = H2_WINDOW_MAX;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)g_h2.max_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)g_h2.max_header_bytes},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)win},
    };
    if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, ARRAY_LEN(iv)) != 0 ||
        nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, (int32_t)win) != 0) {
        nghttp2_session_del(s->ng);
        free(s);
        return NULL;
    }
    return s;
}

int h2_session_recv(struct h2_session *s, const char *p, size_t n)
{
    ssize_t r = nghttp2_session_mem_recv(s->ng, (const uint8_t *)p, n);
    if (r < 0) {
        log_debug("h2: %.*s: %s", (int)s->peer_len, s->peer, nghttp2_strerror((int)r));
        return -1;
    }
    return 0;
}

int h2_session_send(struct h2_session *s, struct buf *out, size_t high)
{
    s->out = out;
    s->out_high = high;
    int rv = nghttp2_session_send(s->ng);
    s->out = NULL;
    if (rv != 0) {
        log_debug("h2: %.*s: %s", (int)s->peer_len, s->peer, nghttp2_strerror(rv));
        return -1;
    }
    return 0;
}

bool h2_session_done(const struct h2_session *s)
{
    return !nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng);
}

int h2_session_timer(struct h2_session *s, bool *progress)
{
    *progress = s->data_sent != s->data_seen;
    s->data_seen = s->data_sent;
    bool receiving = false;
    for (struct h2_stream *st = s->streams; st; st = st->next) {
        if (st->gone)
            continue;
        if (st->state == SS_SENDING)
            return HTTP_TIMER_WRITE; /* its DATA waits for the client's window */
        if (st->state == SS_HEADERS || st->state == SS_BODY)
            receiving = true;
    }
    if (receiving)
        return HTTP_TIMER_BODY;
    if (s->nhandling)
        return -1; /* handlers run: their own bounds apply */
    return s->any_request ? HTTP_TIMER_IDLE : HTTP_TIMER_HEADER;
}

void h2_session_timeout(struct h2_session *s, int cls)
{
    if (cls == HTTP_TIMER_BODY) {
        /* streams whose request has not completed within the body timeout get 408; a
         * stream started since the timer was armed gets another period */
        uint64_t now = http_now_ns(), limit = g_h2.body_timeout_ms * 1000000u;
        for (struct h2_stream *st = s->streams, *next; st; st = next) {
            next = st->next;
            if (!st->gone && !st->answered && (st->state == SS_HEADERS || st->state == SS_BODY) &&
                now - st->rq.start_ns >= limit)
                answer_early(st, 408, "request timeout");
        }
        return;
    }
    /* idle, or no request since the preface: say goodbye */
    (void)nghttp2_session_terminate_session(s->ng, NGHTTP2_NO_ERROR);
}

void h2_session_notice(struct h2_session *s)
{
    (void)nghttp2_submit_shutdown_notice(s->ng);
}

void h2_session_shutdown(struct h2_session *s)
{
    (void)nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
                                nghttp2_session_get_last_proc_stream_id(s->ng), NGHTTP2_NO_ERROR,
                                NULL, 0);
}

bool h2_session_idle(const struct h2_session *s)
{
    return s->nstreams == 0;
}

void h2_session_free(struct h2_session *s)
{
    s->closed = true;
    nghttp2_session_del(s->ng);
    s->ng = NULL;
    /* streams whose handler still runs stay (marked dead) until it answers; the last
     * of them frees the session (stream_release) */
    for (struct h2_stream *st = s->streams, *next; st; st = next) {
        next = st->next;
        if (st->state != SS_HANDLING) {
            stream_unlink(st);
            stream_destroy(st);
        } else if (!st->rq.dead) {
            st->rq.dead = true;
            s->hl->nowned++;
        }
    }
    if (s->nstreams == 0)
        session_destroy(s);
}
