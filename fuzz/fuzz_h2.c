/*
 * fuzz_h2.c - libFuzzer harness for HTTP/2 connections: src/http/h2.c (the glue
 * between libnghttp2 and brisk's request objects), the real router with the
 * application's route table, request.c (admission, auth, limits, metrics),
 * compress.c, and the real /health and /openapi.json handlers.
 *
 *   make build/fuzz/fuzz_h2
 *   build/fuzz/fuzz_h2 -dict=fuzz/h2.dict fuzz/corpus/h2
 *
 * Input: the bytes a client sends after the connection preface (the harness
 * prepends "PRI * HTTP/2.0..."). They are fed to one h2 session in process
 * (no socket, no server thread), frame by frame as a client would send them
 * (the 9-byte headers give the cut points; a bad length just feeds the rest),
 * each piece an exact heap copy so ASan sees any read past it. After every
 * piece the session's output is drained and checked: whole frames only, sane
 * lengths and stream ids per type, our SETTINGS first, no PUSH_PROMISE, DATA
 * within 16384 bytes, and every response header block decodes (HPACK, our own
 * inflater) to a field list starting with a valid :status, names lower-case.
 *
 * Routes whose real handlers need the database get the harness's handler
 * instead; by the last byte of the path it answers at once (200 echo, 201 with
 * a large body, 204), after the current frame, or only at the end - which is
 * how a database answer arrives, possibly after the stream was reset or the
 * connection closed. The last input byte picks what happens at the end (body
 * timeout, drain GOAWAY, idle timeout, or nothing); then the session is freed
 * with the late handlers still running, they answer, and every owned stream
 * must be accounted for (nowned back to 0; LeakSanitizer checks the rest).
 */
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "base/log.h"
#include "http/compress.h"
#include "http/http_int.h"
#include "http/metrics.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char k_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof k_preface - 1)
#define OUT_HIGH 16384 /* small, so the session stops short and resumes (WOULDBLOCK) */
#define MAX_PENDING 64
#define BIG_BODY 40000

static struct server_config g_cfg;
static struct http_loop g_hl;
static struct route g_routes[ROUTER_MAX_ROUTES];

/* ---------------------------------------------------------------- handlers */

enum when { NOW, AFTER_FRAME, AT_END };

static struct {
    struct http_ctx *c;
    enum when when;
} g_pending[MAX_PENDING];
static size_t g_npending;

static void answer(struct http_ctx *c, int kind)
{
    struct buf *b = http_body(c);
    struct str body = http_body_raw(c);
    switch (kind) {
    case 3:
        http_respond(c, 204, NULL);
        return;
    case 4:
        for (size_t i = 0; i < BIG_BODY / 10; i++)
            buf_append(b, "{\"n\":123},", 10);
        http_respond(c, 201, NULL);
        return;
    default:
        buf_append_cstr(b, "{\"len\":");
        buf_append_u64(b, body.len);
        buf_append_cstr(b, "}");
        buf_append(b, body.ptr, body.len < 256 ? body.len : 256);
        http_respond(c, 200, "application/json");
        return;
    }
}

/* Every route that would touch the database. */
static void handle_fuzz(struct http_ctx *c)
{
    struct str path = http_req(c)->path;
    unsigned kind = path.len ? (unsigned char)path.ptr[path.len - 1] % 5 : 0;
    struct str p = http_param(c, 0);
    if (p.len && !memchr(p.ptr, '\r', p.len) && !memchr(p.ptr, '\n', p.len))
        http_add_header(c, "X-Echo-Param", p); /* mixed case: h2.c lower-cases it */
    http_add_header(c, "Cache-Control", STR_LIT("no-store"));
    if ((kind == 1 || kind == 2) && g_npending < MAX_PENDING) {
        g_pending[g_npending].c = c;
        g_pending[g_npending].when = kind == 1 ? AFTER_FRAME : AT_END;
        g_npending++;
        return;
    }
    answer(c, (int)kind);
}

/* Answer the deferred handlers due at `upto` (AT_END: all of them). */
static void answer_pending(enum when upto)
{
    size_t keep = 0;
    for (size_t i = 0; i < g_npending; i++) {
        if (g_pending[i].when <= upto)
            answer(g_pending[i].c, 0);
        else
            g_pending[keep++] = g_pending[i];
    }
    g_npending = keep;
}

static bool g_woken;

static void on_wake(struct h2_link *link)
{
    (void)link;
    g_woken = true;
}

/* ---------------------------------------------------------------- output checks */

struct outcheck {
    struct buf carry; /* bytes of a frame not complete yet */
    bool seen_settings;
    struct buf block; /* header block being collected (HEADERS + CONTINUATION) */
    int32_t block_stream;
    bool in_block;
    nghttp2_hd_inflater *inf;
    size_t frames;
};

static bool g_trace; /* FUZZ_H2_TRACE=1: print the frames and statuses we send */

