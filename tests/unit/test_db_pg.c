/*
 * test_db_pg.c - the PostgreSQL backend of db.h against a real server.
 *
 * Needs BRISK_TEST_PG_URL (a superuser URL, e.g. from scripts/pg_cluster.sh);
 * without it the test prints a note and "0 passed, 0 failed". Each run works
 * in fresh databases it creates (and drops) itself. Operations are driven
 * through a real event loop (loop_create + one loop_run iteration at a time,
 * db_tick once a second), as the server drives them: URL routing, migrations
 * (idempotent, concurrent), every user and order operation and status,
 * idempotency under concurrency, exactly-once processing with two handles,
 * pipelining, the queue bound, server-side connection kills and reconnection,
 * an unreachable and a silent server, db_close with operations in flight, and
 * that no password reaches the log.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "base/compiler.h"
#include "base/str.h"
#include "db/db.h"
#include "net/loop.h"
#include "test.h"

#define MAX_ROWS 8

/* ---- what one operation reported ---- */

struct capture {
    int rows;
    int dones;
    int rows_after_done;
    enum db_status status;
    int64_t count;
    int64_t id[MAX_ROWS];
    int64_t user_id[MAX_ROWS];
    char text[MAX_ROWS][1024]; /* user: name|email; order: status|items|receipt */
    int64_t created_at[MAX_ROWS];
    int64_t processed_at[MAX_ROWS];
    int64_t total[MAX_ROWS];
};

static void cap_init(struct capture *c)
{
    memset(c, 0, sizeof *c);
    c->status = (enum db_status) - 1;
}

static void cap_user(void *ctx, const struct db_user *u)
{
    struct capture *c = ctx;
    if (c->dones)
        c->rows_after_done++;
    if (c->rows < MAX_ROWS) {
        c->id[c->rows] = u->id;
        c->created_at[c->rows] = u->created_at;
        snprintf(c->text[c->rows], sizeof c->text[0], "%.*s|%.*s", (int)u->name.len, u->name.ptr,
                 (int)u->email.len, u->email.ptr);
    }
    c->rows++;
}

static void cap_order(void *ctx, const struct db_order *o)
{
    struct capture *c = ctx;
    if (c->dones)
        c->rows_after_done++;
    if (c->rows < MAX_ROWS) {
        c->id[c->rows] = o->id;
        c->user_id[c->rows] = o->user_id;
        c->created_at[c->rows] = o->created_at;
        c->processed_at[c->rows] = o->processed_at;
        c->total[c->rows] = o->total_cents;
        snprintf(c->text[c->rows], sizeof c->text[0], "%s|%.*s|%.*s",
                 o->processed ? "processed" : "pending", (int)o->items.len, o->items.ptr,
                 (int)o->receipt.len, o->receipt.ptr ? o->receipt.ptr : "");
    }
    c->rows++;
}

static void cap_done(void *ctx, enum db_status st)
{
    struct capture *c = ctx;
    c->dones++;
    c->status = st;
}

static void cap_count(void *ctx, enum db_status st, int64_t n)
{
    struct capture *c = ctx;
    c->dones++;
    c->status = st;
    c->count = n;
}

/* ---- the loop ---- */

static struct loop *g_loop;
static struct db *g_dbs[4];
static uint64_t g_last_tick;

static bool always(struct loop *l, void *arg)
{
    (void)l;
    (void)arg;
    return true;
}

/* One loop iteration (waits up to about a second for events), plus db_tick once a second. */
static void pump_once(void)
{
    struct loop_hooks hooks = {.drained = always};
    loop_run(g_loop, &hooks, 0);
    uint64_t now = loop_now_ms(g_loop);
    if (now - g_last_tick >= 1000) {
        g_last_tick = now;
        for (size_t i = 0; i < ARRAY_LEN(g_dbs); i++) {
            if (g_dbs[i])
                db_tick(g_dbs[i]);
        }
    }
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Run the loop until *dones >= want or ms pass; true if reached. */
static bool wait_dones(const int *dones, int want, int ms)
{
    uint64_t end = wall_ms() + (uint64_t)ms;
    while (*dones < want) {
        if (wall_ms() > end)
            return false;
        pump_once();
    }
    return true;
}

static bool wait_cap(struct capture *c, int ms)
{
    return wait_dones(&c->dones, 1, ms);
}

/* ---- databases ---- */

static const char *g_admin_url;
static char g_names[8][64];
static int g_nnames;

static void quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static PGconn *admin(void)
{
    PGconn *c = PQconnectdb(g_admin_url);
    PQsetNoticeProcessor(c, quiet, NULL);
    if (PQstatus(c) != CONNECTION_OK) {
        printf("# cannot connect to BRISK_TEST_PG_URL: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static bool admin_exec(const char *sql)
{
    PGconn *c = admin();
    if (!c)
        return false;
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        printf("# %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return ok;
}

/* First column of the first row of sql as an integer (-1 on error). */
static long long admin_int(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    long long v = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        else
            printf("# %s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
    }
    PQfinish(c);
    return v;
}

/*
 * Create a fresh database and write a conninfo string naming it into out:
 * every option of the admin URL, with dbname replaced.
 */
static bool fresh_db(const char *tag, char *out, size_t cap)
{
    char sql[160], *err = NULL;
    char *name = g_names[g_nnames++];
    snprintf(name, sizeof g_names[0], "brisk_unit_%s_%d", tag, (int)getpid());
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", name);
    if (!admin_exec(sql))
        return false;
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    if (!admin_exec(sql))
        return false;
    PQconninfoOption *opts = PQconninfoParse(g_admin_url, &err);
    if (!opts) {
        PQfreemem(err);
        return false;
    }
    size_t n = 0;
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || strcmp(o->keyword, "dbname") == 0)
            continue;
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s='", o->keyword);
        for (const char *p = o->val; *p; p++) {
            if (*p == '\'' || *p == '\\')
                n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "\\");
            n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%c", *p);
        }
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "' ");
    }
    n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "dbname=%s", name);
    PQconninfoFree(opts);
    return n < cap;
}

