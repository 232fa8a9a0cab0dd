/*
 * pg_ops.c - the PostgreSQL backend's statements, their decoders and the
 * operations of db.h built on them.
 *
 * Reason to change: what brisk asks PostgreSQL and how it reads the answer -
 * a statement's SQL or parameters, a decoder, what an SQLSTATE means, or one
 * of the hand-written operations: user creates batched into one INSERT (group
 * commit without a timer), the idempotent order create, orders_process. The
 * reads of queries.def share one decoder, dec_read.
 *
 * orders_process needs sign() to run in C between its SELECT ...
 * FOR UPDATE SKIP LOCKED and its UPDATE, so it reserves a connection (no other
 * query is sent on it until it ends): BEGIN + SELECT | sign | UPDATE + COMMIT,
 * ROLLBACK on any failure. order_create is a single statement (CTEs check the
 * user and the idempotency key), so it needs no reservation.
 *
 * Sending, queueing and the connections are the engine's (pg.c, through
 * db/pg_int.h); the engine calls back into this file only through the
 * handle's stmt_ops (pg_stmt_ops below), which db__pg_open hands it.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/compiler.h"
#include "base/log.h"
#include "db/pg_int.h"

#define CREATE_BATCH_MAX 256       /* user creates sent as one INSERT at most */
#define CREATE_BATCHES_IN_FLIGHT 2 /* per handle; creates arriving meanwhile join the next */
#define ORDER_CREATE_RETRIES 5
#define PROCESS_MAX 10000 /* orders claimed by one orders_process call at most */

/* PostgreSQL type OIDs of the parameters (pg_type.h is a server header). */
#define OID_INT8 20
#define OID_TEXT 25
#define OID_INT8_ARRAY 1016
#define OID_TEXT_ARRAY 1009

#define USER_COLS PG_USER_COLS
#define USER_NCOLS DB_NCOLS_USER
#define ORDER_COLS PG_ORDER_COLS
#define ORDER_NCOLS DB_NCOLS_ORDER

