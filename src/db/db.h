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

enum db_status {
    DB_OK,
    DB_NOT_FOUND,   /* no such row */
    DB_CONFLICT,    /* unique email taken */
    DB_HAS_CHILDREN, /* delete refused: the user has orders */
    DB_UNAVAILABLE, /* database down or busy past the timeout: answer 503 */
    DB_ERROR        /* anything else: answer 500, already logged */
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
    const char *url; /* "sqlite:PATH" (or a plain path); postgres:// later */
    int busy_timeout_ms;
};

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
 * Open one per-thread handle. Returns NULL after logging on failure.
 * The handle must only be used by the thread that opened it.
 */
struct db *db_open(const struct db_config *cfg);

/* Close a handle opened by db_open; NULL is accepted. */
void db_close(struct db *db);

/* Backend name for logs and metrics: "sqlite" or "postgres". */
const char *db_backend_name(const struct db *db);

/* Readiness probe: done(ctx, DB_OK) when the database answers. */
void db_ping(struct db *db, db_done_fn done, void *ctx);

/*
 * Users. name/email are validated by the caller. On success `row` is called
 * with the stored user, then done(DB_OK).
 *   create: DB_CONFLICT when the email is taken (case-insensitively).
 *   get:    DB_NOT_FOUND.
 *   update: name or email with ptr == NULL are left unchanged; DB_NOT_FOUND, DB_CONFLICT.
 *   delete: no row callback; DB_NOT_FOUND, DB_HAS_CHILDREN.
 *   list:   up to `limit` users with id > after, ascending; row per user, then DB_OK.
 */
void db_user_create(struct db *db, struct str name, struct str email, db_user_fn row,
                    db_done_fn done, void *ctx);
void db_user_get(struct db *db, int64_t id, db_user_fn row, db_done_fn done, void *ctx);
void db_user_update(struct db *db, int64_t id, struct str name, struct str email, db_user_fn row,
                    db_done_fn done, void *ctx);
void db_user_delete(struct db *db, int64_t id, db_done_fn done, void *ctx);
void db_user_list(struct db *db, int64_t after, int limit, db_user_fn row, db_done_fn done,
                  void *ctx);

/* Pool gauges for /metrics: connections open and operations in flight on this handle. */
struct db_stats {
    int connections;
    int busy;
};
void db_stats(const struct db *db, struct db_stats *out);

#endif
