/*
 * pg.c - the PostgreSQL backend of db.h: its engine (connections, pipeline, pool).
 *
 * Reason to change: how brisk talks to PostgreSQL over libpq - connecting,
 * pipelining, the per-loop pool, reconnects, the queue of waiting operations.
 * What is sent and how answers are read is pg_ops.c's; the connection string
 * is pg_conninfo.c's; the schema is pg_migrate.c's (db/pg_int.h joins them).
 * This file calls nothing of pg_ops.c by name: it reaches the statements
 * through the handle's stmt_ops, so the two are no module cycle.
 *
 * Each event-loop thread owns one handle (struct db_pg) with a few libpq
 * connections (db_config.pool_size, default POOL_DEFAULT) whose sockets are registered with that
 * loop's epoll. Nothing on a loop thread ever waits for the network:
 *
 *   resolve    host names of the connection string are looked up on a thread
 *              (net/resolver.h, state CS_RESOLVING), one lookup per handle
 *              and attempt; libpq gets hostaddr=<address>, host=<name>.
 *   connect    PQconnectStartParams + PQconnectPoll, one poll per socket event
 *              (state CS_CONNECTING); then non-blocking mode, pipeline mode,
 *              and every statement of the serving path prepared at once
 *              (PQsendPrepare, pipelined: queries may follow right behind).
 *   query      PQsendQueryPrepared + PQpipelineSync: one Sync per query, so a
 *              failing query aborts nothing but itself, and the queries of
 *              concurrent requests share round trips (up to PIPELINE_MAX in
 *              flight per connection, in order).
 *   results    EPOLLIN -> PQconsumeInput, then PQisBusy/PQgetResult while a
 *              whole result is buffered; EPOLLOUT (asked for only while libpq
 *              holds unsent bytes) -> PQflush.
 *
 * A query's rows are handed to the caller only when its Sync came back: that
 * is when PostgreSQL committed the implicit transaction, so a write is never
 * reported DB_OK before its commit succeeded. Operations that find every
 * connection busy wait in a bounded FIFO (QUEUE_MAX; beyond it DB_UNAVAILABLE
 * at once). A transaction (orders_process, pg_ops.c) reserves a whole
 * connection: no other query is sent on it until it ends.
 *
 * Failures: a broken socket (read/write error, EOF, CONNECTION_BAD, EPOLLHUP),
 * an unanswered query, a lookup or a connection attempt older than the timeout
 * (BRISK_DB_BUSY_TIMEOUT_MS, default 5 s; checked by db_tick) close that
 * connection and fail everything sent on it with DB_UNAVAILABLE (the caller
 * was told nothing succeeded; a write may still have committed, which is
 * "unknown", never "acknowledged and lost"). While no connection is up or
 * being set up, operations fail at once with DB_UNAVAILABLE. Each connection
 * reconnects on its own, with exponential backoff (100 ms doubling to 5 s),
 * driven by db_tick and by arriving operations (loop_now_ms is the clock).
 *
 * Re-entrancy: callbacks run from inside the backend (socket events, db_tick)
 * or, for immediate failures, from inside the db_* call; they may start new
 * operations. A connection found broken meanwhile is only marked; it is
 * closed, and its operations failed, when the outermost entry returns
 * (enter/leave), so no PGconn is freed under a caller's feet.
 *
 * Start-up (db__pg_migrate, pg_migrate.c) is blocking libpq on the main thread
 * before any loop runs: pg_advisory_lock, then migrations_pg.h. URLs and
 * passwords are never logged: log lines name host:port/dbname only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/epoll.h>

#include "base/buf.h"
#include "base/compiler.h"
#include "base/log.h"
#include "db/pg_int.h"
#include "net/loop.h"
#include "net/resolver.h"

#define POOL_DEFAULT 2          /* connections per handle (per event-loop thread) */
#define POOL_MAX 64             /* the most BRISK_DB_POOL may ask for */
#define PIPELINE_MAX 128        /* queries in flight on one connection */
#define QUEUE_MAX 4096          /* operations waiting for a connection, per handle */
#define DEFAULT_TIMEOUT_MS 5000 /* queue wait, answer wait and connect limit */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000              /* the database is noticed back within about a second */
#define OP_FREE_MAX 256                  /* operation structs kept for reuse */
#define OP_HEAP_KEEP ((size_t)64 * 1024) /* parameter buffers larger than this are not kept */

/*
 * Bumped whenever any handle of the process gets a connection ready. Each
 * loop backs off on its own; once one of them reaches the database again,
 * the others try at once instead of sleeping out their backoff (up to 5 s of
 * needless 503s on some loops after an outage).
 */
static atomic_uint_fast64_t g_connect_epoch;

static const struct db_pg *to_pg_const(const struct db *db)
{
    return container_of(db, const struct db_pg, base);
}

/* ---- operations: allocation, completion ---- */

