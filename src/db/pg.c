/*
 * pg.c - the PostgreSQL backend of db.h.
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
 * at once). orders_process needs sign() to run in C between its SELECT ...
 * FOR UPDATE SKIP LOCKED and its UPDATE, so it reserves a connection (no other
 * query is sent on it until it ends): BEGIN + SELECT | sign | UPDATE + COMMIT,
 * ROLLBACK on any failure. order_create is a single statement (CTEs check the
 * user and the idempotency key), so it needs no reservation.
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
 * Re-entrancy: callbacks run from inside this file (socket events, db_tick)
 * or, for immediate failures, from inside the db_* call; they may start new
 * operations. A connection found broken meanwhile is only marked; it is
 * closed, and its operations failed, when the outermost entry returns
 * (enter/leave), so no PGconn is freed under a caller's feet.
 *
 * Start-up (db__pg_migrate) is blocking libpq on the main thread before any
 * loop runs: pg_advisory_lock, then migrations_pg.h. URLs and passwords are
 * never logged: log lines name host:port/dbname only.
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
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/epoll.h>

#include "base/buf.h"
#include "base/compiler.h"
#include "base/log.h"
#include "db/db_int.h"
#include "db/migrations_pg.h"
#include "db/pq_load.h"
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
#define MAX_PARAMS 8
#define MAX_UNIT_RESULTS 3         /* results kept per unit (statements sent before one Sync) */
#define CREATE_BATCH_MAX 256       /* user creates sent as one INSERT at most */
#define CREATE_BATCHES_IN_FLIGHT 2 /* per handle; creates arriving meanwhile join the next */
#define ORDER_CREATE_RETRIES 5
#define PROCESS_MAX 10000 /* orders claimed by one orders_process call at most */
#define LABEL_MAX 160
#define HOSTS_MAX 64 /* entries of a host list we resolve ourselves (libpq has no limit) */
#define WHY_MAX 240

/* PostgreSQL type OIDs of the parameters (pg_type.h is a server header). */
#define OID_INT8 20
#define OID_TEXT 25
#define OID_INT8_ARRAY 1016
#define OID_TEXT_ARRAY 1009

_Static_assert(ARRAY_LEN(pg_migrations) > 0, "at least one migration");

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

#define USER_COLS PG_USER_COLS
#define USER_NCOLS DB_NCOLS_USER
#define ORDER_COLS PG_ORDER_COLS
#define ORDER_NCOLS DB_NCOLS_ORDER

struct pg_conn;
struct pg_op;
/*
 * A statement's decoder: turns the unit's results into op's answer. Returns
 * true with *out set for op_finish, or false when it answered op itself (a
 * batch answers its members) or queued it again.
 */
