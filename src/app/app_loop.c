/*
 * app_loop.c - what the application keeps per event loop (see app.h): the
 * loop's database handle, opened, flushed, ticked and closed through the
 * server's hooks, and the pool gauges /metrics shows.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "app/app.h"
#include "app/bgworker.h"
#include "app/dbstats.h"
#include "base/log.h"
#include "db/db.h"

struct app_loop {
    struct db *db;
    int index;
    uint64_t reconnects; /* the handle's count at the last tick */
};

/* Pool gauges of each loop: written by its tick, read by a scrape on any loop.
 * Apart from struct app_loop so that a scrape never reads a loop's state while
 * that loop closes it (loops finish their drains at different times). */
struct loop_gauges {
    _Atomic int db_conns;
    _Atomic int db_busy;
    _Atomic int64_t replica_lag_ms; /* -1: no replica in use */
};

static const struct app_config *g_cfg;
static struct loop_gauges *g_gauges; /* [threads], from app_start to app_stop */
static const char *g_backend = "none";

static int app_start(void *arg)
{
    const struct app_config *cfg = arg;
    g_gauges = calloc((size_t)cfg->threads, sizeof *g_gauges);
    if (!g_gauges) {
        log_error("out of memory allocating the loops' gauges");
        return -1;
    }
    for (int t = 0; t < cfg->threads; t++)
        atomic_init(&g_gauges[t].replica_lag_ms, -1);
    if (cfg->start && cfg->start() != 0) {
        free(g_gauges);
        g_gauges = NULL;
        return -1;
    }
    return 0;
}

static void app_stop(void *arg)
{
    const struct app_config *cfg = arg;
    if (cfg->stop)
        cfg->stop();
    free(g_gauges); /* every loop has stopped by then */
    g_gauges = NULL;
}

static int app_harden(void *arg)
{
    const struct app_config *cfg = arg;
    return cfg->harden ? cfg->harden() : 0;
}

static void *app_loop_init(void *arg, struct loop *l, int index)
{
    const struct app_config *cfg = arg;
    struct app_loop *al = calloc(1, sizeof *al);
    if (!al) {
        log_error("out of memory allocating loop %d's state", index);
        return NULL;
    }
    al->index = index;
    al->db = db_open(cfg->db, l);
    if (!al->db) {
        free(al);
        return NULL;
    }
    g_backend = db_backend_name(al->db);
    return al;
}

static void app_serving(void *arg, const char *addrs, int port, int threads)
{
    (void)arg;
    (void)port;
    log_info("brisk %s listening on %s with %d thread%s, database %s", BRISK_VERSION, addrs,
             threads, threads == 1 ? "" : "s", g_backend);
}

static void app_loop_flush(void *state)
{
    db_flush(((struct app_loop *)state)->db);
}

static void app_loop_tick(void *state)
{
    struct app_loop *al = state;
    struct db_stats st = {0};
    db_tick(al->db);
    db_stats(al->db, &st);
    dbstats_reconnected(st.reconnects - al->reconnects);
    al->reconnects = st.reconnects;
    if (g_gauges && al->index >= 0 && al->index < g_cfg->threads) {
        atomic_store_explicit(&g_gauges[al->index].db_conns, st.connections, memory_order_relaxed);
        atomic_store_explicit(&g_gauges[al->index].db_busy, st.busy, memory_order_relaxed);
        atomic_store_explicit(&g_gauges[al->index].replica_lag_ms, st.replica_lag_ms,
                              memory_order_relaxed);
    }
}

static void app_loop_fini(void *state)
{
    struct app_loop *al = state;
    db_close(al->db);
    free(al);
}

struct server_app app_server_hooks(struct app_config *cfg)
{
    g_cfg = cfg;
    return (struct server_app){
        .arg = cfg,
        .start = app_start,
        .stop = app_stop,
        .loop_init = app_loop_init,
        .harden = app_harden,
        .serving = app_serving,
        .loop_flush = app_loop_flush,
        .loop_tick = app_loop_tick,
        .loop_fini = app_loop_fini,
    };
}

struct db *app_db(const struct http_ctx *c)
{
    return ((struct app_loop *)http_loop_state(c))->db;
}

int app_ready_timeout_ms(void)
{
    return g_cfg->ready_timeout_ms;
}

void app_metrics_render(struct buf *b, const struct http_ctx *c)
{
    const char *backend = db_backend_name(app_db(c));
    int conns = 0, busy = 0;
    int64_t lag = -1;
    for (int t = 0; g_gauges && t < g_cfg->threads; t++) {
        conns += atomic_load_explicit(&g_gauges[t].db_conns, memory_order_relaxed);
        busy += atomic_load_explicit(&g_gauges[t].db_busy, memory_order_relaxed);
        int64_t l = atomic_load_explicit(&g_gauges[t].replica_lag_ms, memory_order_relaxed);
        lag = l > lag ? l : lag;
    }
    buf_printf(b,
               "# HELP db_pool_connections Open database connections.\n"
               "# TYPE db_pool_connections gauge\n"
               "db_pool_connections{backend=\"%s\"} %d\n"
               "# HELP db_pool_busy Database connections running a query.\n"
               "# TYPE db_pool_busy gauge\n"
               "db_pool_busy{backend=\"%s\"} %d\n"
               "# HELP db_pool_threads Event-loop threads, each with its own database handle.\n"
               "# TYPE db_pool_threads gauge\n"
               "db_pool_threads %d\n",
               backend, conns, backend, busy, g_cfg->threads);
    dbstats_render(b, backend);
    if (lag >= 0)
        buf_printf(b,
                   "# HELP db_replica_lag_seconds How far the reachable read replicas are behind "
                   "the primary (the most of any replica and loop; also one skipped for it).\n"
                   "# TYPE db_replica_lag_seconds gauge\n"
                   "db_replica_lag_seconds %.3f\n",
                   (double)lag / 1000.0);
    bgworker_render_metrics(b);
}