static void drop_dbs(void)
{
    char sql[160];
    for (int i = 0; i < g_nnames; i++) {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %.63s WITH (FORCE)", g_names[i]);
        admin_exec(sql);
    }
}

static struct db *open_db(const char *conninfo, int timeout_ms)
{
    struct db_config cfg = {.url = conninfo, .busy_timeout_ms = timeout_ms};
    return db_open(&cfg, g_loop);
}

static int migrate(const char *conninfo)
{
    struct db_config cfg = {.url = conninfo, .busy_timeout_ms = 0};
    return db_migrate(&cfg);
}

/* Ping until it answers (the handle connects in the background). */
static bool wait_up(struct db *db, int ms)
{
    uint64_t end = wall_ms() + (uint64_t)ms;
    while (wall_ms() < end) {
        struct capture c;
        cap_init(&c);
        db_ping(db, 0, cap_done, &c);
        if (!wait_cap(&c, 2000))
            return false;
        if (c.status == DB_OK)
            return true;
        usleep(50 * 1000);
        pump_once();
    }
    return false;
}

static struct str cs(const char *s)
{
    return (struct str){s, strlen(s)};
}

/* ---- operations, synchronously ---- */

static enum db_status user_create(struct db *db, const char *name, const char *email,
                                  struct capture *c)
{
    cap_init(c);
    db_user_create(db, cs(name), cs(email), cap_user, cap_done, c);
    return wait_cap(c, 10000) ? c->status : (enum db_status) - 2;
}

static enum db_status order_create(struct db *db, int64_t user_id, const char *items,
                                   const char *key, const char *hash, struct capture *c)
{
    struct db_order_new o = {.user_id = user_id,
                             .items = cs(items),
                             .subtotal_cents = 1000,
                             .discount_cents = 0,
                             .tax_cents = 210,
                             .total_cents = 1210,
                             .idempotency_key = key ? cs(key) : STR_NULL,
                             .request_hash = hash ? cs(hash) : STR_NULL};
    cap_init(c);
    db_order_create(db, &o, cap_order, cap_done, c);
    return wait_cap(c, 10000) ? c->status : (enum db_status) - 2;
}

#define HASH_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HASH_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define ITEMS "[{\"sku\":\"A-1\",\"quantity\":1,\"unit_price_cents\":1000}]"

/* ---- tests ---- */

static void test_urls(void)
{
    ok(db_url_check("postgres://u:secret@localhost/db") == NULL, "postgres:// accepted");
    ok(db_url_check("postgresql://u@localhost:5433/db?sslmode=disable") == NULL,
       "postgresql:// accepted");
    ok(db_url_check("host=localhost dbname=brisk") == NULL, "key=value accepted");
    ok(db_url_check("mysql://x") != NULL, "mysql:// refused");
    const char *e = db_url_check("postgres://u:hunter2secret@[bad/db");
    ok(e != NULL && strstr(e, "hunter2secret") == NULL, "malformed postgres URL refused: %s",
       e ? e : "(accepted)");
    ok(db_url_check("postgres://u@h/db?no_such_option=1") != NULL, "unknown URL option refused");
    ok(db_url_check("host=x port") != NULL, "malformed key=value refused");
    struct db_config cfg = {.url = "postgres://u:secret@localhost/db"};
    ok(db_open(&cfg, NULL) == NULL, "a postgres handle needs a loop");
    ok(migrate("postgres://u@localhost/db?bogus_option=1") == -1, "migrate refuses it too");
}

static void test_migrations(const char *url)
{
    ok(migrate(url) == 0, "migrate a fresh database");
    ok(migrate(url) == 0, "migrate again is a no-op");
    ok(admin_int(url, "SELECT count(*) FROM schema_migrations") == 2, "two migrations recorded");
    ok(admin_int(url,
                 "SELECT count(*) FROM pg_indexes WHERE indexname = 'users_email_lower_key'") == 1,
       "email index exists");
}

