/*
 * orders.c - the orders endpoints of the contract.
 *
 * POST /orders validates and prices on the loop thread, stores the canonical
 * items (pricing_write_items) with the totals, and answers with the stored
 * row. An Idempotency-Key is bound to a SHA-256 of the canonical request
 * (user id + canonical items), so whitespace, member order and unknown
 * members do not make a retry "another request".
 *
 * POST /orders/process is stateless: everything is validated on the loop
 * thread first (the first bad order is named in the 400), then the pricing
 * and HMAC of each order run on the CPU worker pool, each worker writing only
 * its own result slots, and the response is written back on the loop thread.
 */
#include <stdio.h>
#include <string.h>

#include "app/app.h"
#include "app/pricing.h"
#include "app/validate.h"
#include "base/log.h"
#include "base/timefmt.h"
#include "db/db.h"
#include "net/workpool.h"

#define IDEMPOTENCY_KEY_MAX 128
#define BATCH_MAX 100000 /* orders in one POST /orders/process */
#define BATCH_GRAIN 256  /* orders per workpool range */
#define ERRMSG_MAX 160

/* ---- shared ---- */

static void write_time(struct buf *b, int64_t t)
{
    char ts[RFC3339_LEN];
    fmt_rfc3339(ts, t);
    buf_append_char(b, '"');
    buf_append(b, ts, sizeof ts);
    buf_append_char(b, '"');
}

/* The stored order as the contract shows it; items are the stored canonical JSON. */
static void write_order(struct buf *b, const struct db_order *o)
{
    buf_append_cstr(b, "{\"id\":");
    buf_append_i64(b, o->id);
    buf_append_cstr(b, ",\"user_id\":");
    buf_append_i64(b, o->user_id);
    buf_append_cstr(b, o->processed ? ",\"status\":\"processed\"" : ",\"status\":\"pending\"");
    buf_append_cstr(b, ",\"items\":");
    buf_append(b, o->items.ptr, o->items.len);
    buf_append_cstr(b, ",\"subtotal_cents\":");
    buf_append_i64(b, o->subtotal_cents);
    buf_append_cstr(b, ",\"discount_cents\":");
    buf_append_i64(b, o->discount_cents);
    buf_append_cstr(b, ",\"tax_cents\":");
    buf_append_i64(b, o->tax_cents);
    buf_append_cstr(b, ",\"total_cents\":");
    buf_append_i64(b, o->total_cents);
    buf_append_cstr(b, ",\"receipt\":");
    if (o->receipt.ptr)
        json_write_str(b, o->receipt.ptr, o->receipt.len);
    else
        buf_append_cstr(b, "null");
    buf_append_cstr(b, ",\"created_at\":");
    write_time(b, o->created_at);
    buf_append_cstr(b, ",\"processed_at\":");
    if (o->processed_at)
        write_time(b, o->processed_at);
    else
        buf_append_cstr(b, "null");
    buf_append_char(b, '}');
}

/* Answer a storage failure that has no endpoint-specific meaning. */
static void respond_db_error(struct http_ctx *c, enum db_status st)
{
    if (st == DB_UNAVAILABLE)
        http_respond_error(c, 503, "database unavailable");
    else
        http_respond_error(c, 500, "internal error");
}

/*
 * Read member `key` of obj as a positive int64. Returns NULL, or the message
 * ("<name> is required" for absent/null, "<name> must be a positive integer"
 * otherwise, 1.0 and 1e3 included) written into err.
 */
static const char *positive_int(const struct json_value *obj, const char *key, const char *name,
                                int64_t *out, char *err, size_t errcap)
{
    const struct json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) {
        snprintf(err, errcap, "%s is required", name);
        return err;
    }
    bool integer = v->type == JSON_NUMBER && v->u.num.is_int && v->u.num.i > 0;
    for (size_t i = 0; integer && i < v->u.num.raw.len; i++) {
        char ch = v->u.num.raw.ptr[i];
        integer = ch != '.' && ch != 'e' && ch != 'E'; /* 1.0 and 1e3 are not integers */
    }
    if (!integer) {
        snprintf(err, errcap, "%s must be a positive integer", name);
        return err;
    }
    *out = v->u.num.i;
    return NULL;
}

