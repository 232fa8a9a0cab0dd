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
#include <netdb.h>
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
#include "http/compress.h"
#include "http/http_int.h"
#include "http/metrics.h"
#include "net/loop.h"
#include "net/tls.h"
#include "net/workpool.h"

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100

static struct http_loop *g_loops;

/* ---------------------------------------------------------------- accept */

static void pause_accept(struct http_loop *w)
{
    for (int i = 0; i < w->nlisten; i++)
        loop_mod(w->loop, &w->listen[i].io, 0);
    loop_timer_arm(w->loop, &w->accept_timer, HTTP_TIMER_ACCEPT);
}

/* Accept up to max connections from fd. Returns true when its queue is empty
 * (or accept is paused). */
static bool accept_some(struct http_loop *w, int lfd, bool tls, int max)
{
    for (int i = 0; i < max; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
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
        (void)h1_accept(w, fd, (struct sockaddr *)&peer, tls); /* on failure it closed fd */
    }
    return false;
}

static void on_accept(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct http_listener *li = container_of(io, struct http_listener, io);
    (void)accept_some(li->w, io->fd, li->tls, ACCEPT_BATCH);
}

static void on_accept_resume(struct loop *l, struct timer_node *t)
{
    struct http_loop *w = container_of(t, struct http_loop, accept_timer);
    for (int i = 0; i < w->nlisten; i++) /* none left once the drain grace ended */
        loop_mod(l, &w->listen[i].io, EPOLLIN);
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
    for (int i = 0; i < w->nlisten; i++) {
        struct loop_io *io = &w->listen[i].io;
        for (int n = 0; n < 64 && !accept_some(w, io->fd, w->listen[i].tls, ACCEPT_BATCH); n++)
            ;
        loop_del(l, io);
        close(io->fd);
        io->fd = -1;
    }
    w->nlisten = 0;
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
    h1_drain_notice(w);
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
    log_set_thread("loop", w->index);
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

/* The addresses and listening sockets server_listen prepared for server_run. */
static struct {
    bool ready;
    int naddrs;
    int threads;
    int port; /* BRISK_ADDR's (after port 0 was replaced by the kernel's choice) */
    struct sockaddr_storage addr[SERVER_MAX_LISTEN];
    socklen_t addrlen[SERVER_MAX_LISTEN];
    bool tls[SERVER_MAX_LISTEN];   /* address a's listeners speak TLS */
    bool group[SERVER_MAX_LISTEN]; /* false: from BRISK_ADDR, true: from BRISK_TLS_ADDR */
    int *fds; /* threads x naddrs: loop i's listener on address a at [i * naddrs + a] */
    char text[SERVER_MAX_LISTEN * (INET6_ADDRSTRLEN + 16)];
} g_bind;

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static int addr_port(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* "127.0.0.1:8080" or "[::1]:8080" into out (cap bytes). */
static void addr_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        port = ntohs(s4->sin_port);
        snprintf(out, cap, "%s:%d", host, port);
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        port = ntohs(s6->sin6_port);
        snprintf(out, cap, "[%s]:%d", host, port);
    }
}

/* How many addresses came from the same setting as address a. */
static int group_size(int a)
{
    int n = 0;
    for (int i = 0; i < g_bind.naddrs; i++)
        n += g_bind.group[i] == g_bind.group[a];
    return n;
}

/*
 * A socket bound to address a of g_bind. With reuseport the loops' listeners
 * share the port; without it the bind fails if anyone (another brisk
 * included) holds it. An IPv6 socket is IPv6-only when the name gave
 * IPv4 addresses too (they get their own sockets). Returns the fd, or -1
 * with the reason in err.
 */
static int bind_socket(int a, bool reuseport, char *err, size_t cap)
{
    const struct sockaddr_storage *ss = &g_bind.addr[a];
    char at[INET6_ADDRSTRLEN + 10];
    addr_text(ss, at, sizeof at);
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, cap, "brisk: cannot listen on %s: socket: %s", at, strerror(errno));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
        (ss->ss_family == AF_INET6 && group_size(a) > 1 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)) {
        snprintf(err, cap, "brisk: cannot listen on %s: setsockopt: %s", at, strerror(errno));
        goto fail;
    }
    if (bind(fd, (const struct sockaddr *)ss, g_bind.addrlen[a]) != 0) {
        snprintf(err, cap, "brisk: cannot listen on %s: %s", at, strerror(errno));
        goto fail;
    }
    if (reuseport && listen(fd, 4096) != 0) {
        snprintf(err, cap, "brisk: cannot listen on %s: listen: %s", at, strerror(errno));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return -1;
}