static void test_concurrent_migrations(void)
{
    char url[1024];
    if (!fresh_db("mig", url, sizeof url)) {
        ok(0, "create database for concurrent migrations");
        return;
    }
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        kids[i] = fork();
        if (kids[i] == 0)
            _exit(migrate(url) == 0 ? 0 : 1);
    }
    int good = 0;
    for (int i = 0; i < 4; i++) {
        int st = 0;
        if (kids[i] > 0 && waitpid(kids[i], &st, 0) == kids[i] && WIFEXITED(st) &&
            WEXITSTATUS(st) == 0)
            good++;
    }
    ok(good == 4, "4 concurrent migrations all succeed (%d did)", good);
    ok(admin_int(url, "SELECT count(*) FROM schema_migrations") == 2,
       "each migration recorded once");
}

static void test_users(struct db *db)
{
    struct capture c, d;
    char email[64], name[1024];

    snprintf(email, sizeof email, "Ada.%d@Example.com", (int)getpid());
    ok(user_create(db, "Ada Lovelace", email, &c) == DB_OK, "create user: %d", c.status);
    ok(c.rows == 1 && c.dones == 1 && c.rows_after_done == 0, "one row then done");
    int64_t id = c.id[0];
    ok(id > 0, "id assigned");
    char want[600];
    snprintf(want, sizeof want, "Ada Lovelace|%s", email);
    ok(strcmp(c.text[0], want) == 0, "row text %s", c.text[0]);
    int64_t now = (int64_t)time(NULL);
    ok(c.created_at[0] > 0 && c.created_at[0] <= now && c.created_at[0] >= now - 60,
       "created_at is now (%lld)", (long long)c.created_at[0]);

    cap_init(&d);
    db_user_get(db, id, cap_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 1 && strcmp(d.text[0], want) == 0 &&
           d.created_at[0] == c.created_at[0],
       "get returns the same user");

    char upper[64];
    for (size_t i = 0; i <= strlen(email); i++)
        upper[i] = (char)(email[i] >= 'a' && email[i] <= 'z' ? email[i] - 32 : email[i]);
    ok(user_create(db, "Dup", upper, &d) == DB_CONFLICT && d.rows == 0,
       "duplicate email in other case: conflict (%d)", d.status);
    /* ASCII-only folding, as SQLite */
    snprintf(email, sizeof email, "\xc3\x84x%d@x.io", (int)getpid());
    ok(user_create(db, "U1", email, &d) == DB_OK, "non-ASCII email");
    snprintf(email, sizeof email, "\xc3\xa4x%d@x.io", (int)getpid());
    ok(user_create(db, "U2", email, &d) == DB_OK, "non-ASCII letters are not folded");
    int64_t other = d.id[0];

    /* long UTF-8 name */
    size_t n = 0;
    for (int i = 0; i < 200; i++) {
        memcpy(name + n, "\xe2\x82\xac", 3);
        n += 3;
    }
    name[n] = '\0';
    snprintf(email, sizeof email, "euro%d@x.io", (int)getpid());
    ok(user_create(db, name, email, &d) == DB_OK && strncmp(d.text[0], name, n) == 0,
       "200 three-byte characters round trip");

    /* update */
    cap_init(&d);
    db_user_update(db, id, cs("Countess"), STR_NULL, cap_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 1 &&
           strncmp(d.text[0], "Countess|", 9) == 0,
       "update name");
    cap_init(&d);
    db_user_update(db, other, STR_NULL, cs(upper), cap_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_CONFLICT && d.rows == 0, "update to a taken email");
    cap_init(&d);
    db_user_update(db, id, STR_NULL, STR_NULL, cap_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 1 &&
           strncmp(d.text[0], "Countess|", 9) == 0,
       "update with nothing returns the row");
    cap_init(&d);
    db_user_update(db, INT64_MAX, cs("x"), STR_NULL, cap_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_NOT_FOUND && d.rows == 0, "update unknown");
    cap_init(&d);
    db_user_get(db, INT64_MAX, cap_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_NOT_FOUND && d.rows == 0, "get unknown");

    /* list */
    cap_init(&d);
    db_user_list(db, 0, 2, cap_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 2 && d.id[0] < d.id[1], "list 2");
    int64_t second = d.id[1];
    cap_init(&d);
    db_user_list(db, second, 1000, cap_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 2, "list after");
    cap_init(&d);
    db_user_list(db, 0, 0, cap_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 0, "limit 0 lists nothing");
    cap_init(&d);
    db_user_list(db, 0, -5, cap_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 0, "negative limit lists nothing");

    /* delete */
    cap_init(&d);
    db_user_delete(db, other, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 0, "delete");
    cap_init(&d);
    db_user_delete(db, other, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_NOT_FOUND, "delete again: not found");
    ok(user_create(db, "U3", "fresh@x.io", &d) == DB_OK && d.id[0] > other, "ids are not reused");
}

static int64_t g_user;

