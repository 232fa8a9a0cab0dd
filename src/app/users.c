/*
 * users.c - the users endpoints of the contract.
 *
 * Handlers validate, call the storage interface and write the user straight
 * into the response buffer from the row callback (no intermediate copy).
 */
#include <stdio.h>

#include "app/app.h"
#include "app/respond.h"
#include "app/user_json.h"
#include "app/validate.h"
#include "base/timefmt.h"
#include "db/db.h"

/* The user object: src/app/user_json.h (shared with the JSON microbenchmark). */
static void write_user(struct buf *b, const struct db_user *u)
{
    user_write_json(b, u);
}

/* Row callback shared by create/get/update: the user is the whole body. */
static void user_row(void *ctx, const struct db_user *u)
{
    struct http_ctx *c = ctx;
    struct buf *b = http_body(c);
    buf_reset(b);
    write_user(b, u);
    if (http_req(c)->method == HTTP_POST) {
        char loc[32];
        int n = snprintf(loc, sizeof loc, "/users/%lld", (long long)u->id);
        http_add_header(c, "Location", (struct str){loc, (size_t)n});
    }
}

static void user_done(void *ctx, enum db_status st)
{
    struct http_ctx *c = ctx;
    switch (st) {
    case DB_OK:
        http_respond(c, http_req(c)->method == HTTP_POST ? 201 : 200, NULL);
        break;
    case DB_NOT_FOUND:
        http_respond_error(c, 404, "user not found");
        break;
    case DB_CONFLICT:
        http_respond_error(c, 409, "email already exists");
        break;
    default:
        app_respond_db_error(c, st);
        break;
    }
}

/* Read name/email from the body; `required` for create. Returns 0 or answers 400 and returns -1. */
static int read_user_fields(struct http_ctx *c, const struct json_value *body, bool required,
                            struct str *name, struct str *email)
{
    const char *err = NULL;
    bool has_name = false, has_email = false;
    *name = STR_NULL;
    *email = STR_NULL;
    if (body->type != JSON_OBJECT) {
        err = "body must be a json object";
    } else if (json_opt_string(body, "name", &has_name, name, &err) == 0 &&
               json_opt_string(body, "email", &has_email, email, &err) == 0) {
        if (required && !has_name)
            err = "name is required";
        else if (required && !has_email)
            err = "email is required";
        else if (has_name)
            err = validate_name(*name);
        if (!err && has_email)
            err = validate_email(*email);
    }
    if (err) {
        http_respond_error(c, 400, err);
        return -1;
    }
    /* a zero-length slice with a non-NULL pointer means "set"; NULL means "leave" */
    if (!has_name)
        *name = STR_NULL;
    if (!has_email)
        *email = STR_NULL;
    return 0;
}

void handle_user_create(struct http_ctx *c)
{
    const struct json_value *body = app_json_body(c);
    struct str name, email;
    if (!body || read_user_fields(c, body, true, &name, &email) != 0)
        return;
    db_user_create(app_db(c), name, email, user_row, user_done, c);
}

void handle_user_get(struct http_ctx *c)
{
    int64_t id;
    if (app_id_param(c, &id))
        db_user_get(app_db(c), id, user_row, user_done, c);
}

void handle_user_update(struct http_ctx *c)
{
    int64_t id;
    if (!app_id_param(c, &id))
        return;
    const struct json_value *body = app_json_body(c);
    struct str name, email;
    if (!body || read_user_fields(c, body, false, &name, &email) != 0)
        return;
    db_user_update(app_db(c), id, name, email, user_row, user_done, c);
}

static void delete_done(void *ctx, enum db_status st)
{
    struct http_ctx *c = ctx;
    switch (st) {
    case DB_OK:
        http_respond(c, 204, NULL);
        break;
    case DB_NOT_FOUND:
        http_respond_error(c, 404, "user not found");
        break;
    case DB_HAS_CHILDREN:
        http_respond_error(c, 409, "user has orders");
        break;
    default:
        app_respond_db_error(c, st);
        break;
    }
}

void handle_user_delete(struct http_ctx *c)
{
    int64_t id;
    if (app_id_param(c, &id))
        db_user_delete(app_db(c), id, delete_done, c);
}

/* ---- list with cursor pagination ---- */

static void list_row(void *ctx, const struct db_user *u)
{
    struct page *s = ctx;
    if (page_row(s, u->id))
        write_user(http_body(s->c), u);
}

static void list_done(void *ctx, enum db_status st)
{
    struct page *s = ctx;
    struct http_ctx *c = s->c;
    if (st != DB_OK) {
        app_respond_db_error(c, st);
        return;
    }
    page_finish(s);
    http_respond(c, 200, NULL);
}

void handle_user_list(struct http_ctx *c)
{
    struct str q = http_req(c)->query;
    struct page *s = http_alloc(c, sizeof *s);
    char *scratch = http_alloc(c, q.len + 1);
    if (!s || !scratch) {
        http_respond_error(c, 500, "internal error");
        return;
    }
    int64_t after;
    const char *err = validate_list_query(q, scratch, &s->limit, &after);
    if (err) {
        http_respond_error(c, 400, err);
        return;
    }
    s->c = c;
    buf_append_cstr(http_body(c), "{\"users\":[");
    db_user_list(app_db(c), after, s->limit + 1, list_row, list_done, s);
}
