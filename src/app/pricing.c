/*
 * pricing.c - order lines, prices and receipts (see pricing.h).
 *
 * Receipts: HMAC-SHA256 (RFC 2104) through OpenSSL 3's EVP_MAC. The HMAC
 * and the SHA-256 implementations are fetched and the key is set once, in
 * pricing_set_key (at start-up, before the seccomp sandbox: fetching may read
 * OpenSSL's configuration). That keyed context is a template: each thread
 * that signs keeps its own duplicate, and a signature re-initialises it with
 * the key already set (EVP_MAC_init with a NULL key restores the stored
 * inner/outer pad states: no allocation, no key schedule per order), then
 * streams the message through a small stack buffer, so its length (unbounded
 * when the fuzzers call in) never needs a heap buffer.
 */
#include "app/pricing.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define KEY_MAX 4096

/* ---- lines ---- */

/* 1..max bytes, each in lo..0x7E */
static bool ascii_run(struct str s, size_t max, unsigned char lo)
{
    if (s.len < 1 || s.len > max)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < lo || c > 0x7e)
            return false;
    }
    return true;
}

bool pricing_visible_ascii(struct str s, size_t max)
{
    return ascii_run(s, max, 0x21);
}

bool pricing_printable_ascii(struct str s, size_t max)
{
    return ascii_run(s, max, 0x20);
}

/* A JSON number literal without fraction or exponent (an integer, maybe beyond int64). */
static bool integer_literal(const struct json_value *v)
{
    for (size_t i = 0; i < v->u.num.raw.len; i++) {
        char ch = v->u.num.raw.ptr[i];
        if (ch == '.' || ch == 'e' || ch == 'E')
            return false;
    }
    return true;
}

/*
 * Read integer member `field` of line obj into *out, within [lo, hi].
 * Returns NULL or the message (written into err).
 */
static const char *line_int(const struct json_value *obj, const char *name, size_t idx,
                            const char *field, int64_t lo, int64_t hi, int64_t *out, char *err,
                            size_t errcap)
{
    const struct json_value *v = json_get(obj, field);
    *out = 0; /* defined on every path (clang-analyzer follows the error paths too) */
    if (!v || v->type == JSON_NULL) {
        snprintf(err, errcap, "%s[%zu].%s is required", name, idx, field);
        return err;
    }
    if (v->type != JSON_NUMBER || !integer_literal(v)) {
        snprintf(err, errcap, "%s[%zu].%s must be an integer", name, idx, field);
        return err;
    }
    if (!v->u.num.is_int || v->u.num.i < lo || v->u.num.i > hi) {
        snprintf(err, errcap, "%s[%zu].%s must be an integer from %lld to %lld", name, idx, field,
                 (long long)lo, (long long)hi);
        return err;
    }
    *out = v->u.num.i;
    return NULL;
}

const char *pricing_parse_lines(const struct json_value *v, const char *name,
                                struct order_line *out, size_t *out_n, char *err, size_t errcap)
{
    if (!v || v->type == JSON_NULL) {
        snprintf(err, errcap, "%s is required", name);
        return err;
    }
    if (v->type != JSON_ARRAY) {
        snprintf(err, errcap, "%s must be an array", name);
        return err;
    }
    if (v->u.arr.n < 1 || v->u.arr.n > PRICING_MAX_LINES) {
        snprintf(err, errcap, "%s must have 1 to %d lines", name, PRICING_MAX_LINES);
        return err;
    }
    for (size_t i = 0; i < v->u.arr.n; i++) {
        const struct json_value *line = &v->u.arr.items[i];
        struct order_line *l = &out[i];
        if (line->type != JSON_OBJECT) {
            snprintf(err, errcap, "%s[%zu] must be an object", name, i);
            return err;
        }
        const struct json_value *sku = json_get(line, "sku");
        if (!sku || sku->type == JSON_NULL) {
            snprintf(err, errcap, "%s[%zu].sku is required", name, i);
            return err;
        }
        if (sku->type != JSON_STRING) {
            snprintf(err, errcap, "%s[%zu].sku must be a string", name, i);
            return err;
        }
        if (!pricing_visible_ascii(sku->u.str, PRICING_SKU_MAX)) {
            snprintf(err, errcap,
                     "%s[%zu].sku must be 1 to %d printable ascii characters (no spaces)", name, i,
                     PRICING_SKU_MAX);
            return err;
        }
        l->sku = sku->u.str;
        if (line_int(line, name, i, "quantity", 1, PRICING_QTY_MAX, &l->quantity, err, errcap) ||
            line_int(line, name, i, "unit_price_cents", 0, PRICING_PRICE_MAX, &l->unit_price_cents,
                     err, errcap))
            return err;
    }
    *out_n = v->u.arr.n;
    return NULL;
}