static void test_orders(struct db *db)
{
    struct capture c, d;
    ok(user_create(db, "Buyer", "buyer@x.io", &c) == DB_OK, "buyer");
    g_user = c.id[0];

    ok(order_create(db, INT64_MAX, ITEMS, NULL, NULL, &c) == DB_NOT_FOUND && c.rows == 0,
       "order for unknown user: not found (%d)", c.status);
    ok(order_create(db, g_user, ITEMS, NULL, NULL, &c) == DB_OK && c.rows == 1, "create order (%d)",
       c.status);
    int64_t oid = c.id[0];
    ok(c.user_id[0] == g_user && c.total[0] == 1210 && c.processed_at[0] == 0, "order fields");
    ok(strcmp(c.text[0], "pending|" ITEMS "|") == 0, "pending, items as stored: %s", c.text[0]);

    cap_init(&d);
    db_order_get(db, oid, cap_order, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 1 && d.id[0] == oid &&
           strcmp(d.text[0], c.text[0]) == 0 && d.created_at[0] == c.created_at[0],
       "get order");
    cap_init(&d);
    db_order_get(db, INT64_MAX, cap_order, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_NOT_FOUND, "get unknown order");

    /* idempotency */
    ok(order_create(db, g_user, ITEMS, "key-1", HASH_A, &c) == DB_OK, "keyed create");
    int64_t kid = c.id[0];
    ok(order_create(db, g_user, ITEMS, "key-1", HASH_A, &d) == DB_REPLAYED && d.rows == 1 &&
           d.id[0] == kid,
       "same key, same request: replayed with the first order (%d)", d.status);
    ok(order_create(db, g_user, ITEMS, "key-1", HASH_B, &d) == DB_KEY_REUSED && d.rows == 0,
       "same key, other request: key reused (%d)", d.status);
    ok(order_create(db, INT64_MAX, ITEMS, "key-1", HASH_A, &d) == DB_NOT_FOUND,
       "unknown user wins over a known key, as on SQLite");

    /* concurrent creates with one key: one order */
    struct capture many[12];
    for (int i = 0; i < 12; i++) {
        struct db_order_new o = {.user_id = g_user,
                                 .items = cs(ITEMS),
                                 .subtotal_cents = 1000,
                                 .tax_cents = 210,
                                 .total_cents = 1210,
                                 .idempotency_key = cs("key-race"),
                                 .request_hash = cs(HASH_A)};
        cap_init(&many[i]);
        db_order_create(i % 2 ? g_dbs[1] : db, &o, cap_order, cap_done, &many[i]);
    }
    int created = 0, replayed = 0, same = 1;
    for (int i = 0; i < 12; i++) {
        wait_cap(&many[i], 10000);
        created += many[i].status == DB_OK;
        replayed += many[i].status == DB_REPLAYED;
        same &= many[i].rows == 1 && many[i].id[0] == many[0].id[0];
    }
    ok(created == 1 && replayed == 11 && same,
       "12 concurrent creates with one key: 1 created, 11 replayed, one id (%d, %d, %d)", created,
       replayed, same);

    /* list */
    cap_init(&d);
    db_order_list(db, g_user, 0, 2, cap_order, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 2 && d.id[0] == oid && d.id[1] == kid,
       "list orders (%d rows)", d.rows);
    cap_init(&d);
    db_order_list(db, g_user, kid, 100, cap_order, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 1, "list orders after");
    cap_init(&d);
    db_order_list(db, INT64_MAX, 0, 10, cap_order, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_NOT_FOUND && d.rows == 0,
       "list orders of unknown user");
    struct capture u;
    ok(user_create(db, "NoOrders", "noorders@x.io", &u) == DB_OK, "user without orders");
    cap_init(&d);
    db_order_list(db, u.id[0], 0, 10, cap_order, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK && d.rows == 0, "empty order list");

    cap_init(&d);
    db_user_delete(db, g_user, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_HAS_CHILDREN, "delete user with orders refused");

    /* a large items text (over the inline parameter buffer) */
    static char big[24000];
    size_t n = 0;
    big[n++] = '[';
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(big + n, sizeof big - n,
                              "%s{\"sku\":\"SKU-%0100d\",\"quantity\":1,\"unit_price_cents\":10}",
                              i ? "," : "", i);
    big[n++] = ']';
    big[n] = '\0';
    ok(order_create(db, g_user, big, NULL, NULL, &c) == DB_OK, "order with %zu bytes of items", n);
    cap_init(&d);
    db_order_get(db, c.id[0], cap_order, cap_done, &d);
    ok(wait_cap(&d, 5000) && d.status == DB_OK, "get the large order");
}

static int g_signs[4096];
static int64_t g_min_id;
static int g_refuse_id = -1;

static int test_sign(void *ctx, const struct db_order *o, char receipt[65])
{
    (void)ctx;
    int64_t k = o->id - g_min_id;
    if (k >= 0 && k < (int64_t)ARRAY_LEN(g_signs))
        g_signs[k]++;
    if (o->id == g_refuse_id)
        return -1;
    snprintf(receipt, 65, "%064llx", (unsigned long long)(o->id * 7919 + o->total_cents));
    return 0;
}