struct pg_op *op_new(struct db_pg *pg, enum op_kind kind, void *ctx)
{
    struct pg_op *op = pg->free_ops;
    if (op) {
        pg->free_ops = op->next;
        pg->nfree--;
    } else {
        op = calloc(1, sizeof *op);
        if (!op)
            log_fatal("out of memory");
    }
    char *heap = op->heap;
    size_t heap_cap = op->heap_cap;
    memset(op, 0, offsetof(struct pg_op, inl));
    op->heap = heap;
    op->heap_cap = heap_cap;
    op->kind = kind;
    op->ctx = ctx;
    op->queued_ms = now_ms(pg);
    if (kind != OP_PREPARE && kind != OP_CREATE_BATCH)
        pg->busy++;
    return op;
}

void op_clear_results(struct pg_op *op)
{
    for (int i = 0; i < MAX_UNIT_RESULTS; i++) {
        PQclear(op->res[i]); /* NULL is a no-op */
        op->res[i] = NULL;
    }
    PQclear(op->err);
    op->err = NULL;
    op->aborted = false;
}

static void op_free(struct db_pg *pg, struct pg_op *op)
{
    op_clear_results(op);
    if (pg->nfree >= OP_FREE_MAX || pg->closing) {
        free(op->heap);
        free(op);
        return;
    }
    if (op->heap_cap > OP_HEAP_KEEP) {
        free(op->heap);
        op->heap = NULL;
        op->heap_cap = 0;
    }
    op->next = pg->free_ops;
    pg->free_ops = op;
    pg->nfree++;
}

/*
 * Retire a batch carrier: out of the in-flight count, recycled. Returns its
 * creates (linked by next_member) for the caller to answer; the carrier is
 * gone before any of them is, so their callbacks may start new batches.
 */
struct pg_op *batch_retire(struct db_pg *pg, struct pg_op *batch)
{
    struct pg_op *members = batch->members;
    batch->members = batch->members_tail = NULL;
    if (batch->counted)
        pg->batches_in_flight--;
    op_free(pg, batch);
    return members;
}

static void ping_unlink(struct db_pg *pg, struct pg_op *op)
{
    for (struct pg_op **p = &pg->pings; *p; p = &(*p)->next_ping) {
        if (*p == op) {
            *p = op->next_ping;
            op->next_ping = NULL;
            return;
        }
    }
}

void op_finish(struct db_pg *pg, struct pg_op *op, enum db_status st)
{
    enum op_kind kind = op->kind;
    if (op->ping_deadline_ms)
        ping_unlink(pg, op);
    if (op->detached) {
        op_free(pg, op); /* its caller was answered at the deadline */
        return;
    }
    if (kind == OP_CREATE_BATCH) {
        struct pg_op *m = batch_retire(pg, op);
        while (m) {
            struct pg_op *next = m->next_member;
            m->next_member = NULL;
            op_finish(pg, m, st);
            m = next;
        }
        return;
    }
    void *ctx = op->ctx;
    db_done_fn done = op->done;
    db_count_fn count_done = op->count_done;
    int64_t count = st == DB_OK ? op->count : 0;

    op_free(pg, op);
    if (kind == OP_PREPARE)
        return;
    pg->busy--;
    if (count_done)
        count_done(ctx, st, count);
    else
        done(ctx, st);
}

/* ---- queues ---- */

static void q_push(struct pg_op **head, struct pg_op **tail, int *n, struct pg_op *op)
{
    op->next = NULL;
    if (*tail)
        (*tail)->next = op;
    else
        *head = op;
    *tail = op;
    (*n)++;
}

void q_push_front(struct pg_op **head, struct pg_op **tail, int *n, struct pg_op *op)
{
    op->next = *head;
    *head = op;
    if (!*tail)
        *tail = op;
    (*n)++;
}

static struct pg_op *q_pop(struct pg_op **head, struct pg_op **tail, int *n)
{
    struct pg_op *op = *head;
    if (op) {
        *head = op->next;
        if (!*head)
            *tail = NULL;
        op->next = NULL;
        (*n)--;
    }
    return op;
}

/* Take op out of a wait queue (a short scan: only for rare deadlines). Returns false if absent. */
static bool q_remove(struct pg_op **head, struct pg_op **tail, int *n, struct pg_op *op)
{
    struct pg_op *prev = NULL;
    for (struct pg_op *p = *head; p; prev = p, p = p->next) {
        if (p != op)
            continue;
        if (prev)
            prev->next = p->next;
        else
            *head = p->next;
        if (*tail == p)
            *tail = prev;
        p->next = NULL;
        (*n)--;
        return true;
    }
    return false;
}

/* ---- connections ---- */

void conn_break(struct pg_conn *c, const char *why)
{
    if (c->broken)
        return;
    c->broken = true;
    one_line(c->why, sizeof c->why, why);
}

