/*
 * http_int.h - what the files of the HTTP layer share (not for handlers or the
 * application: they see request.h and server.h).
 *
 *   server.c   listeners, accept, threads, signals, the application's hooks
 *   request.c  the request object handlers see, routing/auth/limits, the
 *              handler API, metrics and the access log of a response
 *   h1.c       connections: bytes from a transport to HTTP/1.1 requests and
 *              responses back to bytes; a connection that opens with the
 *              HTTP/2 preface (or chose h2 by ALPN) hands its bytes to h2.c
 *   h2.c       HTTP/2 sessions on such connections (libnghttp2): streams to
 *              requests, responses to frames, the protocol's bounds
 *   compress.c Accept-Encoding and gzip of a response body (compress.h)
 *
 * A protocol (h1.c, h2.c) fills a struct http_ctx from its
 * framing, calls http_request_admit and http_request_dispatch, and gets the
 * finished response back through its struct http_proto's respond hook. The
 * request object knows nothing of connections or framing.
 */
#ifndef BRISK_HTTP_INT_H
#define BRISK_HTTP_INT_H

#include <pthread.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "http/parser.h"
#include "http/request.h"
#include "http/router.h"
#include "http/server.h"
#include "net/loop.h"

/* The HTTP layer's timer classes (net/loop.h numbers them, we name them). */
enum http_timer {
    HTTP_TIMER_HEADER, /* request head must complete */
    HTTP_TIMER_BODY,   /* request body must complete */
    HTTP_TIMER_IDLE,   /* keep-alive connection with nothing pending */
    HTTP_TIMER_WRITE,  /* queued response not accepted by the client */
    HTTP_TIMER_ACCEPT, /* accept paused after EMFILE */
    HTTP_TIMER_GRACE,  /* SIGTERM: listeners and idle connections kept this long */
};

#define HTTP_KEEP_BUF 65536 /* buffers larger than this are freed between requests */
#define HTTP_ARENA_KEEP 65536

struct h1_conn;
struct http_compressor;
struct http_loop;

/* One listening socket of a loop (one per address BRISK_ADDR / BRISK_TLS_ADDR resolved to). */
struct http_listener {
    struct loop_io io;
    struct http_loop *w;
    bool tls; /* its connections speak TLS (net/tls.h) */
};

/* One event-loop thread of the server. */
struct h1_kit;

struct http_loop {
    struct loop *loop;
    int index;
    const struct server_config *cfg;
    struct http_limits parse_limits; /* max_body = the largest any route allows */
    struct http_listener listen[SERVER_MAX_LISTEN];
    int nlisten;                    /* 0 once the drain grace ended */
    struct timer_node accept_timer; /* armed while accept is paused (EMFILE) */
    struct timer_node grace_timer;  /* armed during the drain grace */
    bool in_grace;                  /* SIGTERM seen, still accepting, idle connections kept */
    bool close_idle;                /* grace over: idle connections that served a request go */
    void *app_state;                /* from the application's loop_init */
    bool app_inited;
    struct h1_conn *conns; /* open connections */
    size_t nconns;
    struct h1_conn *free_list;
    size_t nfree;
    struct h1_kit *kits; /* working memory parked by idle connections (h1.c), for reuse */
    size_t nkits;
    size_t nowned;         /* closed connections whose handler still runs (pool, database) */
    struct h1_conn *ready; /* connections to continue after the current events */
    uint64_t reqid_seq;
    struct http_compressor *zc; /* gzip state and buffer (compress.h), made on first use */
    pthread_t tid;
    int exit_code;
};

/* A protocol's side of a request. */
struct http_proto {
    /*
     * The handler finished: queue the response (status, c->body, c->extra_hdrs)
     * on the connection, record it (http_request_record) and make the request
     * object ready for the next one. Called exactly once per dispatched or
     * refused request, possibly from a callback after the handler returned.
     */
    void (*respond)(struct http_ctx *c, int status, const char *content_type);
    const char *name; /* for the access log; NULL: HTTP/1.0 or HTTP/1.1 by the request */
    bool h2;          /* the proto label of the metrics */
};

/* The request a handler sees; a protocol owns one per request in flight. */
struct http_ctx {
    const struct http_proto *proto;
    struct http_loop *hl;
    struct http_request req;
    struct http_header *hdrs; /* room for limits.max_headers, req.headers points here */
    struct router_match m;
    struct str body_in;  /* the request body (decoded), valid while the request lives */
    uint64_t body_limit; /* of the matched route */
    bool head_only;
    bool close_after; /* the protocol should end the connection after this response */
    bool dead;        /* its connection closed while the handler runs: nothing to send */
    bool handling;    /* handed to its handler, not answered yet: in_flight counts it */
    uint64_t start_ns;
    char peer[48]; /* the client's address as text, set by the protocol at accept */
    size_t peer_len;
    uint64_t bytes_in; /* request head + body bytes, set by the protocol */
    char reqid[132];
    size_t reqid_len;
    /* response under construction */
    struct buf body;
    struct buf extra_hdrs; /* "Name: value\r\n" lines; values never hold CR or LF */
    struct arena arena;    /* request-scoped: decoded params, parsed JSON, handler state */
};

/* ---- request.c ---- */

/* Process-wide request settings; once, before the loops start. */
void http_request_setup(const struct server_config *cfg);

/* Prepare c's buffers for requests within lim (once per request object). Returns 0 or -1. */
int http_ctx_init(struct http_ctx *c, const struct http_limits *lim);

/* As http_ctx_init, but with no header array (c->hdrs NULL: the caller provides one
 * before a request is parsed into c); allocates nothing. */