static void test_process(struct db *a, struct db *b)
{
    struct capture c, d;

    cap_init(&c);
    db_orders_pending(a, cap_count, &c);
    ok(wait_cap(&c, 5000) && c.status == DB_OK && c.count > 0, "pending count %lld",
       (long long)c.count);
    int64_t before = c.count;

    /* 300 more orders, then two handles (four connections) process concurrently */
    struct capture oc;
    ok(order_create(a, g_user, ITEMS, NULL, NULL, &oc) == DB_OK, "first of 300");
    g_min_id = 1;
    memset(g_signs, 0, sizeof g_signs);
    int made = 1;
    struct capture *caps = calloc(300, sizeof *caps);
    for (int i = 1; i < 300; i++) {
        struct db_order_new o = {.user_id = g_user,
                                 .items = cs(ITEMS),
                                 .subtotal_cents = 1000,
                                 .tax_cents = 210,
                                 .total_cents = 1210};
        cap_init(&caps[i]);
        db_order_create(i % 2 ? a : b, &o, cap_order, cap_done, &caps[i]);
    }
    for (int i = 1; i < 300; i++) {
        wait_cap(&caps[i], 10000);
        made += caps[i].status == DB_OK;
    }
    free(caps);
    ok(made == 300, "300 orders created (%d)", made);
    g_refuse_id = (int)oc.id[0];

    int64_t total = 0;
    int rounds = 0, errors = 0;
    for (;;) {
        struct capture e;
        cap_init(&c);
        cap_init(&d);
        cap_init(&e);
        db_orders_process(a, 50, test_sign, cap_count, &c);
        db_orders_process(b, 50, test_sign, cap_count, &d);
        db_orders_process(b, 50, test_sign, cap_count, &e); /* queued behind */
        wait_cap(&c, 10000);
        wait_cap(&d, 10000);
        wait_cap(&e, 10000);
        errors += (c.status != DB_OK) + (d.status != DB_OK) + (e.status != DB_OK);
        total += c.count + d.count + e.count;
        rounds++;
        if ((c.count == 0 && d.count == 0 && e.count == 0) || rounds > 50)
            break;
    }
    ok(errors == 0, "no processing errors");
    ok(total == before + 300 - 1,
       "every pending order processed once, the refused one not (%lld of %lld)", (long long)total,
       (long long)(before + 300 - 1));
    int twice = 0;
    for (size_t i = 0; i < ARRAY_LEN(g_signs); i++) {
        if ((int64_t)i + g_min_id != g_refuse_id && g_signs[i] > 1)
            twice++;
    }
    ok(twice == 0, "no order signed twice (%d)", twice);
    cap_init(&c);
    db_orders_pending(a, cap_count, &c);
    ok(wait_cap(&c, 5000) && c.status == DB_OK && c.count == 1, "one pending left (the refused)");

    cap_init(&c);
    db_order_get(a, oc.id[0] + 1, cap_order, cap_done, &c);
    char want[600];
    snprintf(want, sizeof want, "%064llx", (unsigned long long)((oc.id[0] + 1) * 7919 + 1210));
    ok(wait_cap(&c, 5000) && c.status == DB_OK && strncmp(c.text[0], "processed|", 10) == 0 &&
           strstr(c.text[0], want) && c.processed_at[0] >= c.created_at[0],
       "processed order has its receipt and processed_at: %s", c.text[0]);
    cap_init(&c);
    db_orders_process(a, 0, test_sign, cap_count, &c);
    ok(wait_cap(&c, 1000) && c.status == DB_OK && c.count == 0, "max 0 processes nothing");
    g_refuse_id = -1;
}

static void test_pipelining(struct db *db)
{
    enum { N = 600 };
    static struct capture caps[N];
    int dones = 0;
    struct capture u;
    ok(user_create(db, "Piped", "piped@x.io", &u) == DB_OK, "user for pipelining");
    for (int i = 0; i < N; i++) {
        cap_init(&caps[i]);
        db_user_get(db, u.id[0], cap_user, cap_done, &caps[i]);
    }
    struct db_stats st;
    db_stats(db, &st);
    ok(st.busy > 0 && st.busy <= N, "busy counts operations in flight (%d)", st.busy);
    uint64_t end = wall_ms() + 10000;
    while (wall_ms() < end) {
        dones = 0;
        for (int i = 0; i < N; i++)
            dones += caps[i].dones;
        if (dones == N)
            break;
        pump_once();
    }
    int good = 0;
    for (int i = 0; i < N; i++)
        good += caps[i].status == DB_OK && caps[i].rows == 1 && caps[i].dones == 1;
    ok(good == N, "%d concurrent gets all answered (%d)", N, good);
    db_stats(db, &st);
    ok(st.busy == 0 && st.connections == 2, "idle again with 2 connections (%d, %d)", st.busy,
       st.connections);
}