static bool conn_ready(const struct pg_conn *c)
{
    return c->state == CS_READY && !c->broken;
}

/* A connection is up or being set up. */
static bool any_usable(const struct db_pg *pg)
{
    for (int i = 0; i < pg->nconns; i++) {
        const struct pg_conn *c = &pg->conns[i];
        if (!c->broken && c->state != CS_DOWN)
            return true;
    }
    return false;
}

/*
 * Operations may wait: a connection is up, or one is being set up and the
 * server is not known to be down (then the attempt is likely to fail too,
 * after the whole timeout).
 */
static bool can_wait(const struct db_pg *pg)
{
    for (int i = 0; i < pg->nconns; i++) {
        if (conn_ready(&pg->conns[i]))
            return true;
    }
    return !pg->down && any_usable(pg);
}

/*
 * Register the socket libpq currently uses for `events`. libpq may replace
 * the socket while connecting (another address, SSL refused): the old one is
 * closed by then, which already removed it from epoll, so it is never
 * touched again (its number may belong to someone else by now).
 */
static void conn_watch(struct pg_conn *c, uint32_t events)
{
    struct db_pg *pg = c->pg;
    int fd = PQsocket(c->conn);

    if (fd < 0) {
        conn_break(c, "no socket");
        return;
    }
    if (c->registered && fd == c->io.fd) {
        if (events == c->events)
            return;
        if (loop_mod(pg->loop, &c->io, events) == 0) {
            c->events = events;
            return;
        }
        if (errno != ENOENT) {
            conn_break(c, "epoll_ctl(MOD) failed");
            return;
        }
    }
    c->io.fd = fd;
    if (loop_add(pg->loop, &c->io, events) != 0) {
        c->registered = false;
        conn_break(c, "epoll_ctl(ADD) failed");
        return;
    }
    c->registered = true;
    c->events = events;
}

/* Ask for EPOLLOUT only while libpq holds bytes it could not send yet. */
static void conn_update_events(struct pg_conn *c)
{
    if (c->broken)
        return;
    int f = PQflush(c->conn);
    if (f < 0) {
        conn_break(c, PQerrorMessage(c->conn));
        return;
    }
    conn_watch(c, EPOLLIN | (f ? EPOLLOUT : 0u));
}

/* Begin libpq's non-blocking connect; host/hostaddr/port override the string's (NULL: as it is). */
static void conn_connect(struct pg_conn *c, const char *host, const char *hostaddr,
                         const char *port)
{
    struct db_pg *pg = c->pg;
    const char *vals[ARRAY_LEN(conn_keys)];

    conn_values(pg->conninfo, host, hostaddr, port, vals);
    c->conn = PQconnectStartParams(conn_keys, vals, 1);
    if (!c->conn)
        log_fatal("out of memory");
    c->state = CS_CONNECTING;
    c->started_ms = now_ms(pg);
    c->registered = false;
    c->events = 0;
    c->io.fd = -1;
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        conn_break(c, PQerrorMessage(c->conn));
        return;
    }
    /* PQconnectStart already began the (non-blocking) connect: wait until writable. */
    conn_watch(c, EPOLLOUT);
}

/* Append s and a separator (',' between list elements) to b. */
static void list_add(struct buf *b, const char *s)
{
    if (b->len)
        buf_append(b, ",", 1);
    buf_append(b, s, strlen(s));
}

/*
 * The lookup ended (on the loop's thread): connect every connection that
 * waits for it to the addresses found, or fail them (they retry after their
 * backoff) when no entry is left.
 */
static void on_resolved(void *arg, const struct resolve_answer *answers, int n)
{
    struct db_pg *pg = arg;
    struct buf host, addr, port;
    char why[WHY_MAX] = "";
    int entries = 0;

    pg->resolving = NULL;
    enter(pg);
    buf_init(&host, 0);
    buf_init(&addr, 0);
    buf_init(&port, 0);
    for (int i = 0; i < pg->nhosts; i++) {
        const struct pg_host *h = &pg->hosts[i];
        if (h->name < 0 || h->name >= n) {
            list_add(&host, h->host);
            list_add(&addr, h->hostaddr);
            list_add(&port, h->port);
            entries++;
            continue;
        }
        const struct resolve_answer *a = &answers[h->name];
        if (a->error) {
            snprintf(why, sizeof why, "could not translate host name \"%s\" to address: %s",
                     h->host, gai_strerror(a->error));
            continue;
        }
        for (int k = 0; k < a->naddrs; k++) {
            list_add(&host, h->host);
            list_add(&addr, a->addrs[k]);
            list_add(&port, h->port);
            entries++;
        }
    }
    buf_append(&host, "", 1);
    buf_append(&addr, "", 1);
    buf_append(&port, "", 1);
    if (host.failed || addr.failed || port.failed)
        log_fatal("out of memory");
    for (int i = 0; i < pg->nconns; i++) {
        struct pg_conn *c = &pg->conns[i];
        if (c->state != CS_RESOLVING || c->broken)
            continue;
        if (entries == 0)
            conn_break(c, why);
        else
            conn_connect(c, host.data, addr.data, port.data);
    }
    buf_free(&host);
    buf_free(&addr);
    buf_free(&port);
    leave(pg);
}