void http_ctx_init_empty(struct http_ctx *c, const struct http_limits *lim);

/* Free what http_ctx_init allocated. */
void http_ctx_free(struct http_ctx *c);

/* Forget the finished request; keep the buffers (small ones) for the next. */
void http_ctx_reset(struct http_ctx *c);

/* Monotonic nanoseconds (request durations). */
uint64_t http_now_ns(void);

/* Set c's request id: the client's X-Request-Id when it is acceptable, else a fresh one. */
void http_request_set_id(struct http_ctx *c, struct str sent);

enum http_admit {
    HTTP_ADMIT_OK,        /* route matched and allowed: read the body, then dispatch */
    HTTP_ADMIT_ANSWERED,  /* refused (404/405/401/OPTIONS): the response is queued */
    HTTP_ADMIT_TOO_LARGE, /* the declared body exceeds the route's limit: answer 413 */
};

/*
 * Checks made as soon as the request head is complete, before any body is
 * read, so a client is not asked to upload a body we would refuse: route,
 * method, bearer token, the route's body limit (c->body_limit is set).
 */
enum http_admit http_request_admit(struct http_ctx *c);

/* Run the matched route's handler (c->body_in set). */
void http_request_dispatch(struct http_ctx *c);

/* Write {"error":"msg"} (msg JSON-escaped) into b, replacing its contents. */
void http_error_body(struct buf *b, const char *msg);

/* Count and log a response of `bytes` bytes on the wire. */
void http_request_record(struct http_ctx *c, int status, size_t bytes);

/* The client address for the access log (see request.c: trusted proxies). */
struct str http_client_addr(const struct http_ctx *c);

/* Set c->peer from the accepted peer address sa (NULL or unknown family: "-"). */
void http_ctx_set_peer(struct http_ctx *c, const struct sockaddr *sa);

/* Reason phrase of a status code ("Unknown" for one we never send). */
const char *http_reason(int status);

/* ---- h1.c ---- */

/* Configure the HTTP/1.1 timers (once, before the loops start). */
void h1_setup(const struct server_config *cfg);

/* A new connection on fd (accepted, non-blocking), over TLS when tls (the handshake
 * counts against the header timeout). Returns 0, or -1 (fd closed). */
int h1_accept(struct http_loop *hl, int fd, const struct sockaddr *peer, bool tls);

/* Continue the connections queued with work after a batch of events. */
void h1_run_ready(struct http_loop *hl);

/* The drain grace is over: close idle connections that served a request (and
 * from now on each one once its last response is out); connections that have
 * not sent their first request yet keep their header timeout. Busy ones
 * finish with Connection: close. */
void h1_stop(struct http_loop *hl);

/* SIGTERM: tell HTTP/2 clients the connection is going (GOAWAY shutdown notice); the
 * final GOAWAY follows at h1_stop. HTTP/1.1 responses say Connection: close meanwhile. */
void h1_drain_notice(struct http_loop *hl);

/* Close every connection (after the drain). */
void h1_close_all(struct http_loop *hl);

/* Free the connection structs kept for reuse. */
void h1_free_pool(struct http_loop *hl);

/* ---- h2.c ---- */

struct h2_session;

/* What a session needs of the connection under it. */
struct h2_link {
    /* A response was queued from outside the connection's own processing (a handler
     * that answered from a callback): send it after the current events. */
    void (*wake)(struct h2_link *link);
};

/* Configure HTTP/2 from cfg (h2_max_streams 0: off) and the parse limits; once, before
 * the loops start. Returns 0 or -1 (out of memory). */
int h2_setup(const struct server_config *cfg, const struct http_limits *lim);

/* True when h2_setup turned HTTP/2 on. */
bool h2_enabled(void);

/* Free what h2_setup made (after the loops). */
void h2_teardown(void);

/* A session for a connection whose next bytes are the client's preface; it queues our
 * SETTINGS at once. peer: the client's address for the requests and the debug log.
 * Returns NULL when out of memory. */
struct h2_session *h2_session_new(struct http_loop *hl, struct h2_link *link, const char *peer,
                                  size_t peer_len);

/* Process n received bytes (requests are admitted and dispatched from here). Returns 0,
 * or -1 when the session cannot go on: send what h2_session_send still gives, then close. */
int h2_session_recv(struct h2_session *s, const char *p, size_t n);

/* Append frames to send to out until it holds `high` bytes or nothing is left. Returns 0,
 * or -1 on a fatal error (close the connection). */
int h2_session_send(struct h2_session *s, struct buf *out, size_t high);

/* True when the session will neither read nor write again (after GOAWAY, or the client's). */
bool h2_session_done(const struct h2_session *s);

/* True when no stream is open or owned by a handler. */
bool h2_session_idle(const struct h2_session *s);

/* The connection timer the session wants now (HTTP_TIMER_*, or -1 for none); *progress
 * says whether response DATA moved since the last call (re-arm the write timer). */
int h2_session_timer(struct h2_session *s, bool *progress);

/* The timer h2_session_timer asked for fired (not HTTP_TIMER_WRITE: the connection closes
 * on that one): 408 for requests past the body timeout, GOAWAY when idle. */
void h2_session_timeout(struct h2_session *s, int cls);

/* SIGTERM seen: GOAWAY with the largest stream id (RFC 9113 6.8's notice); streams go on. */
void h2_session_notice(struct h2_session *s);

/* Drain: GOAWAY naming the last stream we took; those finish, no new ones start. */
void h2_session_shutdown(struct h2_session *s);

/* The connection is gone: free the session now, or - when handlers still run - once the
 * last of them answers (each counts in the loop's nowned meanwhile). */
void h2_session_free(struct h2_session *s);

#endif