/*
 * Claim the port on address a for this process: a plain bind (no
 * SO_REUSEPORT) fails when another process listens there, even one using
 * SO_REUSEPORT - otherwise a second brisk started by mistake would silently
 * take half the connections. For port 0 the kernel picks the port, which
 * every other address and loop then uses. Returns 0 or -1 (err).
 */
static int claim_port(int a, char *err, size_t cap)
{
    int fd = bind_socket(a, false, err, cap);
    if (fd < 0)
        return -1;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl = sizeof ss;
    if (addr_port(&g_bind.addr[a]) == 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        int port = addr_port(&ss);
        for (int i = 0; i < g_bind.naddrs; i++) /* the rest of the same setting's addresses */
            if (g_bind.group[i] == g_bind.group[a])
                set_port(&g_bind.addr[i], port);
        if (!g_bind.group[a])
            g_bind.port = port;
    }
    close(fd);
    return 0;
}

/* Resolve host (numeric or a name) and append its addresses to g_bind's, marked with
 * group and tls; setting names the variable in messages. Returns 0, or -1 (err). */
static int resolve_addrs(const char *host, int port, bool group, bool tls, const char *setting,
                         char *err, size_t cap)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0) {
        snprintf(err, cap, "brisk: %s: \"%.80s\" does not resolve (%s)", setting, host,
                 gai_strerror(gai));
        return -1;
    }
    int first = g_bind.naddrs;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            ai->ai_addrlen > sizeof(struct sockaddr_storage))
            continue;
        bool dup = false; /* getaddrinfo repeats an address per /etc/hosts line */
        for (int i = first; i < g_bind.naddrs && !dup; i++)
            dup = g_bind.addrlen[i] == ai->ai_addrlen &&
                  memcmp(&g_bind.addr[i], ai->ai_addr, ai->ai_addrlen) == 0;
        if (dup)
            continue;
        if (g_bind.naddrs - first == SERVER_MAX_ADDRS) {
            log_warn("%s: %s has more than %d addresses; listening on the first %d", setting, host,
                     SERVER_MAX_ADDRS, SERVER_MAX_ADDRS);
            break;
        }
        int a = g_bind.naddrs++;
        memset(&g_bind.addr[a], 0, sizeof g_bind.addr[a]);
        memcpy(&g_bind.addr[a], ai->ai_addr, ai->ai_addrlen);
        g_bind.addrlen[a] = (socklen_t)ai->ai_addrlen;
        g_bind.tls[a] = tls;
        g_bind.group[a] = group;
        set_port(&g_bind.addr[a], port);
    }
    freeaddrinfo(res);
    if (g_bind.naddrs == first) {
        snprintf(err, cap, "brisk: %s: \"%.80s\" has no IPv4 or IPv6 address", setting, host);
        return -1;
    }
    return 0;
}

static void listen_close(void)
{
    for (int i = 0; g_bind.fds && i < g_bind.threads * g_bind.naddrs; i++)
        if (g_bind.fds[i] >= 0)
            close(g_bind.fds[i]);
    free(g_bind.fds);
    memset(&g_bind, 0, sizeof g_bind);
}

