/*
 * pg_migrate.c - db_migrate for PostgreSQL: the schema of migrations_pg.h, applied at start-up.
 *
 * Reason to change: how migrations are applied (the advisory lock, the
 * schema_migrations bookkeeping, one transaction per migration). The
 * migrations themselves are in migrations_pg.h. Blocking libpq on the main
 * thread before any loop runs: no handle, no pool, nothing of pg.c.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/compiler.h"
#include "base/log.h"
#include "db/migrations_pg.h"
#include "db/pg_int.h"

_Static_assert(ARRAY_LEN(pg_migrations) > 0, "at least one migration");

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
