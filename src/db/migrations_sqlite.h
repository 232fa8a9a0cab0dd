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
 *     the sqlite3 shell, and parsed by parse_rfc3339_utc.
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

/* A GLOB pattern matching exactly the shape MIG_NOW_UTC produces. */
#define MIG_UTC_GLOB "'[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z'"

/* CHECK that column c holds exactly the shape MIG_NOW_UTC produces. */
#define MIG_CHECK_UTC(c) "CHECK (" c " GLOB " MIG_UTC_GLOB ")"

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
    /* One SQL line per C line. */
    /* clang-format off */
    {2, "orders",
     /*
      * status, receipt and processed_at move together: a processed order has
      * both, a pending one neither. idempotency_key is UNIQUE (NULLs are
      * distinct in SQLite, so orders without a key never collide) and comes
      * with its request_hash. The totals are stored, not recomputed on read;
      * the CHECKs keep them consistent with each other.
      */
     "CREATE TABLE orders (\n"
     "    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
     "    user_id INTEGER NOT NULL REFERENCES users (id),\n"
     "    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed')),\n"
     "    items TEXT NOT NULL\n"
     "        CHECK (json_valid(items) AND json_type(items) = 'array'\n"
     "               AND json_array_length(items) BETWEEN 1 AND 100),\n"
     "    subtotal_cents INTEGER NOT NULL\n"
     "        CHECK (typeof(subtotal_cents) = 'integer' AND subtotal_cents >= 0),\n"
     "    discount_cents INTEGER NOT NULL\n"
     "        CHECK (typeof(discount_cents) = 'integer' AND discount_cents >= 0),\n"
     "    tax_cents INTEGER NOT NULL CHECK (typeof(tax_cents) = 'integer' AND tax_cents >= 0),\n"
     "    total_cents INTEGER NOT NULL\n"
     "        CHECK (typeof(total_cents) = 'integer' AND total_cents >= 0),\n"
     "    receipt TEXT\n"
     "        CHECK (receipt IS NULL OR (length(receipt) = 64 AND receipt NOT GLOB '*[^0-9a-f]*')),\n"
     "    created_at TEXT NOT NULL DEFAULT " MIG_NOW_UTC "\n"
     "        CHECK (created_at GLOB " MIG_UTC_GLOB "),\n"
     "    processed_at TEXT\n"
     "        CHECK (processed_at IS NULL OR processed_at GLOB " MIG_UTC_GLOB "),\n"
     "    idempotency_key TEXT UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 128),\n"
     "    request_hash TEXT CHECK (length(request_hash) = 64),\n"
     "    CHECK ((status = 'processed') = (receipt IS NOT NULL)),\n"
     "    CHECK ((status = 'processed') = (processed_at IS NOT NULL)),\n"
     "    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL)),\n"
     "    CHECK (discount_cents <= subtotal_cents\n"
     "           AND total_cents = subtotal_cents - discount_cents + tax_cents)\n"
     ");\n"
     /* GET /users/{id}/orders, and the foreign-key check when a user is deleted. */
     "CREATE INDEX orders_user_id_idx ON orders (user_id, id);\n"
     /* The background worker's queue: only pending rows, in id order. */
     "CREATE INDEX orders_pending_idx ON orders (id) WHERE status = 'pending';\n"},
    /* clang-format on */
};

#endif