static bool id_param(struct http_ctx *c, int64_t *id)
{
    if (parse_id(http_param(c, 0), id))
        return true;
    http_respond_error(c, 400, "invalid id");
    return false;
}

/* ---- POST /orders ---- */

/*
 * The Idempotency-Key header: *key = STR_NULL when absent. Returns false
 * (after answering 400) when it is empty, longer than 128 bytes, holds a
 * byte outside printable ASCII (0x20..0x7E; the parser already trimmed
 * surrounding whitespace) or is sent twice.
 */
static bool idempotency_key(struct http_ctx *c, struct str *key)
{
    const struct http_request *r = http_req(c);
    int seen = 0;

    *key = STR_NULL;
    for (size_t i = 0; i < r->num_headers; i++) {
        if (!str_ieq_lit(r->headers[i].name, "idempotency-key"))
            continue;
        *key = r->headers[i].value;
        seen++;
    }
    if (!seen)
        return true;
    bool ok = seen == 1 && key->len >= 1 && key->len <= IDEMPOTENCY_KEY_MAX;
    for (size_t i = 0; ok && i < key->len; i++) {
        unsigned char ch = (unsigned char)key->ptr[i];
        ok = ch >= 0x20 && ch <= 0x7e;
    }
    if (!ok)
        http_respond_error(c, 400, "invalid idempotency-key");
    return ok;
}

/* Row callback of create/get: the order is the whole body. */
static void order_row(void *ctx, const struct db_order *o)
{
    struct http_ctx *c = ctx;
    struct buf *b = http_body(c);
    buf_reset(b);
    write_order(b, o);
    if (http_req(c)->method == HTTP_POST) {
        char loc[40];
        int n = snprintf(loc, sizeof loc, "/orders/%lld", (long long)o->id);
        http_add_header(c, "Location", (struct str){loc, (size_t)n});
    }
}

static void create_done(void *ctx, enum db_status st)
{
    struct http_ctx *c = ctx;
    switch (st) {
    case DB_OK:
        http_respond(c, 201, NULL);
        break;
    case DB_REPLAYED:
        http_respond(c, 200, NULL); /* the first order, as stored */
        break;
    case DB_NOT_FOUND:
        http_respond_error(c, 422, "user not found");
        break;
    case DB_KEY_REUSED:
        http_respond_error(c, 409, "idempotency key reused with a different request");
        break;
    default:
        respond_db_error(c, st);
        break;
    }
}

/*
 * Copy the canonical items into request memory. The response buffer (empty
 * at this point, and reused across requests) serves as the scratch space.
 */
static struct str canonical_items(struct http_ctx *c, const struct order_line *lines, size_t n)
{
    struct buf *b = http_body(c);
    struct str out = STR_NULL;

    buf_reset(b);
    pricing_write_items(b, lines, n);
    if (!b->failed) {
        char *p = http_alloc(c, b->len);
        if (p) {
            memcpy(p, b->data, b->len);
            out = (struct str){p, b->len};
        }
    }
    buf_reset(b);
    return out;
}

