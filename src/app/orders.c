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
#include "app/respond.h"
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
    bool ok = seen == 1 && pricing_printable_ascii(*key, IDEMPOTENCY_KEY_MAX);
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
        app_respond_db_error(c, st);
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
    const struct json_value *body = app_json_body(c);
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
    db_order_create(app_db(c), o, order_row, create_done, c);
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
        app_respond_db_error(c, st);
}

void handle_order_get(struct http_ctx *c)
{
    int64_t id;
    if (app_id_param(c, &id))
        db_order_get(app_db(c), id, order_row, get_done, c);
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
        app_respond_db_error(c, st);
        return;
    }
    page_finish(s);
    http_respond(c, 200, NULL);
}

void handle_user_orders(struct http_ctx *c)
{
    int64_t user_id, after;
    if (!app_id_param(c, &user_id))
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
    db_order_list(app_db(c), user_id, after, s->limit + 1, list_row, list_done, s);
}

/* ---- GET /users/{id}/orders/count ---- */

static void count_done(void *ctx, enum db_status st, int64_t n)
{
    struct http_ctx *c = ctx;
    if (st == DB_OK) {
        buf_printf(http_body(c), "{\"count\":%lld}", (long long)n);
        http_respond(c, 200, NULL);
    } else if (st == DB_NOT_FOUND) {
        http_respond_error(c, 404, "user not found");
    } else {
        app_respond_db_error(c, st);
    }
}

void handle_user_order_count(struct http_ctx *c)
{
    int64_t id;
    if (app_id_param(c, &id))
        db_user_order_count(app_db(c), id, count_done, c);
}

/* ---- POST /orders/process ---- */

/*
 * Nothing of a batch runs on the event loop but the hand-offs: a 100000-order
 * body is ~20 MB of JSON, and parsing, validating and writing it would hold
 * the loop (and every connection on it) for hundreds of milliseconds. So:
 *   1. one pool task reads and validates the body;
 *   2. the pool prices and signs all orders in parallel ranges;
 *   3. one pool task writes the response body;
 * each step's completion hops back to the loop, which starts the next one and
 * finally responds. Steps 2 and 3 are queued with workpool_run_next, ahead of
 * batches whose step 1 has not started: a batch in progress finishes before
 * the next one is read, so few batches hold memory at once. The loop never
 * touches the request while it waits.
 *
 * Memory: a JSON tree costs about ten times its text (a 1000-order body of
 * 220 kB parses into ~2 MB), and with a few batches in flight those trees
 * were most of the process's peak RSS. So step 1 streams the orders array:
 * each order is parsed alone into a small scratch arena (reused for the next
 * order), validated, and kept as a struct batch_order plus its lines (about
 * 250 bytes an order) in the batch's own arena, which is freed as soon as the
 * response body is written. Only a valid batch takes that path: any problem
 * (a syntax error anywhere, a bad order, a count out of range, an unusual top
 * level such as escapes in a member name) sends the body through the
 * whole-document reader and the checks in their old order, so every error
 * answer is exactly what it always was.
 */

struct batch_order {
    struct str id;
    int64_t user_id;
    const struct order_line *lines; /* batch or request memory; read-only on the workers */
    size_t nlines;
    /* written by the worker that owns this slot */
    struct order_totals t;
    const char *error; /* pricing error (a static string), or NULL */
    bool sign_failed;
    char receipt[PRICING_HEX_LEN + 1];
};

/* Orders live in chunks of BATCH_GRAIN (one pool range each): the streaming
 * reader does not know the count in advance and never copies a chunk. */
#define BATCH_CHUNKS ((BATCH_MAX + BATCH_GRAIN - 1) / BATCH_GRAIN)
#define SCRATCH_KEEP 65536 /* scratch arena kept between orders */

struct batch {
    struct http_ctx *c;
    size_t n;
    struct batch_order *chunk[BATCH_CHUNKS];
    struct arena mem; /* the streamed orders; empty on the whole-document path */
    /* outcome of a step run on the pool; answered on the loop */
    int status; /* 0: go on */
    char err[ERRMSG_MAX];
};

static inline struct batch_order *batch_at(const struct batch *b, size_t i)
{
    return &b->chunk[i / BATCH_GRAIN][i % BATCH_GRAIN];
}

