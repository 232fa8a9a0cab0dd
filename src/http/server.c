/*
 * server.c - the server around the connections (see server.h): listeners and
 * accept, one event-loop thread each, signals, the drain, the memory trim,
 * and the application's hooks. Connections themselves live in h1.c, the
 * request object in request.c.
 */
#define _GNU_SOURCE
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/compiler.h"
#include "base/log.h"
#include "http/http_int.h"
#include "http/metrics.h"
#include "net/loop.h"
#include "net/workpool.h"

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100

static struct http_loop *g_loops;

/* ---------------------------------------------------------------- accept */

static void pause_accept(struct http_loop *w)
{
    loop_mod(w->loop, &w->listen, 0);
    loop_timer_arm(w->loop, &w->accept_timer, HTTP_TIMER_ACCEPT);
}

/* Accept up to max connections. Returns true when the queue is empty (or accept is paused). */
static bool accept_some(struct http_loop *w, int max)
{
    for (int i = 0; i < max; i++) {
        int fd = accept4(w->listen.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return true;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                static _Thread_local uint64_t last_warn;
                if (loop_now_ms(w->loop) - last_warn > 10000) {
                    last_warn = loop_now_ms(w->loop);
                    log_warn("accept: %s; pausing new connections (%zu open on loop %d)",
                             strerror(errno), w->nconns, w->index);
                }
                pause_accept(w);
                return true;
            }
            log_error("accept failed: %s", strerror(errno));
            return true;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        (void)h1_accept(w, fd); /* on failure it closed fd */
    }
    return false;
}

static void on_accept(struct loop_io *io, uint32_t events)
{
    (void)events;
    (void)accept_some(container_of(io, struct http_loop, listen), ACCEPT_BATCH);
}

static void on_accept_resume(struct loop *l, struct timer_node *t)
{
    struct http_loop *w = container_of(t, struct http_loop, accept_timer);
    if (w->listen.fd >= 0) /* closed when the drain grace ended */
        loop_mod(l, &w->listen, EPOLLIN);
}

/* ---------------------------------------------------------------- loop hooks */

static void after_events(struct loop *l, void *arg)
{
    (void)l;
    struct http_loop *w = arg;
    h1_run_ready(w);
    /* the work the application deferred to the end of the turn (a group commit) */
    if (w->cfg->app.loop_flush)
        w->cfg->app.loop_flush(w->app_state);
    log_flush();
}

static bool has_work(struct loop *l, void *arg)
{
    (void)l;
    return ((struct http_loop *)arg)->ready != NULL;
}

/*
 * The drain in two steps. SIGTERM starts the grace (BRISK_DRAIN_GRACE_MS):
 * the listeners still accept and idle keep-alive connections stay open,
 * while every response says Connection: close and its connection then
 * closes. A balancer that pooled an idle connection may send on it at any
 * moment; closing it under that request loses the request (seen behind
 * HAProxy: 1 in 7 rolling restarts lost a POST). During the grace such a
 * request is answered, and the balancer learns from Connection: close and,
 * after the grace, from refused connects (which it retries elsewhere).
 * Then end_grace: accept what is queued (closing a listener resets the
 * connections in its backlog), close the listener and the idle connections.
 */
static void end_grace(struct http_loop *w)
{
    struct loop *l = w->loop;
    w->in_grace = false;
    loop_timer_disarm(l, &w->grace_timer);
    loop_timer_disarm(l, &w->accept_timer);
    if (w->listen.fd >= 0) {
        for (int i = 0; i < 64 && !accept_some(w, ACCEPT_BATCH); i++)
            ;
        loop_del(l, &w->listen);
        close(w->listen.fd);
        w->listen.fd = -1;
    }
    h1_stop(w);
}

static void on_grace_end(struct loop *l, struct timer_node *t)
{
    (void)l;
    end_grace(container_of(t, struct http_loop, grace_timer));
}

static void on_stop(struct loop *l, void *arg)
{
    struct http_loop *w = arg;
    /* the grace counts within the drain deadline */
    if (w->cfg->drain_grace_ms > 0 && w->cfg->drain_ms > 0) {
        w->in_grace = true;
        loop_timer_arm(l, &w->grace_timer, HTTP_TIMER_GRACE);
        return;
    }
    end_grace(w);
}

static bool drained(struct loop *l, void *arg)
{
    (void)l;
    struct http_loop *w = arg;
    /* also wait for handlers still working for clients that left (a batch on
     * the pool): their completions are posted to this loop, and a loop that
     * exited would drop them with the request's memory */
    return !w->in_grace && w->nconns == 0 && w->nowned == 0;
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
    struct http_loop *w = arg;
    if (w->cfg->app.loop_tick)
        w->cfg->app.loop_tick(w->app_state);
    if (w->index == 0)
        trim_later(l);
}

/* Close what the application opened for this loop (once). */
static void loop_fini(struct http_loop *w)
{
    if (w->app_inited && w->cfg->app.loop_fini)
        w->cfg->app.loop_fini(w->app_state);
    w->app_inited = false;
    w->app_state = NULL;
}