/* ---- prices ---- */

const char *pricing_compute(const struct order_line *lines, size_t n, struct order_totals *out)
{
    int64_t sub = 0, prod, disc = 0, net, tax, total;

    for (size_t i = 0; i < n; i++) {
        /* callers fill n lines; the analyzer cannot see that through pricing_sign_stored */
        // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult)
        if (lines[i].quantity < 0 || lines[i].unit_price_cents < 0)
            return PRICING_ERR_OVERFLOW;
        if (__builtin_mul_overflow(lines[i].quantity, lines[i].unit_price_cents, &prod) ||
            __builtin_add_overflow(sub, prod, &sub))
            return PRICING_ERR_OVERFLOW;
    }
    if (sub >= PRICING_DISCOUNT_FROM) {
        /* sub * 5 / 100 without the multiplication overflowing: exact for sub >= 0 */
        disc = sub / 100 * 5 + sub % 100 * 5 / 100;
    }
    net = sub - disc; /* 0 <= disc <= sub */
    if (__builtin_mul_overflow(net, (int64_t)21, &tax) ||
        __builtin_add_overflow(tax, (int64_t)50, &tax))
        return PRICING_ERR_OVERFLOW;
    tax /= 100;
    if (__builtin_add_overflow(net, tax, &total))
        return PRICING_ERR_OVERFLOW;
    out->subtotal_cents = sub;
    out->discount_cents = disc;
    out->tax_cents = tax;
    out->total_cents = total;
    return NULL;
}

/* ---- canonical items ---- */

void pricing_write_items(struct buf *b, const struct order_line *lines, size_t n)
{
    buf_append_char(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i)
            buf_append_char(b, ',');
        buf_append_cstr(b, "{\"sku\":");
        json_write_str(b, lines[i].sku.ptr, lines[i].sku.len);
        buf_append_cstr(b, ",\"quantity\":");
        buf_append_i64(b, lines[i].quantity);
        buf_append_cstr(b, ",\"unit_price_cents\":");
        buf_append_i64(b, lines[i].unit_price_cents);
        buf_append_char(b, '}');
    }
    buf_append_char(b, ']');
}

const char *pricing_parse_stored(struct str json, struct arena *a, struct order_line *out,
                                 size_t *out_n, char *err, size_t errcap)
{
    const struct json_value *v = NULL;
    struct json_error je;

    if (json_parse(json.ptr, json.len, a, &v, &je) != 0) {
        snprintf(err, errcap, "stored items: %s", je.msg);
        return err;
    }
    return pricing_parse_lines(v, "items", out, out_n, err, errcap);
}

/* ---- receipt message: streamed into a buf or an HMAC ---- */

struct msg_writer {
    struct buf *b;    /* append here, or */
    EVP_MAC_CTX *mac; /* feed the HMAC */
    int failed;       /* EVP_MAC_update failed */
    size_t len;
    char chunk[1024];
};

static void mw_flush(struct msg_writer *w)
{
    if (w->len == 0)
        return;
    if (w->b)
        buf_append(w->b, w->chunk, w->len);
    else if (!w->failed && EVP_MAC_update(w->mac, (const unsigned char *)w->chunk, w->len) != 1)
        w->failed = 1;
    w->len = 0;
}