static void check_block(struct outcheck *o)
{
    uint8_t *in = (uint8_t *)o->block.data;
    size_t left = o->block.len;
    size_t nfields = 0;
    for (;;) {
        nghttp2_nv nv;
        int fl = 0;
        ssize_t r = nghttp2_hd_inflate_hd2(o->inf, &nv, &fl, in, left, 1);
        CHECK(r >= 0); /* our encoder's output decodes */
        in += r;
        left -= (size_t)r;
        if (fl & NGHTTP2_HD_INFLATE_EMIT) {
            if (nfields == 0) {
                if (g_trace)
                    fprintf(stderr, "  stream %d: :status %.3s\n", o->block_stream, nv.value);
                CHECK(nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0);
                CHECK(nv.valuelen == 3 && nv.value[0] >= '1' && nv.value[0] <= '5' &&
                      nv.value[1] >= '0' && nv.value[1] <= '9' && nv.value[2] >= '0' &&
                      nv.value[2] <= '9');
            } else {
                CHECK(nv.namelen > 0 && nv.name[0] != ':');
                for (size_t i = 0; i < nv.namelen; i++)
                    CHECK(!(nv.name[i] >= 'A' && nv.name[i] <= 'Z'));
                for (size_t i = 0; i < nv.valuelen; i++)
                    CHECK(nv.value[i] != '\r' && nv.value[i] != '\n' && nv.value[i] != 0);
            }
            nfields++;
        }
        if (fl & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(o->inf);
            break;
        }
        if (r == 0 && left == 0)
            break;
    }
    CHECK(left == 0 && nfields > 0);
    o->block.len = 0;
    o->in_block = false;
}

static void check_frame(struct outcheck *o, const uint8_t *f, size_t len, uint8_t type,
                        uint8_t flags, int32_t sid)
{
    o->frames++;
    if (g_trace)
        fprintf(stderr, "out: type %u flags 0x%02x stream %d len %zu\n", type, flags, sid, len);
    if (!o->seen_settings) {
        CHECK(type == NGHTTP2_SETTINGS && !(flags & NGHTTP2_FLAG_ACK)); /* our SETTINGS first */
        o->seen_settings = true;
    }
    CHECK(!o->in_block || type == NGHTTP2_CONTINUATION);
    switch (type) {
    case NGHTTP2_DATA:
        CHECK(sid > 0 && (sid & 1) && len <= 16384);
        break;
    case NGHTTP2_HEADERS:
    case NGHTTP2_CONTINUATION:
        CHECK(sid > 0 && (sid & 1));
        if (type == NGHTTP2_CONTINUATION)
            CHECK(o->in_block && sid == o->block_stream);
        CHECK(!(flags & (NGHTTP2_FLAG_PADDED | NGHTTP2_FLAG_PRIORITY)));
        buf_append(&o->block, f, len);
        o->in_block = true;
        o->block_stream = sid;
        if (flags & NGHTTP2_FLAG_END_HEADERS)
            check_block(o);
        break;
    case NGHTTP2_RST_STREAM:
        CHECK(sid > 0 && len == 4);
        break;
    case NGHTTP2_SETTINGS:
        CHECK(sid == 0 && len % 6 == 0 && (!(flags & NGHTTP2_FLAG_ACK) || len == 0));
        break;
    case NGHTTP2_PING:
        CHECK(sid == 0 && len == 8);
        break;
    case NGHTTP2_GOAWAY:
        CHECK(sid == 0 && len >= 8);
        break;
    case NGHTTP2_WINDOW_UPDATE:
        CHECK(len == 4);
        break;
    default:
        fprintf(stderr, "unexpected frame type %u from the server\n", type);
        abort(); /* PUSH_PROMISE, PRIORITY or an extension: never sent by brisk */
    }
}

/* Take out's bytes (the connection would write them) and check them as frames. */
static void drain(struct outcheck *o, struct buf *out)
{
    CHECK(!out->failed);
    buf_append(&o->carry, out->data, out->len);
    out->len = 0;
    const uint8_t *p = (const uint8_t *)o->carry.data;
    size_t n = o->carry.len, off = 0;
    while (n - off >= 9) {
        size_t len = (size_t)p[off] << 16 | (size_t)p[off + 1] << 8 | p[off + 2];
        if (n - off - 9 < len)
            break;
        int32_t sid = (int32_t)(((uint32_t)p[off + 5] & 0x7f) << 24 | (uint32_t)p[off + 6] << 16 |
                                (uint32_t)p[off + 7] << 8 | p[off + 8]);
        check_frame(o, p + off + 9, len, p[off + 3], p[off + 4], sid);
        off += 9 + len;
    }
    buf_consume(&o->carry, off);
}

/* Let the session write until it has nothing more (the socket takes everything). */
static int pump(struct h2_session *s, struct buf *out, struct outcheck *o)
{
    for (int i = 0; i < 64; i++) {
        g_woken = false;
        int rv = h2_session_send(s, out, OUT_HIGH);
        bool filled = out->len >= OUT_HIGH;
        drain(o, out);
        if (rv != 0)
            return -1;
        CHECK(o->carry.len == 0); /* the session hands over whole frames */
        if (!filled && !g_woken)
            return 0;
    }
    return 0;
}