static void *loop_main(void *arg)
{
    struct http_loop *w = arg;
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
    h1_close_all(w);
    /* The drain deadline passed with handlers still working (a batch on the
     * pool): their completions are posted to this loop, so turn it (one
     * iteration per call now that it is stopping) until they have all
     * answered - else they, and their requests' memory, would be dropped with
     * the loop. The pool always finishes; 30 s bounds a stuck database, whose
     * waits loop_fini then ends. */
    uint64_t give_up = loop_now_ms(w->loop) + 30000;
    while (w->nowned > 0 && loop_now_ms(w->loop) < give_up)
        loop_run(w->loop, &hooks, 0);
    if (w->nowned > 0)
        log_warn("loop %d: %zu handlers still running at exit", w->index, w->nowned);
    /* closing the application's state (a database handle) completes what still
     * waits on it (503), which releases connections whose client left mid-query:
     * before the free list goes */
    loop_fini(w);
    h1_free_pool(w);
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

static void loops_free(int n)
{
    for (int i = 0; g_loops && i < n; i++) {
        struct http_loop *w = &g_loops[i];
        if (w->listen.fd >= 0)
            close(w->listen.fd);
        loop_fini(w);
        loop_destroy(w->loop);
    }
    free(g_loops);
    g_loops = NULL;
}

int server_run(const struct server_config *cfg)
{
    const struct server_app *app = &cfg->app;
    int rc = -1;
    int started = 0;
    sigset_t sigs;

    http_request_setup(cfg);
    h1_setup(cfg);
    loop_set_timeout(HTTP_TIMER_ACCEPT, ACCEPT_PAUSE_MS, on_accept_resume);
    loop_set_timeout(HTTP_TIMER_GRACE,
                     cfg->drain_grace_ms < cfg->drain_ms ? cfg->drain_grace_ms : cfg->drain_ms,
                     on_grace_end);

    /* the parser checks against the largest body any route allows */
    struct http_limits parse_limits = cfg->limits;
    size_t nroutes;
    const struct route *routes = router_table(&nroutes);
    for (size_t i = 0; i < nroutes; i++)
        if (routes[i].max_body > parse_limits.max_body)
            parse_limits.max_body = routes[i].max_body;
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
    if (app->start && app->start(app->arg) != 0)
        goto out_pool;

    g_loops = calloc((size_t)cfg->threads, sizeof *g_loops);
    if (!g_loops) {
        log_error("out of memory allocating loops");
        goto out_loops;
    }
    for (int i = 0; i < cfg->threads; i++)
        g_loops[i].listen.fd = -1;
    int port = claim_port(cfg);
    if (port < 0)
        goto out_loops;
    for (int i = 0; i < cfg->threads; i++) {
        struct http_loop *w = &g_loops[i];
        w->index = i;
        w->cfg = cfg;
        w->parse_limits = parse_limits;
        w->accept_timer.cls = -1;
        w->grace_timer.cls = -1;
        w->loop = loop_create(i);
        if (!w->loop)
            goto out_loops;
        loop_set_data(w->loop, w);
        w->listen.fd = open_listener(cfg, port);
        if (w->listen.fd < 0)
            goto out_loops;
        w->listen.on_event = on_accept;
        if (loop_add(w->loop, &w->listen, EPOLLIN) != 0) {
            log_error("epoll_ctl(listener): %s", strerror(errno));
            goto out_loops;
        }
        if (app->loop_init) {
            w->app_state = app->loop_init(app->arg, w->loop, i);
            if (!w->app_state)
                goto out_loops;
            w->app_inited = true;
        }
    }
    if (app->harden && app->harden(app->arg) != 0)
        goto out_loops;
    for (; started < cfg->threads; started++) {
        if (pthread_create(&g_loops[started].tid, NULL, loop_main, &g_loops[started]) != 0) {
            log_error("cannot start thread %d", started);
            break;
        }
    }
    if (started == cfg->threads) {
        if (app->serving)
            app->serving(app->arg, cfg->addr_host, port, cfg->threads);
        int sig = 0;
        while (sigwait(&sigs, &sig) != 0)
            ;
        log_info("%s received: draining (at most %llu ms)", sig == SIGINT ? "SIGINT" : "SIGTERM",
                 (unsigned long long)cfg->drain_ms);
    }
    for (int i = 0; i < started; i++)
        loop_request_stop(g_loops[i].loop);
    rc = started == cfg->threads ? 0 : -1;
    for (int i = 0; i < started; i++) {
        pthread_join(g_loops[i].tid, NULL);
        if (g_loops[i].exit_code)
            rc = -1;
    }
out_loops:
    /* order matters: loops are joined, so no new work; the pool's last
     * completions are posted to loops that still exist until loops_free */
    if (app->stop)
        app->stop(app->arg);
out_pool:
    workpool_stop();
    loops_free(cfg->threads);
    if (rc == 0)
        log_info("shutdown complete");
out_metrics:
    metrics_free();
    return rc;
}
