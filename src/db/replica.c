/*
 * replica.c - PostgreSQL read replicas behind the db.h interface (see
 * db__replica_open in db_int.h).
 *
 * A split handle owns the loop's primary handle and one handle per replica,
 * all driven by the same loop. Writes, order creates (their idempotency
 * check), background processing and the readiness ping go to the primary;
 * the plain reads (user get and list, order get, a user's orders) go to a
 * replica when one is usable: its pool has a connection up and its last lag
 * measurement (each db_tick, the replica's replay delay) is recent and within
 * max_lag_ms. Otherwise they go to the primary, so a replica that is down or
 * behind costs no 503s.
 *
 * Consistency: a by-id read the replica answers with DB_NOT_FOUND, and any
 * read that fails there, is asked again of the primary before it is answered
 * - a user created through one process and fetched at once through another
 * is found even if the replica has not replayed it yet. Rows are handed to
 * the caller only with a final answer (the backends call `row` just before
 * done(DB_OK)), so a retried read never shows rows twice. Lists may lag
 * behind by up to max_lag_ms.
 */
#include <stdlib.h>
#include <string.h>

#include "base/compiler.h"
#include "base/log.h"
#include "db/db_int.h"

#define DEFAULT_MAX_LAG_MS 5000
#define LAG_FRESH_MS 3000 /* a measurement older than this (no answer) is not trusted */
#define READ_FREE_MAX 256

struct replica {
    struct db *db;
    struct db_split *split;
    bool measuring;       /* a lag query is in flight */
    bool usable;          /* last measurement: up and within max lag */
    int64_t lag_ms;       /* last measured, -1 before the first */
    uint64_t measured_at; /* tick count of the last answer */
};

/* One read in flight on a replica: the caller's request, to ask the primary instead. */
struct read_op {
    struct read_op *next; /* free list */
    struct db_split *split;
    struct db_read r; /* as the caller made it */
};

struct db_split {
    struct db base; /* first: db.c sees only this */
    struct db *primary;
    struct replica replicas[DB_REPLICAS_MAX];
    int n;
    int next; /* round robin */
    int64_t max_lag_ms;
    uint64_t ticks;
    bool closing;
    struct read_op *free_reads;
    int nfree;
};

static struct db_split *to_split(struct db *db)
{
    return container_of(db, struct db_split, base);
}

static const struct db_split *to_split_const(const struct db *db)
{
    return container_of(db, const struct db_split, base);
}

/* A usable replica, round robin, or NULL: read from the primary. */
static struct replica *pick(struct db_split *s)
{
    for (int k = 0; k < s->n; k++) {
        struct replica *r = &s->replicas[(s->next + k) % s->n];
        if (r->usable && s->ticks - r->measured_at <= LAG_FRESH_MS / 1000) {
            s->next = (s->next + k + 1) % s->n;
            return r;
        }
    }
    return NULL;
}

static struct read_op *read_new(struct db_split *s, const struct db_read *r)
{
    struct read_op *op = s->free_reads;
    if (op) {
        s->free_reads = op->next;
        s->nfree--;
    } else if (!(op = malloc(sizeof *op))) {
        log_fatal("out of memory");
    }
    *op = (struct read_op){.split = s, .r = *r};
    return op;
}

static void read_free(struct db_split *s, struct read_op *op)
{
    if (s->nfree >= READ_FREE_MAX || s->closing) {
        free(op);
        return;
    }
    op->next = s->free_reads;
    s->free_reads = op;
    s->nfree++;
}

/* A replica's rows, passed on to the caller's callback with the caller's ctx. */
static void replica_user_row(void *arg, const struct db_user *u)
{
    const struct read_op *op = arg;
    op->r.user_row(op->r.ctx, u);
}

static void replica_order_row(void *arg, const struct db_order *o)
{
    const struct read_op *op = arg;
    op->r.order_row(op->r.ctx, o);
}

/* The replica answered: pass it on, or ask the primary when it may know better. */
static void replica_count_done(void *arg, enum db_status st, int64_t n)
{
    struct read_op *op = arg;
    struct db_split *s = op->split;
    struct db_read r = op->r;
    bool retry = st == DB_UNAVAILABLE || st == DB_ERROR ||
                 (st == DB_NOT_FOUND && db__queries[r.q].rule != DB_RULE_ANY);
    read_free(s, op);
    if (retry && !s->closing)
        s->primary->ops->read(s->primary, &r); /* its answer goes straight to the caller */
    else
        db__read_done(&r, st, n);
}

static void replica_done(void *arg, enum db_status st)
{
    replica_count_done(arg, st, 0);
}

/* ---- db_ops: reads ---- */

/*
 * A read of queries.def: to a usable replica when the read allows one, with
 * our callbacks (ctx: a read_op remembering the caller's), else straight to
 * the primary with the caller's own.
 */
static void sp_read(struct db *db, const struct db_read *r)
{
    struct db_split *s = to_split(db);
    struct replica *rep = db__queries[r->q].where == DB_WHERE_REPLICA ? pick(s) : NULL;
    if (!rep) {
        s->primary->ops->read(s->primary, r);
        return;
    }
    struct read_op *op = read_new(s, r);
    struct db_read via = {.q = r->q, .ctx = op};
    memcpy(via.args, r->args, sizeof via.args);
    via.user_row = r->user_row ? replica_user_row : NULL;
    via.order_row = r->order_row ? replica_order_row : NULL;
    if (r->count_done)
        via.count_done = replica_count_done;
    else
        via.done = replica_done;
    rep->db->ops->read(rep->db, &via);
}

/* ---- db_ops: everything else is the primary's ---- */

