/*
 * test_server.c - the HTTP server with a fake application: no database, no
 * app/ code. Proves the seam of server.h: each loop gets the state its
 * loop_init returned back in handlers (http_loop_state), flush runs after
 * events, start/harden/serving/stop and loop_fini each run as promised, a
 * route's own max_body is enforced, and a response finished later from a
 * callback (loop_post) reaches the client.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "http/request.h"
#include "http/router.h"
#include "http/server.h"
#include "net/loop.h"
#include "test.h"

#define THREADS 2

struct fake_loop {
    int index;
    struct loop *loop;
    atomic_int flushes;
    atomic_int ticks;
    atomic_int requests;
};

struct fake_app {
    atomic_int starts, stops, hardens, inits, finis;
    atomic_int flushes, ticks, requests; /* summed from the loops at loop_fini */
    atomic_int port;
    struct fake_loop *loops[THREADS];
};

static struct fake_app g_app;

static int fake_start(void *arg)
{
    atomic_fetch_add(&((struct fake_app *)arg)->starts, 1);
    return 0;
}

static void fake_stop(void *arg)
{
    atomic_fetch_add(&((struct fake_app *)arg)->stops, 1);
}

static int fake_harden(void *arg)
{
    struct fake_app *a = arg;
    /* every loop has its state before the sandbox goes up */
    ok(atomic_load(&a->inits) == THREADS, "harden after every loop_init (%d)",
       atomic_load(&a->inits));
    atomic_fetch_add(&a->hardens, 1);
    return 0;
}

static void *fake_loop_init(void *arg, struct loop *l, int index)
{
    struct fake_app *a = arg;
    struct fake_loop *fl = calloc(1, sizeof *fl);
    if (!fl)
        return NULL;
    fl->index = index;
    fl->loop = l;
    a->loops[index] = fl;
    atomic_fetch_add(&a->inits, 1);
    return fl;
}

static void fake_serving(void *arg, const char *addrs, int port, int threads)
{
    (void)addrs;
    (void)threads;
    atomic_store(&((struct fake_app *)arg)->port, port);
}

static void fake_flush(void *state)
{
    atomic_fetch_add(&((struct fake_loop *)state)->flushes, 1);
}

static void fake_tick(void *state)
{
    atomic_fetch_add(&((struct fake_loop *)state)->ticks, 1);
}

static void fake_fini(void *state)
{
    struct fake_loop *fl = state;
    atomic_fetch_add(&g_app.finis, 1);
    atomic_fetch_add(&g_app.flushes, atomic_load(&fl->flushes));
    atomic_fetch_add(&g_app.ticks, atomic_load(&fl->ticks));
    atomic_fetch_add(&g_app.requests, atomic_load(&fl->requests));
    g_app.loops[fl->index] = NULL;
    free(fl);
}

/* GET /state: which loop state the handler got, and that it is this loop's. */
static void h_state(struct http_ctx *c)
{
    struct fake_loop *fl = http_loop_state(c);
    atomic_fetch_add(&fl->requests, 1);
    buf_printf(http_body(c), "{\"loop\":%d,\"same\":%s}", fl->index,
               fl->loop == http_loop(c) ? "true" : "false");
    http_respond(c, 200, NULL);
}

/* POST /small: echoes the body length (a route with a 16-byte limit). */
static void h_small(struct http_ctx *c)
{
    buf_printf(http_body(c), "{\"len\":%zu}", http_body_raw(c).len);
    http_respond(c, 200, NULL);
}

static void later_done(void *arg)
{
    struct http_ctx *c = arg;
    http_add_header(c, "X-Later", STR_LIT("yes"));
    http_add_header(c, "X-Bad", STR_LIT("a\r\nInjected: 1"));
    buf_append_cstr(http_body(c), "{\"later\":true}");
    http_respond(c, 202, NULL);
}

/* GET /later: answered from a callback after the handler returned. */
static void h_later(struct http_ctx *c)
{
    if (loop_post(http_loop(c), later_done, c) != 0)
        http_respond_error(c, 500, "post failed");
}

static const struct route k_routes[] = {
    {HTTP_GET, "/state", h_state, ROUTE_PUBLIC, 0},
    {HTTP_POST, "/small", h_small, ROUTE_PUBLIC, 16},
    {HTTP_GET, "/later", h_later, ROUTE_PUBLIC, 0},
};

/* Send req on a new connection to the server and read the whole answer (closed by it). */
static int roundtrip(int port, const char *req, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    size_t got = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        goto fail;
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
        goto fail;
    for (;;) {
        ssize_t n = read(fd, out + got, cap - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == cap - 1)
            break;
    }
    out[got] = '\0';
    close(fd);
    return (int)got;
fail:
    close(fd);
    return -1;
}