/* ---------------------------------------------------------------- setup */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_configure(LOG_ERROR, false); /* no access lines, no debug lines */
    g_trace = getenv("FUZZ_H2_TRACE") != NULL;
    g_cfg.threads = 1;
    g_cfg.limits = (struct http_limits){4096, 32, 65536};
    g_cfg.h2_max_streams = 8;
    g_cfg.header_timeout_ms = g_cfg.idle_timeout_ms = 1000;
    g_cfg.body_timeout_ms = 0; /* the body timeout at the end answers every open request 408 */
    g_cfg.api_token = "fuzz-token";
    g_cfg.trusted_proxies = "10.0.0.0/8";
    g_cfg.compress_min_bytes = 256;
    http_request_setup(&g_cfg);

    struct app_config acfg = {.threads = 1, .max_batch_body = 32768};
    size_t n;
    const struct route *app = app_routes(&acfg, &n);
    CHECK(n <= ROUTER_MAX_ROUTES);
    for (size_t i = 0; i < n; i++) {
        g_routes[i] = app[i];
        if (app[i].handler != handle_health && app[i].handler != handle_openapi)
            g_routes[i].handler = handle_fuzz;
        if (app[i].handler == handle_user_create)
            g_routes[i].max_body = 512; /* a small limit to reach 413 */
    }
    CHECK(router_init(g_routes, n) == 0);
    CHECK(metrics_init(1, n) == 0);

    g_hl.cfg = &g_cfg;
    g_hl.parse_limits = g_cfg.limits;
    g_hl.loop = loop_create(0);
    CHECK(g_hl.loop != NULL);
    CHECK(h2_setup(&g_cfg, &g_hl.parse_limits) == 0 && h2_enabled());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t total = PREFACE_LEN + size;
    uint8_t *all = malloc(total);
    CHECK(all != NULL);
    memcpy(all, k_preface, PREFACE_LEN);
    if (size)
        memcpy(all + PREFACE_LEN, data, size);

    struct h2_link link = {.wake = on_wake};
    struct h2_session *s = h2_session_new(&g_hl, &link, "10.1.2.3", 8);
    CHECK(s != NULL);
    struct buf out;
    buf_init(&out, 0);
    struct outcheck o = {0};
    buf_init(&o.carry, 0);
    buf_init(&o.block, 0);
    CHECK(nghttp2_hd_inflate_new(&o.inf) == 0);
    CHECK(nghttp2_hd_inflate_change_table_size(o.inf, (size_t)1 << 30) == 0);
    g_npending = 0;

    bool failed = pump(s, &out, &o) != 0;
    CHECK(o.seen_settings);
    size_t pos = 0;
    while (pos < total && !failed && !h2_session_done(s)) {
        /* the preface goes with the first frame; then one frame per piece */
        size_t at = pos == 0 ? PREFACE_LEN : pos, piece = total - pos;
        if (total - at >= 9) {
            size_t flen = (size_t)all[at] << 16 | (size_t)all[at + 1] << 8 | all[at + 2];
            if (flen <= total - at - 9)
                piece = at - pos + 9 + flen;
        }
        uint8_t *copy = malloc(piece);
        CHECK(copy != NULL);
        memcpy(copy, all + pos, piece);
        if (h2_session_recv(s, (const char *)copy, piece) != 0)
            failed = true; /* the connection sends what is left, then closes */
        free(copy);
        pos += piece;
        answer_pending(AFTER_FRAME);
        if (pump(s, &out, &o) != 0)
            failed = true;
        bool progress;
        int t = h2_session_timer(s, &progress);
        CHECK(t == -1 || t == HTTP_TIMER_HEADER || t == HTTP_TIMER_BODY || t == HTTP_TIMER_IDLE ||
              t == HTTP_TIMER_WRITE);
    }

    /* the end of the input: a timer fires, a drain begins, or the client just goes */
    unsigned act = size ? data[size - 1] % 4 : 0;
    if (!failed && !h2_session_done(s)) {
        if (act == 1)
            h2_session_timeout(s, HTTP_TIMER_BODY);
        else if (act == 2) {
            h2_session_notice(s);
            h2_session_shutdown(s);
        } else if (act == 3)
            h2_session_timeout(s, HTTP_TIMER_IDLE);
        (void)pump(s, &out, &o);
    }
    if (act == 2 && !failed)
        answer_pending(AT_END); /* handlers finish during the drain */
    (void)pump(s, &out, &o);
    h2_session_free(s);
    /* late handlers answer after the connection went: nothing is sent, all is freed */
    answer_pending(AT_END);
    CHECK(g_hl.nowned == 0);
    CHECK(!o.in_block || failed);

    nghttp2_hd_inflate_del(o.inf);
    buf_free(&o.carry);
    buf_free(&o.block);
    buf_free(&out);
    free(all);
    return 0;
}