/* Group commit: creates made while batches are out go together in the next INSERT. */
static void test_create_batches(struct db *db, struct db *other)
{
    enum { N = 12, MANY = 700 };
    static struct capture caps[MANY];
    static const char *const names[N] = {"B0",
                                         "B1",
                                         "quote \" and \\ back",
                                         "{braces},comma",
                                         "NULL",
                                         "B5",
                                         "B6",
                                         "B7",
                                         "\xc3\xa9l\xc3\xa8ve",
                                         "B9",
                                         "B10",
                                         "B11"};
    static const char *const emails[N] = {"b0@x.io", "b1@x.io", "b2\"q@x.io", "b3,{}@x.io",
                                          "b4@x.io", "B0@X.IO", "piped@x.io", "b7\\@x.io",
                                          "b8@x.io", "b4@x.io", "b10@x.io",   "b10@x.io"};
    /* Creates 0 and 1 go out alone (nothing in flight yet), 2..11 as one batch
     * on whichever connection is free: 0 and 5 (same email, other case) run
     * concurrently, so either may win - exactly one does. Inside the batch the
     * first of a pair wins. */
    enum db_status want[N] = {DB_OK,       DB_OK, DB_OK, DB_OK,       DB_OK, DB_CONFLICT,
                              DB_CONFLICT, DB_OK, DB_OK, DB_CONFLICT, DB_OK, DB_CONFLICT};
    int dones = 0;

    for (int i = 0; i < N; i++) {
        cap_init(&caps[i]);
        db_user_create(db, cs(names[i]), cs(emails[i]), cap_user, cap_done, &caps[i]);
    }
    for (uint64_t end = wall_ms() + 10000; wall_ms() < end; pump_once()) {
        dones = 0;
        for (int i = 0; i < N; i++)
            dones += caps[i].dones;
        if (dones == N)
            break;
    }
    ok(dones == N, "batch: every create answered (%d)", dones);
    ok((caps[0].status == DB_OK) != (caps[5].status == DB_OK),
       "batch: one of two concurrent creates of an email wins (%d, %d)", caps[0].status,
       caps[5].status);
    if (caps[5].status == DB_OK) {
        want[0] = DB_CONFLICT;
        want[5] = DB_OK;
    }
    for (int i = 0; i < N; i++) {
        char want_text[160];
        snprintf(want_text, sizeof want_text, "%s|%s", names[i], emails[i]);
        ok(caps[i].dones == 1 && caps[i].status == want[i],
           "batch: create %d answered %d (want %d)", i, caps[i].status, want[i]);
        if (want[i] == DB_OK)
            ok(caps[i].rows == 1 && strcmp(caps[i].text[0], want_text) == 0,
               "batch: create %d row %s", i, caps[i].text[0]);
        else
            ok(caps[i].rows == 0, "batch: refused create %d has no row", i);
    }
    /* the rows really are stored: read back through the other handle */
    for (int i = 0; i < N; i++) {
        struct capture g;
        if (want[i] != DB_OK)
            continue;
        cap_init(&g);
        db_user_get(other, caps[i].id[0], cap_user, cap_done, &g);
        ok(wait_cap(&g, 5000) && g.status == DB_OK && strcmp(g.text[0], caps[i].text[0]) == 0,
           "batch: user %d stored", i);
    }

    /* many at once: more than one full batch, all distinct */
    static char many_email[MANY][32];
    for (int i = 0; i < MANY; i++) {
        snprintf(many_email[i], sizeof many_email[i], "many%d@x.io", i);
        cap_init(&caps[i]);
        db_user_create(db, cs("Many"), cs(many_email[i]), cap_user, cap_done, &caps[i]);
    }
    int good = 0;
    for (uint64_t end = wall_ms() + 20000; wall_ms() < end; pump_once()) {
        dones = good = 0;
        for (int i = 0; i < MANY; i++) {
            dones += caps[i].dones;
            good += caps[i].status == DB_OK && caps[i].rows == 1;
        }
        if (dones == MANY)
            break;
    }
    ok(dones == MANY && good == MANY, "batch: %d creates stored (%d done, %d ok)", MANY, dones,
       good);
    int64_t ids_distinct = 1;
    for (int i = 1; i < MANY; i++)
        ids_distinct &= caps[i].id[0] != caps[i - 1].id[0];
    ok(ids_distinct, "batch: each create got its own row");
    struct db_stats st;
    db_stats(db, &st);
    ok(st.busy == 0, "batch: idle afterwards (%d)", st.busy);
}

static void test_queue_bound(struct db *db)
{
    enum { N = 5000 };
    struct capture *caps = calloc(N, sizeof *caps);
    for (int i = 0; i < N; i++) {
        cap_init(&caps[i]);
        db_ping(db, 0, cap_done, &caps[i]);
    }
    int immediate = 0;
    for (int i = 0; i < N; i++)
        immediate += caps[i].dones == 1 && caps[i].status == DB_UNAVAILABLE;
    ok(immediate > 0 && immediate < N, "over the queue bound: %d refused at once", immediate);
    uint64_t end = wall_ms() + 20000;
    int dones = 0, good = 0;
    while (wall_ms() < end) {
        dones = good = 0;
        for (int i = 0; i < N; i++) {
            dones += caps[i].dones;
            good += caps[i].status == DB_OK;
        }
        if (dones == N)
            break;
        pump_once();
    }
    ok(dones == N && good == N - immediate, "the rest answered (%d done, %d ok)", dones, good);
    free(caps);
}

