/*
 * sqlite.c - the SQLite backend of db.h.
 *
 * Each event-loop thread opens its own connection (db_open) in SQLite's
 * multi-thread mode (SQLITE_OPEN_NOMUTEX): a connection is never shared, so
 * SQLite need not lock it. Every statement is prepared once at open and reused
 * with sqlite3_reset + sqlite3_clear_bindings; each operation blocks for at
 * most the busy timeout and calls row() and done() before it returns - except
 * user creates, which wait for db_flush at the end of the loop turn and are
 * then committed together in one transaction: one fsync for all of them
 * (group commit) instead of one each.
 * Threads and processes share the file through SQLite's own locking: in WAL
 * mode readers run beside the one writer, and writers queue on busy_timeout.
 *
 * db_migrate creates the file (and one missing parent directory), switches it
 * to WAL and applies migrations_sqlite.h.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <sqlite3.h>

#include "base/buf.h"
#include "base/compiler.h"
#include "base/log.h"
#include "base/timefmt.h"
#include "db/db_int.h"
#include "db/migrations_sqlite.h"

#define DEFAULT_BUSY_TIMEOUT_MS 5000
/* one row: a user (name <= 800 bytes, email <= 254) or an order (items <= about 20 KiB) */
#define SCRATCH_MAX ((size_t)64 * 1024)
/* User creates committed in one transaction at most; more are flushed at once. */
#define CREATE_BATCH_MAX 256
/* Their names and emails (<= 1054 bytes each): bounds a batch grown by callbacks while flushing. */
#define CREATE_TEXT_MAX ((size_t)4 * 1024 * 1024)

_Static_assert(ARRAY_LEN(sqlite_migrations) > 0, "at least one migration");

enum stmt_id {
    ST_PING,
    ST_USER_INSERT,
    ST_USER_GET,
    ST_USER_UPDATE,
    ST_USER_DELETE,
    ST_USER_LIST,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_USER_EXISTS,
    ST_ORDER_BY_KEY,
    ST_ORDER_INSERT,
    ST_ORDER_GET,
    ST_ORDER_LIST,
    ST_PENDING_IDS,
    ST_ORDER_MARK,
    ST_PENDING_COUNT,
    ST_COUNT
};

#define USER_COLS "id, name, email, created_at"
#define ORDER_COLS                                                                                 \
    "id, user_id, status, items, subtotal_cents, discount_cents, tax_cents, total_cents, "         \
    "receipt, created_at, processed_at"
#define ORDER_NCOLS 11
#define PROCESS_MAX 10000 /* orders claimed by one orders_process call at most */

/*
 * Every statement of the serving path, with the parameter and column counts
 * the code below relies on; db_open checks them against SQLite's view.
 */
static const struct stmt_def {
    const char *name; /* also the operation name in log lines */
    const char *sql;
    int nparams;
    int ncols;
} stmt_defs[ST_COUNT] = {
    /* Reads a table, so the probe takes a read snapshot of the real file. */
    [ST_PING] = {"ping", "SELECT max(version) FROM schema_migrations", 0, 1},
    [ST_USER_INSERT] = {"user_create",
                        "INSERT INTO users (name, email) VALUES (?1, ?2) RETURNING " USER_COLS, 2,
                        4},
    [ST_USER_GET] = {"user_get", "SELECT " USER_COLS " FROM users WHERE id = ?1", 1, 4},
    /* A NULL parameter keeps the column: the caller passes only what changes. */
    [ST_USER_UPDATE] = {"user_update",
                        "UPDATE users SET name = coalesce(?2, name), email = coalesce(?3, email) "
                        "WHERE id = ?1 RETURNING " USER_COLS,
                        3, 4},
    [ST_USER_DELETE] = {"user_delete", "DELETE FROM users WHERE id = ?1", 1, 0},
    [ST_USER_LIST] = {"user_list",
                      "SELECT " USER_COLS " FROM users WHERE id > ?1 ORDER BY id LIMIT ?2", 2, 4},
    /* IMMEDIATE: take the write lock first, so check-then-write needs no retry. */
    [ST_BEGIN] = {"begin", "BEGIN IMMEDIATE", 0, 0},
    [ST_COMMIT] = {"commit", "COMMIT", 0, 0},
    [ST_ROLLBACK] = {"rollback", "ROLLBACK", 0, 0},
    [ST_USER_EXISTS] = {"user_exists", "SELECT 1 FROM users WHERE id = ?1", 1, 1},
    [ST_ORDER_BY_KEY] = {"order_by_key",
                         "SELECT " ORDER_COLS ", request_hash FROM orders "
                         "WHERE idempotency_key = ?1",
                         1, ORDER_NCOLS + 1},
    [ST_ORDER_INSERT] = {"order_create",
                         "INSERT INTO orders (user_id, items, subtotal_cents, discount_cents, "
                         "tax_cents, total_cents, idempotency_key, request_hash) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING " ORDER_COLS,
                         8, ORDER_NCOLS},
    [ST_ORDER_GET] = {"order_get", "SELECT " ORDER_COLS " FROM orders WHERE id = ?1", 1,
                      ORDER_NCOLS},
    [ST_ORDER_LIST] = {"order_list",
                       "SELECT " ORDER_COLS " FROM orders WHERE user_id = ?1 AND id > ?2 "
                       "ORDER BY id LIMIT ?3",
                       3, ORDER_NCOLS},
    /* Served by the partial index orders_pending_idx. */
    [ST_PENDING_IDS] = {"orders_process",
                        "SELECT id FROM orders WHERE status = 'pending' ORDER BY id LIMIT ?1", 1,
                        1},
    [ST_ORDER_MARK] = {"order_mark",
                       "UPDATE orders SET status = 'processed', receipt = ?2, "
                       "processed_at = " MIG_NOW_UTC " WHERE id = ?1 AND status = 'pending'",
                       2, 0},
    [ST_PENDING_COUNT] = {"orders_pending", "SELECT count(*) FROM orders WHERE status = 'pending'",
                          0, 1},
};

/* A user create waiting for db_flush; its text is copied into the batch. */
struct sq_create {
    size_t name_off, name_len, email_off, email_len; /* in the batch's text */
    db_user_fn row;
    db_done_fn done;
    void *ctx;
    enum db_status status; /* filled by the flush */
    int64_t id;
    int64_t created_at;
};

struct sq_batch {
    struct sq_create *v;
    size_t n, cap;
    struct buf text;
};

struct db_sqlite {
    struct db base; /* first: db.c sees only this */
    /* Two batches: creates made by the callbacks of a flush go to the other one. */
    struct sq_batch batch[2];
    int cur;             /* the batch creates are added to */
    bool flushing;       /* a flush is running: it takes the other batch when done */
    int busy_ms;         /* how long to wait for the write lock */
    uint64_t busy_since; /* when the current wait began (ns) */
    sqlite3 *conn;
    sqlite3_stmt *stmt[ST_COUNT];
    char *path;               /* for log lines; a file path holds no secret */
    int busy;                 /* 1 while an operation runs, row callbacks included */
    bool unavailable;         /* an outage was logged and nothing has succeeded since */
    unsigned long suppressed; /* outage errors not logged again since then */
    struct buf scratch;       /* copy of the one row of a create/get/update */
};

