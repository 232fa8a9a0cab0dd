/*
 * server.h - run the HTTP server: listeners, one event loop per thread,
 * signals, drain. The application plugs in through struct server_app and
 * never sees a connection; the server never sees what the application keeps
 * (storage, background work).
 */
#ifndef BRISK_SERVER_H
#define BRISK_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "http/parser.h"

struct loop;

/*
 * The application's hooks. The server calls each on the thread named and
 * never looks inside arg or a loop's state. Any hook may be NULL.
 */
struct server_app {
    void *arg;
    /* Main thread, after signals are blocked, before the loops are created:
     * start process-wide services (background workers). Returns 0 or -1. */
    int (*start)(void *arg);
    /* Main thread, after every loop has exited; undoes start. */
    void (*stop)(void *arg);
    /* Main thread, once per loop before it runs: the loop's state (a database
     * handle), handed back in handlers by http_loop_state(). NULL fails start-up. */
    void *(*loop_init)(void *arg, struct loop *l, int index);
    /* Main thread, once everything is bound and every loop_init ran, before the
     * loops serve: the place to drop privileges and install the syscall filter. */
    int (*harden)(void *arg);
    /* Main thread, once the loops serve: announce it (the start-up log line).
     * addrs: the numeric addresses bound, "127.0.0.1:8080, [::1]:8080". */
    void (*serving)(void *arg, const char *addrs, int port, int threads);
    /* Loop thread, after each batch of events: flush work deferred in the turn. */
    void (*loop_flush)(void *loop_state);
    /* Loop thread, about once per second: housekeeping, gauges. */
    void (*loop_tick)(void *loop_state);
    /* Loop thread after the drain (or the main thread if start-up failed): close
     * what loop_init opened; callbacks still owed to requests run from here. */
    void (*loop_fini)(void *loop_state);
};

struct server_config {
    const char
        *addr_host; /* IPv4/IPv6 address or host name to bind ("0.0.0.0", "::", "localhost") */
    int port;
    bool tls;                  /* the addr_host listeners speak TLS (net/tls.h, set up before) */
    const char *tls_addr_host; /* NULL, or a second set of listeners that speak TLS */
    int tls_port;
    int threads;
    struct http_limits limits; /* limits.max_body: routes without a max_body of their own */
    uint64_t h2_max_streams;   /* HTTP/2 streams in flight per connection; 0: no HTTP/2 */
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t drain_ms;       /* SIGTERM/SIGINT: longest wait for requests in flight */
    uint64_t drain_grace_ms; /* of which listeners and idle connections are kept (see server.c) */
    const char *api_token;   /* NULL or "" = no auth */
    const char *trusted_proxies; /* CIDR list whose X-Forwarded-For is believed, or NULL */
    uint64_t compress_min_bytes; /* gzip JSON bodies this long when asked (compress.h); 0: never */
    struct server_app app;
};

#define SERVER_MAX_ADDRS 8                       /* addresses a host name in addr_host may bind */
#define SERVER_MAX_LISTEN (2 * SERVER_MAX_ADDRS) /* BRISK_ADDR's and BRISK_TLS_ADDR's */

enum { SERVER_BAD_ADDR = -2, SERVER_BIND_FAILED = -1 };

/*
 * Resolve cfg->addr_host (every address of a name, like "localhost" -> 127.0.0.1
 * and ::1; blocking, at start-up only), claim cfg->port on each and open
 * cfg->threads listening sockets per address, for server_run. Call it before
 * creating or migrating a database, so a bad address or a port in use stops
 * start-up first. Returns 0; SERVER_BAD_ADDR when the host does not resolve
 * (a bad setting); SERVER_BIND_FAILED when an address cannot be bound (in use,
 * not local). On failure one line "brisk: ..." is in err (cap bytes) and
 * nothing stays open.
 */
int server_listen(const struct server_config *cfg, char *err, size_t cap);

/*
 * Bind the listeners (unless server_listen did), give each loop thread its application state and
 * run one event loop per thread until SIGTERM/SIGINT, then drain and return. The calling thread
 * waits for the signal. The router must be initialised. Returns 0 on a clean shutdown, -1 when
 * start-up failed (logged).
 */
int server_run(const struct server_config *cfg);

#endif
