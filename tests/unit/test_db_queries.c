/*
 * test_db_queries.c - the query table (src/db/queries.def) and the start-up
 * check that refuses a backend missing an operation or a read's SQL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db/db_int.h"
#include "test.h"

/* Run db__ops_check(ops) with stderr (the log) captured into out. */
static int check_captured(const struct db_ops *ops, char *out, size_t cap)
{
    FILE *f = tmpfile();
    int saved = dup(2);
    fflush(stderr);
    dup2(fileno(f), 2);
    int rc = db__ops_check(ops);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
    return rc;
}

static void test_backends_complete(void)
{
    char log[512];
    ok(check_captured(&db__sqlite_ops, log, sizeof log) == 0 && !*log, "sqlite: complete (%s)",
       log);
    ok(check_captured(&db__pg_ops, log, sizeof log) == 0 && !*log, "postgres: complete (%s)", log);
}

static void test_missing_operation(void)
{
    char log[512];
    struct db_ops ops = db__pg_ops;
    ops.user_update = NULL;
    ok(check_captured(&ops, log, sizeof log) == -1, "a missing operation is refused");
    ok(strstr(log, "postgres has no user_update operation: refusing to start") != NULL,
       "...with a line naming it: %s", log);

    ops = db__sqlite_ops;
    ops.read = NULL;
    ok(check_captured(&ops, log, sizeof log) == -1 && strstr(log, "sqlite has no read operation"),
       "a backend without reads is refused: %s", log);

    ops = db__sqlite_ops;
    ops.tick = NULL; /* optional */
    ops.flush = NULL;
    ok(check_captured(&ops, log, sizeof log) == 0, "tick and flush are optional");
}

static void test_missing_sql(void)
{
    char log[512];
    const char *sql[DB_Q_COUNT];
    struct db_ops ops = db__pg_ops;

    memcpy(sql, db__pg_ops.query_sql, sizeof sql);
    sql[DB_Q_user_order_count] = NULL;
    ops.query_sql = sql;
    ok(check_captured(&ops, log, sizeof log) == -1, "a read without SQL is refused");
    ok(strstr(log, "postgres has no SQL for the read user_order_count") != NULL, "...named: %s",
       log);
}

/* The table's metadata matches what the backends' decoders rely on. */
static void test_table(void)
{
    for (int q = 0; q < DB_Q_COUNT; q++) {
        const struct db_query_def *d = &db__queries[q];
        ok(d->name && d->nargs >= 0 && d->nargs <= DB_ARGS_MAX, "%d: name and parameters", q);
        ok(d->ncols == (d->row == DB_ROW_USER    ? DB_NCOLS_USER
                        : d->row == DB_ROW_ORDER ? DB_NCOLS_ORDER
                                                 : DB_NCOLS_COUNT),
           "%s: columns of its row type", d->name);
        ok(db__sqlite_ops.query_sql[q] && db__pg_ops.query_sql[q], "%s: SQL for both", d->name);
    }
    ok(strcmp(db__queries[DB_Q_orders_pending].name, "orders_pending") == 0 &&
           db__queries[DB_Q_orders_pending].where == DB_WHERE_PRIMARY,
       "the queue gauge reads the primary");
}

int main(void)
{
    test_backends_complete();
    test_missing_operation();
    test_missing_sql();
    test_table();
    return test_done();
}
