/*
 * pg_int.h - what the files of the PostgreSQL backend share; nothing outside them includes it.
 *
 * The backend is four files: pg.c the engine (connections, pipeline, pool,
 * queues), pg_ops.c the statements, decoders and operations of db.h,
 * pg_conninfo.c the connection string, pg_migrate.c db_migrate. Calls go one
 * way (scripts/deps_graph.py refuses module cycles): pg_ops.c calls the
 * engine, which reaches the statements only through the handle's stmt_ops;
 * pg_migrate.c calls pg_conninfo.c and value_i64; pg_conninfo.c calls none
 * of them. Everything here is private to those files; db_int.h is what they
 * share with db.c.
 */
#ifndef BRISK_DB_PG_INT_H
#define BRISK_DB_PG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/compiler.h"
#include "base/str.h"
#include "db/db_int.h"
#include "db/pq_load.h"
#include "net/loop.h"

#define MAX_PARAMS 8
#define MAX_UNIT_RESULTS 3 /* results kept per unit (statements sent before one Sync) */
#define LABEL_MAX 160
#define WHY_MAX 240

/* ---- statements ---- */

/* The reads of queries.def first, in its order (so a read's statement id is its db_query). */
enum stmt_id {
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql) ST_##name,
#include "db/queries.def"
#undef DB_QUERY
    ST_PING,
    ST_USER_INSERT,
    ST_USER_UPDATE,
    ST_USER_DELETE,
    ST_ORDER_CREATE,
    ST_REPLICA_LAG,
    ST_BEGIN,
    ST_CLAIM,
    ST_MARK,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_COUNT
};

_Static_assert((int)ST_orders_pending == (int)DB_Q_orders_pending, "reads first, in order");

struct pg_conn;
struct pg_op;
struct db_pg;
/*
 * A statement's decoder: turns the unit's results into op's answer. Returns
 * true with *out set for op_finish, or false when it answered op itself (a
 * batch answers its members) or queued it again.
 */
typedef bool (*decode_fn)(struct pg_conn *c, struct pg_op *op, enum db_status *out);

/* One statement of stmt_defs (pg_ops.c), prepared on every connection. */
struct stmt_def {
    const char *name; /* also the operation name in log lines */
    const char *sql;
    int nparams;
    unsigned int types[MAX_PARAMS];
    int ncols;
    decode_fn decode; /* NULL: the statements of orders_process (tx_unit_done) */
};

/* ---- handle, connections, operations ---- */

enum op_kind {
    OP_PREPARE,      /* internal: the PQsendPrepare batch of a new connection */
    OP_QUERY,        /* one statement; its decoder (stmt_defs) answers it */
    OP_CREATE_BATCH, /* internal: carries the user creates (OP_QUERY) of one INSERT */
    OP_PROCESS       /* a transaction on a reserved connection */
};

enum tx_step { TX_CLAIM, TX_MARK, TX_COMMIT, TX_ROLLBACK };

/*
 * One operation, from the db_* call to its done callback. Parameters are
 * copied in (the caller's slices need not outlive the call); structs and
 * their parameter buffers are reused through the handle's free list.
 */
struct pg_op {
    struct pg_op *next;                   /* in the wait queue or a connection's sent list */
    struct pg_op *members, *members_tail; /* OP_CREATE_BATCH: its creates, in order */
    struct pg_op *next_member;
    bool counted; /* OP_CREATE_BATCH: in pg->batches_in_flight */
    struct pg_conn *conn;
    enum op_kind kind;
    enum stmt_id stmt;
    enum tx_step step;
    int nstmt;                 /* statements in the unit in flight (before its Sync) */
    int retries;               /* order_create re-runs */
    bool in_flight;            /* in a sent list */
    bool detached;             /* OP_PING answered at its deadline: the late result only frees it */
    struct pg_op *next_ping;   /* OP_PING with a deadline: in pg->pings */
    uint64_t ping_deadline_ms; /* OP_PING: answer DB_UNAVAILABLE at this time (0: none) */
    PGresult *res[MAX_UNIT_RESULTS];
    PGresult *err;      /* the unit's first error */
    bool aborted;       /* a statement of the unit failed or was skipped */
    uint64_t queued_ms; /* when the db_* call was made */
    uint64_t sent_ms;   /* when the unit in flight was sent */
    void *ctx;
    db_user_fn user_row;
    db_order_fn order_row;
    db_done_fn done;
    db_count_fn count_done;
    db_sign_fn sign;
    int max;
    int64_t count;
    enum db_status tx_status; /* why a transaction is being rolled back */