void handle_order_create(struct http_ctx *c)
{
    struct order_line lines[PRICING_MAX_LINES];
    struct order_totals t;
    char err[ERRMSG_MAX];
    struct str key;
    size_t n = 0;
    int64_t user_id = 0;

    if (!idempotency_key(c, &key))
        return;
    const struct json_value *body = http_json_body(c);
    if (!body)
        return;
    if (body->type != JSON_OBJECT) {
        http_respond_error(c, 400, "body must be a json object");
        return;
    }
    const char *e = positive_int(body, "user_id", "user_id", &user_id, err, sizeof err);
    if (!e)
        e = pricing_parse_lines(json_get(body, "items"), "items", lines, &n, err, sizeof err);
    if (!e)
        e = pricing_compute(lines, n, &t);
    if (e) {
        http_respond_error(c, 400, e);
        return;
    }

    struct db_order_new *o = http_alloc(c, sizeof *o);
    char *hash = http_alloc(c, PRICING_HEX_LEN + 1);
    if (!o || !hash) {
        http_respond_error(c, 500, "internal error");
        return;
    }
    o->user_id = user_id;
    o->items = canonical_items(c, lines, n);
    o->subtotal_cents = t.subtotal_cents;
    o->discount_cents = t.discount_cents;
    o->tax_cents = t.tax_cents;
    o->total_cents = t.total_cents;
    if (!o->items.ptr) {
        http_respond_error(c, 500, "internal error");
        return;
    }
    if (key.ptr) {
        if (pricing_request_hash(user_id, o->items, hash) != 0) {
            log_error("orders: sha-256 of the request failed");
            http_respond_error(c, 500, "internal error");
            return;
        }
        o->idempotency_key = key;
        o->request_hash = (struct str){hash, PRICING_HEX_LEN};
    }
    db_order_create(http_db(c), o, order_row, create_done, c);
}

/* ---- GET /orders/{id} ---- */

static void get_done(void *ctx, enum db_status st)
{
    struct http_ctx *c = ctx;
    if (st == DB_OK)
        http_respond(c, 200, NULL);
    else if (st == DB_NOT_FOUND)
        http_respond_error(c, 404, "order not found");
    else
        respond_db_error(c, st);
}

void handle_order_get(struct http_ctx *c)
{
    int64_t id;
    if (id_param(c, &id))
        db_order_get(http_db(c), id, order_row, get_done, c);
}

/* ---- GET /users/{id}/orders ---- */

static void list_row(void *ctx, const struct db_order *o)
{
    struct page *s = ctx;
    if (page_row(s, o->id))
        write_order(http_body(s->c), o);
}

static void list_done(void *ctx, enum db_status st)
{
    struct page *s = ctx;
    struct http_ctx *c = s->c;
    if (st == DB_NOT_FOUND) {
        http_respond_error(c, 404, "user not found");
        return;
    }
    if (st != DB_OK) {
        respond_db_error(c, st);
        return;
    }
    page_finish(s);
    http_respond(c, 200, NULL);
}

void handle_user_orders(struct http_ctx *c)
{
    int64_t user_id, after;
    if (!id_param(c, &user_id))
        return;
    struct str q = http_req(c)->query;
    struct page *s = http_alloc(c, sizeof *s);
    char *scratch = http_alloc(c, q.len + 1);
    if (!s || !scratch) {
        http_respond_error(c, 500, "internal error");
        return;
    }
    const char *err = validate_list_query(q, scratch, &s->limit, &after);
    if (err) {
        http_respond_error(c, 400, err);
        return;
    }
    s->c = c;
    buf_append_cstr(http_body(c), "{\"orders\":[");
    db_order_list(http_db(c), user_id, after, s->limit + 1, list_row, list_done, s);
}

/* ---- POST /orders/process ---- */

/*
 * Nothing of a batch runs on the event loop but the hand-offs: a 100000-order
 * body is ~10 MB of JSON, and parsing, validating and writing it would hold
 * the loop (and every connection on it) for hundreds of milliseconds. So:
 *   1. one pool task parses and validates the body (request arena);
 *   2. the pool prices and signs all orders in parallel ranges;
 *   3. one pool task writes the response body;
 * each step's completion hops back to the loop, which starts the next one
 * and finally responds. The loop never touches the request while it waits.
 */

struct batch_order {
    struct str id;
    int64_t user_id;
    const struct order_line *lines; /* request memory; read-only on the workers */
    size_t nlines;
    /* written by the worker that owns this slot */
    struct order_totals t;
    const char *error; /* pricing error (a static string), or NULL */
    bool sign_failed;
    char receipt[PRICING_HEX_LEN + 1];
};

struct batch {
    struct http_ctx *c;
    size_t n;
    struct batch_order *orders;
    /* outcome of a step run on the pool; answered on the loop */
    int status; /* 0: go on */
    char err[ERRMSG_MAX];
};

static void batch_priced(void *arg);
static void batch_written(void *arg);