static struct db_sqlite *to_sqlite(struct db *db)
{
    return container_of(db, struct db_sqlite, base);
}

static const struct db_sqlite *to_sqlite_const(const struct db *db)
{
    return container_of(db, const struct db_sqlite, base);
}

static int busy_timeout_ms(const struct db_config *cfg)
{
    return cfg->busy_timeout_ms > 0 ? cfg->busy_timeout_ms : DEFAULT_BUSY_TIMEOUT_MS;
}

static char *dup_cstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (!p)
        log_fatal("out of memory");
    memcpy(p, s, n);
    return p;
}

/* strerror_r in whichever flavour the feature macros selected. */
static const char *errno_text(int e, char *buf, size_t cap)
{
#ifdef _GNU_SOURCE
    return strerror_r(e, buf, cap);
#else
    if (strerror_r(e, buf, cap) != 0)
        snprintf(buf, cap, "errno %d", e);
    return buf;
#endif
}

/* ---- connection helpers, shared by db_migrate and db_open ---- */

static sqlite3 *open_conn(const char *path, int flags, int busy_ms)
{
    sqlite3 *conn = NULL;
    int rc = sqlite3_open_v2(path, &conn, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        log_error("db sqlite %s: cannot open: %s", path,
                  conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rc));
        sqlite3_close(conn);
        return NULL;
    }
    sqlite3_extended_result_codes(conn, 1);
    sqlite3_busy_timeout(conn, busy_ms);
    return conn;
}

