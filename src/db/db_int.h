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

/*
 * One backend. Every entry is required. Operations keep the contract of the
 * matching db.h function: `done` is called exactly once, from the loop thread
 * owning the handle, possibly before the function returns.
 */
struct db_ops {
    const char *name; /* db_backend_name(): "sqlite" or "postgres" */
    void (*close)(struct db *db);
    void (*ping)(struct db *db, int timeout_ms, db_done_fn done, void *ctx);
    void (*user_create)(struct db *db, struct str name, struct str email, db_user_fn row,
                        db_done_fn done, void *ctx);
    void (*user_get)(struct db *db, int64_t id, db_user_fn row, db_done_fn done, void *ctx);
    void (*user_update)(struct db *db, int64_t id, struct str name, struct str email,
                        db_user_fn row, db_done_fn done, void *ctx);
    void (*user_delete)(struct db *db, int64_t id, db_done_fn done, void *ctx);
    void (*user_list)(struct db *db, int64_t after, int limit, db_user_fn row, db_done_fn done,
                      void *ctx);
    void (*stats)(const struct db *db, struct db_stats *out);
    void (*tick)(struct db *db);  /* may be NULL */
    void (*flush)(struct db *db); /* may be NULL */
    void (*order_create)(struct db *db, const struct db_order_new *o, db_order_fn row,
                         db_done_fn done, void *ctx);
    void (*order_get)(struct db *db, int64_t id, db_order_fn row, db_done_fn done, void *ctx);
    void (*order_list)(struct db *db, int64_t user_id, int64_t after, int limit, db_order_fn row,
                       db_done_fn done, void *ctx);
    void (*orders_process)(struct db *db, int max, db_sign_fn sign, db_count_fn done, void *ctx);
    void (*orders_pending)(struct db *db, db_count_fn done, void *ctx);
};

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
 * PostgreSQL backend (pg.c). `conninfo` is the URL or libpq string as given.
 * Migrations run blocking at start-up under an advisory lock; handles are
 * non-blocking and driven by `loop`.
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
