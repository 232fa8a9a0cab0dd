/*
 * bgworker.c - background order processing (see bgworker.h).
 */
#include "app/bgworker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "app/dbstats.h"
#include "app/pricing.h"
#include "base/arena.h"
#include "base/log.h"
#include "net/loop.h"

struct bgworker {
    const struct bgworker_config *cfg;
    struct loop *loop;
    struct db *db;
    pthread_t tid;
    bool started;
    bool busy;     /* a batch is in flight */
    bool counting; /* a pending-count query is in flight */
    int index;
    uint64_t reconnects; /* the handle's count at the last tick */
    struct arena arena;  /* parse memory for one stored order at a time */
};

static struct bgworker *g_workers;
static int g_n;
static _Atomic uint64_t g_orders_processed;
static _Atomic int64_t g_orders_pending = -1; /* -1: not measured yet */

static void round_start(void *arg);

/* Sign one claimed order from its stored lines; a mismatch leaves it pending, loudly. */
static int sign_one(void *ctx, const struct db_order *o, char receipt[65])
{
    struct bgworker *w = ctx;
    char err[160];
    const char *bad = pricing_sign_stored(o->id, o->user_id, o->items, o->total_cents, &w->arena,
                                          receipt, err, sizeof err);
    arena_reset(&w->arena, 65536);
    if (bad) {
        log_error("background worker %d: order %lld left pending: %s", w->index, (long long)o->id,
                  bad);
        return -1;
    }
    return 0;
}

static void round_done(void *ctx, enum db_status st, int64_t n)
{
    struct bgworker *w = ctx;
    w->busy = false;
    if (st != DB_OK) {
        dbstats_failed(st);
        return; /* logged by the backend; try again at the next tick */
    }
    if (n > 0) {
        atomic_fetch_add_explicit(&g_orders_processed, (uint64_t)n, memory_order_relaxed);
        log_debug("background worker %d processed %lld orders", w->index, (long long)n);
    }
    /* a full batch means more may be waiting: go on without waiting for the tick */
    if (n >= w->cfg->batch && !loop_stopping(w->loop))
        if (loop_post(w->loop, round_start, w) != 0)
            log_warn("background worker %d: cannot schedule the next batch", w->index);
}

static void round_start(void *arg)
{
    struct bgworker *w = arg;
    if (w->busy || loop_stopping(w->loop))
        return;
    w->busy = true;
    db_orders_process(w->db, w->cfg->batch, sign_one, round_done, w);
    db_flush(w->db); /* SQLite: hand the batch to the writer now, not at some later turn */
}

static void pending_done(void *ctx, enum db_status st, int64_t n)
{
    struct bgworker *w = ctx;
    w->counting = false;
    if (st == DB_OK)
        atomic_store_explicit(&g_orders_pending, n, memory_order_relaxed);
    else
        dbstats_failed(st);
}

static void on_tick(struct loop *l, void *arg)
{
    (void)l;
    struct bgworker *w = arg;
    struct db_stats st = {0};
    db_tick(w->db);
    db_stats(w->db, &st);
    dbstats_reconnected(st.reconnects - w->reconnects);
    w->reconnects = st.reconnects;
    if (!w->counting && w->index == 0) {
        w->counting = true;
        db_orders_pending(w->db, pending_done, w);
    }
    round_start(w);
}

static bool drained(struct loop *l, void *arg)
{
    (void)l;
    struct bgworker *w = arg;
    return !w->busy && !w->counting;
}

static void *worker_main(void *arg)
{
    struct bgworker *w = arg;
    log_set_thread("worker", w->index);
    struct loop_hooks hooks = {.drained = drained, .on_tick = on_tick, .arg = w};
    round_start(w); /* do not wait a second for the first look */
    if (loop_run(w->loop, &hooks, 10000) != 0)
        log_error("background worker %d stopped on a loop error", w->index);
    log_thread_done();
    return NULL;
}

static void free_workers(void)
{
    for (int i = 0; i < g_n; i++) {
        db_close(g_workers[i].db);
        loop_destroy(g_workers[i].loop);
        arena_free(&g_workers[i].arena);
    }
    free(g_workers);
    g_workers = NULL;
    g_n = 0;
}

int bgworker_start(const struct bgworker_config *cfg)
{
    if (cfg->threads <= 0)
        return 0;
    g_workers = calloc((size_t)cfg->threads, sizeof *g_workers);
    if (!g_workers) {
        log_error("out of memory starting background workers");
        return -1;
    }
    g_n = cfg->threads;
    for (int i = 0; i < g_n; i++) {
        struct bgworker *w = &g_workers[i];
        w->cfg = cfg;
        w->index = i;
        arena_init(&w->arena, (size_t)4 << 20); /* 100 stored lines need a few KiB */
        /* loop indexes after the HTTP loops' are not used for metrics */
        w->loop = loop_create(1000 + i);
        if (!w->loop)
            goto fail;
        w->db = db_open(cfg->db, w->loop);
        if (!w->db)
            goto fail;
    }
    for (int i = 0; i < g_n; i++) {
        if (pthread_create(&g_workers[i].tid, NULL, worker_main, &g_workers[i]) != 0) {
            log_error("cannot start background worker %d", i);
            bgworker_stop();
            return -1;
        }
        g_workers[i].started = true;
    }
    return 0;
fail:
    free_workers();
    return -1;
}

void bgworker_stop(void)
{
    for (int i = 0; i < g_n; i++)
        if (g_workers[i].started)
            loop_request_stop(g_workers[i].loop);
    for (int i = 0; i < g_n; i++)
        if (g_workers[i].started)
            pthread_join(g_workers[i].tid, NULL);
    free_workers();
}

void bgworker_render_metrics(struct buf *b)
{
    buf_append_cstr(b, "# HELP orders_processed_total Orders priced, signed and marked processed "
                       "by the background workers.\n# TYPE orders_processed_total counter\n"
                       "orders_processed_total ");
    buf_append_u64(b, atomic_load_explicit(&g_orders_processed, memory_order_relaxed));
    buf_append_char(b, '\n');
    int64_t pending = atomic_load_explicit(&g_orders_pending, memory_order_relaxed);
    if (pending >= 0) {
        buf_append_cstr(b, "# HELP orders_pending Orders waiting for background processing in "
                           "the shared database: every process reports the same queue, so "
                           "aggregate with max(), not sum().\n"
                           "# TYPE orders_pending gauge\norders_pending ");
        buf_append_i64(b, pending);
        buf_append_char(b, '\n');
    }
}