/* Run one or more statements that return nothing of interest. */
static int exec_sql(sqlite3 *conn, const char *path, const char *what, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(conn, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        log_error("db sqlite %s: %s failed: %s (code %d)", path, what,
                  err ? err : sqlite3_errstr(rc), rc);
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

/*
 * Run one statement (with ?1 = arg when it has a parameter) to its first row.
 * *out_row tells whether there was a row; *out_val (may be NULL) gets its first
 * column as an integer. Returns 0, or -1 after logging.
 */
static int query_i64(sqlite3 *conn, const char *path, const char *what, const char *sql,
                     int64_t arg, bool *out_row, int64_t *out_val)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(conn, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        goto out_log;
    if (sqlite3_bind_parameter_count(st) > 0) {
        rc = sqlite3_bind_int64(st, 1, arg);
        if (rc != SQLITE_OK)
            goto out_log;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto out_log;
    *out_row = rc == SQLITE_ROW;
    if (out_val)
        *out_val = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return 0;

out_log:
    log_error("db sqlite %s: %s failed: %s (code %d)", path, what, sqlite3_errmsg(conn), rc);
    sqlite3_finalize(st);
    return -1;
}

/*
 * Run a journal_mode pragma and put the resulting mode into out ("wal",
 * "delete", ...). Returns 0 or -1 after logging. Switching a new file to WAL
 * needs an exclusive lock that SQLite does not always wait for through the
 * busy handler (several processes opening one fresh file at once get
 * SQLITE_BUSY at once), so SQLITE_BUSY is retried here for up to busy_ms.
 */
static int journal_mode(sqlite3 *conn, const char *path, const char *sql, int busy_ms, char *out,
                        size_t cap)
{
    enum { RETRY_SLEEP_MS = 10 };
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(conn, sql, -1, &st, NULL);
    for (int waited = 0; rc == SQLITE_OK; waited += RETRY_SLEEP_MS) {
        rc = sqlite3_step(st);
        if ((rc & 0xff) != SQLITE_BUSY || waited >= busy_ms)
            break;
        sqlite3_reset(st);
        sqlite3_sleep(RETRY_SLEEP_MS);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_ROW) {
        log_error("db sqlite %s: %s failed: %s (code %d)", path, sql, sqlite3_errmsg(conn), rc);
        sqlite3_finalize(st);
        return -1;
    }
    const unsigned char *mode = sqlite3_column_text(st, 0);
    snprintf(out, cap, "%s", mode ? (const char *)mode : "?");
    sqlite3_finalize(st);
    return 0;
}

/* ---- db_migrate ---- */

/*
 * Create the directory that will hold the file if it is missing: one level
 * only (./data for ./data/brisk.db), so a mistyped path fails instead of
 * growing a directory tree. Returns 0 or -1 after logging.
 */
static int make_parent_dir(const char *path)
{
    char dir[PATH_MAX];
    char eb[128];
    const char *slash = strrchr(path, '/');

    /* ":memory:", "brisk.db", "/brisk.db" and URI file names need nothing. */
    if (!slash || slash == path || strncmp(path, "file:", 5) == 0)
        return 0;
    size_t n = (size_t)(slash - path);
    if (n >= sizeof dir) {
        log_error("db sqlite: database path is too long");
        return -1;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
    if (mkdir(dir, 0750) == 0) {
        log_info("db sqlite: created directory %s", dir);
        return 0;
    }
    if (errno == EEXIST)
        return 0; /* a file of that name makes the open fail with a clear message */
    log_error("db sqlite: cannot create directory %s: %s", dir, errno_text(errno, eb, sizeof eb));
    return -1;
}

static const char sql_create_schema_migrations[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
    "    version INTEGER PRIMARY KEY,\n"
    "    applied_at TEXT NOT NULL\n"
    ")";

/*
 * Apply migration m unless already recorded. The check and the apply share
 * one BEGIN IMMEDIATE transaction: it takes the write lock first, so a second
 * process starting at the same moment waits (busy timeout), then sees the
 * version recorded and skips it. Returns 0 or -1 after logging (rolled back).
 */
static int apply_migration(sqlite3 *conn, const char *path, const struct sqlite_migration *m)
{
    bool row = false;
    int64_t n = 0;

    if (exec_sql(conn, path, "BEGIN IMMEDIATE (migrations)", "BEGIN IMMEDIATE"))
        return -1;
    if (exec_sql(conn, path, "create schema_migrations", sql_create_schema_migrations))
        goto out_rollback;
    if (query_i64(conn, path, "read schema_migrations",
                  "SELECT count(*) FROM schema_migrations WHERE version = ?1", m->version, &row,
                  &n))
        goto out_rollback;
    if (n == 0) {
        if (exec_sql(conn, path, m->name, m->sql))
            goto out_rollback;
        if (query_i64(conn, path, "record migration",
                      "INSERT INTO schema_migrations (version, applied_at) "
                      "VALUES (?1, " MIG_NOW_UTC ")",
                      m->version, &row, NULL))
            goto out_rollback;
        if (query_i64(conn, path, "foreign_key_check", "PRAGMA foreign_key_check", 0, &row, NULL))
            goto out_rollback;
        if (row) {
            log_error("db sqlite %s: migration %d (%s) leaves foreign keys broken", path,
                      m->version, m->name);
            goto out_rollback;
        }
    }
    if (exec_sql(conn, path, "COMMIT (migrations)", "COMMIT"))
        goto out_rollback;
    if (n == 0)
        log_info("db sqlite %s: applied migration %d (%s)", path, m->version, m->name);
    return 0;

out_rollback:
    /* May fail when SQLite already rolled back on its own; nothing is left to undo then. */
    sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int db__sqlite_migrate(const char *path, const struct db_config *cfg)
{
    char mode[16];
    bool row = false;
    int64_t latest = 0;
    int rc = -1;

    for (size_t i = 0; i < ARRAY_LEN(sqlite_migrations); i++) {
        if (sqlite_migrations[i].version != (int)i + 1) {
            log_error("db sqlite: migration table out of order at index %zu", i);
            return -1;
        }
    }
    if (make_parent_dir(path))
        return -1;
    sqlite3 *conn =
        open_conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, busy_timeout_ms(cfg));
    if (!conn)
        return -1;
    /*
     * WAL is a property of the file and persists: set once here, every later
     * connection inherits it. foreign_keys stays OFF on this connection only,
     * so a migration may rebuild a table; apply_migration runs
     * foreign_key_check before each commit instead.
     */
    if (journal_mode(conn, path, "PRAGMA journal_mode = WAL", busy_timeout_ms(cfg), mode,
                     sizeof mode))
        goto out_close;
    if (strcmp(mode, "wal") != 0)
        log_warn("db sqlite %s: journal_mode is %s, not wal (file system without shared memory?)",
                 path, mode);
    if (exec_sql(conn, path, "set pragmas", "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF"))
        goto out_close;
    for (size_t i = 0; i < ARRAY_LEN(sqlite_migrations); i++) {
        if (apply_migration(conn, path, &sqlite_migrations[i]))
            goto out_close;
    }
    if (query_i64(conn, path, "read schema version", "SELECT max(version) FROM schema_migrations",
                  0, &row, &latest))
        goto out_close;
    if (latest > (int64_t)ARRAY_LEN(sqlite_migrations))
        log_warn("db sqlite %s: schema version %lld is newer than this build knows (%zu)", path,
                 (long long)latest, ARRAY_LEN(sqlite_migrations));
    rc = 0;

out_close:
    if (sqlite3_close(conn) != SQLITE_OK)
        log_error("db sqlite %s: close after migrations failed: %s", path, sqlite3_errmsg(conn));
    return rc;
}

/* ---- operations ---- */

/*
 * Mark the handle busy. Refuses (logging) a call made while another operation
 * runs on this handle, i.e. from inside a row callback: its statement is still
 * stepping. done callbacks may start new operations.
 */
static bool op_enter(struct db_sqlite *s, const char *op)
{
    if (unlikely(s->busy)) {
        log_error("db sqlite %s: %s called from inside another operation's row callback", s->path,
                  op);
        return false;
    }
    s->busy = 1;
    return true;
}

/* The end of every operation that passed op_enter, whatever the outcome. */
static void op_leave(struct db_sqlite *s, enum db_status status)
{
    if (s->unavailable && status != DB_UNAVAILABLE) {
        log_info("db sqlite %s: database answers again (%lu more failures were not logged)",
                 s->path, s->suppressed);
        s->unavailable = false;
        s->suppressed = 0;
    }
    s->busy = 0;
}

/*
 * Return a statement to its idle state: the single cleanup of every
 * operation. reset ends the read or write transaction it held (its return code
 * repeats the step error already handled); clear_bindings drops the pointers
 * bound with SQLITE_STATIC, which belong to the caller.
 */
static void stmt_release(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/*
 * Map a failed SQLite call to a status and log it. Outages (locked past the
 * busy timeout, disk full, I/O error, file gone) are logged once, when they
 * begin; op_leave logs the recovery. Everything else is a bug or corruption
 * and is logged every time. Call before stmt_release so errmsg still
 * describes rc.
 */
static enum db_status fail_status(struct db_sqlite *s, int rc, const char *op)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
        if (!s->unavailable) {
            log_error("db sqlite %s: %s: database unavailable: %s (code %d)", s->path, op,
                      sqlite3_errmsg(s->conn), rc);
            s->unavailable = true;
        } else {
            s->suppressed++;
        }
        return DB_UNAVAILABLE;
    default:
        log_error("db sqlite %s: %s failed: %s (code %d)", s->path, op, sqlite3_errmsg(s->conn),
                  rc);
        return DB_ERROR;
    }
}

/* Bind a slice as text without copying (valid until stmt_release); ptr NULL binds NULL. */
static int bind_str(sqlite3_stmt *st, int idx, struct str v)
{
    if (!v.ptr)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_text64(st, idx, v.ptr, (sqlite3_uint64)v.len, SQLITE_STATIC, SQLITE_UTF8);
}

/* Read the current row (USER_COLS) into *out, pointing into the statement's memory. */
static enum db_status read_user(struct db_sqlite *s, sqlite3_stmt *st, const char *op,
                                struct db_user *out)
{
    const unsigned char *name = sqlite3_column_text(st, 1);
    size_t name_len = (size_t)sqlite3_column_bytes(st, 1);
    const unsigned char *email = sqlite3_column_text(st, 2);
    size_t email_len = (size_t)sqlite3_column_bytes(st, 2);
    const unsigned char *created = sqlite3_column_text(st, 3);
    size_t created_len = (size_t)sqlite3_column_bytes(st, 3);

    out->id = sqlite3_column_int64(st, 0);
    if (!name || !email || !created) {
        /* The columns are NOT NULL, so this is SQLite failing to allocate. */
        log_error("db sqlite %s: %s: reading user %lld failed: %s", s->path, op, (long long)out->id,
                  sqlite3_errmsg(s->conn));
        return DB_ERROR;
    }
    if (sqlite3_column_type(st, 0) != SQLITE_INTEGER ||
        !parse_rfc3339_utc((struct str){(const char *)created, created_len}, &out->created_at)) {
        log_error("db sqlite %s: %s: user %lld has a malformed id or created_at", s->path, op,
                  (long long)out->id);
        return DB_ERROR;
    }
    out->name = (struct str){(const char *)name, name_len};
    out->email = (struct str){(const char *)email, email_len};
    return DB_OK;
}

/* Move u's text into s->scratch so it outlives the statement's next step or reset. */
static enum db_status keep_user(struct db_sqlite *s, const char *op, struct db_user *u)
{
    struct buf *b = &s->scratch;

    buf_reset(b);
    if (buf_reserve(b, u->name.len + u->email.len + 1)) {
        log_error("db sqlite %s: %s: user %lld is larger than %zu bytes", s->path, op,
                  (long long)u->id, SCRATCH_MAX);
        return DB_ERROR;
    }
    buf_append(b, u->name.ptr, u->name.len);
    buf_append(b, u->email.ptr, u->email.len);
    u->name.ptr = b->data;
    u->email.ptr = b->data + u->name.len;
    return DB_OK;
}

/*
 * Run a bound statement that yields at most one user row and keep the row.
 * It is stepped to completion before returning, so for INSERT/UPDATE ...
 * RETURNING the row is only reported once the autocommit transaction has
 * committed: a failed commit never shows the caller a row that was not stored.
 * Returns DB_OK (*out filled), DB_NOT_FOUND, DB_CONFLICT (when
 * unique_is_conflict and the email index refused the row) or an error.
 */
static enum db_status step_one_user(struct db_sqlite *s, sqlite3_stmt *st, const char *op,
                                    bool unique_is_conflict, struct db_user *out)
{
    enum db_status status;
    int rc = sqlite3_step(st);

    if (rc == SQLITE_DONE)
        return DB_NOT_FOUND;
    if (rc != SQLITE_ROW)
        goto out_fail;
    status = read_user(s, st, op, out);
    if (status == DB_OK)
        status = keep_user(s, op, out);
    if (status != DB_OK)
        return status;
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return DB_OK;
    if (rc == SQLITE_ROW) {
        log_error("db sqlite %s: %s: more than one row", s->path, op);
        return DB_ERROR;
    }

out_fail:
    if (unique_is_conflict && rc == SQLITE_CONSTRAINT_UNIQUE)
        return DB_CONFLICT; /* the only UNIQUE on users besides the id is lower(email) */
    return fail_status(s, rc, op);
}

static void sq_ping(struct db *db, db_done_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    const struct stmt_def *def = &stmt_defs[ST_PING];
    sqlite3_stmt *st = s->stmt[ST_PING];
    enum db_status status = DB_ERROR;
    int rc;

    if (!op_enter(s, def->name))
        goto out_done;
    rc = sqlite3_step(st);
    status = rc == SQLITE_ROW ? DB_OK : fail_status(s, rc, def->name);
    stmt_release(st);
    op_leave(s, status);
out_done:
    done(ctx, status);
}

/* create, get and update: one statement, one row. The caller has bound nothing yet. */
static void run_user_stmt(struct db_sqlite *s, enum stmt_id id, int64_t user_id, struct str name,
                          struct str email, db_user_fn row, db_done_fn done, void *ctx)
{
    const struct stmt_def *def = &stmt_defs[id];
    sqlite3_stmt *st = s->stmt[id];
    struct db_user u = {0};
    enum db_status status = DB_ERROR;
    int rc = SQLITE_OK;

    if (!op_enter(s, def->name))
        goto out_done;
    switch (id) {
    case ST_USER_INSERT:
        rc = bind_str(st, 1, name);
        if (rc == SQLITE_OK)
            rc = bind_str(st, 2, email);
        break;
    case ST_USER_UPDATE:
        rc = sqlite3_bind_int64(st, 1, user_id);
        if (rc == SQLITE_OK)
            rc = bind_str(st, 2, name);
        if (rc == SQLITE_OK)
            rc = bind_str(st, 3, email);
        break;
    default:
        rc = sqlite3_bind_int64(st, 1, user_id);
        break;
    }
    if (rc != SQLITE_OK) {
        status = fail_status(s, rc, def->name);
        goto out_release;
    }
    status = step_one_user(s, st, def->name, id != ST_USER_GET, &u);
    if (status == DB_NOT_FOUND && id == ST_USER_INSERT) {
        log_error("db sqlite %s: %s: INSERT RETURNING gave no row", s->path, def->name);
        status = DB_ERROR;
    }

out_release:
    stmt_release(st);
    if (status == DB_OK && row)
        row(ctx, &u); /* u's text lives in s->scratch */
    op_leave(s, status);
out_done:
    done(ctx, status);
}

static void sq_user_get(struct db *db, int64_t id, db_user_fn row, db_done_fn done, void *ctx)
{
    run_user_stmt(to_sqlite(db), ST_USER_GET, id, STR_NULL, STR_NULL, row, done, ctx);
}

static void sq_user_update(struct db *db, int64_t id, struct str name, struct str email,
                           db_user_fn row, db_done_fn done, void *ctx)
{
    /* Nothing to change: answer with the current row and take no write lock. */
    enum stmt_id st = (name.ptr || email.ptr) ? ST_USER_UPDATE : ST_USER_GET;
    run_user_stmt(to_sqlite(db), st, id, name, email, row, done, ctx);
}

/*
 * The orders foreign key (enforced: foreign_keys=ON on every serving
 * connection, checked at open) refuses the delete of a user with orders
 * inside the DELETE statement itself, so check and delete are atomic without
 * an explicit transaction.
 */
static void sq_user_delete(struct db *db, int64_t id, db_done_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    const struct stmt_def *def = &stmt_defs[ST_USER_DELETE];
    sqlite3_stmt *st = s->stmt[ST_USER_DELETE];
    enum db_status status = DB_ERROR;
    int rc;

    if (!op_enter(s, def->name))
        goto out_done;
    rc = sqlite3_bind_int64(st, 1, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        status = sqlite3_changes(s->conn) > 0 ? DB_OK : DB_NOT_FOUND;
    else if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        status = DB_HAS_CHILDREN; /* orders is the only table referencing users */
    else
        status = fail_status(s, rc, def->name);
    stmt_release(st);
    op_leave(s, status);
out_done:
    done(ctx, status);
}

static void sq_user_list(struct db *db, int64_t after, int limit, db_user_fn row, db_done_fn done,
                         void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    const struct stmt_def *def = &stmt_defs[ST_USER_LIST];
    sqlite3_stmt *st = s->stmt[ST_USER_LIST];
    enum db_status status = DB_ERROR;
    struct db_user u;
    int rc;

    if (!op_enter(s, def->name))
        goto out_done;
    if (limit <= 0) {
        /* SQLite reads a negative LIMIT as "no limit"; the contract says "up to limit". */
        status = DB_OK;
        goto out_release;
    }
    rc = sqlite3_bind_int64(st, 1, after);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 2, limit);
    if (rc != SQLITE_OK) {
        status = fail_status(s, rc, def->name);
        goto out_release;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        status = read_user(s, st, def->name, &u);
        if (status != DB_OK)
            goto out_release;
        if (row)
            row(ctx, &u); /* u's text lives until the next step */
    }
    status = rc == SQLITE_DONE ? DB_OK : fail_status(s, rc, def->name);

out_release:
    stmt_release(st);
    op_leave(s, status);
out_done:
    done(ctx, status);
}

/* ---- orders ---- */

/*
 * Run a statement that returns nothing (BEGIN, COMMIT, ROLLBACK, ...) and
 * reset it. Returns SQLITE_OK or the step's error code.
 */
static int step_done(struct db_sqlite *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->stmt[id];
    int rc = sqlite3_step(st);
    stmt_release(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/*
 * End a failed transaction, if one is still open (SQLite rolls back on its
 * own after some errors). Every statement must be reset before this.
 */
static void tx_rollback(struct db_sqlite *s)
{
    if (!sqlite3_get_autocommit(s->conn)) {
        int rc = step_done(s, ST_ROLLBACK);
        if (rc != SQLITE_OK)
            log_error("db sqlite %s: rollback failed: %s (code %d)", s->path,
                      sqlite3_errmsg(s->conn), rc);
    }
}

/* Commit; on failure roll back and map the error. */
static enum db_status tx_commit(struct db_sqlite *s, const char *op)
{
    int rc = step_done(s, ST_COMMIT);
    if (rc == SQLITE_OK)
        return DB_OK;
    enum db_status st = fail_status(s, rc, op);
    tx_rollback(s);
    return st;
}

/*
 * Insert every create of batch b in one transaction. A create refused by the
 * email index is rolled back alone (SQLite undoes just the failed statement)
 * and reported as a conflict; any other failure - BEGIN busy past the
 * timeout, disk full, the COMMIT itself - fails the whole batch, so no row
 * is reported that was not durably committed. Fills each create's status.
 */
static void batch_insert(struct db_sqlite *s, struct sq_batch *b)
{
    const char *op = stmt_defs[ST_USER_INSERT].name;
    sqlite3_stmt *st = s->stmt[ST_USER_INSERT];
    enum db_status status = DB_OK;
    size_t i;
    int rc = step_done(s, ST_BEGIN);

    if (rc != SQLITE_OK) {
        status = fail_status(s, rc, op);
        goto out_fail;
    }
    for (i = 0; i < b->n; i++) {
        struct sq_create *e = &b->v[i];
        struct db_user u = {0};

        rc = bind_str(st, 1, (struct str){b->text.data + e->name_off, e->name_len});
        if (rc == SQLITE_OK)
            rc = bind_str(st, 2, (struct str){b->text.data + e->email_off, e->email_len});
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            e->status = read_user(s, st, op, &u);
            e->id = u.id;
            e->created_at = u.created_at;
            rc = e->status == DB_OK ? sqlite3_step(st) : SQLITE_DONE;
            if (rc == SQLITE_ROW) {
                log_error("db sqlite %s: %s: more than one row", s->path, op);
                e->status = DB_ERROR;
                rc = SQLITE_DONE;
            }
        } else if (rc == SQLITE_DONE) {
            log_error("db sqlite %s: %s: INSERT RETURNING gave no row", s->path, op);
            e->status = DB_ERROR;
        } else if (rc == SQLITE_CONSTRAINT_UNIQUE) {
            e->status = DB_CONFLICT; /* the only UNIQUE besides the id is lower(email) */
            rc = SQLITE_DONE;
        }
        if (rc != SQLITE_DONE) {
            status = fail_status(s, rc, op);
            stmt_release(st);
            tx_rollback(s);
            goto out_fail;
        }
        stmt_release(st);
    }
    status = tx_commit(s, op);
    if (status == DB_OK)
        return;

out_fail:
    for (i = 0; i < b->n; i++)
        b->v[i].status = status;
}

/*
 * Commit the creates waiting in the current batch, then answer them. The
 * callbacks may create more users: those go to the other batch, flushed by
 * the next round of the loop here.
 */
static void sq_flush(struct db *db)
{
    struct db_sqlite *s = to_sqlite(db);

    if (s->flushing)
        return;
    s->flushing = true;
    while (s->batch[s->cur].n) {
        struct sq_batch *b = &s->batch[s->cur];
        s->cur ^= 1;
        if (op_enter(s, "user_create")) {
            batch_insert(s, b);
            op_leave(s, b->v[0].status);
        } else {
            for (size_t i = 0; i < b->n; i++)
                b->v[i].status = DB_ERROR;
        }
        for (size_t i = 0; i < b->n; i++) {
            struct sq_create *e = &b->v[i];
            if (e->status == DB_OK && e->row) {
                struct db_user u = {
                    .id = e->id,
                    .name = {b->text.data + e->name_off, e->name_len},
                    .email = {b->text.data + e->email_off, e->email_len},
                    .created_at = e->created_at,
                };
                e->row(e->ctx, &u);
            }
            e->done(e->ctx, e->status);
        }
        b->n = 0;
        buf_reset(&b->text);
        buf_shrink(&b->text, (size_t)64 * 1024);
    }
    s->flushing = false;
}

/* Queue the create for the end of the loop turn (sq_flush). */
static void sq_user_create(struct db *db, struct str name, struct str email, db_user_fn row,
                           db_done_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    struct sq_batch *b = &s->batch[s->cur];
    struct sq_create *e;

    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        struct sq_create *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            log_fatal("out of memory");
        b->v = v;
        b->cap = cap;
    }
    if (buf_reserve(&b->text, name.len + email.len)) {
        log_error("db sqlite %s: user_create: %zu bytes of users already wait for a commit",
                  s->path, b->text.len);
        done(ctx, DB_UNAVAILABLE);
        return;
    }
    e = &b->v[b->n++];
    *e = (struct sq_create){.row = row, .done = done, .ctx = ctx, .status = DB_ERROR};
    e->name_off = b->text.len;
    e->name_len = name.len;
    buf_append(&b->text, name.ptr, name.len);
    e->email_off = b->text.len;
    e->email_len = email.len;
    buf_append(&b->text, email.ptr, email.len);
    if (b->n >= CREATE_BATCH_MAX)
        sq_flush(db);
}

/* Column i as a slice (NULL ptr for SQL NULL). */
static struct str column_str(sqlite3_stmt *st, int i)
{
    const unsigned char *p = sqlite3_column_text(st, i);
    if (!p)
        return STR_NULL;
    return (struct str){(const char *)p, (size_t)sqlite3_column_bytes(st, i)};
}

/* Read the current row (ORDER_COLS) into *out, pointing into the statement's memory. */
static enum db_status read_order(struct db_sqlite *s, sqlite3_stmt *st, const char *op,
                                 struct db_order *out)
{
    struct str status = column_str(st, 2);
    struct str created = column_str(st, 9);
    struct str processed = column_str(st, 10);

    memset(out, 0, sizeof *out);
    out->id = sqlite3_column_int64(st, 0);
    out->user_id = sqlite3_column_int64(st, 1);
    out->items = column_str(st, 3);
    out->subtotal_cents = sqlite3_column_int64(st, 4);
    out->discount_cents = sqlite3_column_int64(st, 5);
    out->tax_cents = sqlite3_column_int64(st, 6);
    out->total_cents = sqlite3_column_int64(st, 7);
    out->receipt = column_str(st, 8);
    if (!status.ptr || !out->items.ptr || !created.ptr) {
        /* NOT NULL columns: SQLite failed to allocate */
        log_error("db sqlite %s: %s: reading order %lld failed: %s", s->path, op,
                  (long long)out->id, sqlite3_errmsg(s->conn));
        return DB_ERROR;
    }
    out->processed = str_eq(status, STR_LIT("processed"));
    if (sqlite3_column_type(st, 0) != SQLITE_INTEGER ||
        !parse_rfc3339_utc(created, &out->created_at) ||
        (processed.ptr && !parse_rfc3339_utc(processed, &out->processed_at)) ||
        out->processed != (out->receipt.ptr != NULL && processed.ptr != NULL)) {
        log_error("db sqlite %s: %s: order %lld has a malformed id, timestamp or status", s->path,
                  op, (long long)out->id);
        return DB_ERROR;
    }
    return DB_OK;
}

/* Move o's text into s->scratch so it outlives the statement's next step or reset. */
static enum db_status keep_order(struct db_sqlite *s, const char *op, struct db_order *o)
{
    struct buf *b = &s->scratch;

    buf_reset(b);
    if (buf_reserve(b, o->items.len + o->receipt.len + 1)) {
        log_error("db sqlite %s: %s: order %lld is larger than %zu bytes", s->path, op,
                  (long long)o->id, SCRATCH_MAX);
        return DB_ERROR;
    }
    buf_append(b, o->items.ptr, o->items.len);
    o->items.ptr = b->data;
    if (o->receipt.ptr) {
        buf_append(b, o->receipt.ptr, o->receipt.len);
        o->receipt.ptr = b->data + o->items.len;
    }
    return DB_OK;
}

/*
 * Step a bound statement that yields at most one order row to completion and
 * keep the row in s->scratch. Returns DB_OK (*out filled), DB_NOT_FOUND (no
 * row) or an error status with rc_out the failing code.
 */
static enum db_status step_one_order(struct db_sqlite *s, sqlite3_stmt *st, const char *op,
                                     struct db_order *out, int *rc_out)
{
    enum db_status status;
    int rc = sqlite3_step(st);

    *rc_out = rc;
    if (rc == SQLITE_DONE)
        return DB_NOT_FOUND;
    if (rc != SQLITE_ROW)
        return DB_ERROR;
    status = read_order(s, st, op, out);
    if (status == DB_OK)
        status = keep_order(s, op, out);
    if (status != DB_OK)
        return status;
    rc = sqlite3_step(st);
    *rc_out = rc;
    if (rc == SQLITE_DONE)
        return DB_OK;
    if (rc == SQLITE_ROW) {
        log_error("db sqlite %s: %s: more than one row", s->path, op);
        *rc_out = SQLITE_OK;
    }
    return DB_ERROR;
}

/* Does user id exist? DB_OK, DB_NOT_FOUND or an error (inside the caller's transaction, if any). */
static enum db_status user_exists(struct db_sqlite *s, int64_t id, const char *op)
{
    sqlite3_stmt *st = s->stmt[ST_USER_EXISTS];
    enum db_status status;
    int rc = sqlite3_bind_int64(st, 1, id);

    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        status = DB_OK;
    else if (rc == SQLITE_DONE)
        status = DB_NOT_FOUND;
    else
        status = fail_status(s, rc, op);
    stmt_release(st);
    return status;
}

/*
 * The stored order for idempotency key `key`, if any: DB_NOT_FOUND when the
 * key is new, DB_REPLAYED (*out kept in scratch) when it was stored with the
 * same request hash, DB_KEY_REUSED when with another.
 */
static enum db_status order_by_key(struct db_sqlite *s, struct str key, struct str hash,
                                   const char *op, struct db_order *out)
{
    sqlite3_stmt *st = s->stmt[ST_ORDER_BY_KEY];
    enum db_status status;
    int rc = bind_str(st, 1, key);

    if (rc != SQLITE_OK) {
        status = fail_status(s, rc, op);
        goto out_release;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        status = DB_NOT_FOUND;
    } else if (rc != SQLITE_ROW) {
        status = fail_status(s, rc, op);
    } else if (!str_eq(column_str(st, ORDER_NCOLS), hash)) {
        status = DB_KEY_REUSED;
    } else {
        status = read_order(s, st, op, out);
        if (status == DB_OK)
            status = keep_order(s, op, out);
        if (status == DB_OK)
            status = DB_REPLAYED;
    }

out_release:
    stmt_release(st);
    return status;
}

/* Insert the order; *out kept in scratch. The caller holds the write transaction. */
static enum db_status order_insert(struct db_sqlite *s, const struct db_order_new *o,
                                   const char *op, struct db_order *out)
{
    sqlite3_stmt *st = s->stmt[ST_ORDER_INSERT];
    enum db_status status;
    int rc = sqlite3_bind_int64(st, 1, o->user_id);

    if (rc == SQLITE_OK)
        rc = bind_str(st, 2, o->items);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 3, o->subtotal_cents);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 4, o->discount_cents);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 5, o->tax_cents);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 6, o->total_cents);
    if (rc == SQLITE_OK)
        rc = bind_str(st, 7, o->idempotency_key);
    if (rc == SQLITE_OK)
        rc = bind_str(st, 8, o->idempotency_key.ptr ? o->request_hash : STR_NULL);
    if (rc != SQLITE_OK) {
        status = fail_status(s, rc, op);
        goto out_release;
    }
    status = step_one_order(s, st, op, out, &rc);
    if (status == DB_NOT_FOUND) {
        log_error("db sqlite %s: %s: INSERT RETURNING gave no row", s->path, op);
        status = DB_ERROR;
    } else if (status != DB_OK && rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
        status = DB_NOT_FOUND; /* the user vanished: cannot happen under the write lock */
    } else if (status != DB_OK && rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        status = fail_status(s, rc, op); /* a CHECK refusal is a caller bug: DB_ERROR, logged */
    }

out_release:
    stmt_release(st);
    return status;
}