/*
 * Start a connection attempt: at once when libpq needs no DNS for it, else
 * after the handle's lookup (started here unless one is in flight already).
 */
static void conn_start(struct pg_conn *c)
{
    struct db_pg *pg = c->pg;

    c->broken = false;
    c->prepared = false;
    c->timed_out = false;
    if (pg->nnames == 0) {
        conn_connect(c, NULL, NULL, NULL);
        return;
    }
    c->state = CS_RESOLVING;
    c->started_ms = now_ms(pg);
    if (pg->resolving)
        return;
    pg->resolving =
        resolve_start(pg->loop, (const char *const *)pg->names, pg->nnames, on_resolved, pg);
    if (!pg->resolving) {
        char why[WHY_MAX];
        snprintf(why, sizeof why, "cannot start resolving host names: %s", strerror(errno));
        conn_break(c, why);
    }
}

/*
 * Start the connections whose backoff has passed. While the server is known
 * to be down, one attempt at a time probes it: the others follow once it
 * succeeds (a pool of N need not knock N times a second on a dead server).
 */
static void maybe_reconnect(struct db_pg *pg)
{
    if (pg->closing)
        return;
    uint64_t now = now_ms(pg);
    bool probing = false;
    for (int i = 0; i < pg->nconns; i++) {
        const struct pg_conn *c = &pg->conns[i];
        probing |= !c->broken && (c->state == CS_RESOLVING || c->state == CS_CONNECTING);
    }
    for (int i = 0; i < pg->nconns; i++) {
        struct pg_conn *c = &pg->conns[i];
        if (pg->down && probing)
            return;
        if (c->state == CS_DOWN && !c->broken &&
            (now >= c->retry_at_ms || atomic_load(&g_connect_epoch) != c->epoch)) {
            conn_start(c);
            probing = !c->broken;
        }
    }
}

/* Start of a unit (statements + one Sync) of op on c: it joins c's in-order sent list. */
void unit_begin(struct pg_conn *c, struct pg_op *op, int nstmt)
{
    op->nstmt = nstmt;
    op->sent_ms = now_ms(c->pg);
    op->conn = c;
    op->in_flight = true;
    op->next = NULL;
    if (c->sent_tail)
        c->sent_tail->next = op;
    else
        c->sent_head = op;
    c->sent_tail = op;
    c->nsent++;
}

bool send_prepared(struct pg_conn *c, enum stmt_id id, const struct pg_op *op)
{
    const struct stmt_def *def = &c->pg->stmt_ops->defs[id];
    if (!op || op->nparams == 0)
        return PQsendQueryPrepared(c->conn, def->name, 0, NULL, NULL, NULL, 0) == 1;
    return PQsendQueryPrepared(c->conn, def->name, op->nparams, op->pv, op->pl, op->pf, 0) == 1;
}

/*
 * Finish a unit with its Sync and push it out. When the socket buffer is full,
 * libpq reads whatever the server sent meanwhile into its own buffer (so the
 * two sides cannot deadlock): epoll will not report those bytes again, so
 * leave() looks at the connection once more (recheck).
 */
void unit_end(struct pg_conn *c, bool ok)
{
    if (!ok || PQpipelineSync(c->conn) != 1) {
        conn_break(c, PQerrorMessage(c->conn));
        return;
    }
    c->recheck = true;
    conn_update_events(c);
}

static void send_simple(struct pg_conn *c, struct pg_op *op)
{
    unit_begin(c, op, 1);
    unit_end(c, send_prepared(c, op->stmt, op));
}

/*
 * Hand waiting operations to connections: transactions first (each reserves
 * a whole connection; at least one connection stays for everything else when
 * there are two or more), then simple operations to the least loaded
 * connection with pipeline room.
 */
static void dispatch(struct db_pg *pg)
{
    pg->stmt_ops->batch_flush(pg);
    while (pg->txq_head) {
        struct pg_conn *best = NULL;
        int nready = 0, nreserved = 0;
        for (int i = 0; i < pg->nconns; i++) {
            struct pg_conn *c = &pg->conns[i];
            if (!conn_ready(c))
                continue;
            nready++;
            if (c->reserved)
                nreserved++;
            else if (!best || c->nsent < best->nsent)
                best = c;
        }
        if (!best || nreserved >= (nready > 1 ? nready - 1 : 1))
            break;
        struct pg_op *op = q_pop(&pg->txq_head, &pg->txq_tail, &pg->ntxq);
        best->reserved = op;
        op->conn = best;
        if (best->nsent == 0)
            pg->stmt_ops->tx_begin(best);
        /* else it starts when best's last query in flight is answered */
    }
    while (pg->q_head) {
        struct pg_conn *best = NULL;
        for (int i = 0; i < pg->nconns; i++) {
            struct pg_conn *c = &pg->conns[i];
            if (conn_ready(c) && !c->reserved && c->nsent < PIPELINE_MAX &&
                (!best || c->nsent < best->nsent))
                best = c;
        }
        if (!best)
            break;
        send_simple(best, q_pop(&pg->q_head, &pg->q_tail, &pg->nq));
    }
}