    int nparams;
    const char *pv[MAX_PARAMS];
    int pl[MAX_PARAMS];
    int pf[MAX_PARAMS];
    char *pbase; /* inl or heap */
    size_t plen, pcap;
    char *heap;
    size_t heap_cap;
    char inl[320];
};

/* CS_RESOLVING: waiting for the handle's host-name lookup (off the loop) before connecting. */
enum conn_state { CS_DOWN, CS_RESOLVING, CS_CONNECTING, CS_READY };

/* One entry of the connection string's host list (host, hostaddr and port are parallel lists). */
struct pg_host {
    char *host;     /* as given; "" for libpq's default (the unix socket) */
    char *hostaddr; /* as given, or "" */
    char *port;     /* this entry's port, or "" for the default */
    int name;       /* index in db_pg.names when the loop must not resolve it, else -1 */
};

struct pg_conn {
    struct loop_io io; /* first: the loop hands us this pointer */
    struct db_pg *pg;
    int index;
    PGconn *conn;
    enum conn_state state;
    bool registered; /* io.fd is in the loop's epoll set */
    uint32_t events; /* the registered mask */
    bool broken;     /* to be closed by leave() */
    bool recheck;    /* libpq may hold input read while sending: look at it in leave() */
    bool prepared;   /* the statements were prepared: "up" */
    bool timed_out;  /* broken because the server did not answer in time */
    bool ever_up;    /* was up once: the next "up" is a reconnect */
    struct pg_op *sent_head, *sent_tail;
    int nsent;
    int rd_stmt;            /* statement of sent_head whose results are being read */
    struct pg_op *reserved; /* a transaction owning this connection */
    bool tx_running;        /* ...which has started (it is then in the sent list) */
    uint64_t started_ms;    /* connection attempt began */
    uint64_t retry_at_ms;   /* next attempt, while CS_DOWN */
    uint64_t backoff_ms;
    uint64_t epoch;    /* g_connect_epoch when it went down */
    char why[WHY_MAX]; /* why it broke */
};

/*
 * What the engine (pg.c) needs of the statements (pg_ops.c), reached through
 * the handle so that pg.c calls nothing of pg_ops.c by name. Set by pg_open.
 */
struct pg_stmt_ops {
    const struct stmt_def *defs; /* [ST_COUNT], prepared when connected */
    void (*unit_done)(struct pg_conn *c, struct pg_op *op); /* a unit's Sync came back: answer op */
    void (*tx_begin)(struct pg_conn *c);   /* c, reserved, is idle: start its transaction */
    void (*batch_flush)(struct db_pg *pg); /* send the gathering user creates if they may go */
};

struct db_pg {
    struct db base;                     /* first: db.c sees only this */
    const struct pg_stmt_ops *stmt_ops; /* the statements (pg_ops.c): see struct pg_stmt_ops */
    struct loop *loop;
    char label[LABEL_MAX]; /* host:port/dbname for log lines, never the URL */
    char *conninfo;
    struct pg_host *hosts; /* [nhosts]: set only when some entry is a DNS name */
    int nhosts;
    char **names; /* [nnames] distinct DNS names of hosts[], resolved on a thread */
    int nnames;
    struct resolve_req *resolving; /* the lookup in flight, if any */
    struct pg_conn *conns;         /* [nconns], set at open */
    int nconns;
    struct pg_op *q_head, *q_tail; /* waiting simple operations */
    int nq;
    struct pg_op *txq_head, *txq_tail; /* waiting orders_process calls */
    int ntxq;
    struct pg_op *batch_open; /* user creates gathering until a batch may be sent */
    int batches_in_flight;
    struct pg_op *free_ops;
    int nfree;
    int busy;  /* caller operations not finished yet */
    int depth; /* enter/leave nesting */
    uint64_t timeout_ms;
    bool closing;
    bool failing; /* an outage was logged; nothing connected since */
    /*
     * The server is known to be down: a connection attempt failed or timed
     * out, or a query went unanswered, and nothing connected since. While no
     * connection is up, operations then fail at once instead of each waiting
     * the timeout for an attempt that is likely to fail too, and only one
     * connection at a time tries to reach the server.
     */
    bool down;
    uint64_t reconnects;           /* db_stats */
    struct pg_op *pings;           /* OP_PING with a deadline, unordered */
    struct loop_alarm alarm;       /* armed for the earliest ping deadline */
    unsigned long failed_attempts; /* not logged one by one while failing */
    unsigned long refused;         /* queue-full refusals since the last log line */
    uint64_t refused_logged_ms;
};