static void batch_priced(void *arg);
static void batch_written(void *arg);

/* Answer an error; the batch's own memory goes first. */
static void batch_fail(struct batch *b, int status, const char *msg)
{
    arena_free(&b->mem);
    http_respond_error(b->c, status, msg);
}

/*
 * The slot of order i, allocating its chunk from a on the chunk's first
 * order: BATCH_GRAIN slots, or fewer when the count (total, 0 when not known
 * yet) ends sooner.
 */
static struct batch_order *batch_slot(struct batch *b, struct arena *a, size_t i, size_t total)
{
    struct batch_order **ch = &b->chunk[i / BATCH_GRAIN];
    if (i % BATCH_GRAIN == 0) {
        size_t n = total && total - i < BATCH_GRAIN ? total - i : BATCH_GRAIN;
        *ch = arena_alloc(a, n * sizeof **ch);
        if (!*ch)
            return NULL;
    }
    return &(*ch)[i % BATCH_GRAIN];
}

/*
 * Make *s outlive the scratch memory of the streaming reader: a string that
 * does not point into the body (it had escapes, so it was decoded into the
 * scratch arena) is copied into a. Returns false when a is full.
 */
static bool keep_str(struct str *s, struct str body, struct arena *a)
{
    uintptr_t p = (uintptr_t)s->ptr, lo = (uintptr_t)body.ptr;
    if (p >= lo && p - lo <= body.len && s->len <= body.len - (p - lo))
        return true;
    char *q = arena_alloc(a, s->len);
    if (!q)
        return false;
    memcpy(q, s->ptr, s->len);
    s->ptr = q;
    return true;
}

/*
 * Validate orders[i] into *o, its lines copied into a. With body set (the
 * streaming reader), strings outside the body are copied into a too. Returns
 * 0, 400 with the message in err, or 413 when a ran out. The "orders[i]."
 * names are only formatted for a message: the common path runs no snprintf.
 */
static int batch_read(struct arena *a, const struct str *body, const struct json_value *v, size_t i,
                      struct batch_order *o, char *err, size_t errcap)
{
    struct order_line lines[PRICING_MAX_LINES];
    char name[48];