/*
 * Validate orders[i] into *o (lines copied into request memory). Returns 0,
 * 400 with the message in err, or 413 when request memory ran out. The
 * "orders[i]." names are only formatted for a message: the common path of a
 * 100000-order batch runs no snprintf.
 */
static int batch_read(struct http_ctx *c, const struct json_value *v, size_t i,
                      struct batch_order *o, char *err, size_t errcap)
{
    struct order_line lines[PRICING_MAX_LINES];
    char name[48];

    if (v->type != JSON_OBJECT) {
        snprintf(err, errcap, "orders[%zu] must be an object", i);
        return 400;
    }
    const struct json_value *id = json_get(v, "id");
    if (!id || id->type == JSON_NULL) {
        snprintf(err, errcap, "orders[%zu].id is required", i);
        return 400;
    }
    if (id->type != JSON_STRING) {
        snprintf(err, errcap, "orders[%zu].id must be a string", i);
        return 400;
    }
    if (!pricing_visible_ascii(id->u.str, PRICING_SKU_MAX)) {
        snprintf(err, errcap,
                 "orders[%zu].id must be 1 to 64 printable ascii characters (no spaces)", i);
        return 400;
    }
    o->id = id->u.str;
    if (positive_int(v, "user_id", "user_id", &o->user_id, err, errcap)) {
        snprintf(name, sizeof name, "orders[%zu].user_id", i);
        positive_int(v, "user_id", name, &o->user_id, err, errcap);
        return 400;
    }
    const struct json_value *items = json_get(v, "items");
    if (pricing_parse_lines(items, "items", lines, &o->nlines, err, errcap)) {
        snprintf(name, sizeof name, "orders[%zu].items", i);
        pricing_parse_lines(items, name, lines, &o->nlines, err, errcap);
        return 400;
    }
    struct order_line *copy = http_alloc(c, o->nlines * sizeof *copy);
    if (!copy)
        return 413;
    memcpy(copy, lines, o->nlines * sizeof *copy);
    o->lines = copy;
    return 0;
}

/* Pool step 1: parse the body and validate every order into b->orders. */
static void batch_parse(void *arg, size_t begin, size_t end)
{
    (void)begin;
    (void)end;
    struct batch *b = arg;
    struct http_ctx *c = b->c;
    struct str raw = http_body_raw(c);
    const struct json_value *body;
    struct json_error jerr;
    if (json_parse(raw.ptr, raw.len, http_arena(c), &body, &jerr) != 0) {
        b->status = jerr.too_large ? 413 : 400;
        snprintf(b->err, sizeof b->err, "%s",
                 jerr.too_large ? "request body too large to parse" : jerr.msg);
        return;
    }
    const struct json_value *orders = body->type == JSON_OBJECT ? json_get(body, "orders") : NULL;
    const char *msg = NULL;
    if (body->type != JSON_OBJECT)
        msg = "body must be a json object";
    else if (!orders || orders->type == JSON_NULL)
        msg = "orders is required";
    else if (orders->type != JSON_ARRAY)
        msg = "orders must be an array";
    else if (orders->u.arr.n < 1 || orders->u.arr.n > BATCH_MAX)
        msg = "orders must have 1 to 100000 entries";
    if (msg || !orders) {
        b->status = 400;
        snprintf(b->err, sizeof b->err, "%s", msg ? msg : "orders is required");
        return;
    }
    b->n = orders->u.arr.n;
    b->orders = http_alloc(c, b->n * sizeof *b->orders);
    if (!b->orders) {
        b->status = 413;
        snprintf(b->err, sizeof b->err, "request too large");
        return;
    }
    for (size_t i = 0; i < b->n; i++) {
        int st = batch_read(c, &orders->u.arr.items[i], i, &b->orders[i], b->err, sizeof b->err);
        if (st) {
            b->status = st;
            if (st != 400)
                snprintf(b->err, sizeof b->err, "request too large");
            return;
        }
    }
}