/* pg_terminate_backend on our connections: operations fail or succeed, then it reconnects. */
static void test_server_kills(struct db *db, const char *url)
{
    char sql[256];
    struct capture caps[20];
    const char *dbname = strstr(url, "dbname=") + 7;
    snprintf(sql, sizeof sql,
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
             "WHERE datname = '%s' AND application_name = 'brisk' AND pid <> pg_backend_pid()",
             dbname);
    ok(wait_up(db, 5000), "up before the kill");
    long long killed = admin_int(g_admin_url, sql);
    ok(killed >= 2, "terminated %lld backends", killed);
    for (int i = 0; i < 20; i++) {
        cap_init(&caps[i]);
        db_ping(db, 0, cap_done, &caps[i]);
    }
    int bad = 0;
    for (int i = 0; i < 20; i++) {
        wait_cap(&caps[i], 8000);
        bad += caps[i].dones != 1 || (caps[i].status != DB_OK && caps[i].status != DB_UNAVAILABLE);
    }
    ok(bad == 0, "after the kill every operation finished, OK or unavailable");
    uint64_t t0 = wall_ms();
    ok(wait_up(db, 10000), "reconnected by itself");
    ok(wall_ms() - t0 < 8000, "within %llu ms", (unsigned long long)(wall_ms() - t0));
    struct db_stats st = {0};
    uint64_t end = wall_ms() + 8000;
    while (wall_ms() < end) {
        db_stats(db, &st);
        if (st.connections == 2)
            break;
        pump_once();
        struct capture c;
        cap_init(&c);
        db_ping(db, 0, cap_done, &c);
        wait_cap(&c, 2000);
    }
    ok(st.connections == 2, "both connections back (%d)", st.connections);
    ok(st.reconnects >= 2, "counted as reconnects (%llu)", (unsigned long long)st.reconnects);
    struct capture c;
    cap_init(&c);
    db_ping(db, 1000, cap_done, &c);
    ok(wait_cap(&c, 3000) && c.status == DB_OK, "a ping with a deadline is answered (%d)",
       c.status);
}

static void test_unreachable(void)
{
    /* a port nobody listens on */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t sl = sizeof sa;
    bind(s, (struct sockaddr *)&sa, sizeof sa);
    getsockname(s, (struct sockaddr *)&sa, &sl);
    int port = ntohs(sa.sin_port);
    close(s);

    char url[128];
    snprintf(url, sizeof url, "postgres://brisk:hunter2secret@127.0.0.1:%d/x", port);
    /* the password must not reach the log: capture stderr around migrate and open */
    char path[] = "/tmp/brisk-pg-log-XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(2);
    dup2(fd, 2);
    ok(migrate(url) == -1, "migrate against a closed port fails");
    struct db *db = open_db(url, 1000);
    g_dbs[3] = db;
    ok(db != NULL, "a handle opens anyway (it reconnects later)");
    struct capture c;
    uint64_t t0 = wall_ms();
    /* the first attempt fails at once or after a poll; then calls fail at once */
    for (int i = 0; i < 3 && db; i++) {
        cap_init(&c);
        db_ping(db, 0, cap_done, &c);
        wait_cap(&c, 3000);
    }
    ok(db && c.status == DB_UNAVAILABLE && wall_ms() - t0 < 3000, "ping unavailable within %llu ms",
       (unsigned long long)(wall_ms() - t0));
    struct db_stats st = {9, 9, 9, 9};
    if (db)
        db_stats(db, &st);
    ok(st.connections == 0 && st.busy == 0, "no connections, nothing busy");
    g_dbs[3] = NULL;
    db_close(db);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char log[8192] = {0};
    lseek(fd, 0, SEEK_SET);
    ssize_t got = read(fd, log, sizeof log - 1);
    close(fd);
    unlink(path);
    ok(got > 0 && strstr(log, "cannot connect") != NULL, "the failure is logged");
    ok(strstr(log, "hunter2secret") == NULL, "the password is never logged");
    ok(strstr(log, "127.0.0.1") != NULL, "the host is named");
}

/*
 * A listening socket on loopback that never accepts: TCP connects complete
 * in its backlog, the startup packet is never answered. Its connection
 * string goes to url; returns the socket (close it when done).
 */
static int silent_listener(char *url, size_t cap)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t sl = sizeof sa;
    bind(s, (struct sockaddr *)&sa, sizeof sa);
    listen(s, 16);
    getsockname(s, (struct sockaddr *)&sa, &sl);
    snprintf(url, cap, "host=127.0.0.1 port=%d dbname=x user=x sslmode=disable",
             ntohs(sa.sin_port));
    return s;
}

/* A server that accepts TCP but never speaks: the connect attempt times out. */
static void test_silent_server(void)
{
    char url[128];
    int s = silent_listener(url, sizeof url);
    struct db *db = open_db(url, 600);
    g_dbs[3] = db;
    struct capture c;
    cap_init(&c);
    uint64_t t0 = wall_ms();
    db_ping(db, 0, cap_done, &c);
    ok(c.dones == 0, "the ping waits while connecting");
    ok(wait_cap(&c, 5000) && c.status == DB_UNAVAILABLE, "then fails (%d)", c.status);
    uint64_t took = wall_ms() - t0;
    ok(took >= 500 && took < 3500, "after the timeout and a tick (%llu ms)",
       (unsigned long long)took);
    /* the attempt timed out: the server is known down, so a ping fails at once
     * (while the next attempt probes it) instead of waiting another timeout */
    cap_init(&c);
    db_ping(db, 0, cap_done, &c);
    ok(c.dones == 1 && c.status == DB_UNAVAILABLE, "known down: the next ping fails at once (%d)",
       c.dones);
    g_dbs[3] = NULL;
    db_close(db);
    close(s);
}