/*
 * One write transaction: the user must exist; a known idempotency key answers
 * with the first order (or refuses another request); otherwise insert. The row
 * is reported only after COMMIT succeeded, so a caller never sees an order
 * that was not stored.
 */
static void sq_order_create(struct db *db, const struct db_order_new *o, db_order_fn row,
                            db_done_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    const char *op = stmt_defs[ST_ORDER_INSERT].name;
    struct db_order out;
    enum db_status status = DB_ERROR;
    int rc;

    if (!op_enter(s, op))
        goto out_done;
    rc = step_done(s, ST_BEGIN);
    if (rc != SQLITE_OK) {
        status = fail_status(s, rc, op);
        tx_rollback(s);
        goto out_leave;
    }
    status = user_exists(s, o->user_id, op);
    if (status == DB_OK && o->idempotency_key.ptr) {
        status = order_by_key(s, o->idempotency_key, o->request_hash, op, &out);
        if (status == DB_NOT_FOUND)
            status = DB_OK; /* a new key */
    }
    if (status == DB_OK)
        status = order_insert(s, o, op, &out);
    if (status == DB_OK || status == DB_REPLAYED || status == DB_KEY_REUSED) {
        enum db_status cst = tx_commit(s, op);
        if (cst != DB_OK)
            status = cst;
    } else {
        tx_rollback(s);
    }
    if ((status == DB_OK || status == DB_REPLAYED) && row)
        row(ctx, &out); /* out's text lives in s->scratch */

out_leave:
    op_leave(s, status);
out_done:
    done(ctx, status);
}

