/*
 * sqlite.c - the SQLite backend of db.h.
 *
 * Each handle (one per event-loop thread) has two connections in SQLite's
 * multi-thread mode (SQLITE_OPEN_NOMUTEX: a connection is never used by two
 * threads at once, so SQLite need not lock it):
 *
 *   reader  used on the loop thread for every read (get, list, ping, the
 *           pending count). PRAGMA query_only. In WAL mode a read never
 *           waits for a writer and never touches fsync.
 *   writer  used only by the handle's writer thread. Every write - user
 *           create, update and delete, order create with its idempotency
 *           row, the background worker's claim-and-mark - is copied into a
 *           struct sq_wop, handed over at db_flush (the end of the loop turn),
 *           and run there with everything else that arrived meanwhile in one
 *           BEGIN IMMEDIATE transaction: one fsync per group (group commit),
 *           a savepoint per operation. Results come back through an eventfd
 *           in the loop's epoll and are answered on the loop thread.
 *
 * So a loop thread never waits for the disk: an fsync that takes 200 ms
 * delays the writes of that group, not the reads and /health beside them.
 * Every statement is prepared once per connection and reused with
 * sqlite3_reset + sqlite3_clear_bindings. Threads and processes share the
 * file through SQLite's own locking: in WAL mode readers run beside the one
 * writer, and writers queue on busy_timeout (on their writer threads).
 * A handle opened without a loop (tools, unit tests) has no writer thread:
 * its writes run inline, user creates at db_flush and the rest at once.
 *
 * db_migrate creates the file (and one missing parent directory), switches it
 * to WAL and applies migrations_sqlite.h.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <pthread.h>
#include <sqlite3.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/compiler.h"
#include "base/log.h"
#include "base/timefmt.h"
#include "db/db_int.h"
#include "db/migrations_sqlite.h"
#include "net/loop.h"

#define DEFAULT_BUSY_TIMEOUT_MS 5000
/* one row: a user (name <= 800 bytes, email <= 254) or an order (items <= about 20 KiB) */
#define SCRATCH_MAX ((size_t)64 * 1024)
/* Write operations committed in one transaction at most. */
#define GROUP_MAX 256
/* Write operations waiting or running per handle at most; more get 503. */
#define WRITES_MAX 4096
/* One write's inputs and result: an order's lines twice, its key and hash (about 40 KiB). */
#define WOP_TEXT_MAX ((size_t)256 * 1024)
#define OP_TEXT_KEEP ((size_t)4 * 1024) /* text kept by a recycled operation */
#define OP_FREE_MAX 256                 /* recycled operations kept per handle */

_Static_assert(ARRAY_LEN(sqlite_migrations) > 0, "at least one migration");

/* The reads of queries.def first, in its order (so a read's statement id is its db_query). */
enum stmt_id {
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql) ST_##name,
#include "db/queries.def"
#undef DB_QUERY
    ST_PING,
    ST_USER_INSERT,
    ST_USER_UPDATE,
    ST_USER_DELETE,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_USER_EXISTS,
    ST_ORDER_BY_KEY,
    ST_ORDER_INSERT,
    ST_PENDING_IDS,
    ST_ORDER_MARK,
    ST_COUNT
};
_Static_assert((int)ST_orders_pending == (int)DB_Q_orders_pending, "reads first, in order");

#define USER_COLS SQ_USER_COLS
#define ORDER_COLS SQ_ORDER_COLS
#define ORDER_NCOLS DB_NCOLS_ORDER
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
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql)                               \
    [ST_##name] = {#name, sqlite_sql, DB_NARGS_##params, DB_NCOLS_##row},
#include "db/queries.def"
#undef DB_QUERY
    /* Reads a table, so the probe takes a read snapshot of the real file. */
    [ST_PING] = {"ping", "SELECT max(version) FROM schema_migrations", 0, 1},
    [ST_USER_INSERT] = {"user_create",
                        "INSERT INTO users (name, email) VALUES (?1, ?2) RETURNING " USER_COLS, 2,
                        4},
    /* A NULL parameter keeps the column: the caller passes only what changes. */
    [ST_USER_UPDATE] = {"user_update",
                        "UPDATE users SET name = coalesce(?2, name), email = coalesce(?3, email) "
                        "WHERE id = ?1 RETURNING " USER_COLS,
                        3, 4},
    [ST_USER_DELETE] = {"user_delete", "DELETE FROM users WHERE id = ?1", 1, 0},
    /* IMMEDIATE: take the write lock first, so check-then-write needs no retry. */
    [ST_BEGIN] = {"begin", "BEGIN IMMEDIATE", 0, 0},
    [ST_COMMIT] = {"commit", "COMMIT", 0, 0},
    [ST_ROLLBACK] = {"rollback", "ROLLBACK", 0, 0},
    /* One per write operation inside a group: a failing one is undone alone. */
    [ST_SAVEPOINT] = {"savepoint", "SAVEPOINT w", 0, 0},
    [ST_RELEASE] = {"release", "RELEASE w", 0, 0},
    [ST_ROLLBACK_TO] = {"rollback_to", "ROLLBACK TO w", 0, 0},
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
    /* Served by the partial index orders_pending_idx. */
    [ST_PENDING_IDS] = {"orders_process",
                        "SELECT id FROM orders WHERE status = 'pending' ORDER BY id LIMIT ?1", 1,
                        1},
    [ST_ORDER_MARK] = {"order_mark",
                       "UPDATE orders SET status = 'processed', receipt = ?2, "
                       "processed_at = " MIG_NOW_UTC " WHERE id = ?1 AND status = 'pending'",
                       2, 0},
};

/* One connection with its prepared statements: the loop's reader or the writer's. */
struct sq_conn {
    sqlite3 *conn;
    sqlite3_stmt *stmt[ST_COUNT];
    const char *path;         /* the handle's, for log lines; a file path holds no secret */
    int busy;                 /* 1 while an operation runs, row callbacks included */
    int busy_ms;              /* how long to wait for a lock */
    uint64_t busy_since;      /* when the current wait began (ns) */
    bool unavailable;         /* an outage was logged and nothing has succeeded since */
    unsigned long suppressed; /* outage errors not logged again since then */
    struct buf scratch;       /* copy of the one row of a create/get/update */
};