    memset(o, 0, sizeof *o);
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
    if (!pricing_printable_ascii(id->u.str, PRICING_SKU_MAX)) {
        snprintf(err, errcap, "orders[%zu].id must be 1 to 64 printable ascii characters", i);
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
    if (body) {
        if (!keep_str(&o->id, *body, a))
            return 413;
        for (size_t k = 0; k < o->nlines; k++)
            if (!keep_str(&lines[k].sku, *body, a))
                return 413;
    }
    struct order_line *copy = arena_alloc(a, o->nlines * sizeof *copy);
    if (!copy)
        return 413;
    memcpy(copy, lines, o->nlines * sizeof *copy);
    o->lines = copy;
    return 0;
}

/* ---- step 1, the streaming reader ---- */

/* Bytes the lexical scan stops at: strings and brackets. */
static const unsigned char scan_stop[256] = {
    ['"'] = 1, ['\\'] = 1, ['{'] = 1, ['}'] = 1, ['['] = 1, [']'] = 1};
/* Bytes that end a number or a literal. */
static const unsigned char scalar_end[256] = {
    [','] = 1, ['}'] = 1, [']'] = 1, [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

static size_t skip_ws(const char *s, size_t len, size_t pos)
{
    while (pos < len && (s[pos] == ' ' || s[pos] == '\n' || s[pos] == '\r' || s[pos] == '\t'))
        pos++;
    return pos;
}

/*
 * Where the value starting at s[pos] (not whitespace, pos < len) ends, found
 * lexically: strings skipped (escapes included), brackets counted. *deepest
 * is the nesting of containers inside it, itself included. Returns 0 when no
 * end was found. Nothing is validated: json_parse of the slice does that, and
 * when it accepts the slice, the slice is exactly one value (a valid value
 * opening with a bracket ends at the bracket that balances it).
 */
static size_t value_end(const char *text, size_t len, size_t pos, size_t *deepest)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = pos, depth = 0;
    bool in_str = false;

    *deepest = 0;
    if (s[pos] != '{' && s[pos] != '[' && s[pos] != '"') {
        while (i < len && !scalar_end[s[i]])
            i++;
        return i;
    }
    for (;;) {
        while (i < len && !scan_stop[s[i]])
            i++;
        if (i >= len)
            return 0;
        unsigned char ch = s[i++];
        if (in_str) {
            if (ch == '\\') {
                i++; /* the escaped byte */
            } else if (ch == '"') {
                in_str = false;
                if (depth == 0)
                    return i;
            }
            continue;
        }
        switch (ch) {
        case '"':
            in_str = true;
            break;
        case '{':
        case '[':
            if (++depth > *deepest)
                *deepest = depth;
            break;
        case '}':
        case ']':
            if (depth == 0)
                return 0;
            if (--depth == 0)
                return i;
            break;
        default: /* a backslash outside a string */
            return 0;
        }
    }
}

/* Nonzero when some byte of w is '{', '}', '[' or ']' (setting bit 5 makes '[' '{' and ']' '}'). */
static inline uint64_t has_bracket(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t x = w | ones * 0x20, a = x ^ ones * '{', c = x ^ ones * '}';
    return (((a - ones) & ~a) | ((c - ones) & ~c)) & highs;
}

/*
 * The quick guess of value_end for a container at s[pos]: brackets counted,
 * strings not even looked at. Right unless a string inside holds a bracket;
 * a wrong end never makes a valid slice (a valid object or array ends only at
 * its balancing bracket), so when json_parse rejects the slice the caller
 * asks value_end. Returns 0 when no end was found.
 */
static size_t bracket_end(const char *text, size_t len, size_t pos, size_t *deepest)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = pos, depth = 0;
    *deepest = 0;
    for (;;) {
        uint64_t w;
        while (i + 8 <= len && (memcpy(&w, s + i, 8), !has_bracket(w)))
            i += 8;
        while (i < len && (s[i] | 0x20) != '{' && (s[i] | 0x20) != '}')
            i++;
        if (i >= len)
            return 0;
        if ((s[i++] | 0x20) == '{') {
            if (++depth > *deepest)
                *deepest = depth;
        } else if (depth == 0 || --depth == 0) {
            return depth == 0 ? i : 0;
        }
    }
}

/* Parse the slice s[pos..end) (one value) into scratch memory. */
static const struct json_value *parse_slice(const char *s, size_t pos, size_t end,
                                            struct arena *scratch)
{
    const struct json_value *v;
    struct json_error jerr;
    return json_parse(s + pos, end - pos, scratch, &v, &jerr) == 0 ? v : NULL;
}

/*
 * The orders array starting at s[*pos] ('['): every order parsed alone,
 * validated and kept in b->mem. Returns true with b->n set and *pos past
 * the ']', or false for anything but 1..BATCH_MAX valid orders.
 */
static bool stream_orders(struct batch *b, struct str body, size_t *pos, struct arena *scratch)
{
    const char *s = body.ptr;
    size_t len = body.len, p = skip_ws(s, len, *pos + 1), n = 0;

    for (;;) {
        size_t deepest, end;
        if (p >= len || s[p] != '{' || n == BATCH_MAX)
            return false;
        end = bracket_end(s, len, p, &deepest);
        const struct json_value *v = end ? parse_slice(s, p, end, scratch) : NULL;
        if (!v || deepest > JSON_MAX_DEPTH - 2) {
            /* a bracket in a string: scan again, strings skipped */
            arena_reset(scratch, SCRATCH_KEEP);
            end = value_end(s, len, p, &deepest);
            v = end ? parse_slice(s, p, end, scratch) : NULL;
        }
        if (!v || deepest > JSON_MAX_DEPTH - 2) /* inside the top object and the array */
            return false;
        struct batch_order *o = batch_slot(b, &b->mem, n, 0);
        if (!o || batch_read(&b->mem, &body, v, n, o, b->err, sizeof b->err) != 0)
            return false;
        n++;
        arena_reset(scratch, SCRATCH_KEEP);
        p = skip_ws(s, len, end);
        if (p < len && s[p] == ',') {
            p = skip_ws(s, len, p + 1);
            continue;
        }
        if (p < len && s[p] == ']')
            break;
        return false;
    }
    b->n = n;
    *pos = p + 1;
    return true;
}

#define TOP_KEYS_MAX 16 /* members of the top-level object the streaming reader handles */

/*
 * The streaming reader: true when the body is a valid batch, read into b.
 * False for anything else (nothing of b->mem is then in use).
 */
static bool batch_stream(struct batch *b, struct str body)
{
    const char *s = body.ptr;
    size_t len = body.len;
    struct str keys[TOP_KEYS_MAX];
    size_t nkeys = 0, p = skip_ws(s, len, 0);
    bool have_orders = false, ok = false;
    struct arena scratch;

    arena_init(&scratch, http_arena(b->c)->cap);
    arena_init(&b->mem, http_arena(b->c)->cap);
    if (p >= len || s[p] != '{')
        goto out;
    p = skip_ws(s, len, p + 1);
    for (;;) {
        /* a member name of printable ASCII without escapes, not seen before */
        size_t deepest, end;
        if (p >= len || s[p] != '"' || nkeys == TOP_KEYS_MAX)
            goto out;
        end = value_end(s, len, p, &deepest);
        if (!end)
            goto out;
        struct str key = {s + p + 1, end - p - 2};
        for (size_t i = 0; i < key.len; i++)
            if (key.ptr[i] < 0x20 || key.ptr[i] > 0x7e || key.ptr[i] == '\\')
                goto out;
        for (size_t i = 0; i < nkeys; i++)
            if (str_eq(keys[i], key))
                goto out;
        keys[nkeys++] = key;
        p = skip_ws(s, len, end);
        if (p >= len || s[p] != ':')
            goto out;
        p = skip_ws(s, len, p + 1);
        if (p >= len)
            goto out;
        if (str_eq(key, STR_LIT("orders"))) {
            if (s[p] != '[' || !stream_orders(b, body, &p, &scratch))
                goto out;
            have_orders = true;
        } else {
            /* another member: valid JSON, ignored */
            end = value_end(s, len, p, &deepest);
            if (!end || deepest > JSON_MAX_DEPTH - 1 || !parse_slice(s, p, end, &scratch))
                goto out;
            arena_reset(&scratch, SCRATCH_KEEP);
            p = end;
        }
        p = skip_ws(s, len, p);
        if (p < len && s[p] == ',') {
            p = skip_ws(s, len, p + 1);
            continue;
        }
        if (p < len && s[p] == '}')
            break;
        goto out;
    }
    ok = have_orders && skip_ws(s, len, p + 1) == len;
out:
    arena_free(&scratch);
    if (!ok) {
        arena_free(&b->mem);
        b->n = 0;
    }
    return ok;
}

/* ---- step 1, the whole-document reader (every error answer comes from here) ---- */

static void batch_parse_dom(struct batch *b)
{
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
    for (size_t i = 0; i < b->n; i++) {
        struct batch_order *o = batch_slot(b, http_arena(c), i, b->n);
        int st = o ? batch_read(http_arena(c), NULL, &orders->u.arr.items[i], i, o, b->err,
                                sizeof b->err)
                   : 413;
        if (st) {
            b->status = st;
            if (st != 400)
                snprintf(b->err, sizeof b->err, "request too large");
            return;
        }
    }
}

/* Pool step 1: read and validate every order of the body into b. */
static void batch_parse(void *arg, size_t begin, size_t end)
{
    (void)begin;
    (void)end;
    struct batch *b = arg;
    if (!batch_stream(b, http_body_raw(b->c)))
        batch_parse_dom(b);
}

/* Pool step 2: price and sign orders [begin, end); each range owns its slots. */
static void batch_run(void *arg, size_t begin, size_t end)
{
    struct batch *b = arg;
    for (size_t i = begin; i < end; i++) {
        struct batch_order *o = batch_at(b, i);
        o->error = pricing_compute(o->lines, o->nlines, &o->t);
        if (!o->error)
            o->sign_failed = pricing_sign(o->id, o->user_id, o->lines, o->nlines, o->t.total_cents,
                                          o->receipt) != 0;
    }
}

/* The pieces of one result: what step 3 writes, and what it counts first. */
#define R_ID "{\"id\":"
#define R_SUB ",\"subtotal_cents\":"
#define R_DISC ",\"discount_cents\":"
#define R_TAX ",\"tax_cents\":"
#define R_TOTAL ",\"total_cents\":"
#define R_RECEIPT ",\"receipt\":\""
#define R_END "\"}"
#define R_OPEN "{\"results\":["
#define R_CLOSE "]}"
#define LIT_LEN(lit) (sizeof(lit) - 1)

/* Length of v in decimal. */
static size_t dec_len(int64_t v)
{
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    size_t n = v < 0 ? 2 : 1;
    while (u >= 10) {
        u /= 10;
        n++;
    }
    return n;
}

/* Length of s as json_write_str writes it, quotes included. */
static size_t json_str_len(struct str s)
{
    size_t n = 2;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        if (ch == '"' || ch == '\\' || ch == '\b' || ch == '\f' || ch == '\n' || ch == '\r' ||
            ch == '\t')
            n += 2;
        else
            n += ch < 0x20 ? 6 : 1;
    }
    return n;
}

