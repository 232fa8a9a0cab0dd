/*
 * db.c - backend selection and dispatch for the storage interface (see db.h).
 *
 * The database URL decides the backend:
 *   "sqlite:PATH", "sqlite://PATH" or a plain path      -> SQLite (sqlite.c)
 *   "postgres://...", "postgresql://..." or a libpq
 *   "key=value ..." connection string                   -> PostgreSQL (pg.c)
 * Anything of the form "scheme://..." with another scheme is refused. The URL
 * itself is never logged: a PostgreSQL URL may carry a password.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "db/db_int.h"
#include "db/pq_load.h"

enum backend_kind { BACKEND_NONE, BACKEND_SQLITE, BACKEND_POSTGRES };

/* ---- the plain reads: one public function per row of queries.def ---- */

/* The parameters in bind order; a negative limit is 0 rows (SQLite reads it as "no limit"). */
#define ARGS_NONE 0
#define ARGS_ID id
#define ARGS_PAGE after, limit > 0 ? limit : 0
#define ARGS_ID_PAGE id, after, limit > 0 ? limit : 0
#define SET_USER .user_row = row, .done = done
#define SET_ORDER .order_row = row, .done = done
#define SET_COUNT .count_done = done

#define DB_QUERY(name, row, rule, where, params, sqlite_sql, pg_sql)                               \
    void db_##name(struct db *db DB_PARAMS_##params, DB_CALLBACKS_##row, void *ctx)                \
    {                                                                                              \
        const struct db_read r = {                                                                 \
            .q = DB_Q_##name, .args = {ARGS_##params}, SET_##row, .ctx = ctx};                     \
        db->ops->read(db, &r);                                                                     \
    }
#include "db/queries.def"
#undef DB_QUERY

int db__ops_check(const struct db_ops *ops)
{
    /* the required entries, by name, for the log line */
    const struct {
        const char *name;
        bool present;
    } need[] = {
        {"close", ops->close},
        {"ping", ops->ping},
        {"read", ops->read},
        {"user_create", ops->user_create},
        {"user_update", ops->user_update},
        {"user_delete", ops->user_delete},
        {"stats", ops->stats},
        {"order_create", ops->order_create},
        {"orders_process", ops->orders_process},
    };
    const char *backend = ops->name ? ops->name : "(unnamed)";

    for (size_t i = 0; i < ARRAY_LEN(need); i++) {
        if (!need[i].present) {
            log_error("database backend %s has no %s operation: refusing to start", backend,
                      need[i].name);
            return -1;
        }
    }
    for (int q = 0; ops->query_sql && q < DB_Q_COUNT; q++) {
        if (!ops->query_sql[q]) {
            log_error("database backend %s has no SQL for the read %s (src/db/queries.def): "
                      "refusing to start",
                      backend, db__queries[q].name);
            return -1;
        }
    }
    return 0;
}

static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * A libpq connection string starts with a keyword and '=' ("host=db port=5432").
 * A SQLite file whose name looks like that must be written "sqlite:name=x".
 */
static bool looks_like_conninfo(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    const char *key = s;
    while (is_alpha(*s) || *s == '_')
        s++;
    if (s == key)
        return false;
    while (*s == ' ' || *s == '\t')
        s++;
    return *s == '=';
}

/* Length of a URL scheme ending at "://" at the start of s, or 0. */
static size_t url_scheme_len(const char *s)
{
    size_t n = 0;
    if (!is_alpha(s[0]))
        return 0;
    while (is_alpha(s[n]) || (s[n] >= '0' && s[n] <= '9') || s[n] == '+' || s[n] == '-' ||
           s[n] == '.')
        n++;
    return strncmp(s + n, "://", 3) == 0 ? n : 0;
}

/*
 * The option name in libpq's "invalid connection option "NAME"" (key=value
 * strings) or "invalid URI query parameter: "NAME"" (URLs), into key (cap
 * bytes). Only a name made of option-name characters counts: libpq's other
 * messages quote text that may be a password.
 */
static bool unknown_key(const char *perr, char *key, size_t cap)
{
    static const char *const k_forms[] = {"invalid connection option \"",
                                          "invalid URI query parameter: \""};
    if (!perr)
        return false;
    for (size_t f = 0; f < ARRAY_LEN(k_forms); f++) {
        size_t pl = strlen(k_forms[f]);
        if (strncmp(perr, k_forms[f], pl) != 0)
            continue;
        const char *p = perr + pl;
        size_t n = 0;
        while (n + 1 < cap && (isalnum((unsigned char)p[n]) || p[n] == '_'))
            n++;
        if (n == 0 || p[n] != '"')
            return false;
        memcpy(key, p, n);
        key[n] = 0;
        return true;
    }
    return false;
}

/*
 * Decide the backend; *out_path is the SQLite file name (pointing into url)
 * or the PostgreSQL connection string (url itself). On failure *out_err says
 * why (never quoting more of the URL than its scheme).
 */
static enum backend_kind classify_url(const char *url, const char **out_path, const char **out_err)
{
    static _Thread_local char msg[96];
    const char *path;
    size_t scheme;

    if (!url || !*url) {
        *out_err = "database URL is empty";
        return BACKEND_NONE;
    }
    if (has_prefix_ci(url, "sqlite://")) {
        path = url + strlen("sqlite://");
    } else if (has_prefix_ci(url, "sqlite:")) {
        path = url + strlen("sqlite:");
    } else if (has_prefix_ci(url, "postgres://") || has_prefix_ci(url, "postgresql://") ||
               looks_like_conninfo(url)) {
        /* libpq is loaded only now, for PostgreSQL (first at start-up, before the sandbox) */
        const char *lerr = pq_load();
        if (lerr) {
            *out_err = lerr;
            return BACKEND_NONE;
        }
        /* libpq's own parser; its message is not passed on: it may quote the password */
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(url, &perr);
        if (!opts) {
            char key[41];
            if (unknown_key(perr, key, sizeof key)) {
                snprintf(msg, sizeof msg, "unknown connection option \"%s\"", key);
                *out_err = msg;
            } else {
                *out_err = "not a valid PostgreSQL URL or connection string";
            }
            PQfreemem(perr);
            return BACKEND_NONE;
        }
        PQconninfoFree(opts);
        *out_path = url;
        return BACKEND_POSTGRES;
    } else if ((scheme = url_scheme_len(url)) != 0) {
        /* Only the scheme is quoted: the rest may hold credentials. */
        snprintf(msg, sizeof msg, "scheme \"%.*s\" is not supported (use sqlite: or postgres://)",
                 (int)(scheme > 32 ? 32 : scheme), url);
        *out_err = msg;
        return BACKEND_NONE;
    } else {
        path = url;
    }
    if (!*path) {
        *out_err = "database URL names no SQLite file";
        return BACKEND_NONE;
    }
    *out_path = path;
    return BACKEND_SQLITE;
}

const char *db_url_check(const char *url)
{
    const char *path = NULL, *err = NULL;
    return classify_url(url, &path, &err) == BACKEND_NONE ? err : NULL;
}

/* Start of the next entry of a read-replica list after s[0], or NULL: a "," before a URL. */
static const char *next_url(const char *s)
{
    for (const char *p = strchr(s + 1, ','); p; p = strchr(p + 1, ',')) {
        const char *q = p + 1;
        while (*q == ' ' || *q == '\t')
            q++;
        if (has_prefix_ci(q, "postgres://") || has_prefix_ci(q, "postgresql://"))
            return p;
    }
    return NULL;
}

/*
 * Split a read-replica list into malloc'd entries (out[max]). A comma splits
 * only where a URL begins after it: a URL's own host list ("h1,h2") stays
 * whole. Returns the count, or -1 when there are more than max (or no memory).
 */
static int split_read_urls(const char *list, char **out, int max)
{
    int n = 0;
    const char *s = list;
    while (s && *s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        if (!*s)
            break;
        const char *end = next_url(s);
        size_t len = end ? (size_t)(end - s) : strlen(s);
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (n == max || !(out[n] = strndup(s, len))) {
            while (n)
                free(out[--n]);
            return -1;
        }
        n++;
        s = end;
    }
    return n;
}

const char *db_read_url_check(const char *primary_url, const char *read_url)
{
    static _Thread_local char msg[128];
    char *urls[DB_REPLICAS_MAX];
    const char *path = NULL, *err = NULL;

    if (!read_url || !*read_url)
        return NULL;
    if (classify_url(primary_url, &path, &err) != BACKEND_POSTGRES)
        return "read replicas need a PostgreSQL BRISK_DATABASE_URL";
    int n = split_read_urls(read_url, urls, DB_REPLICAS_MAX);
    if (n < 0)
        return "more than 8 read replicas";
    const char *problem = n == 0 ? "names no replica" : NULL;
    for (int i = 0; i < n; i++) {
        if (!problem && classify_url(urls[i], &path, &err) != BACKEND_POSTGRES) {
            snprintf(msg, sizeof msg, "replica %d: %s", i + 1,
                     err ? err : "is not a PostgreSQL URL");
            problem = msg;
        }
        free(urls[i]);
    }
    return problem;
}

/* The primary's handle, wrapped with its read replicas' when cfg has some. */
static struct db *open_with_replicas(const char *conninfo, const struct db_config *cfg,
                                     struct loop *loop)
{
    struct db *primary = db__pg_open(conninfo, cfg, loop);
    if (!primary || !cfg->read_url || !*cfg->read_url)
        return primary;
    char *urls[DB_REPLICAS_MAX];
    struct db *replicas[DB_REPLICAS_MAX];
    int n = split_read_urls(cfg->read_url, urls, DB_REPLICAS_MAX), opened = 0;
    if (n <= 0) {
        log_error("BRISK_DATABASE_READ_URL: names no replica, or more than %d", DB_REPLICAS_MAX);
        db_close(primary);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (opened == i && (replicas[i] = db__pg_open(urls[i], cfg, loop)))
            opened++;
        free(urls[i]);
    }
    if (opened < n) {
        while (opened)
            db_close(replicas[--opened]);
        db_close(primary);
        return NULL;
    }
    return db__replica_open(primary, replicas, n, cfg->replica_max_lag_ms);
}

int db_migrate(const struct db_config *cfg)
{
    const char *path = NULL, *err = NULL;
    switch (classify_url(cfg->url, &path, &err)) {
    case BACKEND_SQLITE:
        return db__ops_check(&db__sqlite_ops) ? -1 : db__sqlite_migrate(path, cfg);
    case BACKEND_POSTGRES:
        return db__ops_check(&db__pg_ops) ? -1 : db__pg_migrate(path, cfg);
    case BACKEND_NONE:
        break;
    }
    log_error("BRISK_DATABASE_URL: %s", err);
    return -1;
}

struct db *db_open(const struct db_config *cfg, struct loop *loop)
{
    const char *path = NULL, *err = NULL;
    switch (classify_url(cfg->url, &path, &err)) {
    case BACKEND_SQLITE:
        return db__ops_check(&db__sqlite_ops) ? NULL : db__sqlite_open(path, cfg, loop);
    case BACKEND_POSTGRES:
        return db__ops_check(&db__pg_ops) ? NULL : open_with_replicas(path, cfg, loop);
    case BACKEND_NONE:
        break;
    }
    log_error("BRISK_DATABASE_URL: %s", err);
    return NULL;
}

void db_flush(struct db *db)
{
    if (db->ops->flush)
        db->ops->flush(db);
}

void db_close(struct db *db)
{
    if (db)
        db->ops->close(db);
}

const char *db_backend_name(const struct db *db)
{
    return db->ops->name;
}

void db_ping(struct db *db, int timeout_ms, db_done_fn done, void *ctx)
{
    db->ops->ping(db, timeout_ms, done, ctx);
}

void db_user_create(struct db *db, struct str name, struct str email, db_user_fn row,
                    db_done_fn done, void *ctx)
{
    db->ops->user_create(db, name, email, row, done, ctx);
}

void db_user_update(struct db *db, int64_t id, struct str name, struct str email, db_user_fn row,
                    db_done_fn done, void *ctx)
{
    db->ops->user_update(db, id, name, email, row, done, ctx);
}

void db_user_delete(struct db *db, int64_t id, db_done_fn done, void *ctx)
{
    db->ops->user_delete(db, id, done, ctx);
}

void db_stats(const struct db *db, struct db_stats *out)
{
    db->ops->stats(db, out);
}

void db_tick(struct db *db)
{
    if (db->ops->tick)
        db->ops->tick(db);
}

void db_order_create(struct db *db, const struct db_order_new *o, db_order_fn row, db_done_fn done,
                     void *ctx)
{
    db->ops->order_create(db, o, row, done, ctx);
}

void db_orders_process(struct db *db, int max, db_sign_fn sign, db_count_fn done, void *ctx)
{
    db->ops->orders_process(db, max, sign, done, ctx);
}