static void sq_order_get(struct db *db, int64_t id, db_order_fn row, db_done_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    const struct stmt_def *def = &stmt_defs[ST_ORDER_GET];
    sqlite3_stmt *st = s->stmt[ST_ORDER_GET];
    struct db_order out;
    enum db_status status = DB_ERROR;
    int rc;

    if (!op_enter(s, def->name))
        goto out_done;
    rc = sqlite3_bind_int64(st, 1, id);
    if (rc == SQLITE_OK) {
        status = step_one_order(s, st, def->name, &out, &rc);
        if (status == DB_ERROR && rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
            status = fail_status(s, rc, def->name);
    } else {
        status = fail_status(s, rc, def->name);
    }
    stmt_release(st);
    if (status == DB_OK && row)
        row(ctx, &out);
    op_leave(s, status);
out_done:
    done(ctx, status);
}

/*
 * Two reads without a transaction around them: a user with orders cannot be
 * deleted, so "exists, then list" can only lose a user that had no orders,
 * and the empty list answered then was true at the moment of the check.
 */
static void sq_order_list(struct db *db, int64_t user_id, int64_t after, int limit, db_order_fn row,
                          db_done_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    const struct stmt_def *def = &stmt_defs[ST_ORDER_LIST];
    sqlite3_stmt *st = s->stmt[ST_ORDER_LIST];
    enum db_status status = DB_ERROR;
    struct db_order o;
    int rc;

    if (!op_enter(s, def->name))
        goto out_done;
    status = user_exists(s, user_id, def->name);
    if (status != DB_OK || limit <= 0)
        goto out_release; /* a negative LIMIT would mean "no limit" to SQLite */
    rc = sqlite3_bind_int64(st, 1, user_id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, after);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 3, limit);
    if (rc != SQLITE_OK) {
        status = fail_status(s, rc, def->name);
        goto out_release;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        status = read_order(s, st, def->name, &o);
        if (status != DB_OK)
            goto out_release;
        if (row)
            row(ctx, &o); /* o's text lives until the next step */
    }
    status = rc == SQLITE_DONE ? DB_OK : fail_status(s, rc, def->name);

out_release:
    stmt_release(st);
    op_leave(s, status);
out_done:
    done(ctx, status);
}