static bool dec_read(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_ping(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_create_batch(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_user(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_user_delete(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_order_create(struct pg_conn *c, struct pg_op *op, enum db_status *out);
static bool dec_count(struct pg_conn *c, struct pg_op *op, enum db_status *out);

/*
 * Every statement, prepared on each connection right after it connects. The
 * name is the prepared statement's name; the types fix the parameters'
 * types, so they can be sent in binary (int8 as 8 big-endian bytes, text as
 * its bytes: no formatting, no NUL terminator, no copy to terminate a slice).
 */
static const struct stmt_def stmt_defs[ST_COUNT] = {
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql)                               \
    [ST_##name] = {#name,          pg_sql,  DB_NARGS_##params, {OID_INT8, OID_INT8, OID_INT8},     \
                   DB_NCOLS_##row, dec_read},
#include "db/queries.def"
#undef DB_QUERY
    [ST_PING] = {"ping", "SELECT 1", 0, {0}, 1, dec_ping},
    /*
     * Every user create goes through a batch (one or more users, in order):
     * one statement, one commit, one WAL flush for all of them. A user whose
     * email is taken - also by an earlier row of the same batch - is skipped
     * by ON CONFLICT and so has no row back: that create is the conflict.
     * Parameters in text form: '{"name",...}' and '{"email",...}'.
     */
    [ST_USER_INSERT] = {"user_create",
                        "INSERT INTO users (name, email) SELECT n, e "
                        "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(n, e, i) "
                        "ORDER BY i ON CONFLICT DO NOTHING RETURNING " USER_COLS,
                        2,
                        {OID_TEXT_ARRAY, OID_TEXT_ARRAY},
                        USER_NCOLS,
                        dec_create_batch},
    /* A NULL parameter keeps the column: the caller passes only what changes. */
    [ST_USER_UPDATE] = {"user_update",
                        "UPDATE users SET name = coalesce($2, name), email = coalesce($3, email) "
                        "WHERE id = $1 RETURNING " USER_COLS,
                        3,
                        {OID_INT8, OID_TEXT, OID_TEXT},
                        USER_NCOLS,
                        dec_user},
    /* The orders foreign key refuses the delete of a user with orders (23503). */
    [ST_USER_DELETE] =
        {"user_delete", "DELETE FROM users WHERE id = $1", 1, {OID_INT8}, 0, dec_user_delete},
    /*
     * One statement, one implicit transaction. First column: 'i' inserted,
     * 'e' the key exists (request_hash last, compared in C), 'n' no such
     * user (checked first, as the SQLite backend does). No row at all: the
     * key is being inserted by a concurrent transaction that committed after
     * this statement's snapshot (ON CONFLICT waited for it, then did
     * nothing): the caller runs the statement again and sees that order.
     */
    [ST_ORDER_CREATE] = {"order_create",
                         "WITH u AS (SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS ok), "
                         "existing AS (SELECT " ORDER_COLS ", request_hash FROM orders "
                         "  WHERE idempotency_key = $7 AND (SELECT ok FROM u)), "
                         "ins AS (INSERT INTO orders (user_id, items, subtotal_cents, "
                         "  discount_cents, tax_cents, total_cents, idempotency_key, request_hash) "
                         "  SELECT $1, $2, $3, $4, $5, $6, $7, $8 "
                         "  WHERE (SELECT ok FROM u) AND NOT EXISTS (SELECT 1 FROM existing) "
                         "  ON CONFLICT (idempotency_key) DO NOTHING "
                         "  RETURNING " ORDER_COLS ", request_hash) "
                         "SELECT 'i' AS k, * FROM ins "
                         "UNION ALL SELECT 'e', * FROM existing "
                         "UNION ALL SELECT 'n', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
                         "  NULL, NULL, NULL, NULL FROM u WHERE NOT u.ok",
                         8,
                         {OID_INT8, OID_TEXT, OID_INT8, OID_INT8, OID_INT8, OID_INT8, OID_TEXT,
                          OID_TEXT},
                         ORDER_NCOLS + 2,
                         dec_order_create},
    /*
     * A streaming replica's delay in ms: 0 while it has replayed all it
     * received (an idle primary sends nothing, and the last replay time would
     * look old), else the age of the last transaction it replayed. 0 on a
     * server that is not a replica.
     */
    [ST_REPLICA_LAG] = {"replica_lag",
                        "SELECT CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM "
                        "pg_last_wal_replay_lsn() THEN 0 ELSE COALESCE(floor(1000 * extract(epoch "
                        "FROM now() - pg_last_xact_replay_timestamp()))::bigint, 0) END",
                        0,
                        {0},
                        1,
                        dec_count},
    [ST_BEGIN] = {"begin", "BEGIN", 0, {0}, 0, NULL},
    /* Rows another transaction holds are skipped, not waited for: concurrent claimers
     * (other loops, other processes) each get different orders. */
    [ST_CLAIM] = {"orders_process",
                  "SELECT " ORDER_COLS " FROM orders WHERE status = 'pending' ORDER BY id "
                  "LIMIT $1 FOR UPDATE SKIP LOCKED",
                  1,
                  {OID_INT8},
                  ORDER_NCOLS,
                  NULL},
    /* Parameters in text form: '{1,2}' and '{hex,hex}'. */
    [ST_MARK] =
        {"order_mark",
         "UPDATE orders SET status = 'processed', receipt = r.receipt, processed_at = now() "
         "FROM unnest($1::bigint[], $2::text[]) AS r(id, receipt) "
         "WHERE orders.id = r.id AND orders.status = 'pending'",
         2,
         {OID_INT8_ARRAY, OID_TEXT_ARRAY},
         0,
         NULL},
    [ST_COMMIT] = {"commit", "COMMIT", 0, {0}, 0, NULL},
    [ST_ROLLBACK] = {"rollback", "ROLLBACK", 0, {0}, 0, NULL},
};

/* ---- values of a result ---- */

/* A signed decimal integer of exactly len bytes. */
static bool parse_i64(const char *p, int len, int64_t *out)
{
    bool neg = false;
    uint64_t v = 0;
    int i = 0;
    if (len > 0 && p[0] == '-') {
        neg = true;
        i = 1;
    }
    if (i >= len || len - i > 19)
        return false;
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

static struct str value_str(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return STR_NULL;
    return (struct str){PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col)};
}

bool value_i64(const PGresult *r, int row, int col, int64_t *out)
{
    return !PQgetisnull(r, row, col) &&
           parse_i64(PQgetvalue(r, row, col), PQgetlength(r, row, col), out);
}

/* ---- parameters ---- */

/* Make room for n bytes of parameters (all of them: pointers into it must not move). */
static void params_reserve(struct pg_op *op, size_t n)
{
    op->nparams = 0;
    op->plen = 0;
    if (n <= sizeof op->inl) {
        op->pbase = op->inl;
        op->pcap = sizeof op->inl;
        return;
    }
    if (op->heap_cap < n) {
        free(op->heap);
        op->heap = malloc(n);
        if (!op->heap)
            log_fatal("out of memory");
        op->heap_cap = n;
    }
    op->pbase = op->heap;
    op->pcap = op->heap_cap;
}

/* Append a parameter: p == NULL is SQL NULL; format 1 binary, 0 text (NUL-terminated here). */
static void param_add(struct pg_op *op, const void *p, size_t n, int format)
{
    int i = op->nparams++;
    if (!p) {
        op->pv[i] = NULL;
        op->pl[i] = 0;
        op->pf[i] = format;
        return;
    }
    char *dst = op->pbase + op->plen;
    if (n)
        memcpy(dst, p, n);
    op->plen += n;
    if (format == 0)
        op->pbase[op->plen++] = '\0';
    op->pv[i] = dst;
    op->pl[i] = (int)n;
    op->pf[i] = format;
}

static void param_i64(struct pg_op *op, int64_t v)
{
    unsigned char b[8];
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--) {
        b[i] = (unsigned char)(u & 0xff);
        u >>= 8;
    }
    param_add(op, b, sizeof b, 1);
}

static void param_str(struct pg_op *op, struct str s)
{
    param_add(op, s.ptr, s.ptr ? s.len : 0, 1);
}

/* ---- results ---- */

/* What a unique (23505) or foreign-key (23503) refusal of statement id means; DB_OK: an error. */
static enum db_status constraint_status(enum stmt_id id, const char *state)
{
    if (id == ST_USER_UPDATE && strcmp(state, "23505") == 0)
        return DB_CONFLICT; /* the only unique index besides the id is lower(email) */
    if (id == ST_USER_DELETE && strcmp(state, "23503") == 0)
        return DB_HAS_CHILDREN; /* orders is the only table referencing users */
    if (id == ST_ORDER_CREATE && strcmp(state, "23503") == 0)
        return DB_NOT_FOUND; /* the user was deleted concurrently */
    return DB_OK;
}

/*
 * The status of a failed unit, logged unless it is an expected outcome
 * (conflict, has-children, outage). SQLSTATEs: 23505 unique_violation,
 * 23503 foreign_key_violation, class 08 connection exceptions, 57P0x
 * shutdown/crash, 53 resources, 40001/40P01 serialization/deadlock,
 * 55P03 lock_not_available, 57014 query_canceled: all transient.
 */
static enum db_status unit_error(struct pg_conn *c, struct pg_op *op, const char *what)
{
    struct db_pg *pg = c->pg;
    char msg[WHY_MAX];
    const char *state = op->err ? PQresultErrorField(op->err, PG_DIAG_SQLSTATE) : NULL;

    if (!state) {
        db__log(LOG_ERROR, "postgres", pg->label, NULL, "%s failed without an error", what);
        return DB_ERROR;
    }
    enum db_status expected = op->kind == OP_QUERY ? constraint_status(op->stmt, state) : DB_OK;
    if (expected != DB_OK)
        return expected;
    one_line(msg, sizeof msg, PQresultErrorField(op->err, PG_DIAG_MESSAGE_PRIMARY));
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strncmp(state, "53", 2) == 0 || strcmp(state, "40001") == 0 ||
        strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0) {
        db__log(LOG_WARN, "postgres", pg->label, msg, "%s: database unavailable: %s (SQLSTATE %s)",
                what, msg, state);
        return DB_UNAVAILABLE;
    }
    db__log(LOG_ERROR, "postgres", pg->label, msg, "%s failed: %s (SQLSTATE %s)", what, msg, state);
    /* a prepared statement missing or stale: start over on a fresh connection */
    if (strcmp(state, "26000") == 0 || strcmp(state, "0A000") == 0)
        conn_break(c, msg);
    return DB_ERROR;
}

/* The one result a single-statement unit must have, with the expected shape. */
static const PGresult *unit_result(struct pg_conn *c, struct pg_op *op, int i, enum stmt_id id)
{
    const PGresult *r = op->res[i];
    const struct stmt_def *def = &stmt_defs[id];
    if (!r || PQnfields(r) != def->ncols) {
        db__log(LOG_ERROR, "postgres", c->pg->label, NULL, "%s: result has %d columns, expected %d",
                def->name, r ? PQnfields(r) : -1, def->ncols);
        return NULL;
    }
    return r;
}

static enum db_status read_user(struct pg_conn *c, const PGresult *r, int row, const char *what,
                                struct db_user *out)
{
    out->name = value_str(r, row, 1);
    out->email = value_str(r, row, 2);
    if (!value_i64(r, row, 0, &out->id) || !value_i64(r, row, 3, &out->created_at) ||
        !out->name.ptr || !out->email.ptr) {
        db__log(LOG_ERROR, "postgres", c->pg->label, NULL, "%s: malformed user row", what);
        return DB_ERROR;
    }
    return DB_OK;
}

/* ORDER_COLS starting at column `base`. Text points into r. */
static enum db_status read_order(struct pg_conn *c, const PGresult *r, int row, int base,
                                 const char *what, struct db_order *out)
{
    struct str status = value_str(r, row, base + 2);

    memset(out, 0, sizeof *out);
    out->items = value_str(r, row, base + 3);
    out->receipt = value_str(r, row, base + 8);
    out->processed = str_eq(status, STR_LIT("processed"));
    if (!value_i64(r, row, base, &out->id) || !value_i64(r, row, base + 1, &out->user_id) ||
        !status.ptr || !out->items.ptr || !value_i64(r, row, base + 4, &out->subtotal_cents) ||
        !value_i64(r, row, base + 5, &out->discount_cents) ||
        !value_i64(r, row, base + 6, &out->tax_cents) ||
        !value_i64(r, row, base + 7, &out->total_cents) ||
        !value_i64(r, row, base + 9, &out->created_at) ||
        (!PQgetisnull(r, row, base + 10) && !value_i64(r, row, base + 10, &out->processed_at)) ||
        out->processed != (out->receipt.ptr != NULL && out->processed_at != 0)) {
        db__log(LOG_ERROR, "postgres", c->pg->label, NULL, "%s: malformed order row", what);
        return DB_ERROR;
    }
    return DB_OK;
}

/* ---- decoders: one per statement (stmt_defs.decode) ---- */

/* Row i of a read's result, as its row type says. Text points into r. */
static enum db_status decode_row(struct pg_conn *c, const PGresult *r, int i,
                                 const struct db_query_def *q, struct db_row *out)
{
    switch (q->row) {
    case DB_ROW_USER:
        return read_user(c, r, i, q->name, &out->user);
    case DB_ROW_ORDER:
        return read_order(c, r, i, 0, q->name, &out->order);
    case DB_ROW_COUNT:
        if (value_i64(r, i, 0, &out->count))
            return DB_OK;
        db__log(LOG_ERROR, "postgres", c->pg->label, NULL, "%s: malformed count", q->name);
        return DB_ERROR;
    }
    return DB_ERROR;
}

/* Every read of queries.def: its rule says what no row means; rows go out as decoded. */
static bool dec_read(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    const struct db_query_def *q = &db__queries[op->stmt];
    const PGresult *r = unit_result(c, op, 0, op->stmt);
    const struct db_read rd = {.q = (enum db_query)op->stmt,
                               .user_row = op->user_row,
                               .order_row = op->order_row,
                               .ctx = op->ctx};
    int n = r ? PQntuples(r) : 0;

    *out = DB_ERROR;
    if (!r)
        return true;
    if (n == 0) {
        *out = q->rule == DB_RULE_ANY ? DB_OK : DB_NOT_FOUND;
        return true;
    }
    if (q->rule == DB_RULE_ONE && n > 1) {
        db__log(LOG_ERROR, "postgres", c->pg->label, NULL, "%s: %d rows, expected one", q->name, n);
        return true;
    }
    for (int i = 0; i < n; i++) {
        struct db_row row;
        if (q->rule == DB_RULE_PARENT && PQgetisnull(r, i, 0))
            continue; /* the parent exists, without (more) children */
        if (decode_row(c, r, i, q, &row) != DB_OK)
            return true;
        op->count = row.count;
        db__read_row(&rd, &row);
    }
    *out = DB_OK;
    return true;
}

static bool dec_ping(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    (void)c;
    (void)op;
    *out = DB_OK;
    return true;
}

/* One user row (update ... RETURNING); none: no such user. */
static bool dec_user(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    const char *what = stmt_defs[op->stmt].name;
    const PGresult *r = unit_result(c, op, 0, op->stmt);
    struct db_user u;

    if (!r) {
        *out = DB_ERROR;
    } else if (PQntuples(r) == 0) {
        *out = DB_NOT_FOUND;
    } else {
        *out = read_user(c, r, 0, what, &u);
        if (*out == DB_OK && op->user_row)
            op->user_row(op->ctx, &u);
    }
    return true;
}

static bool dec_user_delete(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    (void)c;
    const char *t = op->res[0] ? PQcmdTuples(op->res[0]) : "";
    *out = strcmp(t, "0") == 0 ? DB_NOT_FOUND : t[0] ? DB_OK : DB_ERROR;
    return true;
}

/* One count row (the replica's lag). */
static bool dec_count(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    const PGresult *r = unit_result(c, op, 0, op->stmt);
    *out = r && PQntuples(r) == 1 && value_i64(r, 0, 0, &op->count) ? DB_OK : DB_ERROR;
    return true;
}

/*
 * A batch's INSERT answered: each returned row belongs to the first create
 * not yet matched with exactly that email (rows come back in insertion
 * order, so the scan rarely moves); a create left without a row lost its
 * email to an existing user or an earlier create: DB_CONFLICT.
 */
static bool dec_create_batch(struct pg_conn *c, struct pg_op *batch, enum db_status *out)
{
    struct db_pg *pg = c->pg;
    const char *what = stmt_defs[ST_USER_INSERT].name;
    const PGresult *r = unit_result(c, batch, 0, ST_USER_INSERT);
    PGresult *owned = batch->res[0];
    int n = r ? PQntuples(r) : 0;

    if (!r || n > batch->max) {
        if (r)
            db__log(LOG_ERROR, "postgres", pg->label, NULL, "%s: %d rows for %d users", what, n,
                    batch->max);
        *out = DB_ERROR;
        return true;
    }
    batch->res[0] = NULL; /* outlives the carrier: the rows are read while answering */
    struct pg_op *members = batch_retire(pg, batch);
    struct pg_op *from = members;
    for (int row = 0; row < n; row++) {
        struct str email = value_str(r, row, 2);
        struct pg_op *m = from, *hit = NULL;
        for (int pass = 0; pass < 2 && !hit && email.ptr; pass++, m = members) {
            for (; m && !hit; m = m->next_member) {
                if (m->count == 0 && (size_t)m->pl[1] == email.len &&
                    memcmp(m->pv[1], email.ptr, email.len) == 0)
                    hit = m;
            }
        }
        if (!hit) {
            db__log(LOG_ERROR, "postgres", pg->label, NULL, "%s: a returned row matches no create",
                    what);
            continue;
        }
        hit->count = row + 1;
        from = hit->next_member;
    }
    for (struct pg_op *m = members, *next; m; m = next) {
        enum db_status st = DB_CONFLICT;
        next = m->next_member;
        m->next_member = NULL;
        if (m->count > 0) {
            struct db_user u;
            st = read_user(c, r, (int)m->count - 1, what, &u);
            if (st == DB_OK && m->user_row)
                m->user_row(m->ctx, &u);
        }
        op_finish(pg, m, st);
    }
    PQclear(owned);
    return false;
}

/* Answers false when the operation was queued again (a concurrent idempotent insert). */
static bool dec_order_create(struct pg_conn *c, struct pg_op *op, enum db_status *out)
{
    struct db_pg *pg = c->pg;
    const char *what = stmt_defs[op->stmt].name;
    const PGresult *r = unit_result(c, op, 0, op->stmt);
    struct db_order o;

    *out = DB_ERROR;
    if (!r)
        return true;
    if (PQntuples(r) == 0) {
        if (op->retries++ < ORDER_CREATE_RETRIES) {
            op_clear_results(op);
            q_push_front(&pg->q_head, &pg->q_tail, &pg->nq, op);
            return false;
        }
        db__log(LOG_ERROR, "postgres", pg->label, NULL,
                "%s: idempotency key still contended after %d tries", what,
                ORDER_CREATE_RETRIES + 1);
        return true;
    }
    struct str kind = value_str(r, 0, 0);
    if (str_eq(kind, STR_LIT("n"))) {
        *out = DB_NOT_FOUND;
        return true;
    }
    if (read_order(c, r, 0, 1, what, &o) != DB_OK)
        return true;
    if (str_eq(kind, STR_LIT("e"))) {
        /* parameter 8 (index 7) is the request hash, stored as sent */
        struct str stored = value_str(r, 0, ORDER_NCOLS + 1);
        struct str hash = {op->pv[7], op->pv[7] ? (size_t)op->pl[7] : 0};
        if (!stored.ptr || !hash.ptr || !str_eq(stored, hash)) {
            *out = DB_KEY_REUSED;
            return true;
        }
        *out = DB_REPLAYED;
    } else {
        *out = DB_OK;
    }
    if (op->order_row)
        op->order_row(op->ctx, &o);
    return true;
}

/* ---- orders_process: a transaction on a reserved connection ---- */

static void tx_rollback(struct pg_conn *c, struct pg_op *op, enum db_status why)
{
    op->tx_status = why;
    op->step = TX_ROLLBACK;
    op_clear_results(op);
    unit_begin(c, op, 1);
    unit_end(c, send_prepared(c, ST_ROLLBACK, NULL));
}

static void tx_end(struct pg_conn *c, struct pg_op *op, enum db_status st, int64_t count)
{
    c->reserved = NULL;
    c->tx_running = false;
    op->count = count;
    op_finish(c->pg, op, st);
}

/* The reserved connection has nothing else in flight: BEGIN + claim, one round trip. */
static void tx_begin(struct pg_conn *c)
{
    struct pg_op *op = c->reserved;
    c->tx_running = true;
    op->step = TX_CLAIM;
    params_reserve(op, 8);
    param_i64(op, op->max);
    unit_begin(c, op, 2);
    unit_end(c, send_prepared(c, ST_BEGIN, NULL) && send_prepared(c, ST_CLAIM, op));
}

static bool is_receipt(const char r[65])
{
    for (int i = 0; i < 64; i++) {
        if (!((r[i] >= '0' && r[i] <= '9') || (r[i] >= 'a' && r[i] <= 'f')))
            return false;
    }
    return r[64] == '\0';
}

/* Claimed rows in hand: sign each, then UPDATE + COMMIT in one round trip. */
static void tx_claimed(struct pg_conn *c, struct pg_op *op)
{
    struct db_pg *pg = c->pg;
    const char *what = stmt_defs[ST_CLAIM].name;
    const PGresult *r = unit_result(c, op, 1, ST_CLAIM);
    char receipt[65];
    int nsigned = 0;

    if (!r) {
        tx_rollback(c, op, DB_ERROR);
        return;
    }
    int n = PQntuples(r);
    /* '{' ids '}' NUL '{' receipts '}' NUL; an id is at most 20 characters + ',' */
    size_t need = (size_t)n * 21 + 3 + (size_t)n * 65 + 3;
    params_reserve(op, need);
    char *ids = op->pbase, *rcp;
    size_t ilen = 0, rlen = 0;
    ids[ilen++] = '{';
    rcp = ids + (size_t)n * 21 + 3;
    rcp[rlen++] = '{';
    for (int i = 0; i < n; i++) {
        struct db_order o;
        if (read_order(c, r, i, 0, what, &o) != DB_OK) {
            tx_rollback(c, op, DB_ERROR);
            return;
        }
        memset(receipt, 0, sizeof receipt);
        if (op->sign(op->ctx, &o, receipt) != 0)
            continue; /* stays pending; the signer logged why */
        receipt[64] = '\0';
        if (!is_receipt(receipt)) {
            db__log(LOG_ERROR, "postgres", pg->label, NULL,
                    "%s: order %" PRId64 ": the signer gave a malformed receipt", what, o.id);
            continue;
        }
        if (nsigned++) {
            ids[ilen++] = ',';
            rcp[rlen++] = ',';
        }
        ilen += (size_t)snprintf(ids + ilen, 21, "%" PRId64, o.id);
        memcpy(rcp + rlen, receipt, 64);
        rlen += 64;
    }
    ids[ilen++] = '}';
    ids[ilen] = '\0';
    rcp[rlen++] = '}';
    rcp[rlen] = '\0';
    op_clear_results(op);
    if (nsigned == 0) {
        op->step = TX_COMMIT;
        unit_begin(c, op, 1);
        unit_end(c, send_prepared(c, ST_COMMIT, NULL));
        return;
    }
    op->nparams = 2;
    op->pv[0] = ids;
    op->pl[0] = (int)ilen;
    op->pf[0] = 0;
    op->pv[1] = rcp;
    op->pl[1] = (int)rlen;
    op->pf[1] = 0;
    op->step = TX_MARK;
    unit_begin(c, op, 2);
    unit_end(c, send_prepared(c, ST_MARK, op) && send_prepared(c, ST_COMMIT, NULL));
}

static void tx_unit_done(struct pg_conn *c, struct pg_op *op)
{
    const char *what = stmt_defs[ST_CLAIM].name;

    if (op->step == TX_ROLLBACK) {
        if (op->aborted) {
            conn_break(c, "ROLLBACK failed");
            tx_end(c, op, op->tx_status, 0);
            return;
        }
        tx_end(c, op, op->tx_status, 0);
        return;
    }
    if (op->aborted) {
        tx_rollback(c, op, unit_error(c, op, what));
        return;
    }
    switch (op->step) {
    case TX_CLAIM:
        tx_claimed(c, op);
        return;
    case TX_MARK: {
        int64_t n = 0;
        const char *tuples = op->res[0] ? PQcmdTuples(op->res[0]) : "";
        const char *commit = op->res[1] ? PQcmdStatus(op->res[1]) : "";
        if (!parse_i64(tuples, (int)strlen(tuples), &n) || strcmp(commit, "COMMIT") != 0) {
            db__log(LOG_ERROR, "postgres", c->pg->label, NULL,
                    "%s: unexpected answer to UPDATE/COMMIT (%s, %s)", what, tuples, commit);
            tx_end(c, op, DB_ERROR, 0);
            return;
        }
        tx_end(c, op, DB_OK, n);
        return;
    }
    case TX_COMMIT:
        tx_end(c, op, DB_OK, 0);
        return;
    case TX_ROLLBACK:
        break;
    }
}

/* ---- a unit answered (stmt_ops.unit_done) ---- */

/* The Sync of op's unit arrived (any unit but a connection's prepare batch): answer op. */
static void stmt_unit_done(struct pg_conn *c, struct pg_op *op)
{
    struct db_pg *pg = c->pg;
    enum db_status st = DB_ERROR;

    if (op->kind == OP_PROCESS) {
        tx_unit_done(c, op);
        return;
    }
    if (op->aborted) {
        op_finish(pg, op, unit_error(c, op, stmt_defs[op->stmt].name));
        return;
    }
    if (stmt_defs[op->stmt].decode(c, op, &st))
        op_finish(pg, op, st);
}

/* ---- the operations of db.h ---- */

static struct pg_op *simple_op(struct db_pg *pg, enum op_kind kind, enum stmt_id stmt,
                               db_done_fn done, void *ctx)
{
    struct pg_op *op = op_new(pg, kind, ctx);
    op->stmt = stmt;
    op->done = done;
    return op;
}

static void pg_ping(struct db *db, int timeout_ms, db_done_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = simple_op(pg, OP_QUERY, ST_PING, done, ctx);
    params_reserve(op, 0);
    if (timeout_ms > 0 && (uint64_t)timeout_ms < pg->timeout_ms) {
        /* listed before submit, which may finish (and recycle) op at once */
        op->ping_deadline_ms = now_ms(pg) + (uint64_t)timeout_ms;
        op->next_ping = pg->pings;
        pg->pings = op;
        ping_arm(pg);
    }
    submit(pg, op);
}

/* Append s as a quoted element of a text-form array: '"' with '"' and '\\' escaped. */
static size_t array_elem(char *out, const char *s, size_t n)
{
    size_t k = 0;
    out[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            out[k++] = '\\';
        out[k++] = s[i];
    }
    out[k++] = '"';
    return k;
}

/* Parameter `which` (0 names, 1 emails) of a batch: the members' values as '{"..",".."}'. */
static void param_array(struct pg_op *batch, int which)
{
    int i = batch->nparams++;
    char *dst = batch->pbase + batch->plen;
    size_t k = 0;

    dst[k++] = '{';
    for (const struct pg_op *m = batch->members; m; m = m->next_member) {
        if (m != batch->members)
            dst[k++] = ',';
        k += array_elem(dst + k, m->pv[which], (size_t)m->pl[which]);
    }
    dst[k++] = '}';
    dst[k] = '\0';
    batch->pv[i] = dst;
    batch->pl[i] = (int)k;
    batch->pf[i] = 0;
    batch->plen += k + 1;
}

/*
 * Send the gathering batch when fewer than CREATE_BATCHES_IN_FLIGHT are
 * out, or when it is full. Under load the creates that arrive while a batch
 * commits all go out in the next one: group commit without a timer, and no
 * wait at all when the database is idle.
 */
static void batch_flush(struct db_pg *pg)
{
    struct pg_op *batch = pg->batch_open;

    if (!batch || (pg->batches_in_flight >= CREATE_BATCHES_IN_FLIGHT &&
                   batch->max < CREATE_BATCH_MAX && !pg->closing))
        return;
    pg->batch_open = NULL;
    size_t bytes = 0;
    for (const struct pg_op *m = batch->members; m; m = m->next_member)
        bytes += 2 * ((size_t)m->pl[0] + (size_t)m->pl[1]) + 6; /* escapes, quotes, commas */
    params_reserve(batch, bytes + 6);
    param_array(batch, 0);
    param_array(batch, 1);
    batch->counted = true;
    pg->batches_in_flight++;
    submit(pg, batch);
}

static void pg_user_create(struct db *db, struct str name, struct str email, db_user_fn row,
                           db_done_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = simple_op(pg, OP_QUERY, ST_USER_INSERT, done, ctx);
    op->user_row = row;
    params_reserve(op, name.len + email.len);
    param_str(op, name);
    param_str(op, email);

    enter(pg);
    struct pg_op *batch = pg->batch_open;
    if (!batch) {
        batch = pg->batch_open = op_new(pg, OP_CREATE_BATCH, NULL);
        batch->stmt = ST_USER_INSERT;
    }
    if (batch->members_tail)
        batch->members_tail->next_member = op;
    else
        batch->members = op;
    batch->members_tail = op;
    batch->max++; /* members */
    batch_flush(pg);
    leave(pg);
}

/* Every read of queries.def: its int64 parameters in binary, its decoder dec_read. */
static void pg_read(struct db *db, const struct db_read *r)
{
    struct db_pg *pg = to_pg(db);
    const struct db_query_def *q = &db__queries[r->q];
    struct pg_op *op = simple_op(pg, OP_QUERY, (enum stmt_id)r->q, r->done, r->ctx);
    op->user_row = r->user_row;
    op->order_row = r->order_row;
    op->count_done = r->count_done;
    params_reserve(op, (size_t)q->nargs * 8);
    for (int i = 0; i < q->nargs; i++)
        param_i64(op, r->args[i]);
    submit(pg, op);
}

static void pg_user_update(struct db *db, int64_t id, struct str name, struct str email,
                           db_user_fn row, db_done_fn done, void *ctx)
{
    if (!name.ptr && !email.ptr) {
        /* nothing to change: answer with the current row, as SQLite does */
        pg_read(db,
                &(const struct db_read){
                    .q = DB_Q_user_get, .args = {id}, .user_row = row, .done = done, .ctx = ctx});
        return;
    }
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = simple_op(pg, OP_QUERY, ST_USER_UPDATE, done, ctx);
    op->user_row = row;
    params_reserve(op, 8 + (name.ptr ? name.len : 0) + (email.ptr ? email.len : 0));
    param_i64(op, id);
    param_str(op, name);
    param_str(op, email);
    submit(pg, op);
}

static void pg_user_delete(struct db *db, int64_t id, db_done_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = simple_op(pg, OP_QUERY, ST_USER_DELETE, done, ctx);
    params_reserve(op, 8);
    param_i64(op, id);
    submit(pg, op);
}

static void pg_order_create(struct db *db, const struct db_order_new *o, db_order_fn row,
                            db_done_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = simple_op(pg, OP_QUERY, ST_ORDER_CREATE, done, ctx);
    bool keyed = o->idempotency_key.ptr != NULL;
    op->order_row = row;
    params_reserve(op, (size_t)5 * 8 + o->items.len +
                           (keyed ? o->idempotency_key.len + o->request_hash.len : 0));
    param_i64(op, o->user_id);
    param_str(op, o->items.ptr ? o->items : STR_LIT(""));
    param_i64(op, o->subtotal_cents);
    param_i64(op, o->discount_cents);
    param_i64(op, o->tax_cents);
    param_i64(op, o->total_cents);
    param_str(op, keyed ? o->idempotency_key : STR_NULL);
    param_str(op, keyed ? o->request_hash : STR_NULL);
    submit(pg, op);
}

static void pg_orders_process(struct db *db, int max, db_sign_fn sign, db_count_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = op_new(pg, OP_PROCESS, ctx);
    op->stmt = ST_CLAIM;
    op->sign = sign;
    op->count_done = done;
    if (max <= 0) {
        /* nothing to claim: no transaction either */
        op_finish(pg, op, DB_OK);
        return;
    }
    op->max = max > PROCESS_MAX ? PROCESS_MAX : max;
    submit(pg, op);
}

void db__pg_replica_lag(struct db *db, db_count_fn done, void *ctx)
{
    struct db_pg *pg = to_pg(db);
    struct pg_op *op = op_new(pg, OP_QUERY, ctx);
    op->stmt = ST_REPLICA_LAG;
    op->count_done = done;
    params_reserve(op, 0);
    submit(pg, op);
}

/* PostgreSQL's text of each read, for db__ops_check. */
static const char *const pg_query_sql[DB_Q_COUNT] = {
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql) [DB_Q_##name] = (pg_sql),
#include "db/queries.def"
#undef DB_QUERY
};

const struct db_ops db__pg_ops = {
    .name = "postgres",
    .query_sql = pg_query_sql,
    .read = pg_read,
    .close = pg_close,
    .ping = pg_ping,
    .user_create = pg_user_create,
    .user_update = pg_user_update,
    .user_delete = pg_user_delete,
    .stats = pg_stats,
    .tick = pg_tick,
    .order_create = pg_order_create,
    .orders_process = pg_orders_process,
};

/* What the engine (pg.c) calls of this file, through the handle. */
static const struct pg_stmt_ops pg_stmt_ops = {
    .defs = stmt_defs,
    .unit_done = stmt_unit_done,
    .tx_begin = tx_begin,
    .batch_flush = batch_flush,
};

struct db *db__pg_open(const char *conninfo, const struct db_config *cfg, struct loop *loop)
{
    return pg_open(conninfo, cfg, loop, &db__pg_ops, &pg_stmt_ops);
}