/* Connected: non-blocking pipeline mode, then prepare everything in one pipelined batch. */
static void conn_established(struct pg_conn *c)
{
    struct db_pg *pg = c->pg;

    PQsetNoticeReceiver(c->conn, on_notice, pg->label);
    if (PQsetnonblocking(c->conn, 1) != 0 || PQenterPipelineMode(c->conn) != 1) {
        conn_break(c, PQerrorMessage(c->conn));
        return;
    }
    c->state = CS_READY;
    c->rd_stmt = 0;
    struct pg_op *op = op_new(pg, OP_PREPARE, NULL);
    unit_begin(c, op, ST_COUNT);
    bool ok = true;
    for (int i = 0; i < ST_COUNT && ok; i++) {
        const struct stmt_def *def = &pg->stmt_ops->defs[i];
        ok = PQsendPrepare(c->conn, def->name, def->sql, def->nparams,
                           def->nparams ? def->types : NULL) == 1;
    }
    unit_end(c, ok);
    dispatch(pg);
}

static void conn_poll(struct pg_conn *c)
{
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING:
        conn_watch(c, EPOLLIN);
        break;
    case PGRES_POLLING_WRITING:
        conn_watch(c, EPOLLOUT);
        break;
    case PGRES_POLLING_OK:
        conn_established(c);
        break;
    default:
        conn_break(c, PQerrorMessage(c->conn));
        break;
    }
}

/*
 * Close a broken connection and fail what it carried; it reconnects after its
 * backoff. Runs from leave() only (or db_close), never under a callback of
 * this connection.
 */
static void conn_teardown(struct pg_conn *c)
{
    struct db_pg *pg = c->pg;
    bool was_up = c->state == CS_READY && c->prepared;
    struct pg_op *sent = c->sent_head;
    struct pg_op *reserved = c->tx_running ? NULL : c->reserved; /* running: in `sent` */

    c->sent_head = c->sent_tail = NULL;
    c->nsent = 0;
    c->reserved = NULL;
    c->tx_running = false;
    if (c->conn) {
        if (c->registered && c->io.fd >= 0 && PQsocket(c->conn) == c->io.fd)
            loop_del(pg->loop, &c->io);
        PQfinish(c->conn);
        c->conn = NULL;
    }
    c->registered = false;
    c->io.fd = -1;
    c->events = 0;
    c->state = CS_DOWN;
    c->broken = false;
    c->prepared = false;
    c->rd_stmt = 0;
    c->retry_at_ms = now_ms(pg) + c->backoff_ms;
    c->epoch = atomic_load(&g_connect_epoch);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;

    if (!pg->closing && (!was_up || c->timed_out))
        pg->down = true; /* a lost connection alone is not: its reconnect may well work */
    if (!pg->closing) {
        if (pg->failing) {
            pg->failed_attempts++;
        } else if (was_up) {
            db__log(LOG_WARN, "postgres", pg->label, c->why, "connection %d lost: %s", c->index,
                    c->why);
            pg->failing = true;
            pg->failed_attempts = 0;
        } else {
            db__log(LOG_ERROR, "postgres", pg->label, c->why, "cannot connect: %s", c->why);
            pg->failing = true;
            pg->failed_attempts = 0;
        }
    }
    while (sent) {
        struct pg_op *op = sent;
        sent = op->next;
        op->next = NULL;
        op->in_flight = false;
        op->conn = NULL;
        op_finish(pg, op, DB_UNAVAILABLE);
    }
    if (reserved)
        op_finish(pg, reserved, DB_UNAVAILABLE);
}

/* Fail every waiting operation (no connection left to wait for, or closing). */
static void fail_queues(struct db_pg *pg)
{
    struct pg_op *op;
    while ((op = q_pop(&pg->q_head, &pg->q_tail, &pg->nq)))
        op_finish(pg, op, DB_UNAVAILABLE);
    while ((op = q_pop(&pg->txq_head, &pg->txq_tail, &pg->ntxq)))
        op_finish(pg, op, DB_UNAVAILABLE);
}

void enter(struct db_pg *pg)
{
    pg->depth++;
}

static void conn_read(struct pg_conn *c);