/* Claim up to max pending ids (ascending) into ids; the caller holds the write lock. */
static enum db_status pending_ids(struct db_sqlite *s, int max, int64_t *ids, int *out_n)
{
    const char *op = stmt_defs[ST_PENDING_IDS].name;
    sqlite3_stmt *st = s->stmt[ST_PENDING_IDS];
    enum db_status status = DB_OK;
    int n = 0;
    int rc = sqlite3_bind_int(st, 1, max);

    if (rc == SQLITE_OK) {
        while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
            ids[n++] = sqlite3_column_int64(st, 0);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            status = fail_status(s, rc, op);
    } else {
        status = fail_status(s, rc, op);
    }
    stmt_release(st);
    *out_n = n;
    return status;
}

/*
 * Sign order id and mark it processed. *marked tells whether it was. An
 * order sign() refuses stays pending; only database errors fail the batch.
 */
static enum db_status process_one(struct db_sqlite *s, int64_t id, db_sign_fn sign, void *ctx,
                                  bool *marked)
{
    const char *op = stmt_defs[ST_PENDING_IDS].name;
    sqlite3_stmt *get = s->stmt[ST_ORDER_GET];
    sqlite3_stmt *mark = s->stmt[ST_ORDER_MARK];
    char receipt[65];
    struct db_order o;
    enum db_status status;
    int rc = sqlite3_bind_int64(get, 1, id);

    *marked = false;
    if (rc != SQLITE_OK) {
        status = fail_status(s, rc, op);
        stmt_release(get);
        return status;
    }
    status = step_one_order(s, get, op, &o, &rc);
    if (status == DB_ERROR && rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
        status = fail_status(s, rc, op);
    stmt_release(get);
    if (status == DB_NOT_FOUND)
        return DB_OK; /* gone meanwhile: cannot happen under the write lock */
    if (status != DB_OK)
        return status;
    if (o.processed)
        return DB_OK;

    memset(receipt, 0, sizeof receipt);
    if (sign(ctx, &o, receipt) != 0)
        return DB_OK; /* stays pending; the signer logged why */
    receipt[64] = '\0';
    rc = sqlite3_bind_int64(mark, 1, id);
    if (rc == SQLITE_OK)
        rc = bind_str(mark, 2, (struct str){receipt, strlen(receipt)});
    if (rc == SQLITE_OK)
        rc = sqlite3_step(mark);
    if (rc == SQLITE_DONE) {
        *marked = sqlite3_changes(s->conn) == 1;
        status = DB_OK;
    } else if (rc == SQLITE_CONSTRAINT_CHECK) {
        /* a receipt that is not 64 lowercase hex digits: the signer's bug; keep it pending */
        log_error("db sqlite %s: %s: order %lld: the receipt was refused by the schema", s->path,
                  op, (long long)id);
        status = DB_OK;
    } else {
        status = fail_status(s, rc, op);
    }
    stmt_release(mark);
    return status;
}

/*
 * One BEGIN IMMEDIATE transaction: SQLite's single writer lock is the claim
 * (other handles and processes wait for it, then see these orders processed).
 * The ids are read first and the statement reset, so no SELECT is stepping
 * over rows the UPDATEs change; then each order is read, signed and marked.
 * A crash before COMMIT leaves every order of the batch pending.
 */
static void sq_orders_process(struct db *db, int max, db_sign_fn sign, db_count_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    const char *op = stmt_defs[ST_PENDING_IDS].name;
    enum db_status status = DB_ERROR;
    int64_t *ids = NULL;
    int64_t processed = 0;
    int n = 0, rc;

    if (!op_enter(s, op))
        goto out_done;
    if (max <= 0) {
        status = DB_OK;
        goto out_leave;
    }
    if (max > PROCESS_MAX)
        max = PROCESS_MAX;
    ids = malloc((size_t)max * sizeof *ids);
    if (!ids)
        log_fatal("out of memory");
    rc = step_done(s, ST_BEGIN);
    if (rc != SQLITE_OK) {
        status = fail_status(s, rc, op);
        tx_rollback(s);
        goto out_leave;
    }
    status = pending_ids(s, max, ids, &n);
    for (int i = 0; i < n && status == DB_OK; i++) {
        bool marked;
        status = process_one(s, ids[i], sign, ctx, &marked);
        processed += marked;
    }
    if (status == DB_OK)
        status = tx_commit(s, op);
    else
        tx_rollback(s);
    if (status != DB_OK)
        processed = 0;

out_leave:
    op_leave(s, status);
out_done:
    free(ids);
    done(ctx, status, processed);
}

static void sq_orders_pending(struct db *db, db_count_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    const struct stmt_def *def = &stmt_defs[ST_PENDING_COUNT];
    sqlite3_stmt *st = s->stmt[ST_PENDING_COUNT];
    enum db_status status = DB_ERROR;
    int64_t n = 0;
    int rc;

    if (!op_enter(s, def->name))
        goto out_done;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        n = sqlite3_column_int64(st, 0);
        status = DB_OK;
    } else {
        status = fail_status(s, rc, def->name);
    }
    stmt_release(st);
    op_leave(s, status);
out_done:
    done(ctx, status, n);
}