static inline struct db_pg *to_pg(struct db *db)
{
    return container_of(db, struct db_pg, base);
}

static inline uint64_t now_ms(const struct db_pg *pg)
{
    return loop_now_ms(pg->loop);
}

/* ---- pg_conninfo.c: the connection string ---- */

/* Copy libpq's (possibly multi-line) message into out as one line. */
void one_line(char *out, size_t cap, const char *msg);

/* "host:port/dbname" of conninfo into out, for log lines; 0, or -1 when it does not parse. */
int make_label(const char *conninfo, char *out, size_t cap);

/* libpq notice receiver: notices and warnings to our log; arg is the handle's label. */
void on_notice(void *arg, const PGresult *res);

#define CONN_KEYS 11 /* conn_keys: ten keywords and the NULL that ends them */
/* The keywords given to libpq (PQconnectStartParams, PQconnectdbParams), with conn_values. */
extern const char *const conn_keys[CONN_KEYS];

/* The values of conn_keys: conninfo, then host/hostaddr/port overriding it (NULL: as it is). */
void conn_values(const char *conninfo, const char *host, const char *hostaddr, const char *port,
                 const char *vals[CONN_KEYS]);

/* Fill pg->hosts/names (empty on entry) from pg->conninfo when some host is a DNS name. */
void hosts_parse(struct db_pg *pg);

/* Free pg->hosts/names (empty after). */
void hosts_free(struct db_pg *pg);

/* ---- pg.c: the engine ---- */

/* A new operation of kind for ctx, from the handle's free list; counted busy unless internal. */
struct pg_op *op_new(struct db_pg *pg, enum op_kind kind, void *ctx);

/* Free op's results and forget its error: ready to be sent again. */
void op_clear_results(struct pg_op *op);

/*
 * The end of every caller operation: the done callback, once. The struct is
 * recycled first, so the callback may start new operations with it.
 */
void op_finish(struct db_pg *pg, struct pg_op *op, enum db_status st);

/* Recycle a batch carrier; returns its creates (by next_member) for the caller to answer. */
struct pg_op *batch_retire(struct db_pg *pg, struct pg_op *batch);

/* Put op first in a wait queue (pg->q_head/q_tail/nq or the transaction queue). */
void q_push_front(struct pg_op **head, struct pg_op **tail, int *n, struct pg_op *op);

/* Mark c broken, for why (kept as one line); it is closed at the outermost leave(). */
void conn_break(struct pg_conn *c, const char *why);

/* Start a unit of op on c (nstmt statements, then unit_end's Sync): joins c's sent list. */
void unit_begin(struct pg_conn *c, struct pg_op *op, int nstmt);

/* Send statement id with op's parameters (op NULL or none: no parameters); false on failure. */
bool send_prepared(struct pg_conn *c, enum stmt_id id, const struct pg_op *op);

/* End the unit with its Sync and push it out; !ok (a send failed) breaks c. */
void unit_end(struct pg_conn *c, bool ok);

/* Enter the handle from outside (a db_* call, an event): pairs with leave(). */
void enter(struct db_pg *pg);

/* Leave it: the outermost leave closes broken connections and fails what cannot wait. */
void leave(struct db_pg *pg);

/* Queue op, or fail it at once when nothing can serve it, and send what can be sent. */
void submit(struct db_pg *pg, struct pg_op *op);

/* Arm the handle's alarm for the earliest deadline of pg->pings, or disarm it. */
void ping_arm(struct db_pg *pg);

/* db_ops.tick, .stats and .close of the handle. */
void pg_tick(struct db *db);
void pg_stats(const struct db *db, struct db_stats *out);
void pg_close(struct db *db);

/* A new handle with `ops` as its db_ops, the statements' stmt_ops; NULL after logging. */
struct db *pg_open(const char *conninfo, const struct db_config *cfg, struct loop *loop,
                   const struct db_ops *ops, const struct pg_stmt_ops *stmt_ops);

/* ---- pg_ops.c: statements ---- */

/* Column col of row as an int64 (text form); false when NULL or not a number. */
bool value_i64(const PGresult *r, int row, int col, int64_t *out);

#endif