/* Results libpq buffered while we were sending (see unit_end). Returns true if it read any. */
static bool conn_recheck(struct pg_conn *c)
{
    if (!c->recheck)
        return false;
    c->recheck = false;
    if (c->broken || c->state != CS_READY || !c->sent_head || PQisBusy(c->conn))
        return false;
    conn_read(c);
    conn_update_events(c);
    dispatch(c->pg);
    return true;
}

/*
 * Leave an entry point. The outermost one closes broken connections and, if
 * none is left up or connecting, fails the waiting operations; callbacks run
 * from here may break more connections, hence the loop.
 */
void leave(struct db_pg *pg)
{
    if (pg->depth > 1) {
        pg->depth--;
        return;
    }
    for (;;) {
        struct pg_conn *c = NULL;
        for (int i = 0; i < pg->nconns && !c; i++) {
            if (pg->conns[i].broken)
                c = &pg->conns[i];
        }
        if (c) {
            conn_teardown(c);
            continue;
        }
        bool again = false;
        for (int i = 0; i < pg->nconns; i++)
            again |= conn_recheck(&pg->conns[i]);
        if (again)
            continue;
        pg->stmt_ops->batch_flush(pg);
        if ((pg->q_head || pg->txq_head) && !can_wait(pg)) {
            maybe_reconnect(pg);
            if (!can_wait(pg)) {
                fail_queues(pg);
                continue;
            }
        }
        break;
    }
    pg->depth = 0;
}

/* ---- reading a connection ---- */

/*
 * The Sync of op's unit arrived: everything it sent is final. The prepare
 * batch of a new connection is the engine's; every other unit goes to the
 * statements (stmt_ops->unit_done).
 */
static void unit_done(struct pg_conn *c, struct pg_op *op)
{
    struct db_pg *pg = c->pg;

    if (op->kind == OP_PREPARE) {
        if (op->aborted) {
            char msg[WHY_MAX];
            one_line(msg, sizeof msg, op->err ? PQresultErrorMessage(op->err) : "aborted");
            db__log(LOG_ERROR, "postgres", pg->label, msg,
                    "preparing statements failed (have migrations run?): %s", msg);
            conn_break(c, "preparing statements failed");
        } else {
            c->prepared = true;
            c->backoff_ms = BACKOFF_MIN_MS;
            if (c->ever_up)
                pg->reconnects++;
            c->ever_up = true;
            atomic_fetch_add(&g_connect_epoch, 1);
            if (pg->failing) {
                db__log(LOG_INFO, "postgres", pg->label, NULL,
                        "connected again (%lu more failures were not logged)", pg->failed_attempts);
                pg->failing = false;
                pg->failed_attempts = 0;
            }
            if (pg->down) {
                pg->down = false;
                maybe_reconnect(pg); /* the rest of the pool, held back while probing */
            }
        }
        op_finish(pg, op, DB_OK);
        return;
    }
    pg->stmt_ops->unit_done(c, op);
}

/*
 * Take every complete result libpq has buffered. Per unit: for each
 * statement its results then a NULL; an error skips the rest of the unit
 * (PGRES_PIPELINE_ABORTED each); then PGRES_PIPELINE_SYNC.
 */
static void conn_read(struct pg_conn *c)
{
    struct pg_op *op;

    while ((op = c->sent_head) && !c->broken) {
        if (PQisBusy(c->conn))
            break;
        PGresult *r = PQgetResult(c->conn);
        if (c->rd_stmt < op->nstmt) {
            if (!r) {
                c->rd_stmt++;
                continue;
            }
            switch (PQresultStatus(r)) {
            case PGRES_TUPLES_OK:
            case PGRES_COMMAND_OK:
                if (c->rd_stmt < MAX_UNIT_RESULTS && !op->res[c->rd_stmt]) {
                    op->res[c->rd_stmt] = r;
                    r = NULL;
                }
                break;
            case PGRES_FATAL_ERROR:
                op->aborted = true;
                if (!op->err) {
                    op->err = r;
                    r = NULL;
                }
                break;
            case PGRES_PIPELINE_ABORTED:
                op->aborted = true;
                break;
            default:
                conn_break(c, "unexpected result in the pipeline");
                break;
            }
            PQclear(r);
            continue;
        }
        if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
            conn_break(c, r ? PQresultErrorMessage(r) : "pipeline out of step");
            PQclear(r);
            break;
        }
        PQclear(r);
        c->sent_head = op->next;
        if (!c->sent_head)
            c->sent_tail = NULL;
        c->nsent--;
        c->rd_stmt = 0;
        op->next = NULL;
        op->in_flight = false;
        unit_done(c, op);
        if (c->reserved && !c->tx_running && c->nsent == 0 && !c->broken)
            c->pg->stmt_ops->tx_begin(c);
    }
}