static void mw_put(struct msg_writer *w, const char *p, size_t n)
{
    while (n > 0) {
        if (w->len == sizeof w->chunk)
            mw_flush(w);
        size_t k = sizeof w->chunk - w->len;
        if (k > n)
            k = n;
        memcpy(w->chunk + w->len, p, k);
        w->len += k;
        p += k;
        n -= k;
    }
}

static void mw_char(struct msg_writer *w, char ch)
{
    mw_put(w, &ch, 1);
}

static void mw_i64(struct msg_writer *w, int64_t v)
{
    char d[24];
    size_t n = 0;
    uint64_t mag = (uint64_t)v;
    if (v < 0) {
        d[n++] = '-';
        mag = (uint64_t)0 - mag; /* also right for INT64_MIN */
    }
    n += fmt_u64(d + n, mag);
    mw_put(w, d, n);
}

static void write_message(struct msg_writer *w, struct str id, int64_t user_id,
                          const struct order_line *lines, size_t n, int64_t total_cents)
{
    mw_put(w, id.ptr, id.len);
    mw_char(w, '|');
    mw_i64(w, user_id);
    mw_char(w, '|');
    for (size_t i = 0; i < n; i++) {
        if (i)
            mw_char(w, ',');
        mw_put(w, lines[i].sku.ptr, lines[i].sku.len);
        mw_char(w, ':');
        mw_i64(w, lines[i].quantity);
        mw_char(w, ':');
        mw_i64(w, lines[i].unit_price_cents);
    }
    mw_char(w, '|');
    mw_i64(w, total_cents);
    mw_flush(w);
}

void pricing_receipt_message(struct buf *b, struct str id, int64_t user_id,
                             const struct order_line *lines, size_t n, int64_t total_cents)
{
    struct msg_writer w;
    w.b = b;
    w.mac = NULL;
    w.failed = 0;
    w.len = 0;
    write_message(&w, id, user_id, lines, n, total_cents);
}

/* ---- key and HMAC ---- */

#define SHA256_LEN 32

static char g_key[KEY_MAX] = PRICING_DEFAULT_KEY;
static size_t g_key_len = sizeof PRICING_DEFAULT_KEY - 1;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static EVP_MAC *g_hmac;               /* fetched once */
static EVP_MD *g_sha256;              /* fetched once: request hashes */
static EVP_MAC_CTX *g_template;       /* keyed with g_key; only ever duplicated */
static _Atomic unsigned g_generation; /* bumped by every pricing_set_key */
static pthread_key_t g_tls;           /* this thread's struct thread_mac */
static bool g_tls_ok;

struct thread_mac {
    EVP_MAC_CTX *ctx;
    unsigned generation; /* of the template it was duplicated from */
};

static void thread_mac_free(void *p)
{
    struct thread_mac *t = p;
    EVP_MAC_CTX_free(t->ctx);
    free(t);
}

/* Fetch the algorithms (once) and key a new template with g_key. */
static void key_template(void)
{
    if (!g_tls_ok)
        g_tls_ok = pthread_key_create(&g_tls, thread_mac_free) == 0;
    if (!g_hmac)
        g_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!g_sha256)
        g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    EVP_MAC_CTX_free(g_template);
    g_template = NULL;
    if (!g_hmac)
        return;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    EVP_MAC_CTX *t = EVP_MAC_CTX_new(g_hmac);
    if (t && EVP_MAC_init(t, (const unsigned char *)g_key, g_key_len, params) == 1)
        g_template = t;
    else
        EVP_MAC_CTX_free(t);
    atomic_fetch_add(&g_generation, 1);
}

int pricing_set_key(const char *key)
{
    size_t n = strlen(key);
    if (n < 1 || n > KEY_MAX)
        return -1;
    pthread_once(&g_once, key_template); /* the default key's template must not come later */
    memcpy(g_key, key, n); /* NOLINT(bugprone-not-null-terminated-result): bytes + length */
    g_key_len = n;
    key_template();
    return g_template && g_sha256 && g_tls_ok ? 0 : -1;
}

