/*
 * db.h - the storage interface handlers call.
 *
 * Handlers never see SQL or a driver. Each event-loop thread owns one
 * struct db (its own SQLite connection, or later its own PostgreSQL
 * connections driven by that loop's epoll). Every operation is asynchronous
 * in form: it reports rows through `row` and finishes by calling `done`
 * exactly once. A backend may call them before the operation function returns
 * (SQLite does: its calls block briefly and finish inline) or later from the
 * same loop thread (PostgreSQL). Row data passed to `row` (struct str slices)
 * is valid only during that call: copy what must outlive it.
 */
#ifndef BRISK_DB_H
#define BRISK_DB_H

#include <stdbool.h>
#include <stdint.h>

#include "base/str.h"

struct db;
struct loop;

enum db_status {
    DB_OK,
    DB_NOT_FOUND, /* no such row (order create: no such user) */
    DB_CONFLICT,  /* unique email taken */
    DB_REPLAYED, /* order create: same Idempotency-Key and request seen before; row = first order */
    DB_KEY_REUSED,   /* order create: same Idempotency-Key with another request */
    DB_HAS_CHILDREN, /* delete refused: the user has orders */
    DB_UNAVAILABLE,  /* database down or busy past the timeout: answer 503 */
    DB_ERROR         /* anything else: answer 500, already logged */
};

struct db_user {
    int64_t id;
    struct str name;
    struct str email;
    int64_t created_at; /* unix seconds, UTC */
};

typedef void (*db_user_fn)(void *ctx, const struct db_user *u);
typedef void (*db_done_fn)(void *ctx, enum db_status st);

struct db_config {
    const char *url; /* "sqlite:PATH" (or a plain path), postgres://... or a libpq string */
    int busy_timeout_ms;
    int pool_size; /* PostgreSQL connections per handle, 1..64; 0: the default (2) */
    /* PostgreSQL read replicas for the plain reads: NULL or "" for none, else
     * postgres:// URLs separated by commas (or one libpq key=value string) */
    const char *read_url;
    int replica_max_lag_ms; /* a replica further behind is skipped; 0: 5000 */
};

#define DB_REPLICAS_MAX 8

/*
 * Check a read-replica list for primary_url: NULL when every entry is a valid
 * PostgreSQL URL and the primary is PostgreSQL too, else a short message
 * (never containing credentials).
 */
const char *db_read_url_check(const char *primary_url, const char *read_url);

/*
 * Check that url names a supported backend, without opening anything.
 * Returns NULL when it does, else a short message (never containing the
 * URL's credentials). Used to reject a bad BRISK_DATABASE_URL at start-up.
 */
const char *db_url_check(const char *url);

/*
 * Open the database named by cfg->url, create its directory/file if needed and
 * apply pending migrations. Called once at start-up before serving. Returns 0,
 * or -1 after logging a clear error line (never containing a password).
 */
int db_migrate(const struct db_config *cfg);

/*
 * Open one per-thread handle whose I/O is driven by `loop` (PostgreSQL
 * registers its sockets there; SQLite ignores it). Returns NULL after logging
 * on failure. The handle must only be used by the thread running that loop.
 */
struct db *db_open(const struct db_config *cfg, struct loop *loop);

/*
 * Housekeeping, called about once per second from the owning loop:
 * reconnects with backoff, fails operations stuck past their deadline.
 */
void db_tick(struct db *db);

/*
 * Run the work a backend defers to the end of a loop turn. SQLite hands the
 * writes submitted during the turn to its writer thread, which commits them
 * (with whatever else is waiting) in one transaction - one fsync for all -
 * and answers them later through the loop. The owning loop calls this after
 * each batch of events; a thread that submits writes outside such a loop
 * (a background worker) calls it after submitting. Cheap when nothing waits.
 */
void db_flush(struct db *db);

/* Close a handle opened by db_open; NULL is accepted. */
void db_close(struct db *db);

/* Backend name for logs and metrics: "sqlite" or "postgres". */
const char *db_backend_name(const struct db *db);

/*
 * Readiness probe: done(ctx, DB_OK) when the database answers a query;
 * DB_UNAVAILABLE at once while it is known to be down, or after timeout_ms
 * (> 0) without an answer - a hung server must not hold the probe for the
 * whole busy timeout. SQLite answers inline (a read WAL never blocks).
 */
void db_ping(struct db *db, int timeout_ms, db_done_fn done, void *ctx);

/*
 * Users. name/email are validated by the caller. On success `row` is called
 * with the stored user, then done(DB_OK).
 *   create: DB_CONFLICT when the email is taken (case-insensitively).
 *   update: name or email with ptr == NULL are left unchanged; DB_NOT_FOUND, DB_CONFLICT.
 *   delete: no row callback; DB_NOT_FOUND, DB_HAS_CHILDREN.
 * The reads (db_user_get, db_user_list, ...) are below, generated from queries.def.
 */