static void sq_stats(const struct db *db, struct db_stats *out)
{
    const struct db_sqlite *s = to_sqlite_const(db);
    out->connections = s->conn ? 1 : 0;
    out->busy = s->busy;
}

static void sq_close(struct db *db)
{
    struct db_sqlite *s = to_sqlite(db);

    for (size_t i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->stmt[i]); /* NULL is a no-op */
    if (s->conn && sqlite3_close(s->conn) != SQLITE_OK)
        log_error("db sqlite %s: close failed: %s", s->path, sqlite3_errmsg(s->conn));
    buf_free(&s->scratch);
    for (int i = 0; i < 2; i++) {
        /* The loop flushes after every turn, so only a drain cut short by its
         * deadline leaves creates here: never committed, never answered, and
         * their requests are gone - calling back would touch freed memory. */
        if (s->batch[i].n)
            log_warn("db sqlite %s: %zu user creates dropped at close, never committed", s->path,
                     s->batch[i].n);
        free(s->batch[i].v);
        buf_free(&s->batch[i].text);
    }
    free(s->path);
    free(s);
}

static const struct db_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .ping = sq_ping,
    .user_create = sq_user_create,
    .flush = sq_flush,
    .user_get = sq_user_get,
    .user_update = sq_user_update,
    .user_delete = sq_user_delete,
    .user_list = sq_user_list,
    .stats = sq_stats,
    .order_create = sq_order_create,
    .order_get = sq_order_get,
    .order_list = sq_order_list,
    .orders_process = sq_orders_process,
    .orders_pending = sq_orders_pending,
};