typedef bool (*decode_fn)(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_read(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_ping(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_create_batch(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_user(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_user_delete(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_order_create(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_count(struct pg_conn *c, struct pg_op *op, enum db_status *out);

/*
 * Every statement, prepared on each connection right after it connects. The
 * name is the prepared statement's name; the types fix the parameters'
 * types, so they can be sent in binary (int8 as 8 big-endian bytes, text as
 * its bytes: no formatting, no NUL terminator, no copy to terminate a slice).
 */
static const struct stmt_def {
    const char *name; /* also the operation name in log lines */
    const char *sql;
    int nparams;
    unsigned int types[MAX_PARAMS];
    int ncols;
    decode_fn decode; /* NULL: the statements of orders_process (tx_unit_done) */
} stmt_defs[ST_COUNT] = {
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql)                               \
    [ST_##name] = {#name,          pg_sql,  DB_NARGS_##params, {OID_INT8, OID_INT8, OID_INT8},     \
                   DB_NCOLS_##row, dec_read},
#include "db/queries.def"
#undef DB_QUERY
    [ST_PING] = {"ping", "SELECT 1", 0, {0}, 1, dec_ping},
    /*
     * Every user create goes through a batch (one or more users, in order):
     * one statement, one commit, one WAL flush for all of them. A user whose
     * email is taken - also by an earlier row of the same batch - is skipped
     * by ON CONFLICT and so has no row back: that create is the conflict.
     * Parameters in text form: '{"name",...}' and '{"email",...}'.
     */
    [ST_USER_INSERT] = {"user_create",
                        "INSERT INTO users (name, email) SELECT n, e "
                        "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(n, e, i) "
                        "ORDER BY i ON CONFLICT DO NOTHING RETURNING " USER_COLS,
                        2,
                        {OID_TEXT_ARRAY, OID_TEXT_ARRAY},
                        USER_NCOLS,
                        dec_create_batch},
    /* A NULL parameter keeps the column: the caller passes only what changes. */
    [ST_USER_UPDATE] = {"user_update",
                        "UPDATE users SET name = coalesce($2, name), email = coalesce($3, email) "
                        "WHERE id = $1 RETURNING " USER_COLS,
                        3,
                        {OID_INT8, OID_TEXT, OID_TEXT},
                        USER_NCOLS,
                        dec_user},
    /* The orders foreign key refuses the delete of a user with orders (23503). */
    [ST_USER_DELETE] =
        {"user_delete", "DELETE FROM users WHERE id = $1", 1, {OID_INT8}, 0, dec_user_delete},
    /*
     * One statement, one implicit transaction. First column: 'i' inserted,
     * 'e' the key exists (request_hash last, compared in C), 'n' no such
     * user (checked first, as the SQLite backend does). No row at all: the
     * key is being inserted by a concurrent transaction that committed after
     * this statement's snapshot (ON CONFLICT waited for it, then did
     * nothing): the caller runs the statement again and sees that order.
     */
    [ST_ORDER_CREATE] = {"order_create",
                         "WITH u AS (SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS ok), "
                         "existing AS (SELECT " ORDER_COLS ", request_hash FROM orders "
                         "  WHERE idempotency_key = $7 AND (SELECT ok FROM u)), "
                         "ins AS (INSERT INTO orders (user_id, items, subtotal_cents, "
                         "  discount_cents, tax_cents, total_cents, idempotency_key, request_hash) "
                         "  SELECT $1, $2, $3, $4, $5, $6, $7, $8 "
                         "  WHERE (SELECT ok FROM u) AND NOT EXISTS (SELECT 1 FROM existing) "
                         "  ON CONFLICT (idempotency_key) DO NOTHING "
                         "  RETURNING " ORDER_COLS ", request_hash) "
                         "SELECT 'i' AS k, * FROM ins "
                         "UNION ALL SELECT 'e', * FROM existing "
                         "UNION ALL SELECT 'n', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
                         "  NULL, NULL, NULL, NULL FROM u WHERE NOT u.ok",
                         8,
                         {OID_INT8, OID_TEXT, OID_INT8, OID_INT8, OID_INT8, OID_INT8, OID_TEXT,
                          OID_TEXT},
                         ORDER_NCOLS + 2,
                         dec_order_create},
    /*
     * A streaming replica's delay in ms: 0 while it has replayed all it
     * received (an idle primary sends nothing, and the last replay time would
     * look old), else the age of the last transaction it replayed. 0 on a
     * server that is not a replica.
     */
    [ST_REPLICA_LAG] = {"replica_lag",
                        "SELECT CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM "
                        "pg_last_wal_replay_lsn() THEN 0 ELSE COALESCE(floor(1000 * extract(epoch "
                        "FROM now() - pg_last_xact_replay_timestamp()))::bigint, 0) END",
                        0,
                        {0},
                        1,
                        dec_count},
    [ST_BEGIN] = {"begin", "BEGIN", 0, {0}, 0, NULL},
    /* Rows another transaction holds are skipped, not waited for: concurrent claimers
     * (other loops, other processes) each get different orders. */
    [ST_CLAIM] = {"orders_process",
                  "SELECT " ORDER_COLS " FROM orders WHERE status = 'pending' ORDER BY id "
                  "LIMIT $1 FOR UPDATE SKIP LOCKED",
                  1,
                  {OID_INT8},
                  ORDER_NCOLS,
                  NULL},
    /* Parameters in text form: '{1,2}' and '{hex,hex}'. */
    [ST_MARK] =
        {"order_mark",
         "UPDATE orders SET status = 'processed', receipt = r.receipt, processed_at = now() "
         "FROM unnest($1::bigint[], $2::text[]) AS r(id, receipt) "
         "WHERE orders.id = r.id AND orders.status = 'pending'",
         2,
         {OID_INT8_ARRAY, OID_TEXT_ARRAY},
         0,
         NULL},
    [ST_COMMIT] = {"commit", "COMMIT", 0, {0}, 0, NULL},
    [ST_ROLLBACK] = {"rollback", "ROLLBACK", 0, {0}, 0, NULL},
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

struct db_pg {
    struct db base; /* first: db.c sees only this */
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

/*
 * Bumped whenever any handle of the process gets a connection ready. Each
 * loop backs off on its own; once one of them reaches the database again,
 * the others try at once instead of sleeping out their backoff (up to 5 s of
 * needless 503s on some loops after an outage).
 */
static atomic_uint_fast64_t g_connect_epoch;

static struct db_pg *to_pg(struct db *db)
{
    return container_of(db, struct db_pg, base);
}

static const struct db_pg *to_pg_const(const struct db *db)
{
    return container_of(db, const struct db_pg, base);
}

static uint64_t now_ms(const struct db_pg *pg)
{
    return loop_now_ms(pg->loop);
}

/* ---- small helpers ---- */

/* Copy libpq's (possibly multi-line) message into out as one line. */
static void one_line(char *out, size_t cap, const char *msg)
{
    size_t n = 0;
    bool space = false;
    if (!msg)
        msg = "";
    for (const char *p = msg; *p && n + 1 < cap; p++) {
        char ch = *p;
        if (ch == '\n' || ch == '\r' || ch == '\t') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < cap) {
            out[n++] = ' ';
        }
        space = false;
        out[n++] = ch;
    }
    out[n] = '\0';
}

/* A signed decimal integer of exactly len bytes. */
static bool parse_i64(const char *p, int len, int64_t *out)
{
    bool neg = false;
    uint64_t v = 0;
    int i = 0;
    if (len > 0 && p[0] == '-') {
        neg = true;
        i = 1;
    }
    if (i >= len || len - i > 19)
        return false;
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

static struct str value_str(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return STR_NULL;
    return (struct str){PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col)};
}

static bool value_i64(const PGresult *r, int row, int col, int64_t *out)
{
    return !PQgetisnull(r, row, col) &&
           parse_i64(PQgetvalue(r, row, col), PQgetlength(r, row, col), out);
}

/*
 * "host:port/dbname" from the connection string, for log lines (libpq's
 * defaults where it names none). Returns 0, or -1 when the string does not
 * parse; libpq's message is not repeated since it may quote the string.
 */
static int make_label(const char *conninfo, char *out, size_t cap)
{
    char *err = NULL;
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *dbname = NULL, *user = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);

    if (!opts) {
        PQfreemem(err);
        return -1;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
    }
    snprintf(out, cap, "%s:%s/%s",
             host       ? host
             : hostaddr ? hostaddr
                        : "localhost",
             port ? port : "5432",
             dbname ? dbname
             : user ? user
                    : "-");
    PQconninfoFree(opts);
    return 0;
}

/* PostgreSQL's notices and warnings go to our log, not to libpq's default stderr printer. */
static void on_notice(void *arg, const PGresult *res)
{
    const char *label = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    char msg[WHY_MAX];
    one_line(msg, sizeof msg, PQresultErrorMessage(res));
    if (sev && strcmp(sev, "WARNING") == 0)
        db__log(LOG_WARN, "postgres", label, NULL, "%s", msg);
    else
        db__log(LOG_DEBUG, "postgres", label, NULL, "%s", msg);
}

/*
 * Keywords given to libpq ahead of the user's string: later keywords win, and
 * the string is expanded in place of "dbname", so whatever it sets itself
 * overrides these defaults. connect_timeout only bounds blocking connects (the
 * migration); the loop enforces its own limit. gssencmode: libpq's default
 * "prefer" asks Kerberos for credentials on every TCP connect (config files,
 * getuid(); outside the sandbox's allowlist): GSS encryption is opt-in here,
 * gssencmode=prefer|require in the URL turns it on. host, hostaddr and port
 * come after the string, so they override it: the lists of resolved addresses
 * (NULL values are skipped by libpq).
 */
static const char *const conn_keys[] = {"application_name",
                                        "connect_timeout",
                                        "keepalives_idle",
                                        "keepalives_interval",
                                        "keepalives_count",
                                        "gssencmode",
                                        "dbname",
                                        "host",
                                        "hostaddr",
                                        "port",
                                        NULL};

static void conn_values(const char *conninfo, const char *host, const char *hostaddr,
                        const char *port, const char *vals[ARRAY_LEN(conn_keys)])
{
    vals[0] = "brisk";
    vals[1] = "10";
    vals[2] = "30";
    vals[3] = "10";
    vals[4] = "3";
    vals[5] = "disable";
    vals[6] = conninfo;
    vals[7] = host;
    vals[8] = hostaddr;
    vals[9] = port;
    vals[10] = NULL;
}

/* ---- host names: resolved on a thread, never on the loop ---- */

/*
 * libpq resolves a host name with a blocking getaddrinfo() inside
 * PQconnectStartParams/PQconnectPoll: on a loop thread that stalls every
 * connection of the loop for as long as DNS takes. So the handle resolves the
 * names of its host list itself (net/resolver.h), then gives libpq the
 * addresses: each name becomes as many entries as it has addresses, with
 * hostaddr=<address> (libpq then connects to it without resolving) and host
 * kept as the name (TLS verify-full, Kerberos and the password file use it).
 * Unix sockets, numeric hosts and entries with a hostaddr of their own are
 * passed through. A lookup is made per connection attempt, as libpq would
 * (a failover that moves the name is seen at the next reconnect), and shared
 * by the connections of the handle that wait for it.
 */

/* Elements of a libpq comma-separated list (libpq has no escapes either). Returns the count. */
static int split_list(const char *s, char **out, int max)
{
    int n = 0;
    if (!s || !*s)
        return 0;
    for (const char *p = s;; n++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (n >= max)
            return -1;
        out[n] = strndup(p, len);
        if (!out[n])
            log_fatal("out of memory");
        if (!e)
            return n + 1;
        p = e + 1;
    }
}

/* A host entry libpq would look up in DNS: not a socket path, not a numeric address. */
static bool is_dns_name(const char *host)
{
    struct in_addr a4;
    if (!*host || host[0] == '/' || host[0] == '@' || strchr(host, ':'))
        return false; /* default socket, unix socket, abstract socket, IPv6 literal */
    return inet_pton(AF_INET, host, &a4) != 1;
}

static void hosts_free(struct db_pg *pg)
{
    for (int i = 0; i < pg->nhosts; i++) {
        free(pg->hosts[i].host);
        free(pg->hosts[i].hostaddr);
        free(pg->hosts[i].port);
    }
    free(pg->hosts);
    pg->hosts = NULL;
    pg->nhosts = 0;
    free(pg->names); /* the strings belong to hosts[] */
    pg->names = NULL;
    pg->nnames = 0;
}

static const char *opt_or_env(const char *val, const char *env)
{
    return val && *val ? val : getenv(env);
}

/*
 * Fill pg->hosts/names from the connection string (PGHOST, PGHOSTADDR and
 * PGPORT where it sets none, as libpq does). Nothing is set, and libpq is left
 * to itself, when no entry is a DNS name, when a service file may name the
 * host, or when the lists do not match (libpq then reports the error).
 */
static void hosts_parse(struct db_pg *pg)
{
    char *err = NULL;
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *service = NULL;
    char *hl[HOSTS_MAX] = {0}, *al[HOSTS_MAX] = {0}, *pl[HOSTS_MAX] = {0};
    int nh = 0, na = 0, np = 0;
    PQconninfoOption *opts = PQconninfoParse(pg->conninfo, &err);

    if (!opts) {
        PQfreemem(err);
        return;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            service = o->val;
    }
    host = opt_or_env(host, "PGHOST");
    hostaddr = opt_or_env(hostaddr, "PGHOSTADDR");
    port = opt_or_env(port, "PGPORT");
    service = opt_or_env(service, "PGSERVICE");
    if (service && !host)
        goto out;
    nh = split_list(host, hl, HOSTS_MAX);
    na = split_list(hostaddr, al, HOSTS_MAX);
    np = split_list(port, pl, HOSTS_MAX);
    int n = nh > na ? nh : na;
    if (nh < 0 || na < 0 || np < 0 || n == 0 || (nh && na && nh != na) || (np > 1 && np != n))
        goto out;
    pg->hosts = calloc((size_t)n, sizeof *pg->hosts);
    pg->names = calloc((size_t)n, sizeof *pg->names);
    if (!pg->hosts || !pg->names)
        log_fatal("out of memory");
    pg->nhosts = n;
    for (int i = 0; i < n; i++) {
        struct pg_host *h = &pg->hosts[i];
        h->host = i < nh ? hl[i] : strdup("");
        h->hostaddr = i < na ? al[i] : strdup("");
        h->port = strdup(np == 0 ? "" : pl[np == 1 ? 0 : i]);
        hl[i] = al[i] = NULL;
        if (!h->host || !h->hostaddr || !h->port)
            log_fatal("out of memory");
        h->name = -1;
        if (*h->hostaddr || !is_dns_name(h->host))
            continue;
        for (int j = 0; j < pg->nnames && h->name < 0; j++) {
            if (strcmp(pg->names[j], h->host) == 0)
                h->name = j;
        }
        if (h->name < 0) {
            h->name = pg->nnames;
            pg->names[pg->nnames++] = h->host;
        }
    }
    if (pg->nnames == 0)
        hosts_free(pg); /* nothing to resolve: libpq gets the string as it is */
out:
    for (int i = 0; i < HOSTS_MAX; i++) {
        free(hl[i]);
        free(al[i]);
        free(pl[i]);
    }
    PQconninfoFree(opts);
}

/* ---- operations: allocation, parameters, completion ---- */

static struct pg_op *op_new(struct db_pg *pg, enum op_kind kind, void *ctx)
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

static void op_clear_results(struct pg_op *op)
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

/* Make room for n bytes of parameters (all of them: pointers into it must not move). */
static void params_reserve(struct pg_op *op, size_t n)
{
    op->nparams = 0;
    op->plen = 0;
    if (n <= sizeof op->inl) {
        op->pbase = op->inl;
        op->pcap = sizeof op->inl;
        return;
    }
    if (op->heap_cap < n) {
        free(op->heap);
        op->heap = malloc(n);
        if (!op->heap)
            log_fatal("out of memory");
        op->heap_cap = n;
    }
    op->pbase = op->heap;
    op->pcap = op->heap_cap;
}

/* Append a parameter: p == NULL is SQL NULL; format 1 binary, 0 text (NUL-terminated here). */
static void param_add(struct pg_op *op, const void *p, size_t n, int format)
{
    int i = op->nparams++;
    if (!p) {
        op->pv[i] = NULL;
        op->pl[i] = 0;
        op->pf[i] = format;
        return;
    }
    char *dst = op->pbase + op->plen;
    if (n)
        memcpy(dst, p, n);
    op->plen += n;
    if (format == 0)
        op->pbase[op->plen++] = '\0';
    op->pv[i] = dst;
    op->pl[i] = (int)n;
    op->pf[i] = format;
}

static void param_i64(struct pg_op *op, int64_t v)
{
    unsigned char b[8];
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--) {
        b[i] = (unsigned char)(u & 0xff);
        u >>= 8;
    }
    param_add(op, b, sizeof b, 1);
}

static void param_str(struct pg_op *op, struct str s)
{
    param_add(op, s.ptr, s.ptr ? s.len : 0, 1);
}

/*
 * The end of every caller operation: the done callback, once. The struct is
 * recycled first, so the callback may start new operations with it.
 */
static void op_finish(struct db_pg *pg, struct pg_op *op, enum db_status st);

/*
 * Retire a batch carrier: out of the in-flight count, recycled. Returns its
 * creates (linked by next_member) for the caller to answer; the carrier is
 * gone before any of them is, so their callbacks may start new batches.
 */
static struct pg_op *batch_retire(struct db_pg *pg, struct pg_op *batch)
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

static void op_finish(struct db_pg *pg, struct pg_op *op, enum db_status st)
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

static void q_push_front(struct pg_op **head, struct pg_op **tail, int *n, struct pg_op *op)
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

static void conn_break(struct pg_conn *c, const char *why)
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

static void enter(struct db_pg *pg);
static void leave(struct db_pg *pg);

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
static void unit_begin(struct pg_conn *c, struct pg_op *op, int nstmt)
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

static bool send_prepared(struct pg_conn *c, enum stmt_id id, const struct pg_op *op)
{
    const struct stmt_def *def = &stmt_defs[id];
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
static void unit_end(struct pg_conn *c, bool ok)
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

static void tx_begin(struct pg_conn *c);

/*
 * Hand waiting operations to connections: transactions first (each reserves
 * a whole connection; at least one connection stays for everything else when
 * there are two or more), then simple operations to the least loaded
 * connection with pipeline room.
 */
static void batch_flush(struct db_pg *pg);

static void dispatch(struct db_pg *pg)
{
    batch_flush(pg);
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
            tx_begin(best);
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
        const struct stmt_def *def = &stmt_defs[i];
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

static void enter(struct db_pg *pg)
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
static void leave(struct db_pg *pg)
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
        batch_flush(pg);
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

/* ---- results ---- */

/* What a unique (23505) or foreign-key (23503) refusal of statement id means; DB_OK: an error. */
static enum db_status constraint_status(enum stmt_id id, const char *state)
{
    if (id == ST_USER_UPDATE && strcmp(state, "23505") == 0)
        return DB_CONFLICT; /* the only unique index besides the id is lower(email) */
    if (id == ST_USER_DELETE && strcmp(state, "23503") == 0)
        return DB_HAS_CHILDREN; /* orders is the only table referencing users */
    if (id == ST_ORDER_CREATE && strcmp(state, "23503") == 0)
        return DB_NOT_FOUND; /* the user was deleted concurrently */
    return DB_OK;
}

/*
 * The status of a failed unit, logged unless it is an expected outcome
 * (conflict, has-children, outage). SQLSTATEs: 23505 unique_violation,
 * 23503 foreign_key_violation, class 08 connection exceptions, 57P0x
 * shutdown/crash, 53 resources, 40001/40P01 serialization/deadlock,
 * 55P03 lock_not_available, 57014 query_canceled: all transient.
 */
static enum db_status unit_error(struct pg_conn *c, struct pg_op *op, const char *what)
{
    struct db_pg *pg = c->pg;
    char msg[WHY_MAX];
    const char *state = op->err ? PQresultErrorField(op->err, PG_DIAG_SQLSTATE) : NULL;

    if (!state) {
        db__log(LOG_ERROR, "postgres", pg->label, NULL, "%s failed without an error", what);
        return DB_ERROR;
    }
    enum db_status expected = op->kind == OP_QUERY ? constraint_status(op->stmt, state) : DB_OK;
    if (expected != DB_OK)
        return expected;
    one_line(msg, sizeof msg, PQresultErrorField(op->err, PG_DIAG_MESSAGE_PRIMARY));
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strncmp(state, "53", 2) == 0 || strcmp(state, "40001") == 0 ||
        strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0) {
        db__log(LOG_WARN, "postgres", pg->label, msg, "%s: database unavailable: %s (SQLSTATE %s)",
                what, msg, state);
        return DB_UNAVAILABLE;
    }
    db__log(LOG_ERROR, "postgres", pg->label, msg, "%s failed: %s (SQLSTATE %s)", what, msg, state);
    /* a prepared statement missing or stale: start over on a fresh connection */
    if (strcmp(state, "26000") == 0 || strcmp(state, "0A000") == 0)
        conn_break(c, msg);
    return DB_ERROR;
}

/* The one result a single-statement unit must have, with the expected shape. */
static const PGresult *unit_result(struct pg_conn *c, struct pg_op *op, int i, enum stmt_id id)
{
    const PGresult *r = op->res[i];
    const struct stmt_def *def = &stmt_defs[id];
    if (!r || PQnfields(r) != def->ncols) {
        db__log(LOG_ERROR, "postgres", c->pg->label, NULL, "%s: result has %d columns, expected %d",
                def->name, r ? PQnfields(r) : -1, def->ncols);
        return NULL;
    }
    return r;
}

static enum db_status read_user(struct pg_conn *c, const PGresult *r, int row, const char *what,
                                struct db_user *out)
{
    out->name = value_str(r, row, 1);
    out->email = value_str(r, row, 2);
    if (!value_i64(r, row, 0, &out->id) || !value_i64(r, row, 3, &out->created_at) ||
        !out->name.ptr || !out->email.ptr) {
        db__log(LOG_ERROR, "postgres", c->pg->label, NULL, "%s: malformed user row", what);
        return DB_ERROR;
    }
    return DB_OK;
}

/* ORDER_COLS starting at column `base`. Text points into r. */
static enum db_status read_order(struct pg_conn *c, const PGresult *r, int row, int base,
                                 const char *what, struct db_order *out)
{
    struct str status = value_str(r, row, base + 2);

    memset(out, 0, sizeof *out);
    out->items = value_str(r, row, base + 3);
    out->receipt = value_str(r, row, base + 8);
    out->processed = str_eq(status, STR_LIT("processed"));
    if (!value_i64(r, row, base, &out->id) || !value_i64(r, row, base + 1, &out->user_id) ||
        !status.ptr || !out->items.ptr || !value_i64(r, row, base + 4, &out->subtotal_cents) ||
        !value_i64(r, row, base + 5, &out->discount_cents) ||
        !value_i64(r, row, base + 6, &out->tax_cents) ||
        !value_i64(r, row, base + 7, &out->total_cents) ||
        !value_i64(r, row, base + 9, &out->created_at) ||
        (!PQgetisnull(r, row, base + 10) && !value_i64(r, row, base + 10, &out->processed_at)) ||
        out->processed != (out->receipt.ptr != NULL && out->processed_at != 0)) {
        db__log(LOG_ERROR, "postgres", c->pg->label, NULL, "%s: malformed order row", what);
        return DB_ERROR;
    }
    return DB_OK;
}

/* ---- decoders: one per statement (stmt_defs.decode) ---- */

/* Row i of a read's result, as its row type says. Text points into r. */
static enum db_status decode_row(struct pg_conn *c, const PGresult *r, int i,
                                 const struct db_query_def *q, struct db_row *out)
{
    switch (q->row) {
    case DB_ROW_USER:
        return read_user(c, r, i, q->name, &out->user);
    case DB_ROW_ORDER:
        return read_order(c, r, i, 0, q->name, &out->order);
    case DB_ROW_COUNT:
        if (value_i64(r, i, 0, &out->count))
            return DB_OK;
        db__log(LOG_ERROR, "postgres", c->pg->label, NULL, "%s: malformed count", q->name);
        return DB_ERROR;
    }
    return DB_ERROR;
}

/* Every read of queries.def: its rule says what no row means; rows go out as decoded. */
static bool dec_read(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    const struct db_query_def *q = &db__queries[op->stmt];
    const PGresult *r = unit_result(c, op, 0, op->stmt);
    const struct db_read rd = {.q = (enum db_query)op->stmt,
                               .user_row = op->user_row,
                               .order_row = op->order_row,
                               .ctx = op->ctx};
    int n = r ? PQntuples(r) : 0;

    *out = DB_ERROR;
    if (!r)
        return true;
    if (n == 0) {
        *out = q->rule == DB_RULE_ANY ? DB_OK : DB_NOT_FOUND;
        return true;
    }
    if (q->rule == DB_RULE_ONE && n > 1) {
        db__log(LOG_ERROR, "postgres", c->pg->label, NULL, "%s: %d rows, expected one", q->name, n);
        return true;
    }
    for (int i = 0; i < n; i++) {
        struct db_row row;
        if (q->rule == DB_RULE_PARENT && PQgetisnull(r, i, 0))
            continue; /* the parent exists, without (more) children */
        if (decode_row(c, r, i, q, &row) != DB_OK)
            return true;
        op->count = row.count;
        db__read_row(&rd, &row);
    }
    *out = DB_OK;
    return true;
}

static bool dec_ping(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    (void)c;
    (void)op;
    *out = DB_OK;
    return true;
}

/* One user row (update ... RETURNING); none: no such user. */
static bool dec_user(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    const char *what = stmt_defs[op->stmt].name;
    const PGresult *r = unit_result(c, op, 0, op->stmt);
    struct db_user u;

    if (!r) {
        *out = DB_ERROR;
    } else if (PQntuples(r) == 0) {
        *out = DB_NOT_FOUND;
    } else {
        *out = read_user(c, r, 0, what, &u);
        if (*out == DB_OK && op->user_row)
            op->user_row(op->ctx, &u);
    }
    return true;
}

static bool dec_user_delete(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    (void)c;
    const char *t = op->res[0] ? PQcmdTuples(op->res[0]) : "";
    *out = strcmp(t, "0") == 0 ? DB_NOT_FOUND : t[0] ? DB_OK : DB_ERROR;
    return true;
}

/* One count row (the replica's lag). */
static bool dec_count(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    const PGresult *r = unit_result(c, op, 0, op->stmt);
    *out = r && PQntuples(r) == 1 && value_i64(r, 0, 0, &op->count) ? DB_OK : DB_ERROR;
    return true;
}

/*
 * A batch's INSERT answered: each returned row belongs to the first create
 * not yet matched with exactly that email (rows come back in insertion
 * order, so the scan rarely moves); a create left without a row lost its
 * email to an existing user or an earlier create: DB_CONFLICT.
 */
static bool dec_create_batch(struct pg_conn *c, struct pg_op *batch, enum db_status *out)
{
    struct db_pg *pg = c->pg;
    const char *what = stmt_defs[ST_USER_INSERT].name;
    const PGresult *r = unit_result(c, batch, 0, ST_USER_INSERT);
    PGresult *owned = batch->res[0];
    int n = r ? PQntuples(r) : 0;

    if (!r || n > batch->max) {
        if (r)
            db__log(LOG_ERROR, "postgres", pg->label, NULL, "%s: %d rows for %d users", what, n,
                    batch->max);
        *out = DB_ERROR;
        return true;
    }
    batch->res[0] = NULL; /* outlives the carrier: the rows are read while answering */
    struct pg_op *members = batch_retire(pg, batch);
    struct pg_op *from = members;
    for (int row = 0; row < n; row++) {
        struct str email = value_str(r, row, 2);
        struct pg_op *m = from, *hit = NULL;
        for (int pass = 0; pass < 2 && !hit && email.ptr; pass++, m = members) {
            for (; m && !hit; m = m->next_member) {
                if (m->count == 0 && (size_t)m->pl[1] == email.len &&
                    memcmp(m->pv[1], email.ptr, email.len) == 0)
                    hit = m;
            }
        }
        if (!hit) {
            db__log(LOG_ERROR, "postgres", pg->label, NULL, "%s: a returned row matches no create",
                    what);
            continue;
        }
        hit->count = row + 1;
        from = hit->next_member;
    }
    for (struct pg_op *m = members, *next; m; m = next) {
        enum db_status st = DB_CONFLICT;
        next = m->next_member;
        m->next_member = NULL;
        if (m->count > 0) {
            struct db_user u;
            st = read_user(c, r, (int)m->count - 1, what, &u);
            if (st == DB_OK && m->user_row)
                m->user_row(m->ctx, &u);
        }
        op_finish(pg, m, st);
    }
    PQclear(owned);
    return false;
}

/* Answers false when the operation was queued again (a concurrent idempotent insert). */
static bool dec_order_create(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    struct db_pg *pg = c->pg;
    const char *what = stmt_defs[op->stmt].name;
    const PGresult *r = unit_result(c, op, 0, op->stmt);
    struct db_order o;

    *out = DB_ERROR;
    if (!r)
        return true;
    if (PQntuples(r) == 0) {
        if (op->retries++ < ORDER_CREATE_RETRIES) {
            op_clear_results(op);
            q_push_front(&pg->q_head, &pg->q_tail, &pg->nq, op);
            return false;
        }
        db__log(LOG_ERROR, "postgres", pg->label, NULL,
                "%s: idempotency key still contended after %d tries", what,
                ORDER_CREATE_RETRIES + 1);
        return true;
    }
    struct str kind = value_str(r, 0, 0);
    if (str_eq(kind, STR_LIT("n"))) {
        *out = DB_NOT_FOUND;
        return true;
    }
    if (read_order(c, r, 0, 1, what, &o) != DB_OK)
        return true;
    if (str_eq(kind, STR_LIT("e"))) {
        /* parameter 8 (index 7) is the request hash, stored as sent */
        struct str stored = value_str(r, 0, ORDER_NCOLS + 1);
        struct str hash = {op->pv[7], op->pv[7] ? (size_t)op->pl[7] : 0};
        if (!stored.ptr || !hash.ptr || !str_eq(stored, hash)) {
            *out = DB_KEY_REUSED;
            return true;
        }
        *out = DB_REPLAYED;
    } else {
        *out = DB_OK;
    }
    if (op->order_row)
        op->order_row(op->ctx, &o);
    return true;
}

/* ---- orders_process: a transaction on a reserved connection ---- */

static void tx_rollback(struct pg_conn *c, struct pg_op *op, enum db_status why)
{
    op->tx_status = why;
    op->step = TX_ROLLBACK;
    op_clear_results(op);
    unit_begin(c, op, 1);
    unit_end(c, send_prepared(c, ST_ROLLBACK, NULL));
}

static void tx_end(struct pg_conn *c, struct pg_op *op, enum db_status st, int64_t count)
{
    c->reserved = NULL;
    c->tx_running = false;
    op->count = count;
    op_finish(c->pg, op, st);
}

/* The reserved connection has nothing else in flight: BEGIN + claim, one round trip. */
static void tx_begin(struct pg_conn *c)
{
    struct pg_op *op = c->reserved;
    c->tx_running = true;
    op->step = TX_CLAIM;
    params_reserve(op, 8);
    param_i64(op, op->max);
    unit_begin(c, op, 2);
    unit_end(c, send_prepared(c, ST_BEGIN, NULL) && send_prepared(c, ST_CLAIM, op));
}

static bool is_receipt(const char r[65])
{
    for (int i = 0; i < 64; i++) {
        if (!((r[i] >= '0' && r[i] <= '9') || (r[i] >= 'a' && r[i] <= 'f')))
            return false;
    }
    return r[64] == '\0';
}

/* Claimed rows in hand: sign each, then UPDATE + COMMIT in one round trip. */
static void tx_claimed(struct pg_conn *c, struct pg_op *op)
{
    struct db_pg *pg = c->pg;
    const char *what = stmt_defs[ST_CLAIM].name;
    const PGresult *r = unit_result(c, op, 1, ST_CLAIM);
    char receipt[65];
    int nsigned = 0;

    if (!r) {
        tx_rollback(c, op, DB_ERROR);
        return;
    }
    int n = PQntuples(r);
    /* '{' ids '}' NUL '{' receipts '}' NUL; an id is at most 20 characters + ',' */
    size_t need = (size_t)n * 21 + 3 + (size_t)n * 65 + 3;
    params_reserve(op, need);
    char *ids = op->pbase, *rcp;
    size_t ilen = 0, rlen = 0;
    ids[ilen++] = '{';
    rcp = ids + (size_t)n * 21 + 3;
    rcp[rlen++] = '{';
    for (int i = 0; i < n; i++) {
        struct db_order o;
        if (read_order(c, r, i, 0, what, &o) != DB_OK) {
            tx_rollback(c, op, DB_ERROR);
            return;
        }
        memset(receipt, 0, sizeof receipt);
        if (op->sign(op->ctx, &o, receipt) != 0)
            continue; /* stays pending; the signer logged why */
        receipt[64] = '\0';
        if (!is_receipt(receipt)) {
            db__log(LOG_ERROR, "postgres", pg->label, NULL,
                    "%s: order %" PRId64 ": the signer gave a malformed receipt", what, o.id);
            continue;
        }
        if (nsigned++) {
            ids[ilen++] = ',';
            rcp[rlen++] = ',';
        }
        ilen += (size_t)snprintf(ids + ilen, 21, "%" PRId64, o.id);
        memcpy(rcp + rlen, receipt, 64);
        rlen += 64;
    }
    ids[ilen++] = '}';
    ids[ilen] = '\0';
    rcp[rlen++] = '}';
    rcp[rlen] = '\0';
    op_clear_results(op);
    if (nsigned == 0) {
        op->step = TX_COMMIT;
        unit_begin(c, op, 1);
        unit_end(c, send_prepared(c, ST_COMMIT, NULL));
        return;
    }
    op->nparams = 2;
    op->pv[0] = ids;
    op->pl[0] = (int)ilen;
    op->pf[0] = 0;
    op->pv[1] = rcp;
    op->pl[1] = (int)rlen;
    op->pf[1] = 0;
    op->step = TX_MARK;
    unit_begin(c, op, 2);
    unit_end(c, send_prepared(c, ST_MARK, op) && send_prepared(c, ST_COMMIT, NULL));
}

static void tx_unit_done(struct pg_conn *c, struct pg_op *op)
{
    const char *what = stmt_defs[ST_CLAIM].name;

    if (op->step == TX_ROLLBACK) {
        if (op->aborted) {
            conn_break(c, "ROLLBACK failed");
            tx_end(c, op, op->tx_status, 0);
            return;
        }
        tx_end(c, op, op->tx_status, 0);
        return;
    }
    if (op->aborted) {
        tx_rollback(c, op, unit_error(c, op, what));
        return;
    }
    switch (op->step) {
    case TX_CLAIM:
        tx_claimed(c, op);
        return;
    case TX_MARK: {
        int64_t n = 0;
        const char *tuples = op->res[0] ? PQcmdTuples(op->res[0]) : "";
        const char *commit = op->res[1] ? PQcmdStatus(op->res[1]) : "";
        if (!parse_i64(tuples, (int)strlen(tuples), &n) || strcmp(commit, "COMMIT") != 0) {
            db__log(LOG_ERROR, "postgres", c->pg->label, NULL,
                    "%s: unexpected answer to UPDATE/COMMIT (%s, %s)", what, tuples, commit);
            tx_end(c, op, DB_ERROR, 0);
            return;
        }
        tx_end(c, op, DB_OK, n);
        return;
    }
    case TX_COMMIT:
        tx_end(c, op, DB_OK, 0);
        return;
    case TX_ROLLBACK:
        break;
    }
}

/* ---- reading a connection ---- */

/* The Sync of op's unit arrived: everything it sent is final. */
static void unit_done(struct pg_conn *c, struct pg_op *op)
{
    struct db_pg *pg = c->pg;
    enum db_status st = DB_ERROR;

    if (op->kind == OP_PROCESS) {
        tx_unit_done(c, op);
        return;
    }
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
    if (op->aborted) {
        op_finish(pg, op, unit_error(c, op, stmt_defs[op->stmt].name));
        return;
    }
    if (stmt_defs[op->stmt].decode(c, op, &st))
        op_finish(pg, op, st);
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
            tx_begin(c);
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

/* ---- the operations of db.h ---- */

/* Queue op (or fail it at once when nothing can serve it) and send what can be sent. */
static void submit(struct db_pg *pg, struct pg_op *op)
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

static struct pg_op *simple_op(struct db_pg *pg, enum op_kind kind, enum stmt_id stmt,
                               db_done_fn done, void *ctx)
{
    struct pg_op *op = op_new(pg, kind, ctx);
    op->stmt = stmt;
    op->done = done;
    return op;
}

/* Arm the handle's alarm for the earliest ping deadline, or disarm it. */
static void ping_arm(struct db_pg *pg)
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

static void pg_ping(struct db *db, int timeout_ms, db_done_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = simple_op(pg, OP_QUERY, ST_PING, done, ctx);
    params_reserve(op, 0);
    if (timeout_ms > 0 && (uint64_t)timeout_ms < pg->timeout_ms) {
        /* listed before submit, which may finish (and recycle) op at once */
        op->ping_deadline_ms = now_ms(pg) + (uint64_t)timeout_ms;
        op->next_ping = pg->pings;
        pg->pings = op;
        ping_arm(pg);
    }
    submit(pg, op);
}

/* Append s as a quoted element of a text-form array: '"' with '"' and '\\' escaped. */
static size_t array_elem(char *out, const char *s, size_t n)
{
    size_t k = 0;
    out[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            out[k++] = '\\';
        out[k++] = s[i];
    }
    out[k++] = '"';
    return k;
}

/* Parameter `which` (0 names, 1 emails) of a batch: the members' values as '{"..",".."}'. */
static void param_array(struct pg_op *batch, int which)
{
    int i = batch->nparams++;
    char *dst = batch->pbase + batch->plen;
    size_t k = 0;

    dst[k++] = '{';
    for (const struct pg_op *m = batch->members; m; m = m->next_member) {
        if (m != batch->members)
            dst[k++] = ',';
        k += array_elem(dst + k, m->pv[which], (size_t)m->pl[which]);
    }
    dst[k++] = '}';
    dst[k] = '\0';
    batch->pv[i] = dst;
    batch->pl[i] = (int)k;
    batch->pf[i] = 0;
    batch->plen += k + 1;
}

/*
 * Send the gathering batch when fewer than CREATE_BATCHES_IN_FLIGHT are
 * out, or when it is full. Under load the creates that arrive while a batch
 * commits all go out in the next one: group commit without a timer, and no
 * wait at all when the database is idle.
 */
static void batch_flush(struct db_pg *pg)
{
    struct pg_op *batch = pg->batch_open;

    if (!batch || (pg->batches_in_flight >= CREATE_BATCHES_IN_FLIGHT &&
                   batch->max < CREATE_BATCH_MAX && !pg->closing))
        return;
    pg->batch_open = NULL;
    size_t bytes = 0;
    for (const struct pg_op *m = batch->members; m; m = m->next_member)
        bytes += 2 * ((size_t)m->pl[0] + (size_t)m->pl[1]) + 6; /* escapes, quotes, commas */
    params_reserve(batch, bytes + 6);
    param_array(batch, 0);
    param_array(batch, 1);
    batch->counted = true;
    pg->batches_in_flight++;
    submit(pg, batch);
}

static void pg_user_create(struct db *db, struct str name, struct str email, db_user_fn row,
                           db_done_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = simple_op(pg, OP_QUERY, ST_USER_INSERT, done, ctx);
    op->user_row = row;
    params_reserve(op, name.len + email.len);
    param_str(op, name);
    param_str(op, email);

    enter(pg);
    struct pg_op *batch = pg->batch_open;
    if (!batch) {
        batch = pg->batch_open = op_new(pg, OP_CREATE_BATCH, NULL);
        batch->stmt = ST_USER_INSERT;
    }
    if (batch->members_tail)
        batch->members_tail->next_member = op;
    else
        batch->members = op;
    batch->members_tail = op;
    batch->max++; /* members */
    batch_flush(pg);
    leave(pg);
}

/* Every read of queries.def: its int64 parameters in binary, its decoder dec_read. */
static void pg_read(struct db *db, const struct db_read *r)
{
    struct db_pg *pg = to_pg(db);
    const struct db_query_def *q = &db__queries[r->q];
    struct pg_op *op = simple_op(pg, OP_QUERY, (enum stmt_id)r->q, r->done, r->ctx);
    op->user_row = r->user_row;
    op->order_row = r->order_row;
    op->count_done = r->count_done;
    params_reserve(op, (size_t)q->nargs * 8);
    for (int i = 0; i < q->nargs; i++)
        param_i64(op, r->args[i]);
    submit(pg, op);
}

static void pg_user_update(struct db *db, int64_t id, struct str name, struct str email,
                           db_user_fn row, db_done_fn done, void *ctx)
{
    if (!name.ptr && !email.ptr) {
        /* nothing to change: answer with the current row, as SQLite does */
        pg_read(db,
                &(const struct db_read){
                    .q = DB_Q_user_get, .args = {id}, .user_row = row, .done = done, .ctx = ctx});
        return;
    }
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = simple_op(pg, OP_QUERY, ST_USER_UPDATE, done, ctx);
    op->user_row = row;
    params_reserve(op, 8 + (name.ptr ? name.len : 0) + (email.ptr ? email.len : 0));
    param_i64(op, id);
    param_str(op, name);
    param_str(op, email);
    submit(pg, op);
}

static void pg_user_delete(struct db *db, int64_t id, db_done_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = simple_op(pg, OP_QUERY, ST_USER_DELETE, done, ctx);
    params_reserve(op, 8);
    param_i64(op, id);
    submit(pg, op);
}

static void pg_order_create(struct db *db, const struct db_order_new *o, db_order_fn row,
                            db_done_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = simple_op(pg, OP_QUERY, ST_ORDER_CREATE, done, ctx);
    bool keyed = o->idempotency_key.ptr != NULL;
    op->order_row = row;
    params_reserve(op, (size_t)5 * 8 + o->items.len +
                           (keyed ? o->idempotency_key.len + o->request_hash.len : 0));
    param_i64(op, o->user_id);
    param_str(op, o->items.ptr ? o->items : STR_LIT(""));
    param_i64(op, o->subtotal_cents);
    param_i64(op, o->discount_cents);
    param_i64(op, o->tax_cents);
    param_i64(op, o->total_cents);
    param_str(op, keyed ? o->idempotency_key : STR_NULL);
    param_str(op, keyed ? o->request_hash : STR_NULL);
    submit(pg, op);
}

static void pg_orders_process(struct db *db, int max, db_sign_fn sign, db_count_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = op_new(pg, OP_PROCESS, ctx);
    op->stmt = ST_CLAIM;
    op->sign = sign;
    op->count_done = done;
    if (max <= 0) {
        /* nothing to claim: no transaction either */
        op_finish(pg, op, DB_OK);
        return;
    }
    op->max = max > PROCESS_MAX ? PROCESS_MAX : max;
    submit(pg, op);
}

void db__pg_replica_lag(struct db *db, db_count_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = op_new(pg, OP_QUERY, ctx);
    op->stmt = ST_REPLICA_LAG;
    op->count_done = done;
    params_reserve(op, 0);
    submit(pg, op);
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
static void pg_tick(struct db *db)
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

static void pg_stats(const struct db *db, struct db_stats *out)
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
static void pg_close(struct db *db)
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

/* PostgreSQL's text of each read, for db__ops_check. */
static const char *const pg_query_sql[DB_Q_COUNT] = {
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql) [DB_Q_##name] = (pg_sql),
#include "db/queries.def"
#undef DB_QUERY
};

const struct db_ops db__pg_ops = {
    .name = "postgres",
    .query_sql = pg_query_sql,
    .read = pg_read,
    .close = pg_close,
    .ping = pg_ping,
    .user_create = pg_user_create,
    .user_update = pg_user_update,
    .user_delete = pg_user_delete,
    .stats = pg_stats,
    .tick = pg_tick,
    .order_create = pg_order_create,
    .orders_process = pg_orders_process,
};

struct db *db__pg_open(const char *conninfo, const struct db_config *cfg, struct loop *loop)
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
    pg->base.ops = &db__pg_ops;
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

/* ---- db_migrate: blocking, at start-up ---- */

/* Run sql; 0 when it returned `want`, else -1 after logging. */
static int exec_want(PGconn *c, const char *label, const char *what, const char *sql,
                     ExecStatusType want)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) == want) {
        PQclear(r);
        return 0;
    }
    char msg[WHY_MAX];
    one_line(msg, sizeof msg, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    db__log(LOG_ERROR, "postgres", label, msg, "%s failed: %s", what, msg);
    PQclear(r);
    return -1;
}

/* SELECT with one integer parameter: 1 row found, 0 none, -1 error (logged). */
static int query_has_row(PGconn *c, const char *label, const char *what, const char *sql, int v)
{
    char num[16];
    const char *vals[1] = {num};
    snprintf(num, sizeof num, "%d", v);
    PGresult *r = PQexecParams(c, sql, 1, NULL, vals, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        rc = PQntuples(r) > 0;
    } else if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        rc = 0;
    } else {
        char msg[WHY_MAX];
        one_line(msg, sizeof msg, PQresultErrorMessage(r));
        db__log(LOG_ERROR, "postgres", label, msg, "%s failed: %s", what, msg);
    }
    PQclear(r);
    return rc;
}

static int apply_migration(PGconn *c, const char *label, const struct pg_migration *m)
{
    int have;

    if (exec_want(c, label, "BEGIN (migrations)", "BEGIN", PGRES_COMMAND_OK))
        return -1;
    have = query_has_row(c, label, "read schema_migrations",
                         "SELECT 1 FROM schema_migrations WHERE version = $1", m->version);
    if (have < 0)
        goto out_rollback;
    if (!have) {
        if (exec_want(c, label, m->name, m->sql, PGRES_COMMAND_OK))
            goto out_rollback;
        if (query_has_row(c, label, "record migration",
                          "INSERT INTO schema_migrations (version) VALUES ($1)", m->version) < 0)
            goto out_rollback;
    }
    if (exec_want(c, label, "COMMIT (migrations)", "COMMIT", PGRES_COMMAND_OK))
        goto out_rollback;
    if (!have)
        db__log(LOG_INFO, "postgres", label, NULL, "applied migration %d (%s)", m->version,
                m->name);
    return 0;

out_rollback:
    PQclear(PQexec(c, "ROLLBACK"));
    return -1;
}

int db__pg_migrate(const char *conninfo, const struct db_config *cfg)
{
    char label[LABEL_MAX];
    const char *vals[ARRAY_LEN(conn_keys)];
    int rc = -1;

    (void)cfg;
    for (size_t i = 0; i < ARRAY_LEN(pg_migrations); i++) {
        if (pg_migrations[i].version != (int)i + 1) {
            log_error("db postgres: migration table out of order at index %zu", i);
            return -1;
        }
    }
    if (make_label(conninfo, label, sizeof label)) {
        log_error("db postgres: BRISK_DATABASE_URL is not a valid PostgreSQL connection string");
        return -1;
    }
    conn_values(conninfo, NULL, NULL, NULL, vals);
    PGconn *c = PQconnectdbParams(conn_keys, vals, 1);
    if (!c)
        log_fatal("out of memory");
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[WHY_MAX];
        one_line(msg, sizeof msg, PQerrorMessage(c));
        db__log(LOG_ERROR, "postgres", label, msg, "cannot connect: %s", msg);
        goto out_finish;
    }
    PQsetNoticeReceiver(c, on_notice, label);
    /* Session lock: a second process waits here until the first is done (or gone). */
    if (exec_want(c, label, "taking the migration lock",
                  "SELECT pg_advisory_lock(" PG_MIGRATION_LOCK ")", PGRES_TUPLES_OK))
        goto out_finish;
    if (exec_want(c, label, "create schema_migrations",
                  "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
                  "    version integer PRIMARY KEY,\n"
                  "    applied_at timestamptz NOT NULL DEFAULT now()\n"
                  ")",
                  PGRES_COMMAND_OK))
        goto out_unlock;
    for (size_t i = 0; i < ARRAY_LEN(pg_migrations); i++) {
        if (apply_migration(c, label, &pg_migrations[i]))
            goto out_unlock;
    }
    PGresult *r = PQexec(c, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    int64_t latest = 0;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && value_i64(r, 0, 0, &latest) &&
        latest > (int64_t)ARRAY_LEN(pg_migrations))
        db__log(LOG_WARN, "postgres", label, NULL,
                "schema version %" PRId64 " is newer than this build knows (%zu)", latest,
                ARRAY_LEN(pg_migrations));
    PQclear(r);
    rc = 0;

out_unlock:
    PQclear(PQexec(c, "SELECT pg_advisory_unlock(" PG_MIGRATION_LOCK ")"));
out_finish:
    PQfinish(c);
    return rc;
}