void db_user_create(struct db *db, struct str name, struct str email, db_user_fn row,
                    db_done_fn done, void *ctx);
void db_user_update(struct db *db, int64_t id, struct str name, struct str email, db_user_fn row,
                    db_done_fn done, void *ctx);
void db_user_delete(struct db *db, int64_t id, db_done_fn done, void *ctx);

/* ---- orders ---- */

struct db_order {
    int64_t id;
    int64_t user_id;
    bool processed;
    struct str items; /* the stored lines: a JSON array in the canonical form the app wrote */
    int64_t subtotal_cents;
    int64_t discount_cents;
    int64_t tax_cents;
    int64_t total_cents;
    struct str receipt;   /* 64 lowercase hex chars; ptr NULL while pending */
    int64_t created_at;   /* unix seconds */
    int64_t processed_at; /* unix seconds; 0 while pending */
};

struct db_order_new {
    int64_t user_id;
    struct str items; /* canonical JSON array, stored as is */
    int64_t subtotal_cents;
    int64_t discount_cents;
    int64_t tax_cents;
    int64_t total_cents;
    struct str idempotency_key; /* ptr NULL: none */
    struct str request_hash;    /* with a key: hex SHA-256 identifying the request body */
};

typedef void (*db_order_fn)(void *ctx, const struct db_order *o);

/*
 * Orders.
 *   create: stores a pending order. DB_OK + row; DB_NOT_FOUND when the user
 *           does not exist; with an idempotency key already stored:
 *           DB_REPLAYED + row of the first order when request_hash matches,
 *           DB_KEY_REUSED otherwise. Concurrent creates with one key store
 *           exactly one order.
 */
void db_order_create(struct db *db, const struct db_order_new *o, db_order_fn row, db_done_fn done,
                     void *ctx);

/*
 * Background processing, exactly once. Claims up to max pending orders (rows
 * no other transaction holds: FOR UPDATE SKIP LOCKED on PostgreSQL, the single
 * writer lock on SQLite), calls sign() for each to fill receipt (64 hex chars
 * + NUL; return -1 to leave that order pending), marks the signed ones
 * processed with processed_at = now, and commits - all in one transaction, so
 * a process killed midway leaves every claimed order pending for the next
 * claimer and no order is ever marked twice. done(ctx, status, n_processed).
 * sign() may run on another thread (SQLite's writer) while the caller's loop
 * waits for done: it must touch nothing but its ctx and thread-safe state.
 */
typedef int (*db_sign_fn)(void *ctx, const struct db_order *o, char receipt[65]);
typedef void (*db_count_fn)(void *ctx, enum db_status st, int64_t n);
void db_orders_process(struct db *db, int max, db_sign_fn sign, db_count_fn done, void *ctx);

/*
 * The plain reads: one function per row of db/queries.def, which gives each
 * its parameters, its row type and when it answers DB_NOT_FOUND, e.g.
 *   void db_user_get(struct db *db, int64_t id, db_user_fn row, db_done_fn done, void *ctx);
 *   void db_order_list(struct db *db, int64_t id, int64_t after, int limit, db_order_fn row,
 *                      db_done_fn done, void *ctx);
 *   void db_orders_pending(struct db *db, db_count_fn done, void *ctx);
 * USER and ORDER reads call `row` once per row, then done(DB_OK); COUNT reads
 * answer done(ctx, DB_OK, n). Lists return rows with id > after, ascending, up
 * to limit; a limit <= 0 reads none (a PARENT read still checks its parent).
 */
#define DB_PARAMS_NONE
#define DB_PARAMS_ID , int64_t id
#define DB_PARAMS_PAGE , int64_t after, int limit
#define DB_PARAMS_ID_PAGE , int64_t id, int64_t after, int limit
#define DB_CALLBACKS_USER db_user_fn row, db_done_fn done
#define DB_CALLBACKS_ORDER db_order_fn row, db_done_fn done
#define DB_CALLBACKS_COUNT db_count_fn done
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql)                               \
    void db_##name(struct db *db DB_PARAMS_##params, DB_CALLBACKS_##row, void *ctx);
#include "db/queries.def"
#undef DB_QUERY

/*
 * Pool gauges for /metrics: connections open and operations in flight on
 * this handle, and how often a connection was re-established after one was
 * lost or failed (a counter; the first connect of each is not counted).
 */
struct db_stats {
    int connections;
    int busy;
    uint64_t reconnects;
    int64_t replica_lag_ms; /* the most a reachable replica is behind; -1: none measured */
};
void db_stats(const struct db *db, struct db_stats *out);

#endif