static void *client(void *arg)
{
    (void)arg;
    int port = 0;
    for (int i = 0; i < 500 && !(port = atomic_load(&g_app.port)); i++)
        usleep(10000);
    ok(port > 0, "serving hook reports the port");
    char buf[4096];
    int seen[THREADS] = {0};
    for (int i = 0; port && i < 40; i++) {
        int n = roundtrip(port, "GET /state HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf,
                          sizeof buf);
        ok(n > 0 && strstr(buf, "HTTP/1.1 200 OK\r\n") && strstr(buf, "\"same\":true"),
           "GET /state answers with this loop's state: %s", buf);
        const char *p = strstr(buf, "\"loop\":");
        if (p) {
            int idx = atoi(p + 7); // NOLINT(cert-err34-c): a test reading its own output
            if (idx >= 0 && idx < THREADS)
                seen[idx]++;
        }
    }
    int n = roundtrip(port,
                      "POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                      "Connection: close\r\n\r\nhello",
                      buf, sizeof buf);
    ok(n > 0 && strstr(buf, " 200 ") && strstr(buf, "{\"len\":5}"), "body within the route limit");
    n = roundtrip(port,
                  "POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n"
                  "0123456789abcdefg",
                  buf, sizeof buf);
    ok(n > 0 && strstr(buf, "HTTP/1.1 413 ") && strstr(buf, "request body too large"),
       "route max_body: 17 bytes refused with 413: %s", buf);
    n = roundtrip(port, "GET /later HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf,
                  sizeof buf);
    ok(n > 0 && strstr(buf, "HTTP/1.1 202 ") && strstr(buf, "X-Later: yes\r\n") &&
           strstr(buf, "{\"later\":true}"),
       "response finished from a callback: %s", buf);
    ok(n > 0 && !strstr(buf, "Injected"), "a header value with CR LF is not sent");
    n = roundtrip(port, "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf,
                  sizeof buf);
    ok(n > 0 && strstr(buf, "HTTP/1.1 404 ") && strstr(buf, "{\"error\":\"not found\"}"),
       "unknown path: 404 with a JSON error");
    /* SO_REUSEPORT spreads connections by hash: 40 of them reach both loops
     * unless the hash is very unlucky; a loop that never served is a bug only
     * if the other served all, so report rather than fail on it */
    if (!seen[0] || !seen[1])
        printf("# note: loops served %d and %d of 40 connections\n", seen[0], seen[1]);
    kill(getpid(), SIGTERM);
    return NULL;
}

int main(void)
{
    log_configure(LOG_WARN, false);
    ok(router_init(k_routes, sizeof k_routes / sizeof k_routes[0]) == 0, "router_init");
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* the client thread inherits it */
    pthread_t tid;
    ok(pthread_create(&tid, NULL, client, NULL) == 0, "client thread");
    struct server_config cfg = {
        .addr_host = "127.0.0.1",
        .port = 0,
        .threads = THREADS,
        .limits = {.max_header_bytes = 16384, .max_headers = 64, .max_body = 1024},
        .header_timeout_ms = 5000,
        .body_timeout_ms = 5000,
        .idle_timeout_ms = 5000,
        .drain_ms = 2000,
        .app =
            {
                .arg = &g_app,
                .start = fake_start,
                .stop = fake_stop,
                .harden = fake_harden,
                .loop_init = fake_loop_init,
                .serving = fake_serving,
                .loop_flush = fake_flush,
                .loop_tick = fake_tick,
                .loop_fini = fake_fini,
            },
    };
    int rc = server_run(&cfg);
    pthread_join(tid, NULL);
    ok(rc == 0, "server_run returns 0 after SIGTERM");
    ok(atomic_load(&g_app.starts) == 1 && atomic_load(&g_app.stops) == 1, "start and stop once");
    ok(atomic_load(&g_app.hardens) == 1, "harden once");
    ok(atomic_load(&g_app.inits) == THREADS && atomic_load(&g_app.finis) == THREADS,
       "loop_init and loop_fini once per loop (%d, %d)", atomic_load(&g_app.inits),
       atomic_load(&g_app.finis));
    ok(!g_app.loops[0] && !g_app.loops[1], "every loop state closed");
    ok(atomic_load(&g_app.requests) == 40, "40 requests reached the loop states (%d)",
       atomic_load(&g_app.requests));
    ok(atomic_load(&g_app.flushes) >= 40, "loop_flush after the events (%d)",
       atomic_load(&g_app.flushes));
    ok(atomic_load(&g_app.ticks) >= THREADS, "loop_tick on every loop (%d)",
       atomic_load(&g_app.ticks));
    log_thread_done();
    return test_done();
}