enum wop_kind { W_USER_CREATE, W_USER_UPDATE, W_USER_DELETE, W_ORDER_CREATE, W_ORDERS_PROCESS };

/*
 * One write operation on its way through the writer: its inputs copied into
 * `text` when it is submitted (the caller's memory is not touched on the
 * writer thread), its result copied behind them when it ran, answered on the
 * loop thread. Offsets, not pointers: `text` may move while it grows.
 */
struct sq_wop {
    struct sq_wop *next;
    enum wop_kind kind;
    int64_t id;                        /* update, delete: the user */
    struct db_order_new order;         /* order create: slices as offsets (ptr NULL: absent) */
    size_t a_off, a_len, b_off, b_len; /* inputs: name/email or items/key */
    size_t h_off, h_len;               /* order create: request hash */
    bool has_a, has_b;
    int max; /* orders process */
    db_sign_fn sign;
    db_user_fn user_row;
    db_order_fn order_row;
    db_done_fn done;
    db_count_fn count_done;
    void *ctx;
    /* result */
    enum db_status status;
    bool has_row;
    bool r2_null;          /* an order without receipt */
    size_t r1_off, r2_off; /* result text: name/email or items/receipt */
    struct db_user user;   /* name/email slices as offsets into text */
    struct db_order ord;   /* items/receipt slices as offsets into text */
    int64_t count;
    struct buf text;
};

struct db_sqlite {
    struct db base;    /* first: db.c sees only this */
    struct sq_conn rd; /* the loop's: reads only (PRAGMA query_only) */
    struct sq_conn wr; /* the writer's: every write, in group transactions */
    char *path;
    /* Loop thread only. */
    struct sq_wop *p_head, *p_tail; /* submitted this turn, handed over at db_flush */
    int np;
    int inflight;  /* write operations not answered yet */
    bool flushing; /* inline mode: a flush is running */
    bool refusing; /* WRITES_MAX reached and logged */
    struct sq_wop *free_ops;
    int nfree;
    /* The writer thread; absent (inline mode: writes run in db_flush) without a loop. */
    bool threaded;
    struct loop *loop;
    struct loop_io done_io; /* eventfd: the writer finished operations */
    bool io_added;
    pthread_t tid;
    bool started;
    bool sync_inited;
    pthread_mutex_t mu; /* guards the two lists and stop */
    pthread_cond_t cv;
    struct sq_wop *q_head, *q_tail; /* handed over, not started */
    struct sq_wop *d_head, *d_tail; /* done, to be answered on the loop */
    bool stop;
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
        const char *why = conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rc);
        db__log(LOG_ERROR, "sqlite", path, why, "cannot open: %s", why);
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
        db__log(LOG_ERROR, "sqlite", path, sqlite3_errstr(rc), "%s failed: %s (code %d)", what,
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
    db__log(LOG_ERROR, "sqlite", path, sqlite3_errmsg(conn), "%s failed: %s (code %d)", what,
            sqlite3_errmsg(conn), rc);
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
        db__log(LOG_ERROR, "sqlite", path, sqlite3_errmsg(conn), "%s failed: %s (code %d)", sql,
                sqlite3_errmsg(conn), rc);
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
            db__log(LOG_ERROR, "sqlite", path, NULL, "migration %d (%s) leaves foreign keys broken",
                    m->version, m->name);
            goto out_rollback;
        }
    }
    if (exec_sql(conn, path, "COMMIT (migrations)", "COMMIT"))
        goto out_rollback;
    if (n == 0)
        db__log(LOG_INFO, "sqlite", path, NULL, "applied migration %d (%s)", m->version, m->name);
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
        db__log(LOG_WARN, "sqlite", path, NULL,
                "journal_mode is %s, not wal (file system without shared memory?)", mode);
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
        db__log(LOG_WARN, "sqlite", path, NULL,
                "schema version %lld is newer than this build knows (%zu)", (long long)latest,
                ARRAY_LEN(sqlite_migrations));
    rc = 0;

out_close:
    if (sqlite3_close(conn) != SQLITE_OK)
        db__log(LOG_ERROR, "sqlite", path, sqlite3_errmsg(conn),
                "close after migrations failed: %s", sqlite3_errmsg(conn));
    return rc;
}

/* ---- operations ---- */

/*
 * Mark the handle busy. Refuses (logging) a call made while another operation
 * runs on this handle, i.e. from inside a row callback: its statement is still
 * stepping. done callbacks may start new operations.
 */
static bool op_enter(struct sq_conn *s, const char *op)
{
    if (unlikely(s->busy)) {
        db__log(LOG_ERROR, "sqlite", s->path, NULL,
                "%s called from inside another operation's row callback", op);
        return false;
    }
    s->busy = 1;
    return true;
}

