/*
 * db_int.h - what the storage backends share with db.c; handlers never include it.
 *
 * db.c picks a backend from the URL scheme and forwards every call of db.h
 * through the backend's `struct db_ops`. A backend handle embeds `struct db`
 * as its first member named `base` (lwan's `struct db_mysql { struct db base; }`)
 * and recovers itself with container_of. Names with a double underscore are
 * visible across the db files for technical reasons only: private by contract.
 */
#ifndef BRISK_DB_INT_H
#define BRISK_DB_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/compiler.h"
#include "base/log.h"
#include "base/str.h"
#include "db/db.h"

/* ---- the plain reads of queries.def ---- */

enum db_query {
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql) DB_Q_##name,
#include "db/queries.def"
#undef DB_QUERY
    DB_Q_COUNT
};

enum db_row_type { DB_ROW_USER, DB_ROW_ORDER, DB_ROW_COUNT };
enum db_rule { DB_RULE_ONE, DB_RULE_ANY, DB_RULE_PARENT }; /* see queries.def */
enum db_where { DB_WHERE_REPLICA, DB_WHERE_PRIMARY };

#define DB_ARGS_MAX 3 /* the most parameters a read has (ID_PAGE) */
/* Parameters and result columns by queries.def's names, for the backends' statement tables. */
#define DB_NARGS_NONE 0
#define DB_NARGS_ID 1
#define DB_NARGS_PAGE 2
#define DB_NARGS_ID_PAGE 3
#define DB_NCOLS_USER 4   /* SQ_USER_COLS, PG_USER_COLS */
#define DB_NCOLS_ORDER 11 /* SQ_ORDER_COLS, PG_ORDER_COLS */
#define DB_NCOLS_COUNT 1

/* What queries.def says of a read, besides its SQL (which stays in its backend). */
struct db_query_def {
    const char *name; /* "user_get": statement and log name */
    enum db_row_type row;
    enum db_rule rule;
    enum db_where where;
    int nargs; /* int64 parameters, bound as ?1.. / $1.. */
    int ncols; /* result columns: the row type's */
};
extern const struct db_query_def db__queries[DB_Q_COUNT];

/*
 * One read as the db_<name> function received it: the backend's `read` gets
 * it borrowed (copy what outlives the call). Exactly one of done/count_done
 * is set, by row type.
 */
struct db_read {
    enum db_query q;
    int64_t args[DB_ARGS_MAX];
    db_user_fn user_row;
    db_order_fn order_row;
    db_done_fn done;
    db_count_fn count_done;
    void *ctx;
};

/* One decoded row of a read, whatever its type. Text points into the driver's result. */
struct db_row {
    struct db_user user;
    struct db_order order;
    int64_t count;
};

/* Hand one decoded row to r's row callback (USER, ORDER; COUNT keeps it for db__read_done). */
void db__read_row(const struct db_read *r, const struct db_row *row);

/* Answer r: done(ctx, st), or count_done(ctx, st, st == DB_OK ? count : 0). */
void db__read_done(const struct db_read *r, enum db_status st, int64_t count);

/*
 * One backend. Every entry is required but tick and flush; db__ops_check
 * says so at start-up. Operations keep the contract of the matching db.h
 * function: `done` is called exactly once, from the loop thread owning the
 * handle, possibly before the function returns.
 */
struct db_ops {
    const char *name; /* db_backend_name(): "sqlite" or "postgres" */
    /* [DB_Q_COUNT]: the backend's SQL of each read (NULL: missing); NULL for a wrapper
     * (replica.c) that forwards reads to other handles */
    const char *const *query_sql;
    /* every read of queries.def: r is borrowed for the call */
    void (*read)(struct db *db, const struct db_read *r);
    void (*close)(struct db *db);
    void (*ping)(struct db *db, int timeout_ms, db_done_fn done, void *ctx);
    void (*user_create)(struct db *db, struct str name, struct str email, db_user_fn row,
                        db_done_fn done, void *ctx);
    void (*user_update)(struct db *db, int64_t id, struct str name, struct str email,
                        db_user_fn row, db_done_fn done, void *ctx);
    void (*user_delete)(struct db *db, int64_t id, db_done_fn done, void *ctx);
    void (*stats)(const struct db *db, struct db_stats *out);
    void (*tick)(struct db *db);  /* may be NULL */
    void (*flush)(struct db *db); /* may be NULL */
    void (*order_create)(struct db *db, const struct db_order_new *o, db_order_fn row,
                         db_done_fn done, void *ctx);
    void (*orders_process)(struct db *db, int max, db_sign_fn sign, db_count_fn done, void *ctx);
};

/*
 * Check that ops has every required operation and SQL for every read of
 * queries.def. Returns 0, or -1 after logging one line naming the backend
 * and the first missing piece ("... refusing to start"): db_migrate and
 * db_open fail then, and brisk exits with status 1.
 */
int db__ops_check(const struct db_ops *ops);

/* The backends' operation tables (checked by db_migrate before anything is opened). */
extern const struct db_ops db__sqlite_ops;
extern const struct db_ops db__pg_ops;

/*
 * A log line about one database: "db BACKEND TARGET: TEXT" (TARGET is a
 * file path or host:port/dbname, never a URL with its password); JSON lines
 * also carry the fields "db" (the backend), "target" and, when not NULL,
 * "error" (the driver's message).
 */
void db__log(enum log_level level, const char *backend, const char *target, const char *error,
             const char *fmt, ...) PRINTF_FMT(5, 6);

/* The base every backend handle starts with. */
struct db {
    const struct db_ops *ops;
};

/*
 * SQLite backend (sqlite.c). `path` is the file name with any "sqlite:" prefix
 * already removed (NUL-terminated, owned by the caller, copied if kept).
 * db__sqlite_migrate returns 0 or -1 after logging; db__sqlite_open returns a
 * handle to free with db_close, or NULL after logging. With a loop, writes
 * run on the handle's writer thread and are answered through that loop;
 * without one (tools, unit tests) they run inline (see sqlite.c).
 */
int db__sqlite_migrate(const char *path, const struct db_config *cfg);
struct db *db__sqlite_open(const char *path, const struct db_config *cfg, struct loop *loop);

/*
 * PostgreSQL backend (pg.c, pg_ops.c, pg_migrate.c; db/pg_int.h). `conninfo`
 * is the URL or libpq string as given. Migrations run blocking at start-up
 * under an advisory lock; handles are non-blocking and driven by `loop`.
 */
int db__pg_migrate(const char *conninfo, const struct db_config *cfg);
struct db *db__pg_open(const char *conninfo, const struct db_config *cfg, struct loop *loop);

/*
 * A PostgreSQL handle's server as a streaming replica: done(ctx, DB_OK, ms)
 * with how far its replay is behind (0 when caught up or not a replica).
 */
void db__pg_replica_lag(struct db *db, db_count_fn done, void *ctx);

/*
 * Read replicas (replica.c): a handle that sends the plain reads of db.h to
 * one of `replicas` (round robin among those up and within max_lag_ms, the
 * lag measured each db_tick) and everything else to `primary`. A by-id read
 * the replica does not find, or one that fails there, is asked of the primary
 * before it is answered. Takes ownership of the handles (closed with it).
 */
struct db *db__replica_open(struct db *primary, struct db **replicas, int n, int max_lag_ms);

#endif