static void sp_ping(struct db *db, int timeout_ms, db_done_fn done, void *ctx)
{
    struct db *p = to_split(db)->primary;
    p->ops->ping(p, timeout_ms, done, ctx);
}

static void sp_user_create(struct db *db, struct str name, struct str email, db_user_fn row,
                           db_done_fn done, void *ctx)
{
    struct db *p = to_split(db)->primary;
    p->ops->user_create(p, name, email, row, done, ctx);
}

static void sp_user_update(struct db *db, int64_t id, struct str name, struct str email,
                           db_user_fn row, db_done_fn done, void *ctx)
{
    struct db *p = to_split(db)->primary;
    p->ops->user_update(p, id, name, email, row, done, ctx);
}

static void sp_user_delete(struct db *db, int64_t id, db_done_fn done, void *ctx)
{
    struct db *p = to_split(db)->primary;
    p->ops->user_delete(p, id, done, ctx);
}

static void sp_order_create(struct db *db, const struct db_order_new *o, db_order_fn row,
                            db_done_fn done, void *ctx)
{
    struct db *p = to_split(db)->primary;
    p->ops->order_create(p, o, row, done, ctx);
}

static void sp_orders_process(struct db *db, int max, db_sign_fn sign, db_count_fn done, void *ctx)
{
    struct db *p = to_split(db)->primary;
    p->ops->orders_process(p, max, sign, done, ctx);
}

/* ---- housekeeping ---- */

static void lag_done(void *arg, enum db_status st, int64_t lag_ms)
{
    struct replica *r = arg;
    struct db_split *s = r->split;
    r->measuring = false;
    if (st != DB_OK) {
        r->usable = false;
        r->lag_ms = -1; /* down: no delay to show */
        return;
    }
    bool was = r->usable;
    r->lag_ms = lag_ms;
    r->measured_at = s->ticks;
    r->usable = lag_ms <= s->max_lag_ms;
    if (was && !r->usable)
        log_warn("db postgres replica %d: %lld ms behind (over %lld): reading from the primary",
                 (int)(r - s->replicas) + 1, (long long)lag_ms, (long long)s->max_lag_ms);
}

/* Once a second: tick every handle, measure each replica's lag. */
/* The backends' entries directly, not db.h's wrappers: db.c calls this file. */
static void h_tick(struct db *h)
{
    if (h->ops->tick)
        h->ops->tick(h);
}

static void h_flush(struct db *h)
{
    if (h->ops->flush)
        h->ops->flush(h);
}

static void sp_tick(struct db *db)
{
    struct db_split *s = to_split(db);
    s->ticks++;
    h_tick(s->primary);
    for (int i = 0; i < s->n; i++) {
        struct replica *r = &s->replicas[i];
        h_tick(r->db);
        struct db_stats st;
        r->db->ops->stats(r->db, &st);
        if (st.connections == 0) {
            r->usable = false; /* down: do not queue reads behind its reconnects */
        }
        if (!r->measuring) {
            r->measuring = true;
            db__pg_replica_lag(r->db, lag_done, r);
        }
    }
}

static void sp_flush(struct db *db)
{
    struct db_split *s = to_split(db);
    h_flush(s->primary);
    for (int i = 0; i < s->n; i++)
        h_flush(s->replicas[i].db);
}

static void sp_stats(const struct db *db, struct db_stats *out)
{
    const struct db_split *s = to_split_const(db);
    s->primary->ops->stats(s->primary, out);
    out->replica_lag_ms = -1;
    for (int i = 0; i < s->n; i++) {
        const struct replica *r = &s->replicas[i];
        struct db_stats st;
        r->db->ops->stats(r->db, &st);
        out->connections += st.connections;
        out->busy += st.busy;
        out->reconnects += st.reconnects;
        /* also a replica skipped for its lag: that is when the delay matters */
        if (r->lag_ms > out->replica_lag_ms)
            out->replica_lag_ms = r->lag_ms;
    }
}

/* Replicas first: their reads in flight may fall back to the primary, which fails them then. */
static void sp_close(struct db *db)
{
    struct db_split *s = to_split(db);
    s->closing = true;
    for (int i = 0; i < s->n; i++)
        s->replicas[i].db->ops->close(s->replicas[i].db);
    s->primary->ops->close(s->primary);
    while (s->free_reads) {
        struct read_op *op = s->free_reads;
        s->free_reads = op->next;
        free(op);
    }
    free(s);
}

static const struct db_ops split_ops = {
    .name = "postgres",
    .read = sp_read,
    .close = sp_close,
    .ping = sp_ping,
    .user_create = sp_user_create,
    .user_update = sp_user_update,
    .user_delete = sp_user_delete,
    .stats = sp_stats,
    .tick = sp_tick,
    .flush = sp_flush,
    .order_create = sp_order_create,
    .orders_process = sp_orders_process,
};

struct db *db__replica_open(struct db *primary, struct db **replicas, int n, int max_lag_ms)
{
    struct db_split *s = calloc(1, sizeof *s);
    if (!s)
        log_fatal("out of memory");
    s->base.ops = &split_ops;
    s->primary = primary;
    s->n = n < DB_REPLICAS_MAX ? n : DB_REPLICAS_MAX;
    s->max_lag_ms = max_lag_ms > 0 ? max_lag_ms : DEFAULT_MAX_LAG_MS;
    for (int i = 0; i < s->n; i++) {
        s->replicas[i] = (struct replica){.db = replicas[i], .split = s, .lag_ms = -1};
        /* measured at once: reads use a replica only after its first answer */
        s->replicas[i].measuring = true;
        db__pg_replica_lag(replicas[i], lag_done, &s->replicas[i]);
    }
    return &s->base;
}