/* ---- db_open ---- */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Busy handler of a serving connection: wait for another loop's (or
 * process's) write transaction in short steps - 20 us doubling to 1 ms -
 * instead of SQLite's default 1, 2, 5, 10 ... 100 ms sleeps, which leave the
 * lock free for milliseconds while this loop sleeps with its clients. Gives
 * up (SQLITE_BUSY: 503) after busy_ms in all.
 */
static int busy_wait(void *arg, int count)
{
    struct db_sqlite *s = arg;
    uint64_t now = mono_ns();
    uint64_t limit = (uint64_t)s->busy_ms * 1000000u;

    if (count == 0)
        s->busy_since = now;
    if (now - s->busy_since >= limit)
        return 0;
    uint64_t step = (uint64_t)20000u << (count < 6 ? count : 6);
    if (step > 1000000u)
        step = 1000000u;
    if (step > limit - (now - s->busy_since))
        step = limit - (now - s->busy_since);
    struct timespec ts = {0, (long)step};
    nanosleep(&ts, NULL);
    return 1;
}

static int prepare_all(struct db_sqlite *s)
{
    for (size_t i = 0; i < ST_COUNT; i++) {
        const struct stmt_def *def = &stmt_defs[i];
        int rc =
            sqlite3_prepare_v3(s->conn, def->sql, -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            log_error("db sqlite %s: preparing %s failed: %s (code %d; have migrations run?)",
                      s->path, def->name, sqlite3_errmsg(s->conn), rc);
            return -1;
        }
        if (sqlite3_bind_parameter_count(s->stmt[i]) != def->nparams ||
            sqlite3_column_count(s->stmt[i]) != def->ncols) {
            log_error("db sqlite %s: statement %s has %d parameters and %d columns, expected "
                      "%d and %d",
                      s->path, def->name, sqlite3_bind_parameter_count(s->stmt[i]),
                      sqlite3_column_count(s->stmt[i]), def->nparams, def->ncols);
            return -1;
        }
    }
    return 0;
}

struct db *db__sqlite_open(const char *path, const struct db_config *cfg)
{
    char mode[16];
    bool row = false;
    int64_t fk = 0;
    struct db_sqlite *s = calloc(1, sizeof *s);

    if (!s)
        log_fatal("out of memory");
    s->base.ops = &sqlite_ops;
    s->path = dup_cstr(path);
    buf_init(&s->scratch, SCRATCH_MAX);
    buf_init(&s->batch[0].text, CREATE_TEXT_MAX);
    buf_init(&s->batch[1].text, CREATE_TEXT_MAX);
    /* No SQLITE_OPEN_CREATE: a missing file means db_migrate did not run here. */
    s->conn = open_conn(path, SQLITE_OPEN_READWRITE, busy_timeout_ms(cfg));
    if (!s->conn)
        goto out_close;
    s->busy_ms = busy_timeout_ms(cfg);
    sqlite3_busy_handler(s->conn, busy_wait, s);
    /*
     * synchronous=FULL: in WAL mode NORMAL syncs only at checkpoints, so a
     * commit acknowledged to a client could vanish on power loss or an OS
     * crash. FULL fsyncs the WAL on every commit; an answered 201/200/204
     * then survives kill -9 and power loss. Costs one fsync per write.
     * foreign_keys is per connection and off by default: without it a user
     * with orders could be deleted.
     */
    if (exec_sql(s->conn, path, "set pragmas",
                 "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON"))
        goto out_close;
    if (query_i64(s->conn, path, "read foreign_keys", "PRAGMA foreign_keys", 0, &row, &fk))
        goto out_close;
    if (!row || fk != 1) {
        log_error("db sqlite %s: this SQLite cannot enforce foreign keys", path);
        goto out_close;
    }
    if (journal_mode(s->conn, path, "PRAGMA journal_mode", busy_timeout_ms(cfg), mode, sizeof mode))
        goto out_close;
    if (strcmp(mode, "wal") != 0)
        log_warn("db sqlite %s: journal_mode is %s, not wal; readers will wait for writers", path,
                 mode);
    if (prepare_all(s))
        goto out_close;
    return &s->base;

out_close:
    sq_close(&s->base);
    return NULL;
}