/* The end of every operation that passed op_enter, whatever the outcome. */
static void op_leave(struct sq_conn *s, enum db_status status)
{
    if (s->unavailable && status != DB_UNAVAILABLE) {
        db__log(LOG_INFO, "sqlite", s->path, NULL,
                "database answers again (%lu more failures were not logged)", s->suppressed);
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
static enum db_status fail_status(struct sq_conn *s, int rc, const char *op)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
        if (!s->unavailable) {
            db__log(LOG_ERROR, "sqlite", s->path, sqlite3_errmsg(s->conn),
                    "%s: database unavailable: %s (code %d)", op, sqlite3_errmsg(s->conn), rc);
            s->unavailable = true;
        } else {
            s->suppressed++;
        }
        return DB_UNAVAILABLE;
    default:
        db__log(LOG_ERROR, "sqlite", s->path, sqlite3_errmsg(s->conn), "%s failed: %s (code %d)",
                op, sqlite3_errmsg(s->conn), rc);
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
static enum db_status read_user(struct sq_conn *s, sqlite3_stmt *st, const char *op,
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
        db__log(LOG_ERROR, "sqlite", s->path, sqlite3_errmsg(s->conn),
                "%s: reading user %lld failed: %s", op, (long long)out->id,
                sqlite3_errmsg(s->conn));
        return DB_ERROR;
    }
    if (sqlite3_column_type(st, 0) != SQLITE_INTEGER ||
        !parse_rfc3339_utc((struct str){(const char *)created, created_len}, &out->created_at)) {
        db__log(LOG_ERROR, "sqlite", s->path, NULL,
                "%s: user %lld has a malformed id or created_at", op, (long long)out->id);
        return DB_ERROR;
    }
    out->name = (struct str){(const char *)name, name_len};
    out->email = (struct str){(const char *)email, email_len};
    return DB_OK;
}

/* Move u's text into s->scratch so it outlives the statement's next step or reset. */
static enum db_status keep_user(struct sq_conn *s, const char *op, struct db_user *u)
{
    struct buf *b = &s->scratch;

    buf_reset(b);
    if (buf_reserve(b, u->name.len + u->email.len + 1)) {
        db__log(LOG_ERROR, "sqlite", s->path, NULL, "%s: user %lld is larger than %zu bytes", op,
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
static enum db_status step_one_user(struct sq_conn *s, sqlite3_stmt *st, const char *op,
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
        db__log(LOG_ERROR, "sqlite", s->path, NULL, "%s: more than one row", op);
        return DB_ERROR;
    }

out_fail:
    if (unique_is_conflict && rc == SQLITE_CONSTRAINT_UNIQUE)
        return DB_CONFLICT; /* the only UNIQUE on users besides the id is lower(email) */
    return fail_status(s, rc, op);
}

static void sq_ping(struct db *db, int timeout_ms, db_done_fn done, void *ctx)
{
    (void)timeout_ms; /* answered before this returns: see db.h */
    struct sq_conn *s = &to_sqlite(db)->rd;
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

/* ---- orders ---- */

/*
 * Run a statement that returns nothing (BEGIN, COMMIT, ROLLBACK, ...) and
 * reset it. Returns SQLITE_OK or the step's error code.
 */
static int step_done(struct sq_conn *s, enum stmt_id id)
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
static void tx_rollback(struct sq_conn *s)
{
    if (!sqlite3_get_autocommit(s->conn)) {
        int rc = step_done(s, ST_ROLLBACK);
        if (rc != SQLITE_OK)
            db__log(LOG_ERROR, "sqlite", s->path, sqlite3_errmsg(s->conn),
                    "rollback failed: %s (code %d)", sqlite3_errmsg(s->conn), rc);
    }
}

/* Commit; on failure roll back and map the error. */
static enum db_status tx_commit(struct sq_conn *s, const char *op)
{
    int rc = step_done(s, ST_COMMIT);
    if (rc == SQLITE_OK)
        return DB_OK;
    enum db_status st = fail_status(s, rc, op);
    tx_rollback(s);
    return st;
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
static enum db_status read_order(struct sq_conn *s, sqlite3_stmt *st, const char *op,
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
        db__log(LOG_ERROR, "sqlite", s->path, sqlite3_errmsg(s->conn),
                "%s: reading order %lld failed: %s", op, (long long)out->id,
                sqlite3_errmsg(s->conn));
        return DB_ERROR;
    }
    out->processed = str_eq(status, STR_LIT("processed"));
    if (sqlite3_column_type(st, 0) != SQLITE_INTEGER ||
        !parse_rfc3339_utc(created, &out->created_at) ||
        (processed.ptr && !parse_rfc3339_utc(processed, &out->processed_at)) ||
        out->processed != (out->receipt.ptr != NULL && processed.ptr != NULL)) {
        db__log(LOG_ERROR, "sqlite", s->path, NULL,
                "%s: order %lld has a malformed id, timestamp or status", op, (long long)out->id);
        return DB_ERROR;
    }
    return DB_OK;
}

/* Move o's text into s->scratch so it outlives the statement's next step or reset. */
static enum db_status keep_order(struct sq_conn *s, const char *op, struct db_order *o)
{
    struct buf *b = &s->scratch;

    buf_reset(b);
    if (buf_reserve(b, o->items.len + o->receipt.len + 1)) {
        db__log(LOG_ERROR, "sqlite", s->path, NULL, "%s: order %lld is larger than %zu bytes", op,
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
static enum db_status step_one_order(struct sq_conn *s, sqlite3_stmt *st, const char *op,
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
        db__log(LOG_ERROR, "sqlite", s->path, NULL, "%s: more than one row", op);
        *rc_out = SQLITE_OK;
    }
    return DB_ERROR;
}

/* ---- the reads of queries.def ---- */

/* The current row of a read, as its row type says. Text points into the statement. */
static enum db_status read_row(struct sq_conn *s, sqlite3_stmt *st, const struct db_query_def *q,
                               struct db_row *out)
{
    switch (q->row) {
    case DB_ROW_USER:
        return read_user(s, st, q->name, &out->user);
    case DB_ROW_ORDER:
        return read_order(s, st, q->name, &out->order);
    case DB_ROW_COUNT:
        out->count = sqlite3_column_int64(st, 0);
        return DB_OK;
    }
    return DB_ERROR;
}

/* Copy a row's text into s->scratch: a ONE read steps once more before answering. */
static enum db_status keep_row(struct sq_conn *s, const struct db_query_def *q, struct db_row *row)
{
    if (q->row == DB_ROW_USER)
        return keep_user(s, q->name, &row->user);
    if (q->row == DB_ROW_ORDER)
        return keep_order(s, q->name, &row->order);
    return DB_OK;
}

/*
 * Every read of queries.def, on the loop's reader connection, inline. A list
 * hands each row over as it is stepped (valid until the next step); a ONE
 * read is stepped to its end first, so a second row is an error, not a
 * surprise for the caller.
 */
static void sq_read(struct db *db, const struct db_read *r)
{
    struct sq_conn *s = &to_sqlite(db)->rd;
    const struct db_query_def *q = &db__queries[r->q];
    sqlite3_stmt *st = s->stmt[r->q];
    enum db_status status = DB_ERROR;
    struct db_row row;
    int64_t nrows = 0;
    int rc = SQLITE_OK;

    memset(&row, 0, sizeof row);
    if (!op_enter(s, q->name))
        goto out_done;
    for (int i = 0; i < q->nargs && rc == SQLITE_OK; i++)
        rc = sqlite3_bind_int64(st, i + 1, r->args[i]);
    if (rc != SQLITE_OK) {
        status = fail_status(s, rc, q->name);
        goto out_release;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (nrows++ && q->rule == DB_RULE_ONE) {
            db__log(LOG_ERROR, "sqlite", s->path, NULL, "%s: more than one row", q->name);
            status = DB_ERROR;
            goto out_release;
        }
        if (q->rule == DB_RULE_PARENT && sqlite3_column_type(st, 0) == SQLITE_NULL)
            continue; /* the parent exists, without (more) children */
        status = read_row(s, st, q, &row);
        if (status == DB_OK && q->rule == DB_RULE_ONE)
            status = keep_row(s, q, &row);
        else if (status == DB_OK)
            db__read_row(r, &row);
        if (status != DB_OK)
            goto out_release;
    }
    if (rc != SQLITE_DONE)
        status = fail_status(s, rc, q->name);
    else
        status = nrows == 0 && q->rule != DB_RULE_ANY ? DB_NOT_FOUND : DB_OK;

out_release:
    stmt_release(st);
    if (status == DB_OK && q->rule == DB_RULE_ONE)
        db__read_row(r, &row); /* its text lives in s->scratch */
    op_leave(s, status);
out_done:
    db__read_done(r, status, row.count);
}

/* Does user id exist? DB_OK, DB_NOT_FOUND or an error (inside the caller's transaction, if any). */
static enum db_status user_exists(struct sq_conn *s, int64_t id, const char *op)
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
static enum db_status order_by_key(struct sq_conn *s, struct str key, struct str hash,
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
static enum db_status order_insert(struct sq_conn *s, const struct db_order_new *o, const char *op,
                                   struct db_order *out)
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
        db__log(LOG_ERROR, "sqlite", s->path, NULL, "%s: INSERT RETURNING gave no row", op);
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

/* Claim up to max pending ids (ascending) into ids; the caller holds the write lock. */
static enum db_status pending_ids(struct sq_conn *s, int max, int64_t *ids, int *out_n)
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
static enum db_status process_one(struct sq_conn *s, int64_t id, db_sign_fn sign, void *ctx,
                                  bool *marked)
{
    const char *op = stmt_defs[ST_PENDING_IDS].name;
    sqlite3_stmt *get = s->stmt[ST_order_get];
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
        db__log(LOG_ERROR, "sqlite", s->path, NULL,
                "%s: order %lld: the receipt was refused by the schema", op, (long long)id);
        status = DB_OK;
    } else {
        status = fail_status(s, rc, op);
    }
    stmt_release(mark);
    return status;
}

/* ---- writes: the writer thread and its group transactions ---- */

static struct str wop_str(const struct sq_wop *op, size_t off, size_t len)
{
    return (struct str){op->text.data + off, len};
}

/* Append v to op's text; false when it does not fit (the bound is far above any valid row). */
static bool wop_keep(struct sq_wop *op, struct str v, size_t *off)
{
    /* (data: buf_reserve's success, spelled out for the static analyzer) */
    if (buf_reserve(&op->text, v.len + 1) || !op->text.data)
        return false;
    *off = op->text.len;
    buf_append(&op->text, v.ptr, v.len);
    return true;
}

/* Copy the user row just read (in w->scratch) behind op's inputs. */
static enum db_status wop_keep_user(struct sq_conn *w, struct sq_wop *op, const struct db_user *u,
                                    const char *name)
{
    op->user = *u;
    if (!wop_keep(op, u->name, &op->r1_off) || !wop_keep(op, u->email, &op->r2_off)) {
        db__log(LOG_ERROR, "sqlite", w->path, NULL,
                "%s: user %lld does not fit its operation buffer", name, (long long)u->id);
        return DB_ERROR;
    }
    op->has_row = true;
    return DB_OK;
}

static enum db_status wop_keep_order(struct sq_conn *w, struct sq_wop *op, const struct db_order *o,
                                     const char *name)
{
    op->ord = *o;
    op->r2_null = o->receipt.ptr == NULL;
    if (!wop_keep(op, o->items, &op->r1_off) ||
        (o->receipt.ptr && !wop_keep(op, o->receipt, &op->r2_off))) {
        db__log(LOG_ERROR, "sqlite", w->path, NULL,
                "%s: order %lld does not fit its operation buffer", name, (long long)o->id);
        return DB_ERROR;
    }
    op->has_row = true;
    return DB_OK;
}

/* INSERT ... RETURNING or UPDATE ... RETURNING one user. */
static enum db_status w_user_write(struct sq_conn *w, struct sq_wop *op)
{
    enum stmt_id id = op->kind == W_USER_CREATE ? ST_USER_INSERT : ST_USER_UPDATE;
    const char *name = stmt_defs[id].name;
    sqlite3_stmt *st = w->stmt[id];
    struct str a = op->has_a ? wop_str(op, op->a_off, op->a_len) : STR_NULL;
    struct str b = op->has_b ? wop_str(op, op->b_off, op->b_len) : STR_NULL;
    struct db_user u = {0};
    enum db_status status;
    int i = 1;
    int rc = id == ST_USER_UPDATE ? sqlite3_bind_int64(st, i++, op->id) : SQLITE_OK;

    if (rc == SQLITE_OK)
        rc = bind_str(st, i++, a);
    if (rc == SQLITE_OK)
        rc = bind_str(st, i, b);
    if (rc != SQLITE_OK) {
        status = fail_status(w, rc, name);
        goto out_release;
    }
    status = step_one_user(w, st, name, true, &u);
    if (status == DB_NOT_FOUND && id == ST_USER_INSERT) {
        db__log(LOG_ERROR, "sqlite", w->path, NULL, "%s: INSERT RETURNING gave no row", name);
        status = DB_ERROR;
    }
    if (status == DB_OK)
        status = wop_keep_user(w, op, &u, name);

out_release:
    stmt_release(st);
    return status;
}

/*
 * The orders foreign key (enforced: foreign_keys=ON on every connection,
 * checked at open) refuses the delete of a user with orders inside the DELETE
 * statement itself, so check and delete are one statement.
 */
static enum db_status w_user_delete(struct sq_conn *w, struct sq_wop *op)
{
    const char *name = stmt_defs[ST_USER_DELETE].name;
    sqlite3_stmt *st = w->stmt[ST_USER_DELETE];
    enum db_status status;
    int rc = sqlite3_bind_int64(st, 1, op->id);

    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        status = sqlite3_changes(w->conn) > 0 ? DB_OK : DB_NOT_FOUND;
    else if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
        status = DB_HAS_CHILDREN; /* orders is the only table referencing users */
    else
        status = fail_status(w, rc, name);
    stmt_release(st);
    return status;
}

/*
 * Under the group's write lock: the user must exist; a known idempotency key
 * answers with the first order (or refuses another request); otherwise insert.
 */
static enum db_status w_order_create(struct sq_conn *w, struct sq_wop *op)
{
    const char *name = stmt_defs[ST_ORDER_INSERT].name;
    struct db_order_new o = op->order;
    struct db_order out;
    enum db_status status;

    o.items = wop_str(op, op->a_off, op->a_len);
    o.idempotency_key = op->has_b ? wop_str(op, op->b_off, op->b_len) : STR_NULL;
    o.request_hash = op->has_b ? wop_str(op, op->h_off, op->h_len) : STR_NULL;
    status = user_exists(w, o.user_id, name);
    if (status == DB_OK && o.idempotency_key.ptr) {
        status = order_by_key(w, o.idempotency_key, o.request_hash, name, &out);
        if (status == DB_NOT_FOUND)
            status = DB_OK; /* a new key */
    }
    if (status == DB_OK)
        status = order_insert(w, &o, name, &out);
    if (status == DB_OK || status == DB_REPLAYED) {
        enum db_status kst = wop_keep_order(w, op, &out, name);
        if (kst != DB_OK)
            status = kst;
    }
    return status;
}

/*
 * SQLite's single writer lock is the claim (other handles and processes wait
 * for it, then see these orders processed). The ids are read first and the
 * statement reset, so no SELECT is stepping over rows the UPDATEs change;
 * then each order is read, signed (on this thread) and marked. A crash before
 * COMMIT leaves every order of the batch pending.
 */
static enum db_status w_orders_process(struct sq_conn *w, struct sq_wop *op)
{
    int max = op->max > PROCESS_MAX ? PROCESS_MAX : op->max;
    enum db_status status;
    int64_t *ids;
    int n = 0;

    if (max <= 0)
        return DB_OK;
    ids = malloc((size_t)max * sizeof *ids);
    if (!ids)
        log_fatal("out of memory");
    status = pending_ids(w, max, ids, &n);
    for (int i = 0; i < n && status == DB_OK; i++) {
        bool marked;
        status = process_one(w, ids[i], op->sign, op->ctx, &marked);
        op->count += marked;
    }
    free(ids);
    return status;
}

static enum db_status wop_exec(struct sq_conn *w, struct sq_wop *op)
{
    switch (op->kind) {
    case W_USER_CREATE:
    case W_USER_UPDATE:
        return w_user_write(w, op);
    case W_USER_DELETE:
        return w_user_delete(w, op);
    case W_ORDER_CREATE:
        return w_order_create(w, op);
    case W_ORDERS_PROCESS:
        return w_orders_process(w, op);
    }
    return DB_ERROR;
}

/*
 * Run the operations of list `head` in one BEGIN IMMEDIATE transaction: one
 * fsync for all of them (group commit). Each runs inside its own savepoint,
 * so one that fails (a refused row, a caller bug) is undone alone and the
 * others go on; a failure of the transaction itself - BEGIN busy past the
 * timeout, disk full, SQLite rolling back on its own, the COMMIT - fails
 * every operation, so no result is reported that was not durably committed.
 * Fills each operation's status and result.
 */
static void group_run(struct sq_conn *w, struct sq_wop *head)
{
    enum db_status gst;
    struct sq_wop *op;
    int rc;

    w->busy = 1;
    rc = step_done(w, ST_BEGIN);
    if (rc != SQLITE_OK) {
        gst = fail_status(w, rc, "begin");
        tx_rollback(w);
        goto out_fail;
    }
    for (op = head; op; op = op->next) {
        rc = step_done(w, ST_SAVEPOINT);
        if (rc != SQLITE_OK) {
            gst = fail_status(w, rc, "savepoint");
            tx_rollback(w);
            goto out_fail;
        }
        op->status = wop_exec(w, op);
        if (op->status != DB_ERROR && op->status != DB_UNAVAILABLE) {
            rc = step_done(w, ST_RELEASE);
        } else if (sqlite3_get_autocommit(w->conn)) {
            gst = op->status; /* SQLite ended the transaction: the earlier work is gone too */
            goto out_fail;
        } else {
            op->has_row = false;
            op->count = 0;
            rc = step_done(w, ST_ROLLBACK_TO);
            if (rc == SQLITE_OK)
                rc = step_done(w, ST_RELEASE);
        }
        if (rc != SQLITE_OK) {
            gst = fail_status(w, rc, "release");
            tx_rollback(w);
            goto out_fail;
        }
    }
    gst = tx_commit(w, "commit");
    if (gst == DB_OK) {
        op_leave(w, DB_OK);
        return;
    }

out_fail:
    for (op = head; op; op = op->next) {
        op->status = gst;
        op->has_row = false;
        op->count = 0;
    }
    op_leave(w, gst);
}

/* Cut list *head after at most GROUP_MAX operations; returns the first part. */
static struct sq_wop *take_group(struct sq_wop **head, struct sq_wop **tail)
{
    struct sq_wop *first = *head, *last = first;
    for (int n = 1; n < GROUP_MAX && last->next; n++)
        last = last->next;
    *head = last->next;
    if (!*head)
        *tail = NULL;
    last->next = NULL;
    return first;
}

static void list_append(struct sq_wop **head, struct sq_wop **tail, struct sq_wop *first,
                        struct sq_wop *last)
{
    if (*tail)
        (*tail)->next = first;
    else
        *head = first;
    *tail = last;
}

/*
 * The writer thread: takes whatever the loop handed over (everything that
 * arrived while the previous group was committing), commits it as one
 * group, hands the results back through the eventfd. Exits at stop without
 * starting what is still queued.
 */
static void *writer_main(void *arg)
{
    struct db_sqlite *s = arg;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->q_head && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop)
            break;
        struct sq_wop *group = take_group(&s->q_head, &s->q_tail);
        pthread_mutex_unlock(&s->mu);

        group_run(&s->wr, group);
        struct sq_wop *last = group;
        while (last->next)
            last = last->next;
        pthread_mutex_lock(&s->mu);
        list_append(&s->d_head, &s->d_tail, group, last);
        pthread_mutex_unlock(&s->mu);
        uint64_t one = 1;
        /* EAGAIN only when the counter is near overflow: the loop is woken already */
        if (write(s->done_io.fd, &one, sizeof one) != (ssize_t)sizeof one && errno != EAGAIN)
            db__log(LOG_ERROR, "sqlite", s->path, strerror(errno), "waking the loop failed: %s",
                    strerror(errno));
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    log_thread_done();
    return NULL;
}

static struct sq_wop *wop_new(struct db_sqlite *s, enum wop_kind kind)
{
    struct sq_wop *op = s->free_ops;
    struct buf text;

    if (op) {
        s->free_ops = op->next;
        s->nfree--;
        text = op->text;
        buf_reset(&text);
    } else {
        op = malloc(sizeof *op);
        if (!op)
            log_fatal("out of memory");
        buf_init(&text, WOP_TEXT_MAX);
    }
    memset(op, 0, sizeof *op);
    op->text = text;
    op->kind = kind;
    op->status = DB_ERROR;
    return op;
}

static void wop_free(struct db_sqlite *s, struct sq_wop *op)
{
    if (s->nfree >= OP_FREE_MAX) {
        buf_free(&op->text);
        free(op);
        return;
    }
    buf_shrink(&op->text, OP_TEXT_KEEP);
    op->next = s->free_ops;
    s->free_ops = op;
    s->nfree++;
}

/* Call op's callbacks with its result (loop thread), then recycle it. */
static void wop_answer(struct db_sqlite *s, struct sq_wop *op)
{
    if (--s->inflight < WRITES_MAX / 2)
        s->refusing = false;
    switch (op->kind) {
    case W_USER_CREATE:
    case W_USER_UPDATE:
        if (op->status == DB_OK && op->has_row && op->user_row) {
            struct db_user u = op->user;
            u.name.ptr = op->text.data + op->r1_off;
            u.email.ptr = op->text.data + op->r2_off;
            op->user_row(op->ctx, &u);
        }
        op->done(op->ctx, op->status);
        break;
    case W_USER_DELETE:
        op->done(op->ctx, op->status);
        break;
    case W_ORDER_CREATE:
        if ((op->status == DB_OK || op->status == DB_REPLAYED) && op->has_row && op->order_row) {
            struct db_order o = op->ord;
            o.items.ptr = op->text.data + op->r1_off;
            o.receipt.ptr = op->r2_null ? NULL : op->text.data + op->r2_off;
            op->order_row(op->ctx, &o);
        }
        op->done(op->ctx, op->status);
        break;
    case W_ORDERS_PROCESS:
        op->count_done(op->ctx, op->status, op->count);
        break;
    }
    wop_free(s, op);
}

static void answer_list(struct db_sqlite *s, struct sq_wop *op)
{
    while (op) {
        struct sq_wop *next = op->next;
        wop_answer(s, op);
        op = next;
    }
}

/* The eventfd became readable: answer what the writer finished. */
static void done_on_event(struct loop_io *io, uint32_t events)
{
    struct db_sqlite *s = container_of(io, struct db_sqlite, done_io);
    uint64_t n;
    (void)events;

    if (read(io->fd, &n, sizeof n) < 0 && errno != EAGAIN)
        db__log(LOG_ERROR, "sqlite", s->path, strerror(errno),
                "reading the writer's eventfd failed: %s", strerror(errno));
    pthread_mutex_lock(&s->mu);
    struct sq_wop *head = s->d_head;
    s->d_head = s->d_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    answer_list(s, head);
}

/*
 * Hand the writes submitted this turn to the writer (one lock, one wake-up
 * for all of them). Without a writer thread (a handle opened without a loop:
 * tools and unit tests) run them here, then answer them - and the writes
 * their callbacks submit, before returning.
 */
static void sq_flush(struct db *db)
{
    struct db_sqlite *s = to_sqlite(db);

    if (!s->p_head)
        return;
    if (s->threaded) {
        pthread_mutex_lock(&s->mu);
        list_append(&s->q_head, &s->q_tail, s->p_head, s->p_tail);
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        s->p_head = s->p_tail = NULL;
        s->np = 0;
        return;
    }
    if (s->flushing)
        return;
    s->flushing = true;
    while (s->p_head) {
        struct sq_wop *group = take_group(&s->p_head, &s->p_tail);
        s->np = 0;
        for (struct sq_wop *op = s->p_head; op; op = op->next)
            s->np++;
        group_run(&s->wr, group);
        answer_list(s, group);
    }
    s->flushing = false;
}

/*
 * A new write operation, or NULL (the caller answers DB_UNAVAILABLE) when
 * WRITES_MAX already wait on this handle: a writer stuck on a slow disk must
 * not let memory grow without bound.
 */
static struct sq_wop *wop_begin(struct db_sqlite *s, enum wop_kind kind, const char *name)
{
    if (s->inflight >= WRITES_MAX) {
        if (!s->refusing)
            db__log(LOG_ERROR, "sqlite", s->path, NULL,
                    "%s: %d writes already wait for the disk; refusing more "
                    "until half of them are answered",
                    name, s->inflight);
        s->refusing = true;
        return NULL;
    }
    return wop_new(s, kind);
}

/* Copy an input slice into op (ptr NULL: absent, *has false). */
static bool wop_input(struct sq_wop *op, struct str v, size_t *off, size_t *len, bool *has)
{
    if (has)
        *has = v.ptr != NULL;
    if (!v.ptr)
        return true;
    *len = v.len;
    return wop_keep(op, v, off);
}

/*
 * Queue op for the writer. User creates wait for db_flush at the end of the
 * turn, so a turn's creates share one commit; in inline mode everything else
 * runs at once, as the callers of a loop-less handle expect.
 */
static void wop_submit(struct db_sqlite *s, struct sq_wop *op)
{
    op->next = NULL;
    list_append(&s->p_head, &s->p_tail, op, op);
    s->np++;
    s->inflight++;
    if ((!s->threaded && op->kind != W_USER_CREATE) || s->np >= GROUP_MAX)
        sq_flush(&s->base);
}

/* Queue a user create or update: its name and email (either may be absent) are copied. */
static void user_write(struct db_sqlite *s, enum wop_kind kind, int64_t id, struct str name,
                       struct str email, db_user_fn row, db_done_fn done, void *ctx)
{
    struct sq_wop *op = wop_begin(s, kind, kind == W_USER_CREATE ? "user_create" : "user_update");

    if (!op) {
        done(ctx, DB_UNAVAILABLE);
        return;
    }
    op->id = id;
    op->user_row = row;
    op->done = done;
    op->ctx = ctx;
    if (!wop_input(op, name, &op->a_off, &op->a_len, &op->has_a) ||
        !wop_input(op, email, &op->b_off, &op->b_len, &op->has_b)) {
        wop_free(s, op);
        done(ctx, DB_ERROR);
        return;
    }
    wop_submit(s, op);
}

static void sq_user_create(struct db *db, struct str name, struct str email, db_user_fn row,
                           db_done_fn done, void *ctx)
{
    user_write(to_sqlite(db), W_USER_CREATE, 0, name, email, row, done, ctx);
}

static void sq_user_update(struct db *db, int64_t id, struct str name, struct str email,
                           db_user_fn row, db_done_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);

    /* Nothing to change: answer with the current row, a read. */
    if (!name.ptr && !email.ptr)
        sq_read(db,
                &(const struct db_read){
                    .q = DB_Q_user_get, .args = {id}, .user_row = row, .done = done, .ctx = ctx});
    else
        user_write(s, W_USER_UPDATE, id, name, email, row, done, ctx);
}

static void sq_user_delete(struct db *db, int64_t id, db_done_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    struct sq_wop *op = wop_begin(s, W_USER_DELETE, "user_delete");

    if (!op) {
        done(ctx, DB_UNAVAILABLE);
        return;
    }
    op->id = id;
    op->done = done;
    op->ctx = ctx;
    wop_submit(s, op);
}

static void sq_order_create(struct db *db, const struct db_order_new *o, db_order_fn row,
                            db_done_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    struct sq_wop *op = wop_begin(s, W_ORDER_CREATE, "order_create");

    if (!op) {
        done(ctx, DB_UNAVAILABLE);
        return;
    }
    op->order = *o;
    op->order.items = op->order.idempotency_key = op->order.request_hash = STR_NULL;
    op->order_row = row;
    op->done = done;
    op->ctx = ctx;
    bool has_hash;
    if (!wop_input(op, o->items, &op->a_off, &op->a_len, &op->has_a) ||
        !wop_input(op, o->idempotency_key, &op->b_off, &op->b_len, &op->has_b) ||
        !wop_input(op, o->idempotency_key.ptr ? o->request_hash : STR_NULL, &op->h_off, &op->h_len,
                   &has_hash)) {
        wop_free(s, op);
        done(ctx, DB_ERROR);
        return;
    }
    wop_submit(s, op);
}

static void sq_orders_process(struct db *db, int max, db_sign_fn sign, db_count_fn done, void *ctx)
{
    struct db_sqlite *s = to_sqlite(db);
    struct sq_wop *op = wop_begin(s, W_ORDERS_PROCESS, "orders_process");

    if (!op) {
        done(ctx, DB_UNAVAILABLE, 0);
        return;
    }
    op->max = max;
    op->sign = sign;
    op->count_done = done;
    op->ctx = ctx;
    wop_submit(s, op);
}

static void sq_stats(const struct db *db, struct db_stats *out)
{
    const struct db_sqlite *s = to_sqlite_const(db);
    out->connections = (s->rd.conn ? 1 : 0) + (s->wr.conn ? 1 : 0);
    out->busy = s->rd.busy + s->inflight;
    out->reconnects = 0; /* files are opened once */
    out->replica_lag_ms = -1;
}

static void conn_close(struct sq_conn *c)
{
    for (size_t i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(c->stmt[i]); /* NULL is a no-op */
    if (c->conn && sqlite3_close(c->conn) != SQLITE_OK)
        db__log(LOG_ERROR, "sqlite", c->path, sqlite3_errmsg(c->conn), "close failed: %s",
                sqlite3_errmsg(c->conn));
    c->conn = NULL;
    buf_free(&c->scratch);
}

/* Free a list without answering; returns how many there were. */
static int drop_list(struct db_sqlite *s, struct sq_wop *op)
{
    int n = 0;
    while (op) {
        struct sq_wop *next = op->next;
        buf_free(&op->text);
        free(op);
        s->inflight--;
        n++;
        op = next;
    }
    return n;
}

static void sq_close(struct db *db)
{
    struct db_sqlite *s = to_sqlite(db);

    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->tid, NULL); /* after the group it is committing, if any */
    }
    if (s->io_added)
        loop_del(s->loop, &s->done_io);
    if (s->done_io.fd >= 0)
        close(s->done_io.fd);
    /*
     * The loop flushes and answers after every turn, so only a drain cut
     * short by its deadline leaves writes here. Their requests are gone:
     * calling back would touch freed memory.
     */
    int queued = drop_list(s, s->p_head) + drop_list(s, s->q_head);
    int done = drop_list(s, s->d_head);
    if (queued || done)
        db__log(LOG_WARN, "sqlite", s->path, NULL,
                "at close %d writes were dropped before their commit and %d "
                "committed ones not answered",
                queued, done);
    while (s->free_ops) {
        struct sq_wop *op = s->free_ops;
        s->free_ops = op->next;
        buf_free(&op->text);
        free(op);
    }
    if (s->sync_inited) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
    }
    conn_close(&s->rd);
    conn_close(&s->wr);
    free(s->path);
    free(s);
}

/* SQLite's text of each read, for db__ops_check. */
static const char *const sq_query_sql[DB_Q_COUNT] = {
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql) [DB_Q_##name] = (sqlite_sql),
#include "db/queries.def"
#undef DB_QUERY
};

const struct db_ops db__sqlite_ops = {
    .name = "sqlite",
    .query_sql = sq_query_sql,
    .read = sq_read,
    .close = sq_close,
    .ping = sq_ping,
    .user_create = sq_user_create,
    .flush = sq_flush,
    .user_update = sq_user_update,
    .user_delete = sq_user_delete,
    .stats = sq_stats,
    .order_create = sq_order_create,
    .orders_process = sq_orders_process,
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
    struct sq_conn *s = arg;
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

static int prepare_all(struct sq_conn *s)
{
    for (size_t i = 0; i < ST_COUNT; i++) {
        const struct stmt_def *def = &stmt_defs[i];
        int rc =
            sqlite3_prepare_v3(s->conn, def->sql, -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            db__log(LOG_ERROR, "sqlite", s->path, sqlite3_errmsg(s->conn),
                    "preparing %s failed: %s (code %d; have migrations run?)", def->name,
                    sqlite3_errmsg(s->conn), rc);
            return -1;
        }
        if (sqlite3_bind_parameter_count(s->stmt[i]) != def->nparams ||
            sqlite3_column_count(s->stmt[i]) != def->ncols) {
            db__log(LOG_ERROR, "sqlite", s->path, NULL,
                    "statement %s has %d parameters and %d columns, expected "
                    "%d and %d",
                    def->name, sqlite3_bind_parameter_count(s->stmt[i]),
                    sqlite3_column_count(s->stmt[i]), def->nparams, def->ncols);
            return -1;
        }
    }
    return 0;
}

/*
 * Open one connection of a handle and prepare its statements. A reader gets
 * PRAGMA query_only: a write slipping onto the loop's connection fails loudly
 * instead of waiting for the disk there.
 */
static int conn_open(struct sq_conn *c, const char *path, const struct db_config *cfg, bool reader)
{
    char mode[16];
    bool row = false;
    int64_t fk = 0;

    c->path = path;
    c->busy_ms = busy_timeout_ms(cfg);
    buf_init(&c->scratch, SCRATCH_MAX);
    /* No SQLITE_OPEN_CREATE: a missing file means db_migrate did not run here. */
    c->conn = open_conn(path, SQLITE_OPEN_READWRITE, c->busy_ms);
    if (!c->conn)
        return -1;
    sqlite3_busy_handler(c->conn, busy_wait, c);
    /*
     * synchronous=FULL: in WAL mode NORMAL syncs only at checkpoints, so a
     * commit acknowledged to a client could vanish on power loss or an OS
     * crash. FULL fsyncs the WAL on every commit; an answered 201/200/204
     * then survives kill -9 and power loss. Costs one fsync per group.
     * foreign_keys is per connection and off by default: without it a user
     * with orders could be deleted.
     */
    if (exec_sql(c->conn, path, "set pragmas",
                 "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON"))
        return -1;
    if (reader && exec_sql(c->conn, path, "set query_only", "PRAGMA query_only = ON"))
        return -1;
    if (query_i64(c->conn, path, "read foreign_keys", "PRAGMA foreign_keys", 0, &row, &fk))
        return -1;
    if (!row || fk != 1) {
        db__log(LOG_ERROR, "sqlite", path, NULL, "this SQLite cannot enforce foreign keys");
        return -1;
    }
    if (reader) {
        if (journal_mode(c->conn, path, "PRAGMA journal_mode", c->busy_ms, mode, sizeof mode))
            return -1;
        if (strcmp(mode, "wal") != 0)
            db__log(LOG_WARN, "sqlite", path, NULL,
                    "journal_mode is %s, not wal; readers will wait for writers", mode);
    }
    return prepare_all(c);
}

/* Start the writer thread and the eventfd it answers through. 0, or -1 after logging. */
static int writer_start(struct db_sqlite *s, struct loop *loop)
{
    char eb[128];

    s->threaded = true;
    s->loop = loop;
    if (pthread_mutex_init(&s->mu, NULL) != 0)
        goto out_fail;
    if (pthread_cond_init(&s->cv, NULL) != 0) {
        pthread_mutex_destroy(&s->mu);
        goto out_fail;
    }
    s->sync_inited = true;
    s->done_io.on_event = done_on_event;
    s->done_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->done_io.fd < 0)
        goto out_fail;
    if (loop_add(loop, &s->done_io, EPOLLIN) != 0)
        goto out_fail;
    s->io_added = true;
    int rc = pthread_create(&s->tid, NULL, writer_main, s);
    if (rc != 0) {
        errno = rc;
        goto out_fail;
    }
    s->started = true;
    pthread_setname_np(s->tid, "brisk-sqlwrite");
    return 0;

out_fail:
    db__log(LOG_ERROR, "sqlite", s->path, NULL, "cannot start the writer thread: %s",
            errno_text(errno, eb, sizeof eb));
    return -1;
}

struct db *db__sqlite_open(const char *path, const struct db_config *cfg, struct loop *loop)
{
    struct db_sqlite *s = calloc(1, sizeof *s);

    if (!s)
        log_fatal("out of memory");
    s->base.ops = &db__sqlite_ops;
    s->path = dup_cstr(path);
    s->done_io.fd = -1;
    if (conn_open(&s->rd, s->path, cfg, true) || conn_open(&s->wr, s->path, cfg, false))
        goto out_close;
    if (loop && writer_start(s, loop))
        goto out_close;
    return &s->base;

out_close:
    sq_close(&s->base);
    return NULL;
}
