/*
 * test_db_sqlite.c - the SQLite backend of db.h against real files in a
 * temporary directory: URL forms, migrations (idempotent, concurrent), every
 * user and order operation and status, schema constraints, durability across
 * reopen, outage mapping, the handle's bookkeeping, and exactly-once order
 * processing across handles, processes and a process killed mid-batch.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "base/compiler.h"
#include "base/str.h"
#include "base/timefmt.h"
#include "db/db.h"
#include "db/db_int.h"
#include "net/loop.h"
#include "test.h"

#define MAX_ROWS 16

/* A valid pending order of user U (an SQL expression) for raw inserts. */
#define ORDER_INSERT_SQL(U)                                                                        \
    "INSERT INTO orders (user_id, items, subtotal_cents, discount_cents, tax_cents, "              \
    "total_cents) VALUES (" U ", '[{\"sku\":\"a\",\"quantity\":1,\"unit_price_cents\":100}]', "    \
    "100, 0, 21, 121)"

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define ORDER_COLS_SQL                                                                             \
    "INSERT INTO orders (user_id, items, subtotal_cents, discount_cents, tax_cents, total_cents, " \
    "status, receipt, processed_at, idempotency_key, request_hash) VALUES "

/* Rows the orders schema refuses, whoever writes them. */
static const struct {
    const char *what;
    const char *sql;
    int rc;
} bad_orders[] = {
    {"unknown status", ORDER_COLS_SQL "(1, '[1]', 0, 0, 0, 0, 'shipped', NULL, NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"NULL items", ORDER_COLS_SQL "(1, NULL, 0, 0, 0, 0, 'pending', NULL, NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_NOTNULL},
    {"items not json", ORDER_COLS_SQL "(1, '[1', 0, 0, 0, 0, 'pending', NULL, NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"items not an array",
     ORDER_COLS_SQL "(1, '{}', 0, 0, 0, 0, 'pending', NULL, NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"items empty", ORDER_COLS_SQL "(1, '[]', 0, 0, 0, 0, 'pending', NULL, NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"negative subtotal",
     ORDER_COLS_SQL "(1, '[1]', -1, 0, 0, -1, 'pending', NULL, NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"text total", ORDER_COLS_SQL "(1, '[1]', 0, 0, 0, 'x', 'pending', NULL, NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"total != subtotal - discount + tax",
     ORDER_COLS_SQL "(1, '[1]', 100, 0, 21, 120, 'pending', NULL, NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"discount above subtotal",
     ORDER_COLS_SQL "(1, '[1]', 100, 200, 0, 0, 'pending', NULL, NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"processed without receipt",
     ORDER_COLS_SQL "(1, '[1]', 0, 0, 0, 0, 'processed', NULL, '2026-01-02T03:04:05Z', NULL, "
                    "NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"processed without processed_at",
     ORDER_COLS_SQL "(1, '[1]', 0, 0, 0, 0, 'processed', '" HEX64 "', NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"pending with a receipt",
     ORDER_COLS_SQL "(1, '[1]', 0, 0, 0, 0, 'pending', '" HEX64 "', NULL, NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"receipt of 63 chars",
     ORDER_COLS_SQL "(1, '[1]', 0, 0, 0, 0, 'processed', substr('" HEX64 "', 2), "
                    "'2026-01-02T03:04:05Z', NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"uppercase receipt",
     ORDER_COLS_SQL "(1, '[1]', 0, 0, 0, 0, 'processed', upper('" HEX64 "'), "
                    "'2026-01-02T03:04:05Z', NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"processed_at of another shape",
     ORDER_COLS_SQL "(1, '[1]', 0, 0, 0, 0, 'processed', '" HEX64 "', '2026-01-02 03:04:05', "
                    "NULL, NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"key without hash", ORDER_COLS_SQL "(1, '[1]', 0, 0, 0, 0, 'pending', NULL, NULL, 'k', NULL)",
     SQLITE_CONSTRAINT_CHECK},
    {"empty key", ORDER_COLS_SQL "(1, '[1]', 0, 0, 0, 0, 'pending', NULL, NULL, '', '" HEX64 "')",
     SQLITE_CONSTRAINT_CHECK},
};

struct row_copy {
    int64_t id;
    char name[1024];
    size_t name_len;
    char email[512];
    size_t email_len;
    int64_t created_at;
};

/* What one operation reported. */
struct capture {
    int rows;
    int dones;
    int rows_after_done; /* row() called after done(): a contract break */
    enum db_status status;
    struct row_copy u[MAX_ROWS];
    struct db *db;         /* for the callbacks that poke the handle */
    enum db_status nested; /* status of an operation started inside row() */
    struct db_stats stats_in_row;
};

static char g_dir[64];

static void cap_init(struct capture *c)
{
    memset(c, 0, sizeof *c);
    c->status = (enum db_status) - 1;
}

static void cap_row(void *ctx, const struct db_user *u)
{
    struct capture *c = ctx;
    if (c->dones)
        c->rows_after_done++;
    if (c->rows < MAX_ROWS) {
        struct row_copy *r = &c->u[c->rows];
        r->id = u->id;
        r->created_at = u->created_at;
        r->name_len = u->name.len < sizeof r->name ? u->name.len : sizeof r->name;
        memcpy(r->name, u->name.ptr, r->name_len);
        r->email_len = u->email.len < sizeof r->email ? u->email.len : sizeof r->email;
        memcpy(r->email, u->email.ptr, r->email_len);
    }
    c->rows++;
}

static void cap_done(void *ctx, enum db_status st)
{
    struct capture *c = ctx;
    c->dones++;
    c->status = st;
}

/* Slice of a NUL-terminated string, followed in memory by junk so that len matters. */
static struct str slice(const char *s, size_t n)
{
    return (struct str){s, n};
}

static struct str cs(const char *s)
{
    return (struct str){s, strlen(s)};
}

static bool row_is(const struct row_copy *r, int64_t id, const char *name, const char *email)
{
    return r->id == id && r->name_len == strlen(name) && memcmp(r->name, name, r->name_len) == 0 &&
           r->email_len == strlen(email) && memcmp(r->email, email, r->email_len) == 0;
}

static void path_in_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
}

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *conn = NULL;
    if (sqlite3_open_v2(path, &conn, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(conn);
        return NULL;
    }
    sqlite3_busy_timeout(conn, 2000);
    sqlite3_extended_result_codes(conn, 1);
    return conn;
}

static int raw_exec(sqlite3 *conn, const char *sql)
{
    return sqlite3_exec(conn, sql, NULL, NULL, NULL);
}

/* First column of the first row as an integer, or -1. */
static int64_t raw_int(sqlite3 *conn, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* First column of the first row as text into out ("" when none). */
static void raw_text(sqlite3 *conn, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *st = NULL;
    out[0] = '\0';
    if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

static void remove_db_files(const char *path)
{
    char p[512];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-journal", path);
    unlink(p);
}

/* ---- operation shorthands: each checks that done came exactly once ---- */

static enum db_status op_create(struct db *db, struct str name, struct str email, struct capture *c)
{
    cap_init(c);
    db_user_create(db, name, email, cap_row, cap_done, c);
    ok(c->dones == 0, "create: waits for the flush");
    db_flush(db);
    ok(c->dones == 1 && c->rows_after_done == 0, "create: one done, rows before it");
    return c->status;
}

static enum db_status op_get(struct db *db, int64_t id, struct capture *c)
{
    cap_init(c);
    db_user_get(db, id, cap_row, cap_done, c);
    ok(c->dones == 1 && c->rows_after_done == 0, "get: one done, rows before it");
    return c->status;
}

static enum db_status op_update(struct db *db, int64_t id, struct str name, struct str email,
                                struct capture *c)
{
    cap_init(c);
    db_user_update(db, id, name, email, cap_row, cap_done, c);
    ok(c->dones == 1 && c->rows_after_done == 0, "update: one done, rows before it");
    return c->status;
}

static enum db_status op_delete(struct db *db, int64_t id)
{
    struct capture c;
    cap_init(&c);
    db_user_delete(db, id, cap_done, &c);
    ok(c.dones == 1, "delete: one done");
    return c.status;
}

static enum db_status op_list(struct db *db, int64_t after, int limit, struct capture *c)
{
    cap_init(c);
    db_user_list(db, after, limit, cap_row, cap_done, c);
    ok(c->dones == 1 && c->rows_after_done == 0, "list: one done, rows before it");
    return c->status;
}

static enum db_status op_ping(struct db *db)
{
    struct capture c;
    cap_init(&c);
    db_ping(db, 0, cap_done, &c);
    ok(c.dones == 1 && c.rows == 0, "ping: one done, no rows");
    return c.status;
}

static struct db *open_url(const char *url, int busy_ms)
{
    struct db_config cfg = {.url = url, .busy_timeout_ms = busy_ms};
    return db_open(&cfg, NULL);
}

static int migrate_url(const char *url)
{
    struct db_config cfg = {.url = url, .busy_timeout_ms = 0};
    return db_migrate(&cfg);
}

/* ---- tests ---- */

static void test_parse_timestamp(void)
{
    static const struct {
        const char *in;
        bool ok;
        int64_t want;
    } cases[] = {
        {"1970-01-01T00:00:00Z", true, 0},
        {"2026-11-27T06:05:53Z", true, 1795759553},
        {"2000-02-29T23:59:59Z", true, 951868799},
        {"9999-12-31T23:59:59Z", true, 253402300799},
        {"0001-01-01T00:00:00Z", true, -62135596800},
        {"1969-12-31T23:59:59Z", true, -1},
        {"1900-02-29T00:00:00Z", false, 0}, /* not a leap year */
        {"2023-02-29T00:00:00Z", false, 0},
        {"2024-02-30T00:00:00Z", false, 0},
        {"2024-04-31T00:00:00Z", false, 0},
        {"2024-13-01T00:00:00Z", false, 0},
        {"2024-00-01T00:00:00Z", false, 0},
        {"2024-01-00T00:00:00Z", false, 0},
        {"2024-01-01T24:00:00Z", false, 0},
        {"2024-01-01T00:60:00Z", false, 0},
        {"2024-01-01T00:00:60Z", false, 0},
        {"2024-01-01 00:00:00Z", false, 0},
        {"2024-01-01T00:00:00", false, 0},
        {"2024-01-01T00:00:00+00:00", false, 0},
        {"2024-1-01T00:00:00Z", false, 0},
        {"2024-01-01T00:00:0xZ", false, 0},
        {"+024-01-01T00:00:00Z", false, 0},
        {"", false, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int64_t v = 12345;
        bool r = parse_rfc3339_utc(cs(cases[i].in), &v);
        ok(r == cases[i].ok, "parse_utc_timestamp(\"%s\") returns %d", cases[i].in, r);
        ok(cases[i].ok ? v == cases[i].want : v == 12345, "parse_utc_timestamp(\"%s\") = %lld",
           cases[i].in, (long long)v);
    }
    int64_t v = 0;
    ok(!parse_rfc3339_utc(STR_NULL, &v), "parse_utc_timestamp(NULL) fails");
    /* Only the slice counts, not what follows it. */
    ok(parse_rfc3339_utc(slice("1970-01-01T00:00:10Zjunk", 20), &v) && v == 10,
       "parse_utc_timestamp uses the slice length");
}

static void test_urls(void)
{
    char path[256], url[300];
    struct db *db;

    ok(migrate_url("postgres://u:secret@localhost/db") == -1, "postgres:// migrate fails");
    ok(open_url("postgresql://u:secret@localhost/db", 0) == NULL, "postgresql:// open fails");
    ok(open_url("host=localhost dbname=brisk password=secret", 0) == NULL,
       "libpq key=value open fails");
    ok(migrate_url("mysql://root@localhost/x") == -1, "unknown scheme fails");
    ok(migrate_url("") == -1, "empty URL fails");
    ok(migrate_url("sqlite:") == -1, "sqlite: without a path fails");
    ok(open_url("sqlite://", 0) == NULL, "sqlite:// without a path fails");

    path_in_dir(path, sizeof path, "plain.db");
    ok(migrate_url(path) == 0, "plain path migrates");
    db = open_url(path, 0);
    ok(db != NULL, "plain path opens");
    ok(db && strcmp(db_backend_name(db), "sqlite") == 0, "backend name is sqlite");
    db_close(db);

    snprintf(url, sizeof url, "sqlite:%s/prefixed.db", g_dir);
    ok(migrate_url(url) == 0, "sqlite:PATH migrates");
    db = open_url(url, 0);
    ok(db != NULL, "sqlite:PATH opens");
    db_close(db);
    path_in_dir(path, sizeof path, "prefixed.db");
    ok(access(path, F_OK) == 0, "sqlite:PATH created the file at PATH");

    snprintf(url, sizeof url, "sqlite://%s/slashes.db", g_dir);
    ok(migrate_url(url) == 0, "sqlite://PATH migrates");
    db = open_url(url, 0);
    ok(db != NULL, "sqlite://PATH opens");
    db_close(db);
    path_in_dir(path, sizeof path, "slashes.db");
    ok(access(path, F_OK) == 0, "sqlite://PATH created the file at PATH");

    path_in_dir(path, sizeof path, "never-migrated.db");
    ok(open_url(path, 0) == NULL, "open without migrate fails (no file created)");
    ok(access(path, F_OK) != 0, "open did not create the file");

    db_close(NULL); /* accepted */
}

static void test_migrate(void)
{
    char path[256], bad[256], text[64];
    sqlite3 *raw;

    path_in_dir(path, sizeof path, "data/brisk.db");
    ok(migrate_url(path) == 0, "migrate creates the parent directory and the file");
    ok(migrate_url(path) == 0, "migrate again is a no-op");
    raw = raw_open(path);
    ok(raw != NULL, "raw open");
    if (!raw)
        return;
    ok(raw_int(raw, "SELECT count(*) FROM schema_migrations") == 2, "two migrations recorded");
    ok(raw_int(raw, "SELECT min(version) FROM schema_migrations") == 1 &&
           raw_int(raw, "SELECT max(version) FROM schema_migrations") == 2,
       "versions 1 and 2");
    raw_text(raw, "SELECT applied_at FROM schema_migrations WHERE version = 1", text, sizeof text);
    int64_t at = 0;
    ok(parse_rfc3339_utc(cs(text), &at) && llabs(at - (int64_t)time(NULL)) < 60,
       "applied_at is a current UTC timestamp: %s", text);
    raw_text(raw, "PRAGMA journal_mode", text, sizeof text);
    ok(strcmp(text, "wal") == 0, "journal_mode is wal: %s", text);
    ok(raw_int(raw, "SELECT count(*) FROM sqlite_schema WHERE name IN ('users', 'orders', "
                    "'users_email_lower_key', 'orders_user_id_idx', 'orders_pending_idx')") == 5,
       "tables and indexes exist");
    sqlite3_close(raw);

    path_in_dir(bad, sizeof bad, "a/b/brisk.db");
    ok(migrate_url(bad) == -1, "migrate creates one directory level only");
    path_in_dir(bad, sizeof bad, "a");
    ok(access(bad, F_OK) != 0, "no directory left behind");
}

/*
 * Several processes migrating and opening one fresh file at once (a service
 * started twice, or a deploy overlapping): all succeed, each version applied once.
 */
static void test_migrate_concurrent(void)
{
    enum { ROUNDS = 3, N = 8 };
    char path[256], name[64];

    for (int round = 0; round < ROUNDS; round++) {
        pid_t pids[N];
        int succeeded = 0;

        snprintf(name, sizeof name, "concurrent%d.db", round);
        path_in_dir(path, sizeof path, name);
        fflush(stdout);
        fflush(stderr);
        for (int i = 0; i < N; i++) {
            pids[i] = fork();
            if (pids[i] == 0) {
                struct db *db = NULL;
                if (migrate_url(path) == 0)
                    db = open_url(path, 0);
                int rc = db ? 0 : 1;
                db_close(db);
                _exit(rc);
            }
        }
        for (int i = 0; i < N; i++) {
            int wst = 0;
            if (pids[i] > 0 && waitpid(pids[i], &wst, 0) == pids[i] && WIFEXITED(wst) &&
                WEXITSTATUS(wst) == 0)
                succeeded++;
        }
        ok(succeeded == N, "round %d: %d of %d concurrent migrate+open succeeded", round, succeeded,
           N);
        sqlite3 *raw = raw_open(path);
        ok(raw && raw_int(raw, "SELECT count(*) FROM schema_migrations") == 2,
           "round %d: each migration recorded once", round);
        ok(raw && raw_int(raw, "SELECT count(*) FROM sqlite_schema WHERE name = 'users'") == 1,
           "round %d: users table exists once", round);
        sqlite3_close(raw);
        remove_db_files(path);
    }
}

static void test_users(void)
{
    char path[256];
    struct capture c;
    struct db_stats stats;

    path_in_dir(path, sizeof path, "users.db");
    ok(migrate_url(path) == 0, "users: migrate");
    struct db *db = open_url(path, 0);
    ok(db != NULL, "users: open");
    if (!db)
        return;

    db_stats(db, &stats);
    /* two connections: the loop's reader and the writer's */
    ok(stats.connections == 2 && stats.busy == 0, "stats idle: %d %d", stats.connections,
       stats.busy);
    ok(op_ping(db) == DB_OK, "ping");

    /* create: slices are not NUL-terminated, only len counts */
    int64_t t0 = (int64_t)time(NULL);
    ok(op_create(db, slice("Ada LovelaceXXXX", 12), slice("A@x.ioYYYY", 6), &c) == DB_OK,
       "create Ada");
    int64_t t1 = (int64_t)time(NULL);
    ok(c.rows == 1 && row_is(&c.u[0], 1, "Ada Lovelace", "A@x.io"), "create returns the row");
    ok(c.u[0].created_at >= t0 - 1 && c.u[0].created_at <= t1 + 1,
       "created_at %lld is now (%lld..%lld)", (long long)c.u[0].created_at, (long long)t0,
       (long long)t1);
    int64_t ada_created = c.u[0].created_at;

    ok(op_create(db, cs("Other Ada"), cs("a@X.IO"), &c) == DB_CONFLICT && c.rows == 0,
       "create with the same email in other case: conflict, no row");
    ok(op_create(db, cs("Grace Hopper"), cs("grace@example.com"), &c) == DB_OK && c.rows == 1 &&
           c.u[0].id > 1 && row_is(&c.u[0], c.u[0].id, "Grace Hopper", "grace@example.com"),
       "create Grace");
    int64_t grace = c.u[0].id;
    ok(grace > 1, "Grace has a later id");

    /* UTF-8 name: 200 characters of 2 bytes each is allowed */
    char longname[401];
    for (int i = 0; i < 200; i++)
        memcpy(longname + 2 * i, "\xc3\xa9", 2); /* é */
    longname[400] = '\0';
    ok(op_create(db, cs(longname), cs("e@e.ee"), &c) == DB_OK && c.rows == 1 &&
           c.u[0].name_len == 400 && memcmp(c.u[0].name, longname, 400) == 0,
       "200-character UTF-8 name stored intact");
    int64_t eacute = c.u[0].id;

    /* too long name: the schema refuses, an error not a conflict */
    char toolong[202];
    memset(toolong, 'x', 201);
    toolong[201] = '\0';
    ok(op_create(db, cs(toolong), cs("long@x.io"), &c) == DB_ERROR && c.rows == 0,
       "201-character name is a DB_ERROR");

    /* get */
    ok(op_get(db, 1, &c) == DB_OK && c.rows == 1 && row_is(&c.u[0], 1, "Ada Lovelace", "A@x.io") &&
           c.u[0].created_at == ada_created,
       "get Ada: every field");
    ok(op_get(db, 999, &c) == DB_NOT_FOUND && c.rows == 0, "get unknown: not found");
    ok(op_get(db, 0, &c) == DB_NOT_FOUND && c.rows == 0, "get 0: not found");
    ok(op_get(db, INT64_MAX, &c) == DB_NOT_FOUND, "get INT64_MAX: not found");

    /* update */
    ok(op_update(db, 1, cs("Augusta Ada King"), STR_NULL, &c) == DB_OK && c.rows == 1 &&
           row_is(&c.u[0], 1, "Augusta Ada King", "A@x.io") && c.u[0].created_at == ada_created,
       "update name only");
    ok(op_update(db, 1, STR_NULL, slice("ada@lovelace.org!", 16), &c) == DB_OK && c.rows == 1 &&
           row_is(&c.u[0], 1, "Augusta Ada King", "ada@lovelace.org") &&
           c.u[0].created_at == ada_created,
       "update email only");
    ok(op_update(db, 1, cs("Ada"), cs("ADA@Lovelace.org"), &c) == DB_OK && c.rows == 1 &&
           row_is(&c.u[0], 1, "Ada", "ADA@Lovelace.org"),
       "update both, own email in another case: ok");
    ok(op_update(db, 1, STR_NULL, STR_NULL, &c) == DB_OK && c.rows == 1 &&
           row_is(&c.u[0], 1, "Ada", "ADA@Lovelace.org") && c.u[0].created_at == ada_created,
       "update with no field returns the current row");
    ok(op_update(db, 1, STR_NULL, cs("GRACE@example.com"), &c) == DB_CONFLICT && c.rows == 0,
       "update to another user's email (other case): conflict");
    ok(op_get(db, 1, &c) == DB_OK && row_is(&c.u[0], 1, "Ada", "ADA@Lovelace.org"),
       "conflicting update changed nothing");
    ok(op_update(db, 999, cs("Nobody"), STR_NULL, &c) == DB_NOT_FOUND && c.rows == 0,
       "update unknown: not found");
    ok(op_update(db, 999, STR_NULL, STR_NULL, &c) == DB_NOT_FOUND && c.rows == 0,
       "empty update of unknown: not found");
    ok(op_update(db, 1, cs(toolong), STR_NULL, &c) == DB_ERROR && c.rows == 0,
       "update to a too-long name: error");

    /* list and pagination: ids 1, grace, eacute */
    ok(op_list(db, 0, 50, &c) == DB_OK && c.rows == 3, "list all: 3 rows");
    ok(c.rows == 3 && row_is(&c.u[0], 1, "Ada", "ADA@Lovelace.org") &&
           c.u[0].created_at == ada_created &&
           row_is(&c.u[1], grace, "Grace Hopper", "grace@example.com") && c.u[2].id == eacute &&
           c.u[2].name_len == 400 && c.u[2].email_len == 6 &&
           memcmp(c.u[2].email, "e@e.ee", 6) == 0 && c.u[2].created_at >= t0 - 1,
       "list rows in id order with every field");
    ok(op_list(db, 0, 2, &c) == DB_OK && c.rows == 2 && c.u[0].id == 1 && c.u[1].id == grace,
       "list page 1 of 2");
    ok(op_list(db, grace, 2, &c) == DB_OK && c.rows == 1 && c.u[0].id == eacute,
       "list page 2 after %lld", (long long)grace);
    ok(op_list(db, eacute, 2, &c) == DB_OK && c.rows == 0, "list past the end: empty, ok");
    ok(op_list(db, 0, 0, &c) == DB_OK && c.rows == 0, "list limit 0: empty");
    ok(op_list(db, 0, -1, &c) == DB_OK && c.rows == 0, "list limit -1: empty, not unlimited");

    /* delete, has-children */
    sqlite3 *raw = raw_open(path);
    ok(raw != NULL, "raw open for orders");
    char sql[512];
    snprintf(sql, sizeof sql, ORDER_INSERT_SQL("%lld"), (long long)grace);
    ok(raw && raw_exec(raw, sql) == SQLITE_OK, "insert an order for Grace");
    ok(raw && raw_int(raw, "SELECT count(*) FROM orders WHERE status = 'pending' AND created_at "
                           "GLOB '[0-9]*-*T*Z'") == 1,
       "order defaults: pending, created_at");
    ok(op_delete(db, grace) == DB_HAS_CHILDREN, "delete a user with orders: has children");
    ok(op_get(db, grace, &c) == DB_OK && c.rows == 1, "Grace still there");
    ok(op_delete(db, 999) == DB_NOT_FOUND, "delete unknown: not found");
    ok(op_delete(db, eacute) == DB_OK, "delete a user without orders");
    ok(op_get(db, eacute, &c) == DB_NOT_FOUND, "deleted user is gone");
    ok(op_delete(db, eacute) == DB_NOT_FOUND, "delete again: not found");
    ok(op_create(db, cs("Next"), cs("e@e.ee"), &c) == DB_OK && c.rows == 1 && c.u[0].id > eacute,
       "ids are not reused after delete (%lld > %lld); freed email reusable", (long long)c.u[0].id,
       (long long)eacute);
    ok(raw && raw_exec(raw, "DELETE FROM orders") == SQLITE_OK, "remove the order");
    ok(op_delete(db, grace) == DB_OK, "delete Grace once her orders are gone");
    sqlite3_close(raw);

    db_stats(db, &stats);
    ok(stats.connections == 2 && stats.busy == 0, "stats idle after work");
    db_close(db);
}

/* The schema itself refuses bad rows, whoever writes them. */
static void test_schema(void)
{
    char path[256];
    path_in_dir(path, sizeof path, "schema.db");
    ok(migrate_url(path) == 0, "schema: migrate");
    sqlite3 *raw = raw_open(path);
    ok(raw != NULL, "schema: raw open");
    if (!raw)
        return;
    raw_exec(raw, "PRAGMA foreign_keys = ON");
    ok(raw_exec(raw, "INSERT INTO users (name, email) VALUES (printf('%.*c', 200, 'n'), "
                     "'a@b')") == SQLITE_OK,
       "200-character name accepted");
    ok(raw_exec(raw, "INSERT INTO users (name, email) VALUES (printf('%.*c', 201, 'n'), "
                     "'b@b')") == SQLITE_CONSTRAINT_CHECK,
       "201-character name rejected");
    ok(raw_exec(raw, "INSERT INTO users (name, email) VALUES ('', 'c@b')") ==
           SQLITE_CONSTRAINT_CHECK,
       "empty name rejected");
    ok(raw_exec(raw, "INSERT INTO users (name, email) VALUES ('n', NULL)") ==
           SQLITE_CONSTRAINT_NOTNULL,
       "NULL email rejected");
    ok(raw_exec(raw, "INSERT INTO users (name, email) VALUES ('n', 'ab')") ==
           SQLITE_CONSTRAINT_CHECK,
       "2-byte email rejected");
    /* 127 two-byte characters = 254 bytes ok; 128 = 256 bytes rejected although 128 chars */
    ok(raw_exec(raw, "INSERT INTO users (name, email) VALUES ('n', replace(printf('%.*c', 127, "
                     "'x'), 'x', char(233)))") == SQLITE_OK,
       "254-byte email accepted");
    ok(raw_exec(raw, "INSERT INTO users (name, email) VALUES ('n', replace(printf('%.*c', 128, "
                     "'x'), 'x', char(233)))") == SQLITE_CONSTRAINT_CHECK,
       "email limit counts bytes, not characters");
    ok(raw_exec(raw, "INSERT INTO users (name, email) VALUES ('n', 'A@B')") ==
           SQLITE_CONSTRAINT_UNIQUE,
       "unique email ignores ASCII case");
    ok(raw_exec(raw, "INSERT INTO users (name, email, created_at) VALUES ('n', 'd@b', "
                     "'2024-01-01 00:00:00')") == SQLITE_CONSTRAINT_CHECK,
       "created_at of another shape rejected");
    ok(raw_exec(raw, ORDER_INSERT_SQL("424242")) == SQLITE_CONSTRAINT_FOREIGNKEY,
       "order of an unknown user rejected");
    ok(raw_exec(raw, ORDER_INSERT_SQL("1")) == SQLITE_OK, "valid pending order accepted");
    ok(raw_int(raw, "SELECT count(*) FROM orders WHERE status = 'pending' AND receipt IS NULL "
                    "AND processed_at IS NULL AND created_at GLOB '[0-9]*-*T*Z'") == 1,
       "order defaults: pending, no receipt, created_at now");
    for (size_t i = 0; i < ARRAY_LEN(bad_orders); i++)
        ok(raw_exec(raw, bad_orders[i].sql) == bad_orders[i].rc, "order schema: %s",
           bad_orders[i].what);
    ok(raw_exec(raw, "UPDATE orders SET status = 'processed', receipt = '" HEX64 "', "
                     "processed_at = '2026-01-02T03:04:05Z' WHERE id = 1") == SQLITE_OK,
       "pending order marked processed with receipt and processed_at");
    ok(raw_exec(raw, "UPDATE orders SET status = 'pending' WHERE id = 1") ==
           SQLITE_CONSTRAINT_CHECK,
       "processed order cannot go back to pending with its receipt");
    ok(raw_exec(raw, "INSERT INTO orders (user_id, items, subtotal_cents, discount_cents, "
                     "tax_cents, total_cents, idempotency_key, request_hash) VALUES (1, '[1]', 0, "
                     "0, 0, 0, 'k', '" HEX64 "')") == SQLITE_OK,
       "order with an idempotency key");
    ok(raw_exec(raw, "INSERT INTO orders (user_id, items, subtotal_cents, discount_cents, "
                     "tax_cents, total_cents, idempotency_key, request_hash) VALUES (1, '[1]', 0, "
                     "0, 0, 0, 'k', '" HEX64 "')") == SQLITE_CONSTRAINT_UNIQUE,
       "idempotency key is unique");
    ok(raw_exec(raw, "DELETE FROM users WHERE id = 1") == SQLITE_CONSTRAINT_FOREIGNKEY,
       "user with orders cannot be deleted");
    sqlite3_close(raw);
}

static void test_reopen(void)
{
    char path[256];
    struct capture c;

    path_in_dir(path, sizeof path, "durable.db");
    ok(migrate_url(path) == 0, "reopen: migrate");
    struct db *db = open_url(path, 0);
    ok(db != NULL, "reopen: open");
    if (!db)
        return;
    ok(op_create(db, cs("Kept"), cs("kept@x.io"), &c) == DB_OK && c.rows == 1, "create Kept");
    struct row_copy kept = c.u[0];
    db_close(db);

    ok(migrate_url(path) == 0, "migrate an existing database");
    db = open_url(path, 0);
    ok(db != NULL, "open again");
    if (!db)
        return;
    ok(op_get(db, kept.id, &c) == DB_OK && c.rows == 1 &&
           row_is(&c.u[0], kept.id, "Kept", "kept@x.io") && c.u[0].created_at == kept.created_at,
       "row survives close and reopen with every field");
    db_close(db);
}

/* A writer holding the lock past busy_timeout: writes are unavailable, WAL reads still work. */
static void test_unavailable(void)
{
    char path[256];
    struct capture c;

    path_in_dir(path, sizeof path, "locked.db");
    ok(migrate_url(path) == 0, "locked: migrate");
    struct db *db = open_url(path, 50);
    ok(db != NULL, "locked: open with 50 ms busy timeout");
    if (!db)
        return;
    ok(op_create(db, cs("First"), cs("first@x.io"), &c) == DB_OK, "create before the lock");
    int64_t first = c.u[0].id;

    sqlite3 *raw = raw_open(path);
    ok(raw && raw_exec(raw, "BEGIN IMMEDIATE") == SQLITE_OK, "raw connection takes the write lock");
    ok(op_create(db, cs("Second"), cs("second@x.io"), &c) == DB_UNAVAILABLE && c.rows == 0,
       "create while locked: unavailable");
    ok(op_update(db, first, cs("Renamed"), STR_NULL, &c) == DB_UNAVAILABLE && c.rows == 0,
       "update while locked: unavailable");
    ok(op_delete(db, first) == DB_UNAVAILABLE, "delete while locked: unavailable");
    ok(op_get(db, first, &c) == DB_OK && c.rows == 1 &&
           row_is(&c.u[0], first, "First", "first@x.io"),
       "get while locked: WAL reader is not blocked");
    ok(op_ping(db) == DB_OK, "ping while locked");
    ok(raw && raw_exec(raw, "COMMIT") == SQLITE_OK, "raw connection releases the lock");
    ok(op_create(db, cs("Second"), cs("second@x.io"), &c) == DB_OK && c.rows == 1 &&
           c.u[0].id > first,
       "create after the lock: ok");
    sqlite3_close(raw);
    db_close(db);
}

/* Calls into the handle from inside a row callback are refused; done callbacks may. */
static void nested_row(void *ctx, const struct db_user *u)
{
    struct capture *c = ctx;
    struct capture inner;
    cap_row(ctx, u);
    db_stats(c->db, &c->stats_in_row);
    cap_init(&inner);
    db_user_get(c->db, u->id, cap_row, cap_done, &inner);
    c->nested = inner.dones == 1 && inner.rows == 0 ? inner.status : (enum db_status) - 1;
}

static void chained_done(void *ctx, enum db_status st)
{
    struct capture *c = ctx;
    struct capture inner;
    cap_done(ctx, st);
    cap_init(&inner);
    db_user_get(c->db, 1, cap_row, cap_done, &inner);
    c->nested = inner.dones == 1 && inner.rows == 1 ? inner.status : (enum db_status) - 1;
}

static void test_reentry(void)
{
    char path[256];
    struct capture c;

    path_in_dir(path, sizeof path, "reentry.db");
    ok(migrate_url(path) == 0, "reentry: migrate");
    struct db *db = open_url(path, 0);
    ok(db != NULL, "reentry: open");
    if (!db)
        return;
    ok(op_create(db, cs("One"), cs("one@x.io"), &c) == DB_OK, "create One");
    ok(op_create(db, cs("Two"), cs("two@x.io"), &c) == DB_OK, "create Two");

    cap_init(&c);
    c.db = db;
    db_user_list(db, 0, 10, nested_row, cap_done, &c);
    ok(c.dones == 1 && c.status == DB_OK && c.rows == 2, "list completes despite nested calls");
    ok(c.nested == DB_ERROR, "operation from a row callback refused");
    ok(c.stats_in_row.busy == 1 && c.stats_in_row.connections == 2, "busy=1 during an operation");

    cap_init(&c);
    c.db = db;
    db_user_get(db, 2, cap_row, chained_done, &c);
    ok(c.dones == 1 && c.status == DB_OK && c.rows == 1 && c.u[0].id == 2, "get Two");
    ok(c.nested == DB_OK, "operation from a done callback runs");

    struct db_stats stats;
    db_stats(db, &stats);
    ok(stats.busy == 0, "idle afterwards");
    db_close(db);
}

/* ---- the writer thread (a handle opened with a loop) ---- */

static bool loop_always(struct loop *l, void *arg)
{
    (void)l;
    (void)arg;
    return true;
}

/* Run loop iterations until *dones is nonzero or 10 s pass; true when it is. */
static bool pump_until(struct loop *l, const int *dones)
{
    struct loop_hooks hooks = {.drained = loop_always};
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        if (*dones)
            return true;
        loop_run(l, &hooks, 0); /* stop is requested: one iteration each */
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (t.tv_sec - t0.tv_sec < 10);
    return *dones != 0;
}

static void test_writer_thread(void)
{
    char path[256];
    struct capture c, r;
    struct db_stats stats;

    path_in_dir(path, sizeof path, "writer.db");
    ok(migrate_url(path) == 0, "writer: migrate");
    struct loop *l = loop_create(0);
    ok(l != NULL, "writer: loop");
    if (!l)
        return;
    loop_request_stop(l);
    struct db_config cfg = {.url = path, .busy_timeout_ms = 3000};
    struct db *db = db_open(&cfg, l);
    ok(db != NULL, "writer: open with a loop");
    if (!db) {
        loop_destroy(l);
        return;
    }

    cap_init(&c);
    db_user_create(db, cs("Thread"), cs("thread@x.io"), cap_row, cap_done, &c);
    db_flush(db);
    ok(c.dones == 0, "writer: a create is answered through the loop, not inside db_flush");
    ok(pump_until(l, &c.dones) && c.dones == 1 && c.status == DB_OK && c.rows == 1 &&
           c.rows_after_done == 0 && row_is(&c.u[0], c.u[0].id, "Thread", "thread@x.io"),
       "writer: create answered on the loop with its row");
    int64_t id = c.u[0].id;
    ok(op_get(db, id, &r) == DB_OK && row_is(&r.u[0], id, "Thread", "thread@x.io"),
       "writer: the loop's reader sees the committed row at once");

    /* The write lock is held elsewhere: the create waits on the writer, reads go on. */
    sqlite3 *raw = raw_open(path);
    ok(raw && raw_exec(raw, "BEGIN IMMEDIATE") == SQLITE_OK, "writer: raw takes the write lock");
    cap_init(&c);
    db_user_update(db, id, cs("Renamed"), STR_NULL, cap_row, cap_done, &c);
    db_flush(db);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    enum db_status gst = op_get(db, id, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double read_ms =
        (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    ok(gst == DB_OK && row_is(&r.u[0], id, "Thread", "thread@x.io") && read_ms < 100,
       "writer: a read answers while a write waits for the lock (%.1f ms, old row)", read_ms);
    db_stats(db, &stats);
    ok(stats.busy == 1 && stats.connections == 2, "writer: the waiting write counts as busy");
    ok(c.dones == 0, "writer: the update still waits");
    ok(raw && raw_exec(raw, "COMMIT") == SQLITE_OK, "writer: raw releases the lock");
    ok(pump_until(l, &c.dones) && c.status == DB_OK && c.rows == 1 &&
           row_is(&c.u[0], id, "Renamed", "thread@x.io"),
       "writer: the update is committed once the lock is free");
    sqlite3_close(raw);

    /* Several writes of one turn: one group, each answered with its own outcome. */
    struct capture d, e;
    cap_init(&c);
    cap_init(&d);
    cap_init(&e);
    db_user_create(db, cs("Dup"), cs("THREAD@x.io"), cap_row, cap_done, &c);
    db_user_create(db, cs("Other"), cs("other@x.io"), cap_row, cap_done, &d);
    db_user_delete(db, id, cap_done, &e);
    db_flush(db);
    ok(pump_until(l, &c.dones) && pump_until(l, &d.dones) && pump_until(l, &e.dones),
       "writer: the group is answered");
    ok(c.status == DB_CONFLICT && c.rows == 0, "writer: the duplicate email is refused alone");
    ok(d.status == DB_OK && d.rows == 1, "writer: its neighbour in the group is stored");
    ok(e.status == DB_OK && op_get(db, id, &r) == DB_NOT_FOUND, "writer: delete");

    /* Closing with a write handed over but not answered: dropped, nothing freed twice. */
    cap_init(&c);
    db_user_create(db, cs("Late"), cs("late@x.io"), cap_row, cap_done, &c);
    db_flush(db);
    db_close(db);
    ok(c.dones == 0, "writer: no callback after close");
    loop_destroy(l);
}

/* ---- orders ---- */

struct order_copy {
    int64_t id, user_id;
    bool processed;
    char items[512];
    size_t items_len;
    int64_t subtotal, discount, tax, total;
    char receipt[80];
    bool has_receipt;
    int64_t created_at, processed_at;
};

struct ocapture {
    int rows, dones, rows_after_done;
    enum db_status status;
    struct order_copy o[MAX_ROWS];
};

static void ocap_init(struct ocapture *c)
{
    memset(c, 0, sizeof *c);
    c->status = (enum db_status) - 1;
}

static void ocap_row(void *ctx, const struct db_order *o)
{
    struct ocapture *c = ctx;
    if (c->dones)
        c->rows_after_done++;
    if (c->rows < MAX_ROWS) {
        struct order_copy *r = &c->o[c->rows];
        r->id = o->id;
        r->user_id = o->user_id;
        r->processed = o->processed;
        r->items_len = o->items.len < sizeof r->items ? o->items.len : sizeof r->items;
        memcpy(r->items, o->items.ptr, r->items_len);
        r->subtotal = o->subtotal_cents;
        r->discount = o->discount_cents;
        r->tax = o->tax_cents;
        r->total = o->total_cents;
        r->has_receipt = o->receipt.ptr != NULL;
        snprintf(r->receipt, sizeof r->receipt, "%.*s", (int)o->receipt.len,
                 o->receipt.ptr ? o->receipt.ptr : "");
        r->created_at = o->created_at;
        r->processed_at = o->processed_at;
    }
    c->rows++;
}

static void ocap_done(void *ctx, enum db_status st)
{
    struct ocapture *c = ctx;
    c->dones++;
    c->status = st;
}

#define ITEMS_A "[{\"sku\":\"A-1\",\"quantity\":2,\"unit_price_cents\":1999}]"
#define ITEMS_B "[{\"sku\":\"B\",\"quantity\":1,\"unit_price_cents\":10000}]"
#define HASH_1 "1111111111111111111111111111111111111111111111111111111111111111"
#define HASH_2 "2222222222222222222222222222222222222222222222222222222222222222"

/* A new order of ITEMS_A (3998 + 840 tax = 4838) for user, with an optional key. */
static struct db_order_new new_order(int64_t user, const char *key, const char *hash)
{
    struct db_order_new o = {.user_id = user,
                             .items = cs(ITEMS_A),
                             .subtotal_cents = 3998,
                             .discount_cents = 0,
                             .tax_cents = 840,
                             .total_cents = 4838};
    if (key) {
        o.idempotency_key = cs(key);
        o.request_hash = cs(hash);
    }
    return o;
}

static enum db_status op_order_create(struct db *db, const struct db_order_new *o,
                                      struct ocapture *c)
{
    ocap_init(c);
    db_order_create(db, o, ocap_row, ocap_done, c);
    ok(c->dones == 1 && c->rows_after_done == 0, "order create: one done, rows before it");
    return c->status;
}

static enum db_status op_order_get(struct db *db, int64_t id, struct ocapture *c)
{
    ocap_init(c);
    db_order_get(db, id, ocap_row, ocap_done, c);
    ok(c->dones == 1 && c->rows_after_done == 0, "order get: one done, rows before it");
    return c->status;
}

static enum db_status op_order_list(struct db *db, int64_t user, int64_t after, int limit,
                                    struct ocapture *c)
{
    ocap_init(c);
    db_order_list(db, user, after, limit, ocap_row, ocap_done, c);
    ok(c->dones == 1 && c->rows_after_done == 0, "order list: one done, rows before it");
    return c->status;
}

struct count_capture {
    int dones;
    enum db_status status;
    int64_t n;
};

static void count_done(void *ctx, enum db_status st, int64_t n)
{
    struct count_capture *c = ctx;
    c->dones++;
    c->status = st;
    c->n = n;
}

static int64_t op_pending(struct db *db)
{
    struct count_capture c = {0};
    db_orders_pending(db, count_done, &c);
    ok(c.dones == 1 && c.status == DB_OK, "pending: one done, ok");
    return c.status == DB_OK ? c.n : -1;
}

/* What sign() callbacks record. */
#define MAX_SIGNED 256
struct signer {
    int64_t signed_ids[MAX_SIGNED];
    int nsigned;
    int64_t refuse_id; /* return -1 for this id */
    struct db *other;  /* when set: try to process on this handle from inside sign() */
    enum db_status other_status;
    int64_t other_n;
    int other_seen_pending;  /* get on `other` inside sign(): the order still reads pending */
    bool bad_receipt;        /* write a receipt the schema refuses */
    struct count_capture cc; /* what done() reported (sign and done share ctx) */
};

static void signer_done(void *ctx, enum db_status st, int64_t n)
{
    struct signer *sg = ctx;
    count_done(&sg->cc, st, n);
}

static void receipt_for(int64_t id, char out[65])
{
    snprintf(out, 65, "%064llx", (unsigned long long)id);
}

static int test_sign(void *ctx, const struct db_order *o, char receipt[65])
{
    struct signer *sg = ctx;
    if (o->id == sg->refuse_id)
        return -1;
    if (sg->nsigned < MAX_SIGNED)
        sg->signed_ids[sg->nsigned++] = o->id;
    if (sg->other) {
        struct signer inner;
        struct ocapture oc;
        memset(&inner, 0, sizeof inner);
        db_orders_process(sg->other, 10, test_sign, signer_done, &inner);
        sg->other_status = inner.cc.dones == 1 ? inner.cc.status : (enum db_status) - 1;
        sg->other_n = inner.cc.n + inner.nsigned;
        ocap_init(&oc);
        db_order_get(sg->other, o->id, ocap_row, ocap_done, &oc);
        if (oc.status == DB_OK && oc.rows == 1 && !oc.o[0].processed)
            sg->other_seen_pending++;
        sg->other = NULL; /* once */
    }
    receipt_for(o->id, receipt);
    if (sg->bad_receipt)
        receipt[0] = 'X';
    return 0;
}

static int64_t op_process(struct db *db, int max, struct signer *sg, enum db_status *st)
{
    memset(&sg->cc, 0, sizeof sg->cc);
    sg->cc.status = (enum db_status) - 1;
    db_orders_process(db, max, test_sign, signer_done, sg);
    ok(sg->cc.dones == 1, "process: one done");
    *st = sg->cc.status;
    return sg->cc.n;
}

static bool order_is(const struct order_copy *o, int64_t id, int64_t user, bool processed)
{
    return o->id == id && o->user_id == user && o->processed == processed &&
           o->items_len == strlen(ITEMS_A) && memcmp(o->items, ITEMS_A, o->items_len) == 0 &&
           o->subtotal == 3998 && o->discount == 0 && o->tax == 840 && o->total == 4838;
}

static void test_orders(void)
{
    char path[256];
    struct capture uc;
    struct ocapture c;
    struct db_order_new n;

    path_in_dir(path, sizeof path, "orders.db");
    ok(migrate_url(path) == 0, "orders: migrate");
    struct db *db = open_url(path, 0);
    struct db *db2 = open_url(path, 50); /* a second handle on the same file */
    ok(db && db2, "orders: two handles");
    if (!db || !db2)
        goto out;
    ok(op_create(db, cs("Ada"), cs("ada@o.io"), &uc) == DB_OK, "user Ada");
    int64_t ada = uc.u[0].id;
    ok(op_create(db, cs("Bob"), cs("bob@o.io"), &uc) == DB_OK, "user Bob");
    int64_t bob = uc.u[0].id;
    ok(op_pending(db) == 0, "nothing pending at first");

    /* create */
    int64_t t0 = (int64_t)time(NULL);
    n = new_order(ada, NULL, NULL);
    ok(op_order_create(db, &n, &c) == DB_OK && c.rows == 1, "create an order");
    int64_t t1 = (int64_t)time(NULL);
    struct order_copy first = c.o[0];
    ok(first.id > 0 && order_is(&first, first.id, ada, false) && !first.has_receipt &&
           first.processed_at == 0,
       "created order: every field, pending, no receipt");
    ok(first.created_at >= t0 - 1 && first.created_at <= t1 + 1, "created_at is now");
    n = new_order(999, NULL, NULL);
    ok(op_order_create(db, &n, &c) == DB_NOT_FOUND && c.rows == 0, "unknown user: not found");
    n = new_order(ada, NULL, NULL);
    n.total_cents = 1; /* inconsistent totals: the schema refuses, an error */
    ok(op_order_create(db, &n, &c) == DB_ERROR && c.rows == 0, "inconsistent totals: error");
    n = new_order(ada, NULL, NULL);
    n.items = cs("[1");
    ok(op_order_create(db, &n, &c) == DB_ERROR && c.rows == 0, "items not json: error");

    /* get */
    ok(op_order_get(db, first.id, &c) == DB_OK && c.rows == 1 &&
           order_is(&c.o[0], first.id, ada, false) && c.o[0].created_at == first.created_at &&
           !c.o[0].has_receipt,
       "get the order");
    ok(op_order_get(db2, first.id, &c) == DB_OK && c.rows == 1, "get from the other handle");
    ok(op_order_get(db, 999, &c) == DB_NOT_FOUND && c.rows == 0, "get unknown: not found");
    ok(op_order_get(db, 0, &c) == DB_NOT_FOUND && c.rows == 0, "get 0: not found");

    /* idempotency */
    n = new_order(ada, "key-1", HASH_1);
    ok(op_order_create(db, &n, &c) == DB_OK && c.rows == 1, "create with a key");
    int64_t keyed = c.o[0].id;
    ok(keyed > first.id && order_is(&c.o[0], keyed, ada, false), "keyed order stored");
    ok(op_order_create(db, &n, &c) == DB_REPLAYED && c.rows == 1 &&
           order_is(&c.o[0], keyed, ada, false) && c.o[0].created_at > 0,
       "same key, same hash: replayed with the first order");
    ok(op_order_create(db2, &n, &c) == DB_REPLAYED && c.rows == 1 && c.o[0].id == keyed,
       "replayed through the other handle too");
    n = new_order(ada, "key-1", HASH_2);
    n.items = cs(ITEMS_B);
    n.subtotal_cents = 10000;
    n.discount_cents = 500;
    n.tax_cents = 1995;
    n.total_cents = 11495;
    ok(op_order_create(db, &n, &c) == DB_KEY_REUSED && c.rows == 0,
       "same key, other hash: key reused, no row");
    n = new_order(999, "key-1", HASH_1);
    ok(op_order_create(db, &n, &c) == DB_NOT_FOUND && c.rows == 0,
       "key with an unknown user: not found first");
    n = new_order(bob, "key-2", HASH_2);
    ok(op_order_create(db, &n, &c) == DB_OK && c.rows == 1 && c.o[0].user_id == bob,
       "another key: a new order (Bob)");
    int64_t bobs = c.o[0].id;
    sqlite3 *raw = raw_open(path);
    ok(raw && raw_int(raw, "SELECT count(*) FROM orders") == 3, "three orders stored");
    ok(raw && raw_int(raw, "SELECT count(*) FROM orders WHERE idempotency_key = 'key-1' AND "
                           "request_hash = '" HASH_1 "'") == 1,
       "key and hash stored");

    /* list */
    ok(op_order_list(db, ada, 0, 50, &c) == DB_OK && c.rows == 2 && c.o[0].id == first.id &&
           c.o[1].id == keyed && order_is(&c.o[1], keyed, ada, false),
       "list Ada's orders in id order");
    ok(op_order_list(db, ada, 0, 1, &c) == DB_OK && c.rows == 1 && c.o[0].id == first.id,
       "list page 1");
    ok(op_order_list(db, ada, first.id, 1, &c) == DB_OK && c.rows == 1 && c.o[0].id == keyed,
       "list page 2");
    ok(op_order_list(db, ada, keyed, 1, &c) == DB_OK && c.rows == 0, "list past the end");
    ok(op_order_list(db, bob, 0, 50, &c) == DB_OK && c.rows == 1 && c.o[0].id == bobs,
       "list Bob's only");
    ok(op_order_list(db, 999, 0, 50, &c) == DB_NOT_FOUND && c.rows == 0,
       "list of an unknown user: not found");
    ok(op_order_list(db, ada, 0, 0, &c) == DB_OK && c.rows == 0, "list limit 0: empty");
    ok(op_order_list(db, ada, 0, -1, &c) == DB_OK && c.rows == 0, "list limit -1: empty");
    ok(op_order_list(db, 999, 0, 0, &c) == DB_NOT_FOUND, "limit 0 still checks the user");
    ok(op_create(db, cs("Cy"), cs("cy@o.io"), &uc) == DB_OK, "user Cy");
    int64_t cy = uc.u[0].id;
    ok(op_order_list(db, cy, 0, 50, &c) == DB_OK && c.rows == 0, "user without orders: empty");

    /* delete */
    ok(op_delete(db, ada) == DB_HAS_CHILDREN, "delete Ada with orders: has children");
    ok(op_delete(db2, bob) == DB_HAS_CHILDREN, "delete Bob with orders: has children");
    ok(op_delete(db, cy) == DB_OK, "delete Cy without orders");

    /* processing */
    ok(op_pending(db) == 3 && op_pending(db2) == 3, "three pending on both handles");
    struct signer sg;
    enum db_status st;
    memset(&sg, 0, sizeof sg);
    ok(op_process(db, 0, &sg, &st) == 0 && st == DB_OK && sg.nsigned == 0, "process max 0");
    sg.refuse_id = keyed;
    ok(op_process(db, 2, &sg, &st) == 1 && st == DB_OK, "process 2: one signed, one refused");
    ok(sg.nsigned == 1 && sg.signed_ids[0] == first.id, "oldest first");
    ok(op_pending(db) == 2, "refused order stays pending");
    t0 = (int64_t)time(NULL);
    ok(op_order_get(db, first.id, &c) == DB_OK && c.rows == 1 && c.o[0].processed &&
           c.o[0].has_receipt && c.o[0].processed_at >= t0 - 2 && c.o[0].processed_at <= t0 + 1,
       "processed order: status, receipt, processed_at");
    char want[65];
    receipt_for(first.id, want);
    ok(strcmp(c.o[0].receipt, want) == 0, "stored receipt is the signer's: %s", c.o[0].receipt);
    ok(op_order_get(db, keyed, &c) == DB_OK && !c.o[0].processed && !c.o[0].has_receipt,
       "refused order untouched");

    /* a receipt the schema refuses leaves the order pending, the rest goes on */
    memset(&sg, 0, sizeof sg);
    sg.bad_receipt = true;
    ok(op_process(db, 10, &sg, &st) == 0 && st == DB_OK && sg.nsigned == 2,
       "bad receipts: none marked");
    ok(op_pending(db) == 2, "still two pending");

    /* while one handle holds the claim, the other can neither claim nor see it */
    memset(&sg, 0, sizeof sg);
    sg.other = db2;
    ok(op_process(db, 10, &sg, &st) == 2 && st == DB_OK, "process the remaining two");
    ok(sg.other_status == DB_UNAVAILABLE && sg.other_n == 0,
       "second handle cannot claim during the first's transaction (%d)", (int)sg.other_status);
    ok(sg.other_seen_pending == 1, "second handle still reads the order as pending");
    ok(sg.nsigned == 2, "each signed once (%d)", sg.nsigned);
    ok(op_pending(db) == 0 && op_pending(db2) == 0, "nothing pending");
    memset(&sg, 0, sizeof sg);
    ok(op_process(db2, 10, &sg, &st) == 0 && st == DB_OK && sg.nsigned == 0,
       "nothing left to process");
    ok(raw && raw_int(raw, "SELECT count(*) FROM orders WHERE status = 'processed' AND "
                           "receipt IS NOT NULL AND processed_at IS NOT NULL") == 3,
       "three processed rows");

    /* two handles interleaved: each order exactly once */
    enum { MANY = 40 };
    int64_t ids[MANY];
    for (int i = 0; i < MANY; i++) {
        n = new_order(i % 2 ? ada : bob, NULL, NULL);
        ok(op_order_create(i % 3 ? db : db2, &n, &c) == DB_OK, "create %d", i);
        ids[i] = c.o[0].id;
    }
    ok(op_pending(db) == MANY, "%d pending", MANY);
    struct signer s1, s2;
    memset(&s1, 0, sizeof s1);
    memset(&s2, 0, sizeof s2);
    int64_t total = 0;
    for (int round = 0; round < 20; round++) {
        total += op_process(db, 3, &s1, &st);
        ok(st == DB_OK, "round %d handle 1", round);
        total += op_process(db2, 2, &s2, &st);
        ok(st == DB_OK, "round %d handle 2", round);
    }
    ok(total == MANY && s1.nsigned + s2.nsigned == MANY, "all %d processed once (%lld, %d+%d)",
       MANY, (long long)total, s1.nsigned, s2.nsigned);
    int dup = 0, missing = 0;
    for (int i = 0; i < MANY; i++) {
        int seen = 0;
        for (int k = 0; k < s1.nsigned; k++)
            seen += s1.signed_ids[k] == ids[i];
        for (int k = 0; k < s2.nsigned; k++)
            seen += s2.signed_ids[k] == ids[i];
        dup += seen > 1;
        missing += seen == 0;
    }
    ok(dup == 0 && missing == 0, "no order signed twice (%d) or skipped (%d)", dup, missing);

    /* a write lock held elsewhere: the claim is unavailable, nothing changes */
    n = new_order(ada, NULL, NULL);
    ok(op_order_create(db, &n, &c) == DB_OK, "one more pending");
    ok(raw && raw_exec(raw, "BEGIN IMMEDIATE") == SQLITE_OK, "raw takes the write lock");
    memset(&sg, 0, sizeof sg);
    ok(op_process(db2, 10, &sg, &st) == 0 && st == DB_UNAVAILABLE && sg.nsigned == 0,
       "process while locked: unavailable");
    ok(op_order_create(db2, &n, &c) == DB_UNAVAILABLE && c.rows == 0,
       "create while locked: unavailable");
    ok(op_pending(db2) == 1, "pending count still readable");
    ok(raw && raw_exec(raw, "COMMIT") == SQLITE_OK, "raw releases");
    ok(op_process(db2, 10, &sg, &st) == 1 && st == DB_OK, "then processed");
    sqlite3_close(raw);

out:
    db_close(db);
    db_close(db2);
}

/* Sign two orders, then die on the third without any cleanup: a crash mid-batch. */
static int test_sign_then_die(void *ctx, const struct db_order *o, char receipt[65])
{
    struct signer *sg = ctx;
    if (sg->nsigned == 2)
        kill(getpid(), SIGKILL);
    return test_sign(ctx, o, receipt);
}

/* Processes claiming at once, one of them killed mid-batch: each order signed exactly once. */
static void test_orders_processes(void)
{
    enum { ORDERS = 60, WORKERS = 4 };
    char path[256], out[256];
    struct capture uc;
    struct ocapture c;

    path_in_dir(path, sizeof path, "orders-mp.db");
    ok(migrate_url(path) == 0, "orders mp: migrate");
    struct db *db = open_url(path, 0);
    ok(db != NULL, "orders mp: open");
    if (!db)
        return;
    ok(op_create(db, cs("Mp"), cs("mp@o.io"), &uc) == DB_OK, "user");
    struct db_order_new n = new_order(uc.u[0].id, NULL, NULL);
    for (int i = 0; i < ORDERS; i++)
        op_order_create(db, &n, &c);
    ok(op_pending(db) == ORDERS, "%d pending", ORDERS);

    /* a process killed inside its batch (after signing twice) commits nothing */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        struct db *cdb = open_url(path, 5000);
        struct signer sg;
        memset(&sg, 0, sizeof sg);
        /* kill ourselves from inside sign() on the third order */
        sg.refuse_id = -1;
        db_orders_process(cdb, 10, test_sign_then_die, signer_done, &sg);
        _exit(3); /* not reached */
    }
    int wst = 0;
    ok(pid > 0 && waitpid(pid, &wst, 0) == pid && WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL,
       "child killed mid-batch");
    ok(op_pending(db) == ORDERS, "a killed batch leaves every order pending");

    /* several processes, each writing the ids it signed to its own file */
    pid_t pids[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        if (pids[w] == 0) {
            struct db *cdb = open_url(path, 10000);
            struct signer sg;
            memset(&sg, 0, sizeof sg);
            sg.refuse_id = -1;
            do {
                memset(&sg.cc, 0, sizeof sg.cc);
                db_orders_process(cdb, 4, test_sign, signer_done, &sg);
            } while (sg.cc.status == DB_OK && sg.cc.n > 0);
            char p[256];
            snprintf(p, sizeof p, "%.200s.%d", path, w);
            FILE *f = fopen(p, "w");
            for (int k = 0; f && k < sg.nsigned; k++)
                fprintf(f, "%lld\n", (long long)sg.signed_ids[k]);
            int rc = f && fclose(f) == 0 && sg.cc.status == DB_OK ? 0 : 1;
            db_close(cdb);
            _exit(rc);
        }
    }
    int clean = 0;
    for (int w = 0; w < WORKERS; w++)
        if (pids[w] > 0 && waitpid(pids[w], &wst, 0) == pids[w] && WIFEXITED(wst) &&
            WEXITSTATUS(wst) == 0)
            clean++;
    ok(clean == WORKERS, "%d of %d workers finished cleanly", clean, WORKERS);
    int count[ORDERS + 2] = {0};
    int total = 0, bad = 0;
    for (int w = 0; w < WORKERS; w++) {
        snprintf(out, sizeof out, "%.200s.%d", path, w);
        FILE *f = fopen(out, "r");
        long long id;
        while (f && fscanf(f, "%lld", &id) == 1) {
            if (id >= 1 && id <= ORDERS)
                count[id]++;
            else
                bad++;
            total++;
        }
        if (f)
            fclose(f);
        unlink(out);
    }
    int once = 0;
    for (int i = 1; i <= ORDERS; i++)
        once += count[i] == 1;
    ok(total == ORDERS && once == ORDERS && bad == 0,
       "every order signed exactly once across processes (%d signatures, %d once)", total, once);
    ok(op_pending(db) == 0, "nothing pending");
    db_close(db);
}

static void cleanup(void)
{
    static const char *const dbs[] = {
        "plain.db",  "prefixed.db",  "slashes.db", "data/brisk.db", "users.db",
        "schema.db", "durable.db",   "locked.db",  "reentry.db",    "never-migrated.db",
        "orders.db", "orders-mp.db", "group.db",   "writer.db"};
    char p[256];
    for (size_t i = 0; i < ARRAY_LEN(dbs); i++) {
        path_in_dir(p, sizeof p, dbs[i]);
        remove_db_files(p);
    }
    path_in_dir(p, sizeof p, "data");
    rmdir(p);
    ok(rmdir(g_dir) == 0, "temporary directory cleaned up (%s)", strerror(errno));
}

/* A done callback that queues one more create (as a pipelined request would). */
struct chain {
    struct capture first, second;
    struct db *db;
};

static void chain_done(void *ctx, enum db_status st)
{
    struct chain *ch = ctx;
    cap_done(&ch->first, st);
    cap_init(&ch->second);
    db_user_create(ch->db, cs("Chained"), cs("chained@x.io"), cap_row, cap_done, &ch->second);
}

static void chain_row(void *ctx, const struct db_user *u)
{
    cap_row(&((struct chain *)ctx)->first, u);
}

/* Group commit: the creates of one loop turn go to the file in one transaction. */
static void test_group_commit(void)
{
    enum { N = 6, MANY = 300 };
    static struct capture c[MANY];
    char path[256];
    struct capture one;

    path_in_dir(path, sizeof path, "group.db");
    ok(migrate_url(path) == 0, "group: migrate");
    struct db *db = open_url(path, 50);
    ok(db != NULL, "group: open");
    if (!db)
        return;
    ok(op_create(db, cs("Taken"), cs("taken@x.io"), &one) == DB_OK, "group: an existing user");
    int64_t first = one.u[0].id;

    /* one turn: new users, a duplicate inside the batch (case differs), one already taken */
    static const char *const emails[N] = {"a@x.io",     "b@x.io", "A@X.io",
                                          "TAKEN@x.io", "c@x.io", "b@x.io"};
    static const enum db_status want[N] = {DB_OK,       DB_OK, DB_CONFLICT,
                                           DB_CONFLICT, DB_OK, DB_CONFLICT};
    for (int i = 0; i < N; i++) {
        cap_init(&c[i]);
        db_user_create(db, cs("Batch"), cs(emails[i]), cap_row, cap_done, &c[i]);
    }
    int waiting = 0;
    for (int i = 0; i < N; i++)
        waiting += c[i].dones == 0;
    ok(waiting == N, "group: nothing answered before the flush");
    sqlite3 *raw = raw_open(path);
    ok(raw && raw_int(raw, "SELECT count(*) FROM users") == 1, "group: nothing stored before it");
    db_flush(db);
    int64_t next = first + 1;
    for (int i = 0; i < N; i++) {
        ok(c[i].dones == 1 && c[i].status == want[i], "group: create %d answered %d (want %d)", i,
           c[i].status, want[i]);
        if (want[i] == DB_OK) {
            ok(c[i].rows == 1 && row_is(&c[i].u[0], next, "Batch", emails[i]),
               "group: create %d got row id %lld", i, (long long)next);
            next++;
        } else {
            ok(c[i].rows == 0, "group: refused create %d has no row", i);
        }
    }
    ok(raw && raw_int(raw, "SELECT count(*) FROM users") == 4, "group: three more users stored");

    /* a create from a done callback is committed by the same flush call */
    struct chain ch = {.db = db};
    cap_init(&ch.first);
    db_user_create(db, cs("Lead"), cs("lead@x.io"), chain_row, chain_done, &ch);
    db_flush(db);
    ok(ch.first.dones == 1 && ch.first.status == DB_OK, "group: lead create");
    ok(ch.second.dones == 1 && ch.second.status == DB_OK && ch.second.rows == 1,
       "group: create from its done callback committed by the same flush");

    /* a batch fails whole: locked past the busy timeout, none stored, all answered */
    ok(raw && raw_exec(raw, "BEGIN IMMEDIATE") == SQLITE_OK, "group: raw takes the write lock");
    for (int i = 0; i < 3; i++) {
        char e[32];
        snprintf(e, sizeof e, "locked%d@x.io", i);
        cap_init(&c[i]);
        db_user_create(db, cs("Locked"), cs(e), cap_row, cap_done, &c[i]);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    db_flush(db);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited_ms =
        (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    ok(waited_ms >= 49 && waited_ms < 5000, "group: waited the 50 ms busy timeout (%.1f ms)",
       waited_ms);
    for (int i = 0; i < 3; i++)
        ok(c[i].dones == 1 && c[i].status == DB_UNAVAILABLE && c[i].rows == 0,
           "group: locked create %d unavailable", i);
    ok(raw && raw_exec(raw, "COMMIT") == SQLITE_OK, "group: raw releases the lock");
    ok(raw && raw_int(raw, "SELECT count(*) FROM users WHERE name = 'Locked'") == 0,
       "group: nothing of the failed batch stored");

    /* more than a batch: the first CREATE_BATCH_MAX are committed at once */
    for (int i = 0; i < MANY; i++) {
        char e[32];
        snprintf(e, sizeof e, "many%d@x.io", i);
        cap_init(&c[i]);
        db_user_create(db, cs("Many"), cs(e), cap_row, cap_done, &c[i]);
    }
    int early = 0;
    for (int i = 0; i < MANY; i++)
        early += c[i].dones;
    ok(early == 256, "group: a full batch is committed without waiting (%d answered)", early);
    db_flush(db);
    int good = 0;
    for (int i = 0; i < MANY; i++)
        good += c[i].dones == 1 && c[i].status == DB_OK && c[i].rows == 1;
    ok(good == MANY, "group: all %d creates stored (%d)", MANY, good);
    ok(raw && raw_int(raw, "SELECT count(*) FROM users WHERE name = 'Many'") == MANY,
       "group: rows in the file");
    sqlite3_close(raw);
    struct db_stats stats;
    db_stats(db, &stats);
    ok(stats.busy == 0, "group: idle afterwards");
    db_close(db);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/brisk-db-XXXXXX",
             tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_parse_timestamp();
    test_urls();
    test_migrate();
    test_migrate_concurrent();
    test_users();
    test_schema();
    test_reopen();
    test_unavailable();
    test_reentry();
    test_group_commit();
    test_writer_thread();
    test_orders();
    test_orders_processes();
    cleanup();
    return test_done();
}