/* Pool step 3: write the response body, in one allocation of the exact size. */
static void batch_write(void *arg, size_t begin, size_t end)
{
    (void)begin;
    (void)end;
    struct batch *b = arg;
    struct buf *out = http_body(b->c);
    size_t need = LIT_LEN(R_OPEN) + LIT_LEN(R_CLOSE) + (b->n - 1);
    for (size_t i = 0; i < b->n; i++) {
        const struct batch_order *o = batch_at(b, i);
        need += LIT_LEN(R_ID R_SUB R_DISC R_TAX R_TOTAL R_RECEIPT R_END) + PRICING_HEX_LEN +
                json_str_len(o->id) + dec_len(o->t.subtotal_cents) + dec_len(o->t.discount_cents) +
                dec_len(o->t.tax_cents) + dec_len(o->t.total_cents);
    }
    buf_reset(out);
    /* only a hint: on failure the appends below grow the buffer (or set out->failed) */
    if (buf_reserve(out, need) != 0)
        log_warn("orders/process: cannot reserve %zu response bytes up front", need);
    BUF_LIT(out, R_OPEN);
    for (size_t i = 0; i < b->n; i++) {
        const struct batch_order *o = batch_at(b, i);
        if (i)
            buf_append_char(out, ',');
        BUF_LIT(out, R_ID);
        json_write_str(out, o->id.ptr, o->id.len);
        BUF_LIT(out, R_SUB);
        buf_append_i64(out, o->t.subtotal_cents);
        BUF_LIT(out, R_DISC);
        buf_append_i64(out, o->t.discount_cents);
        BUF_LIT(out, R_TAX);
        buf_append_i64(out, o->t.tax_cents);
        BUF_LIT(out, R_TOTAL);
        buf_append_i64(out, o->t.total_cents);
        BUF_LIT(out, R_RECEIPT);
        buf_append(out, o->receipt, PRICING_HEX_LEN);
        BUF_LIT(out, R_END);
    }
    BUF_LIT(out, R_CLOSE);
    /* the orders are written: their memory goes back before the response is queued */
    arena_free(&b->mem);
}