/* Pool step 2: price and sign orders [begin, end); each range owns its slots. */
static void batch_run(void *arg, size_t begin, size_t end)
{
    struct batch *b = arg;
    for (size_t i = begin; i < end; i++) {
        struct batch_order *o = &b->orders[i];
        o->error = pricing_compute(o->lines, o->nlines, &o->t);
        if (!o->error)
            o->sign_failed = pricing_sign(o->id, o->user_id, o->lines, o->nlines, o->t.total_cents,
                                          o->receipt) != 0;
    }
}

/* Pool step 3: write the response body. */
static void batch_write(void *arg, size_t begin, size_t end)
{
    (void)begin;
    (void)end;
    struct batch *b = arg;
    struct buf *out = http_body(b->c);
    buf_reset(out);
    /*
     * One allocation up front: a result is at most 229 bytes of names, digits
     * and receipt plus its id escaped (2 * len + 2). Only a hint: on failure
     * the appends below grow the buffer (or set out->failed) themselves.
     */
    size_t need = 16;
    for (size_t i = 0; i < b->n; i++)
        need += 2 * b->orders[i].id.len + 240;
    if (buf_reserve(out, need) != 0)
        log_warn("orders/process: cannot reserve %zu response bytes up front", need);
    buf_append_cstr(out, "{\"results\":[");
    for (size_t i = 0; i < b->n; i++) {
        const struct batch_order *o = &b->orders[i];
        if (i)
            buf_append_char(out, ',');
        buf_append_cstr(out, "{\"id\":");
        json_write_str(out, o->id.ptr, o->id.len);
        buf_append_cstr(out, ",\"subtotal_cents\":");
        buf_append_i64(out, o->t.subtotal_cents);
        buf_append_cstr(out, ",\"discount_cents\":");
        buf_append_i64(out, o->t.discount_cents);
        buf_append_cstr(out, ",\"tax_cents\":");
        buf_append_i64(out, o->t.tax_cents);
        buf_append_cstr(out, ",\"total_cents\":");
        buf_append_i64(out, o->t.total_cents);
        buf_append_cstr(out, ",\"receipt\":\"");
        buf_append(out, o->receipt, PRICING_HEX_LEN);
        buf_append_cstr(out, "\"}");
    }
    buf_append_cstr(out, "]}");
}

/* Schedule the next pool step, or answer 503 when the pool cannot take it. */
static void batch_next(struct batch *b, size_t n, size_t grain,
                       void (*fn)(void *arg, size_t begin, size_t end), void (*done)(void *arg))
{
    if (workpool_run(http_loop(b->c), n, grain, fn, done, b) != 0)
        http_respond_error(b->c, 503, "server busy");
}

/* Loop: after step 1. */
static void batch_parsed(void *arg)
{
    struct batch *b = arg;
    if (b->status) {
        http_respond_error(b->c, b->status, b->err);
        return;
    }
    batch_next(b, b->n, BATCH_GRAIN, batch_run, batch_priced);
}

/* Loop: after step 2. */
static void batch_priced(void *arg)
{
    struct batch *b = arg;
    for (size_t i = 0; i < b->n; i++) {
        if (b->orders[i].error) {
            snprintf(b->err, sizeof b->err, "orders[%zu]: %s", i, b->orders[i].error);
            http_respond_error(b->c, 400, b->err);
            return;
        }
        if (b->orders[i].sign_failed) {
            log_error("orders/process: signing failed (openssl)");
            http_respond_error(b->c, 500, "internal error");
            return;
        }
    }
    batch_next(b, 1, 1, batch_write, batch_written);
}

/* Loop: after step 3. */
static void batch_written(void *arg)
{
    struct batch *b = arg;
    if (http_body(b->c)->failed) {
        http_respond_error(b->c, 500, "internal error");
        return;
    }
    http_respond(b->c, 200, NULL);
}

void handle_orders_process(struct http_ctx *c)
{
    if (!http_require_json(c))
        return;
    struct batch *b = http_alloc(c, sizeof *b);
    if (!b) {
        http_respond_error(c, 413, "request too large");
        return;
    }
    b->c = c;
    batch_next(b, 1, 1, batch_parse, batch_parsed);
}