int server_listen(const struct server_config *cfg, char *err, size_t cap)
{
    listen_close();
    if (resolve_addrs(cfg->addr_host, cfg->port, false, cfg->tls, "BRISK_ADDR (--addr)", err,
                      cap) != 0 ||
        (cfg->tls_addr_host && resolve_addrs(cfg->tls_addr_host, cfg->tls_port, true, true,
                                             "BRISK_TLS_ADDR (--tls-addr)", err, cap) != 0)) {
        listen_close();
        return SERVER_BAD_ADDR;
    }
    g_bind.port = cfg->port;
    g_bind.threads = cfg->threads;
    size_t n = (size_t)cfg->threads * (size_t)g_bind.naddrs;
    g_bind.fds = malloc(n * sizeof *g_bind.fds);
    if (!g_bind.fds) {
        snprintf(err, cap, "brisk: out of memory for %zu listeners", n);
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        g_bind.fds[i] = -1;
    for (int a = 0; a < g_bind.naddrs; a++)
        if (claim_port(a, err, cap) != 0)
            goto fail;
    for (size_t i = 0; i < n; i++) {
        g_bind.fds[i] = bind_socket((int)(i % (size_t)g_bind.naddrs), true, err, cap);
        if (g_bind.fds[i] < 0)
            goto fail;
    }
    size_t off = 0;
    for (int a = 0; a < g_bind.naddrs; a++) {
        char at[INET6_ADDRSTRLEN + 10];
        addr_text(&g_bind.addr[a], at, sizeof at);
        int w = snprintf(g_bind.text + off, sizeof g_bind.text - off, "%s%s%s", a ? ", " : "", at,
                         g_bind.tls[a] ? " (TLS)" : "");
        if (w > 0 && (size_t)w < sizeof g_bind.text - off)
            off += (size_t)w;
    }
    g_bind.ready = true;
    return 0;
fail:
    listen_close();
    return SERVER_BIND_FAILED;
}

static void loops_free(int n)
{
    for (int i = 0; g_loops && i < n; i++) {
        struct http_loop *w = &g_loops[i];
        for (int a = 0; a < w->nlisten; a++)
            if (w->listen[a].io.fd >= 0)
                close(w->listen[a].io.fd);
        loop_fini(w);
        http_compressor_free(w->zc);
        loop_destroy(w->loop);
    }
    free(g_loops);
    g_loops = NULL;
}

/*
 * SIGHUP: load the TLS certificate and key again (main thread, while the loops
 * serve). New connections get the new pair; a bad pair is logged and the old
 * one stays. Other settings are read at start-up only.
 */
static void reload(void)
{
    char err[512];
    if (!tls_enabled()) {
        log_info("SIGHUP received: nothing to reload (TLS is off; other settings are read at "
                 "start-up only)");
        return;
    }
    log_info("SIGHUP received: reloading the TLS certificate and key");
    if (tls_reload(err, sizeof err) != 0)
        log_error("TLS reload failed, the previous certificate stays in use: %s",
                  err + (strncmp(err, "brisk: ", 7) == 0 ? 7 : 0));
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
    if (metrics_init(cfg->threads, nroutes) != 0 || h2_setup(cfg, &parse_limits) != 0) {
        log_error("out of memory allocating metrics or the HTTP/2 settings");
        return -1;
    }

    /* Signals: SIGPIPE ignored (we also send with MSG_NOSIGNAL; OpenSSL's socket
     * BIO does not); TERM/INT/HUP are blocked in every thread and taken by
     * sigwait() below. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
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
    if (!g_bind.ready || g_bind.threads != cfg->threads) {
        char err[512];
        if (server_listen(cfg, err, sizeof err) != 0) {
            log_error("%s", err + (strncmp(err, "brisk: ", 7) == 0 ? 7 : 0));
            goto out_loops;
        }
    }
    int port = g_bind.port;
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
        /* the loop owns its listeners from here (loops_free closes them) */
        for (int a = 0; a < g_bind.naddrs; a++) {
            struct http_listener *li = &w->listen[w->nlisten++];
            li->w = w;
            li->tls = g_bind.tls[a];
            li->io.fd = g_bind.fds[i * g_bind.naddrs + a];
            li->io.on_event = on_accept;
            g_bind.fds[i * g_bind.naddrs + a] = -1;
            if (loop_add(w->loop, &li->io, EPOLLIN) != 0) {
                log_error("epoll_ctl(listener): %s", strerror(errno));
                goto out_loops;
            }
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
            app->serving(app->arg, g_bind.text, port, cfg->threads);
        int sig = 0;
        for (;;) {
            if (sigwait(&sigs, &sig) != 0)
                continue;
            if (sig != SIGHUP)
                break;
            reload();
        }
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
    h2_teardown();
    listen_close();
    return rc;
}
