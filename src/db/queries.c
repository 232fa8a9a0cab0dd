/*
 * queries.c - what queries.def says of each plain read besides its SQL, and
 * the two steps every backend's read shares (handing a row over, answering).
 * A leaf of db/: the backends, the replica router and db.c use it, it uses
 * none of them. Reason to change: a new row type or not-found rule.
 */
#include "db/db_int.h"

const struct db_query_def db__queries[DB_Q_COUNT] = {
#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql)                               \
    [DB_Q_##name] = {                                                                              \
        #name, DB_ROW_##row, DB_RULE_##rule, DB_WHERE_##where, DB_NARGS_##params, DB_NCOLS_##row},
#include "db/queries.def"
#undef DB_QUERY
};

void db__read_row(const struct db_read *r, const struct db_row *row)
{
    switch (db__queries[r->q].row) {
    case DB_ROW_USER:
        if (r->user_row)
            r->user_row(r->ctx, &row->user);
        break;
    case DB_ROW_ORDER:
        if (r->order_row)
            r->order_row(r->ctx, &row->order);
        break;
    case DB_ROW_COUNT:
        break;
    }
}

void db__read_done(const struct db_read *r, enum db_status st, int64_t count)
{
    if (r->count_done)
        r->count_done(r->ctx, st, st == DB_OK ? count : 0);
    else
        r->done(r->ctx, st);
}