static void conn_on_event(struct loop_io *io, uint32_t events)
{
    struct pg_conn *c = container_of(io, struct pg_conn, io);
    struct db_pg *pg = c->pg;

    enter(pg);
    if (c->broken || !c->conn) {
        /* closed at leave() */
    } else if (c->state == CS_CONNECTING) {
        conn_poll(c);
    } else if (c->state == CS_READY) {
        if (events & EPOLLOUT) {
            if (PQflush(c->conn) < 0)
                conn_break(c, PQerrorMessage(c->conn));
            c->recheck = true; /* the flush may have read input (see unit_end) */
        }
        if (!c->broken && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
            /* read what arrived before an EOF: answers already complete stay valid */
            bool ok = PQconsumeInput(c->conn) == 1;
            conn_read(c);
            if (!ok || PQstatus(c->conn) == CONNECTION_BAD)
                conn_break(c, PQerrorMessage(c->conn));
            else if (events & (EPOLLHUP | EPOLLERR))
                conn_break(c, "connection closed");
        }
        conn_update_events(c);
        dispatch(pg);
    }
    leave(pg);
}

/* ---- submitting; ping deadlines ---- */

/* Queue op (or fail it at once when nothing can serve it) and send what can be sent. */
void submit(struct db_pg *pg, struct pg_op *op)
{
    enter(pg);
    maybe_reconnect(pg);
    if (pg->closing || !can_wait(pg)) {
        op_finish(pg, op, DB_UNAVAILABLE);
    } else if (pg->nq + pg->ntxq >= QUEUE_MAX) {
        uint64_t now = now_ms(pg);
        if (now - pg->refused_logged_ms >= 10000) {
            db__log(LOG_WARN, "postgres", pg->label, NULL,
                    "%d operations waiting: refusing more (%lu refused before)", pg->nq + pg->ntxq,
                    pg->refused);
            pg->refused_logged_ms = now;
            pg->refused = 0;
        } else {
            pg->refused++;
        }
        op_finish(pg, op, DB_UNAVAILABLE);
    } else {
        if (op->kind == OP_PROCESS)
            q_push(&pg->txq_head, &pg->txq_tail, &pg->ntxq, op);
        else
            q_push(&pg->q_head, &pg->q_tail, &pg->nq, op);
        dispatch(pg);
    }
    leave(pg);
}

/* Arm the handle's alarm for the earliest ping deadline, or disarm it. */
void ping_arm(struct db_pg *pg)
{
    uint64_t next = 0;
    for (const struct pg_op *op = pg->pings; op; op = op->next_ping) {
        if (!next || op->ping_deadline_ms < next)
            next = op->ping_deadline_ms;
    }
    if (!next) {
        loop_alarm_disarm(pg->loop, &pg->alarm);
        return;
    }
    uint64_t now = now_ms(pg);
    loop_alarm_arm(pg->loop, &pg->alarm, next > now ? next - now : 0);
}

/*
 * A ping's deadline passed: answer DB_UNAVAILABLE now. Still waiting, it
 * leaves the queue; already sent, it stays in its connection's pipeline
 * (a query cannot be taken back) and its answer, if any, only frees it.
 */
static void ping_expire(struct db_pg *pg, struct pg_op *op)
{
    ping_unlink(pg, op);
    op->ping_deadline_ms = 0;
    if (!op->in_flight && q_remove(&pg->q_head, &pg->q_tail, &pg->nq, op)) {
        op_finish(pg, op, DB_UNAVAILABLE);
        return;
    }
    void *ctx = op->ctx;
    db_done_fn done = op->done;
    op->detached = true;
    op->ctx = NULL;
    pg->busy--;
    done(ctx, DB_UNAVAILABLE);
}

static void on_ping_alarm(struct loop *l, struct loop_alarm *a)
{
    struct db_pg *pg = container_of(a, struct db_pg, alarm);
    uint64_t now = loop_now_ms(l);

    enter(pg);
    for (;;) {
        struct pg_op *due = NULL;
        for (struct pg_op *op = pg->pings; op && !due; op = op->next_ping) {
            if (op->ping_deadline_ms <= now)
                due = op;
        }
        if (!due)
            break;
        ping_expire(pg, due); /* its callback may change the list: scan again */
    }
    ping_arm(pg);
    leave(pg);
}

/* ---- housekeeping ---- */

static void expire_queue(struct db_pg *pg, struct pg_op **head, struct pg_op **tail, int *n,
                         uint64_t now)
{
    while (*head && now - (*head)->queued_ms >= pg->timeout_ms) {
        struct pg_op *op = q_pop(head, tail, n);
        op_finish(pg, op, DB_UNAVAILABLE);
    }
}

/*
 * About once per second: operations waiting past the timeout fail; a
 * connection whose oldest query has no answer within the timeout, or whose
 * connection attempt takes longer, is closed (its operations fail); due
 * reconnections start.
 */
