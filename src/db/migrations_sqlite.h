/*
 * migrations_sqlite.h - the SQLite schema, as numbered migrations.
 *
 * Included by sqlite.c only. db_migrate applies, in order, every migration
 * whose version is not yet recorded in schema_migrations, each in its own
 * BEGIN IMMEDIATE transaction together with its schema_migrations row.
 * Rules for adding one:
 *   - append with the next version number (1, 2, 3, ... without gaps);
 *   - never edit a migration that has shipped: add a new one;
 *   - the migration connection runs with foreign_keys=OFF, so a migration may
 *     rebuild a table (SQLite's "12-step" ALTER); PRAGMA foreign_key_check
 *     must come back empty before the transaction commits;
 *   - timestamps are TEXT "YYYY-MM-DDTHH:MM:SSZ" (UTC): sortable, readable in
 *     the sqlite3 shell, and parsed by db__parse_utc_timestamp.
 */
#ifndef BRISK_MIGRATIONS_SQLITE_H
#define BRISK_MIGRATIONS_SQLITE_H

struct sqlite_migration {
    int version;
    const char *name; /* for the log line */
    const char *sql;  /* one or more statements */
};

/* The default for every created_at column; "now" is fixed for one statement. */
#define MIG_NOW_UTC "(strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))"

/* CHECK that column c holds exactly the shape MIG_NOW_UTC produces. */
#define MIG_CHECK_UTC(c)                                                                           \
    "CHECK (" c " GLOB "                                                                           \
    "'[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z')"

static const struct sqlite_migration sqlite_migrations[] = {
    {1, "users",
     "CREATE TABLE users (\n"
     /* AUTOINCREMENT: ids of deleted users are never handed out again. */
     "    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
     /* length() of TEXT counts characters, as the API's 1..200 does. */
     "    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),\n"
     /* The API limits email in bytes: count the UTF-8 bytes. */
     "    email TEXT NOT NULL CHECK (length(CAST(email AS BLOB)) BETWEEN 3 AND 254),\n"
     "    created_at TEXT NOT NULL DEFAULT " MIG_NOW_UTC "\n"
     "        " MIG_CHECK_UTC(
         "created_at") "\n"
                       ");\n"
                       /*
                        * Emails are unique case-insensitively. Note: SQLite's built-in lower()
                        * folds ASCII letters only, so "ÄB@x.io" and "äb@x.io" are two different
                        * emails here (PostgreSQL's lower() would fold both). The email keeps the
                        * case it was written with; only the index key is folded.
                        */
                       "CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));\n"},
    {2, "orders",
     /*
      * Just enough for "a user with orders cannot be deleted"; the orders
      * feature extends this table in migration 3 and later.
      */
     "CREATE TABLE orders (\n"
     "    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
     "    user_id INTEGER NOT NULL REFERENCES users (id),\n"
     "    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed')),\n"
     "    created_at TEXT NOT NULL DEFAULT " MIG_NOW_UTC "\n"
     "        " MIG_CHECK_UTC(
         "created_at") "\n"
                       ");\n"
                       /* Also serves the foreign-key check when a user is deleted. */
                       "CREATE INDEX orders_user_id_idx ON orders (user_id);\n"},
};

#endif