/* Schedule the next pool step (ahead of batches not started yet), or answer 503. */
static void batch_next(struct batch *b, size_t n, size_t grain,
                       void (*fn)(void *arg, size_t begin, size_t end), void (*done)(void *arg))
{
    if (workpool_run_next(http_loop(b->c), n, grain, fn, done, b) != 0)
        batch_fail(b, 503, "server busy");
}

/* Loop: after step 1. */
static void batch_parsed(void *arg)
{
    struct batch *b = arg;
    if (b->status) {
        batch_fail(b, b->status, b->err);
        return;
    }
    batch_next(b, b->n, BATCH_GRAIN, batch_run, batch_priced);
}

/* Loop: after step 2. */
static void batch_priced(void *arg)
{
    struct batch *b = arg;
    for (size_t i = 0; i < b->n; i++) {
        const struct batch_order *o = batch_at(b, i);
        if (o->error) {
            snprintf(b->err, sizeof b->err, "orders[%zu]: %s", i, o->error);
            batch_fail(b, 400, b->err);
            return;
        }
        if (o->sign_failed) {
            log_error("orders/process: signing failed (openssl)");
            batch_fail(b, 500, "internal error");
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
        batch_fail(b, 500, "internal error");
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
    arena_init(&b->mem, 0);
    /* a new batch queues behind the steps of batches already started */
    if (workpool_run(http_loop(c), 1, 1, batch_parse, batch_parsed, b) != 0)
        http_respond_error(c, 503, "server busy");
}