static void to_hex(const unsigned char *md, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * n] = '\0';
}

/* This thread's keyed HMAC context, duplicated from the current template; NULL on failure. */
static EVP_MAC_CTX *thread_ctx(void)
{
    if (pthread_once(&g_once, key_template) != 0 || !g_template || !g_tls_ok)
        return NULL;
    unsigned gen = atomic_load(&g_generation);
    struct thread_mac *t = pthread_getspecific(g_tls);
    if (t && t->generation == gen)
        return t->ctx;
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        if (pthread_setspecific(g_tls, t) != 0) {
            free(t);
            return NULL;
        }
    }
    EVP_MAC_CTX_free(t->ctx);
    t->ctx = EVP_MAC_CTX_dup(g_template);
    t->generation = gen;
    return t->ctx;
}

int pricing_sign(struct str id, int64_t user_id, const struct order_line *lines, size_t n,
                 int64_t total_cents, char out[PRICING_HEX_LEN + 1])
{
    unsigned char md[SHA256_LEN];
    size_t md_len = 0;
    struct msg_writer w;
    EVP_MAC_CTX *ctx = thread_ctx();

    out[0] = '\0';
    /* A NULL key: start a new message with the key already set. */
    if (!ctx || EVP_MAC_init(ctx, NULL, 0, NULL) != 1)
        return -1;
    w.b = NULL;
    w.mac = ctx;
    w.failed = 0;
    w.len = 0;
    write_message(&w, id, user_id, lines, n, total_cents);
    if (w.failed || EVP_MAC_final(ctx, md, &md_len, sizeof md) != 1 || md_len != sizeof md)
        return -1;
    to_hex(md, sizeof md, out);
    OPENSSL_cleanse(md, sizeof md);
    return 0;
}

const char *pricing_sign_stored(int64_t id, int64_t user_id, struct str items_json,
                                int64_t total_cents, struct arena *a, char out[PRICING_HEX_LEN + 1],
                                char *err, size_t errcap)
{
    struct order_line lines[PRICING_MAX_LINES];
    struct order_totals t;
    size_t n = 0;
    char idtxt[24];
    const char *e;

    out[0] = '\0';
    if (pricing_parse_stored(items_json, a, lines, &n, err, errcap))
        return err;
    e = pricing_compute(lines, n, &t);
    if (e) {
        snprintf(err, errcap, "%s", e);
        return err;
    }
    if (t.total_cents != total_cents) {
        snprintf(err, errcap, "stored total_cents %lld differs from the items' %lld",
                 (long long)total_cents, (long long)t.total_cents);
        return err;
    }
    int len = snprintf(idtxt, sizeof idtxt, "%lld", (long long)id);
    if (pricing_sign((struct str){idtxt, (size_t)len}, user_id, lines, n, total_cents, out)) {
        snprintf(err, errcap, "hmac failed");
        return err;
    }
    return NULL;
}

int pricing_request_hash(int64_t user_id, struct str canonical_items, char out[PRICING_HEX_LEN + 1])
{
    unsigned char md[SHA256_LEN];
    unsigned int md_len = 0;
    char uid[24];
    int len = snprintf(uid, sizeof uid, "%lld|", (long long)user_id);
    int rc = -1;

    out[0] = '\0';
    if (pthread_once(&g_once, key_template) != 0 || !g_sha256)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -1;
    if (EVP_DigestInit_ex(ctx, g_sha256, NULL) == 1 &&
        EVP_DigestUpdate(ctx, uid, (size_t)len) == 1 &&
        EVP_DigestUpdate(ctx, canonical_items.ptr, canonical_items.len) == 1 &&
        EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == sizeof md) {
        to_hex(md, sizeof md, out);
        rc = 0;
    }
    EVP_MD_CTX_free(ctx);
    return rc;
}