/* A ping with a deadline shorter than the busy timeout gives up at its deadline. */
static void test_ping_deadline(void)
{
    char url[128];
    int s = silent_listener(url, sizeof url);
    struct db *db = open_db(url, 5000);
    g_dbs[3] = db;
    struct capture c[2];
    cap_init(&c[0]);
    cap_init(&c[1]);
    uint64_t t0 = wall_ms();
    db_ping(db, 300, cap_done, &c[0]);
    db_ping(db, 600, cap_done, &c[1]);
    ok(c[0].dones == 0 && c[1].dones == 0, "deadline pings wait while connecting");
    ok(wait_cap(&c[0], 3000) && c[0].status == DB_UNAVAILABLE, "the 300 ms ping fails (%d)",
       c[0].status);
    uint64_t took = wall_ms() - t0;
    ok(took >= 250 && took < 1000, "at its deadline (%llu ms), not the 5 s timeout",
       (unsigned long long)took);
    ok(c[1].dones == 0 || wall_ms() - t0 >= 550, "the 600 ms ping is not answered early");
    ok(wait_cap(&c[1], 3000) && c[1].status == DB_UNAVAILABLE, "the 600 ms ping fails (%d)",
       c[1].status);
    took = wall_ms() - t0;
    ok(took >= 550 && took < 1300, "at its own deadline (%llu ms)", (unsigned long long)took);
    struct db_stats st = {9, 9, 9, 9};
    db_stats(db, &st);
    ok(st.busy == 0 && st.reconnects == 0, "nothing busy, no reconnect (%d, %llu)", st.busy,
       (unsigned long long)st.reconnects);
    g_dbs[3] = NULL;
    db_close(db);
    close(s);
}

static void test_close_in_flight(const char *url)
{
    struct db *db = open_db(url, 0);
    struct capture c[5];
    for (int i = 0; i < 5; i++) {
        cap_init(&c[i]);
        db_ping(db, 0, cap_done, &c[i]);
    }
    db_close(db);
    int fine = 0;
    for (int i = 0; i < 5; i++)
        fine += c[i].dones == 1 && c[i].status == DB_UNAVAILABLE;
    ok(fine == 5, "db_close completes operations in flight with unavailable (%d)", fine);
}

int main(void)
{
    char url[1024], url2[1024];

    g_admin_url = getenv("BRISK_TEST_PG_URL");
    if (!g_admin_url || !*g_admin_url) {
        printf("# test_db_pg: BRISK_TEST_PG_URL is not set: skipped (scripts/pg_cluster.sh start "
               "prints one)\n");
        return test_done();
    }
    g_loop = loop_create(0);
    if (!g_loop)
        return 1;
    loop_request_stop(g_loop); /* every loop_run call is then one iteration */

    test_urls();
    if (!fresh_db("main", url, sizeof url)) {
        ok(0, "create a database");
        return test_done();
    }
    test_migrations(url);
    test_concurrent_migrations();

    g_dbs[0] = open_db(url, 0);
    g_dbs[1] = open_db(url, 0);
    ok(g_dbs[0] && g_dbs[1], "open two handles");
    if (!g_dbs[0] || !g_dbs[1])
        return test_done();
    ok(strcmp(db_backend_name(g_dbs[0]), "postgres") == 0, "backend name");
    ok(wait_up(g_dbs[0], 5000) && wait_up(g_dbs[1], 5000), "both handles answer a ping");

    test_users(g_dbs[0]);
    test_orders(g_dbs[0]);
    test_process(g_dbs[0], g_dbs[1]);
    test_pipelining(g_dbs[0]);
    test_create_batches(g_dbs[0], g_dbs[1]);
    test_queue_bound(g_dbs[0]);
    test_server_kills(g_dbs[0], url);
    test_unreachable();
    test_silent_server();
    test_ping_deadline();
    test_close_in_flight(url);

    /* a handle on a database that was never migrated: statements cannot be prepared */
    if (fresh_db("bare", url2, sizeof url2)) {
        struct db *bare = open_db(url2, 800);
        struct capture c;
        g_dbs[2] = bare;
        cap_init(&c);
        db_user_get(bare, 1, cap_user, cap_done, &c);
        ok(wait_cap(&c, 5000) && c.status != DB_OK, "unmigrated database: the call fails (%d)",
           c.status);
        g_dbs[2] = NULL;
        db_close(bare);
    }

    db_close(g_dbs[0]);
    db_close(g_dbs[1]);
    g_dbs[0] = g_dbs[1] = NULL;
    loop_destroy(g_loop);
    drop_dbs();
    return test_done();
}