void pg_tick(struct db *db)
{
    struct db_pg *pg = to_pg(db);
    char why[WHY_MAX];

    enter(pg);
    uint64_t now = now_ms(pg);
    expire_queue(pg, &pg->q_head, &pg->q_tail, &pg->nq, now);
    expire_queue(pg, &pg->txq_head, &pg->txq_tail, &pg->ntxq, now);
    for (int i = 0; i < pg->nconns; i++) {
        struct pg_conn *c = &pg->conns[i];
        if (c->broken)
            continue;
        if (c->state == CS_CONNECTING && now - c->started_ms >= pg->timeout_ms) {
            snprintf(why, sizeof why, "connection attempt timed out after %" PRIu64 " ms",
                     pg->timeout_ms);
            conn_break(c, why);
            c->timed_out = true;
        } else if (c->state == CS_RESOLVING && now - c->started_ms >= pg->timeout_ms) {
            /* The lookup goes on: the next attempt, after the backoff, waits for the same one. */
            snprintf(why, sizeof why, "host name lookup took longer than %" PRIu64 " ms",
                     pg->timeout_ms);
            conn_break(c, why);
            c->timed_out = true;
        } else if (c->state == CS_READY && c->sent_head &&
                   now - c->sent_head->sent_ms >= pg->timeout_ms) {
            snprintf(why, sizeof why, "no answer within %" PRIu64 " ms", pg->timeout_ms);
            conn_break(c, why);
            c->timed_out = true;
        }
    }
    maybe_reconnect(pg);
    leave(pg);
}

void pg_stats(const struct db *db, struct db_stats *out)
{
    const struct db_pg *pg = to_pg_const(db);
    out->connections = 0;
    for (int i = 0; i < pg->nconns; i++)
        out->connections += conn_ready(&pg->conns[i]) && pg->conns[i].prepared;
    out->busy = pg->busy;
    out->reconnects = pg->reconnects;
    out->replica_lag_ms = -1;
}

/* Every operation still open gets DB_UNAVAILABLE; then everything is freed. */
void pg_close(struct db *db)
{
    struct db_pg *pg = to_pg(db);

    pg->closing = true;
    pg->depth++;
    loop_alarm_disarm(pg->loop, &pg->alarm);
    if (pg->batch_open) {
        struct pg_op *batch = pg->batch_open;
        pg->batch_open = NULL;
        op_finish(pg, batch, DB_UNAVAILABLE);
    }
    for (int i = 0; i < pg->nconns; i++) {
        struct pg_conn *c = &pg->conns[i];
        if (c->conn || c->sent_head || c->reserved)
            conn_teardown(c);
    }
    fail_queues(pg);
    resolve_cancel(pg->resolving);
    pg->resolving = NULL;
    while (pg->free_ops) {
        struct pg_op *op = pg->free_ops;
        pg->free_ops = op->next;
        free(op->heap);
        free(op);
    }
    free(pg->conns);
    hosts_free(pg);
    free(pg->conninfo);
    free(pg);
}

/* ---- opening a handle ---- */

struct db *pg_open(const char *conninfo, const struct db_config *cfg, struct loop *loop,
                   const struct db_ops *ops, const struct pg_stmt_ops *stmt_ops)
{
    char label[LABEL_MAX];

    if (!loop) {
        log_error("db postgres: a handle needs an event loop");
        return NULL;
    }
    if (make_label(conninfo, label, sizeof label)) {
        log_error("db postgres: BRISK_DATABASE_URL is not a valid PostgreSQL connection string");
        return NULL;
    }
    struct db_pg *pg = calloc(1, sizeof *pg);
    if (!pg)
        log_fatal("out of memory");
    pg->base.ops = ops;
    pg->stmt_ops = stmt_ops;
    pg->loop = loop;
    memcpy(pg->label, label, sizeof label);
    pg->conninfo = strdup(conninfo);
    if (!pg->conninfo)
        log_fatal("out of memory");
    hosts_parse(pg);
    loop_alarm_init(&pg->alarm, on_ping_alarm);
    pg->timeout_ms = cfg->busy_timeout_ms > 0 ? (uint64_t)cfg->busy_timeout_ms : DEFAULT_TIMEOUT_MS;
    pg->nconns = cfg->pool_size >= 1 && cfg->pool_size <= POOL_MAX ? cfg->pool_size : POOL_DEFAULT;
    pg->conns = calloc((size_t)pg->nconns, sizeof *pg->conns);
    if (!pg->conns)
        log_fatal("out of memory");
    for (int i = 0; i < pg->nconns; i++) {
        struct pg_conn *c = &pg->conns[i];
        c->io.on_event = conn_on_event;
        c->io.fd = -1;
        c->pg = pg;
        c->index = i;
        c->state = CS_DOWN;
        c->backoff_ms = BACKOFF_MIN_MS;
    }
    /* Start connecting now; operations arriving meanwhile wait for the connections. */
    enter(pg);
    maybe_reconnect(pg);
    leave(pg);
    return &pg->base;
}
