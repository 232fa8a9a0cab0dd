/*
 * test_pricing.c - order line validation, exact pricing, the canonical items
 * form, receipts and the idempotency hash (src/app/pricing.c).
 *
 * Expected values are computed independently: by hand in the comments, with
 * a 128-bit reference formula below, with OpenSSL's one-shot HMAC() over the
 * expected message, and with Python (commands shown next to the constants).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "app/pricing.h"
#include "base/arena.h"
#include "base/buf.h"
#include "json/json.h"
#include "test.h"

static struct arena g_arena;

static const struct json_value *parse(const char *s)
{
    const struct json_value *v = NULL;
    struct json_error e;
    arena_reset(&g_arena, 1 << 20);
    if (json_parse(s, strlen(s), &g_arena, &v, &e) != 0) {
        printf("# test json does not parse: %s: %s\n", s, e.msg);
        return NULL;
    }
    return v;
}

static struct order_line L(const char *sku, int64_t q, int64_t p) {
    return (struct order_line){{sku, strlen(sku)}, q, p};
}

/* Reference pricing in 128-bit arithmetic, straight from the contract's formulas. */
static void
ref_price(const struct order_line *l, size_t n, __int128 *sub, __int128 *disc, __int128 *tax,
          __int128 *tot)
{
    *sub = 0;
    for (size_t i = 0; i < n; i++)
        *sub += (__int128)l[i].quantity * l[i].unit_price_cents;
    *disc = *sub >= 10000 ? *sub * 5 / 100 : 0;
    *tax = ((*sub - *disc) * 21 + 50) / 100;
    *tot = *sub - *disc + *tax;
}

static bool totals_are(const struct order_totals *t, int64_t sub, int64_t disc, int64_t tax,
                       int64_t tot)
{
    return t->subtotal_cents == sub && t->discount_cents == disc && t->tax_cents == tax &&
           t->total_cents == tot;
}

static bool is_overflow(const char *e)
{
    return e && strcmp(e, PRICING_ERR_OVERFLOW) == 0;
}

/* ---- line validation ---- */

static const char *lines_err(const char *json, const char *name, size_t *n)
{
    static char err[PRICING_ERRMSG_MAX];
    static struct order_line out[PRICING_MAX_LINES];
    const struct json_value *root = parse(json);
    if (!root)
        return "(test json bad)";
    const struct json_value *items = json_get(root, "items");
    *n = 0;
    return pricing_parse_lines(items, name, out, n, err, sizeof err);
}

static void expect_err(const char *json, const char *msg)
{
    size_t n;
    const char *e = lines_err(json, "items", &n);
    ok(e && strcmp(e, msg) == 0, "%s -> \"%s\" (got \"%s\")", json, msg, e ? e : "(ok)");
}

static void test_lines(void)
{
    static char err[PRICING_ERRMSG_MAX];
    struct order_line out[PRICING_MAX_LINES];
    size_t n = 0;

    const struct json_value *root =
        parse("{\"items\":[{\"sku\":\"A-1\",\"quantity\":2,\"unit_price_cents\":1999,\"x\":[1]},"
              "{\"unit_price_cents\":0,\"quantity\":10000,\"sku\":\"~!\\\"\\\\\",\"note\":null}]}");
    ok(root && !pricing_parse_lines(json_get(root, "items"), "items", out, &n, err, sizeof err),
       "two valid lines (unknown members ignored): %s", err);
    ok(n == 2 && str_eq(out[0].sku, STR_LIT("A-1")) && out[0].quantity == 2 &&
           out[0].unit_price_cents == 1999 && str_eq(out[1].sku, STR_LIT("~!\"\\")) &&
           out[1].quantity == 10000 && out[1].unit_price_cents == 0,
       "lines read in order");

    /* the array itself */
    expect_err("{}", "items is required");
    expect_err("{\"items\":null}", "items is required");
    expect_err("{\"items\":{}}", "items must be an array");
    expect_err("{\"items\":\"[]\"}", "items must be an array");
    expect_err("{\"items\":[]}", "items must have 1 to 100 lines");
    expect_err("{\"items\":[1]}", "items[0] must be an object");
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":1,\"unit_price_cents\":1},null]}",
               "items[1] must be an object");

    /* sku */
    expect_err("{\"items\":[{\"quantity\":1,\"unit_price_cents\":1}]}", "items[0].sku is required");
    expect_err("{\"items\":[{\"sku\":null,\"quantity\":1,\"unit_price_cents\":1}]}",
               "items[0].sku is required");
    expect_err("{\"items\":[{\"sku\":5,\"quantity\":1,\"unit_price_cents\":1}]}",
               "items[0].sku must be a string");
    const char *sku_range = "items[0].sku must be 1 to 64 printable ascii characters (no spaces)";
    expect_err("{\"items\":[{\"sku\":\"\",\"quantity\":1,\"unit_price_cents\":1}]}", sku_range);
    expect_err("{\"items\":[{\"sku\":\"a b\",\"quantity\":1,\"unit_price_cents\":1}]}", sku_range);
    expect_err("{\"items\":[{\"sku\":\"a\\u007f\",\"quantity\":1,\"unit_price_cents\":1}]}",
               sku_range);
    expect_err("{\"items\":[{\"sku\":\"a\\t\",\"quantity\":1,\"unit_price_cents\":1}]}", sku_range);
    expect_err("{\"items\":[{\"sku\":\"\\u00e9\",\"quantity\":1,\"unit_price_cents\":1}]}",
               sku_range);
    expect_err("{\"items\":[{\"sku\":\"a\\u0000\",\"quantity\":1,\"unit_price_cents\":1}]}",
               sku_range);
    char json[512];
    char sku[70];
    memset(sku, 'k', 65);
    sku[65] = '\0';
    snprintf(json, sizeof json,
             "{\"items\":[{\"sku\":\"%s\",\"quantity\":1,\"unit_price_cents\":1}]}", sku);
    expect_err(json, sku_range);
    sku[64] = '\0';
    snprintf(json, sizeof json,
             "{\"items\":[{\"sku\":\"%s\",\"quantity\":1,\"unit_price_cents\":1}]}", sku);
    ok(lines_err(json, "items", &n) == NULL && n == 1, "64-character sku accepted");
    ok(lines_err("{\"items\":[{\"sku\":\"!~\",\"quantity\":1,\"unit_price_cents\":1}]}", "items",
                 &n) == NULL,
       "sku of 0x21 and 0x7e accepted");

    /* quantity */
    const char *q_range = "items[0].quantity must be an integer from 1 to 10000";
    expect_err("{\"items\":[{\"sku\":\"a\",\"unit_price_cents\":1}]}",
               "items[0].quantity is required");
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":null,\"unit_price_cents\":1}]}",
               "items[0].quantity is required");
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":\"1\",\"unit_price_cents\":1}]}",
               "items[0].quantity must be an integer");
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":true,\"unit_price_cents\":1}]}",
               "items[0].quantity must be an integer");
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":1.5,\"unit_price_cents\":1}]}",
               "items[0].quantity must be an integer");
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":1.0,\"unit_price_cents\":1}]}",
               "items[0].quantity must be an integer");
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":1e2,\"unit_price_cents\":1}]}",
               "items[0].quantity must be an integer");
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":0,\"unit_price_cents\":1}]}", q_range);
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":-1,\"unit_price_cents\":1}]}", q_range);
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":-0,\"unit_price_cents\":1}]}", q_range);
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":10001,\"unit_price_cents\":1}]}", q_range);
    expect_err("{\"items\":[{\"sku\":\"a\",\"quantity\":99999999999999999999,"
               "\"unit_price_cents\":1}]}",
               q_range);
    ok(lines_err("{\"items\":[{\"sku\":\"a\",\"quantity\":10000,\"unit_price_cents\":1}]}", "items",
                 &n) == NULL,
       "quantity 10000 accepted");

    /* unit_price_cents */
    const char *p_range = "items[2].unit_price_cents must be an integer from 0 to 100000000";
    const char *two = "{\"sku\":\"a\",\"quantity\":1,\"unit_price_cents\":1},"
                      "{\"sku\":\"b\",\"quantity\":1,\"unit_price_cents\":1},";
    snprintf(json, sizeof json, "{\"items\":[%s{\"sku\":\"c\",\"quantity\":1}]}", two);
    expect_err(json, "items[2].unit_price_cents is required");
    snprintf(json, sizeof json,
             "{\"items\":[%s{\"sku\":\"c\",\"quantity\":1,\"unit_price_cents\":[]}]}", two);
    expect_err(json, "items[2].unit_price_cents must be an integer");
    snprintf(json, sizeof json,
             "{\"items\":[%s{\"sku\":\"c\",\"quantity\":1,\"unit_price_cents\":-1}]}", two);
    expect_err(json, p_range);
    snprintf(json, sizeof json,
             "{\"items\":[%s{\"sku\":\"c\",\"quantity\":1,\"unit_price_cents\":100000001}]}", two);
    expect_err(json, p_range);
    snprintf(json, sizeof json,
             "{\"items\":[%s{\"sku\":\"c\",\"quantity\":1,\"unit_price_cents\":100000000}]}", two);
    ok(lines_err(json, "items", &n) == NULL && n == 3, "price 100000000 accepted");

    /* the first bad field of the first bad line wins; the name is the caller's */
    ok((lines_err("{\"items\":[{\"sku\":\"\",\"quantity\":0}]}", "orders[7].items", &n)) &&
           strcmp(lines_err("{\"items\":[{\"sku\":\"\",\"quantity\":0}]}", "orders[7].items", &n),
                  "orders[7].items[0].sku must be 1 to 64 printable ascii characters (no "
                  "spaces)") == 0,
       "caller's name prefix and first error");

    /* 100 lines ok, 101 too many */
    struct buf b;
    buf_init(&b, 0);
    for (int count = 100; count <= 101; count++) {
        buf_reset(&b);
        buf_append_cstr(&b, "{\"items\":[");
        for (int i = 0; i < count; i++)
            buf_printf(&b, "%s{\"sku\":\"s%d\",\"quantity\":1,\"unit_price_cents\":1}",
                       i ? "," : "", i);
        buf_append_cstr(&b, "]}");
        buf_append_char(&b, '\0');
        const char *e = lines_err(b.data, "items", &n);
        if (count == 100)
            ok(!e && n == 100, "100 lines accepted");
        else
            ok(e && strcmp(e, "items must have 1 to 100 lines") == 0, "101 lines refused");
    }
    buf_free(&b);

    /* a small err buffer truncates instead of overflowing */
    char small[8];
    root = parse("{\"items\":[]}");
    const char *e =
        pricing_parse_lines(json_get(root, "items"), "items", out, &n, small, sizeof small);
    ok(e == small && strcmp(small, "items m") == 0, "message cut to the buffer");

    ok(pricing_visible_ascii(STR_LIT("o-1"), 64) && !pricing_visible_ascii(STR_LIT(""), 64) &&
           !pricing_visible_ascii(STR_LIT("abc"), 2) && !pricing_visible_ascii(STR_LIT(" a"), 64),
       "visible ascii rule");
    ok(pricing_printable_ascii(STR_LIT("A 1"), 64) && pricing_printable_ascii(STR_LIT(" "), 64) &&
           pricing_printable_ascii(STR_LIT("~"), 1) && !pricing_printable_ascii(STR_LIT(""), 64) &&
           !pricing_printable_ascii(STR_LIT("a\tb"), 64) &&
           !pricing_printable_ascii(STR_LIT("a\x7f"), 64) &&
           !pricing_printable_ascii(STR_LIT("ab"), 1),
       "printable ascii rule (batch ids, idempotency keys)");
}

/* ---- pricing ---- */

static void check_price(const char *what, const struct order_line *l, size_t n, int64_t sub,
                        int64_t disc, int64_t tax, int64_t tot)
{
    struct order_totals t;
    __int128 rs, rd, rt, rtot;
    const char *e = pricing_compute(l, n, &t);
    ref_price(l, n, &rs, &rd, &rt, &rtot);
    ok(!e && totals_are(&t, sub, disc, tax, tot), "%s: %lld/%lld/%lld/%lld", what,
       (long long)t.subtotal_cents, (long long)t.discount_cents, (long long)t.tax_cents,
       (long long)t.total_cents);
    ok(rs == sub && rd == disc && rt == tax && rtot == tot, "%s: reference formula agrees", what);
}

static void test_compute(void)
{
    struct order_line l[PRICING_MAX_LINES];
    struct order_totals t;

    /* 2 x 19.99: 3998, no discount, tax (3998*21+50)/100 = 84008/100 = 840 */
    l[0] = L("A-1", 2, 1999);
    check_price("contract example", l, 1, 3998, 0, 840, 4838);

    /* discount threshold: 9999 none; 10000 -> 500; 10001 -> 50005/100 = 500 */
    l[0] = L("a", 1, 9999);
    check_price("subtotal 9999", l, 1, 9999, 0, 2100, 12099); /* 209979+50 = 210029 -> 2100 */
    l[0] = L("a", 1, 10000);
    check_price("subtotal 10000", l, 1, 10000, 500, 1995, 11495); /* 9500*21 = 199500 */
    l[0] = L("a", 1, 10001);
    check_price("subtotal 10001", l, 1, 10001, 500, 1995, 11496); /* 9501*21 = 199521 */
    l[0] = L("a", 3, 3333);
    l[1] = L("b", 1, 1);
    check_price("two lines summing to 10000", l, 2, 10000, 500, 1995, 11495);

    /* tax rounding: net*21 mod 100 = 50 rounds up, 49 down, 51 up */
    l[0] = L("a", 1, 50);
    check_price("tax 10.50 -> 11", l, 1, 50, 0, 11, 61);
    l[0] = L("a", 1, 150);
    check_price("tax 31.50 -> 32", l, 1, 150, 0, 32, 182);
    l[0] = L("a", 1, 69);
    check_price("tax 14.49 -> 14", l, 1, 69, 0, 14, 83);
    l[0] = L("a", 1, 31);
    check_price("tax 6.51 -> 7", l, 1, 31, 0, 7, 38);
    l[0] = L("a", 1, 2);
    check_price("tax 0.42 -> 0", l, 1, 2, 0, 0, 2);
    l[0] = L("a", 1, 3);
    check_price("tax 0.63 -> 1", l, 1, 3, 0, 1, 4);
    /* after the discount: 10020 - 501 = 9519; 9519*21 = 199899 -> (199949)/100 = 1999 */
    l[0] = L("a", 1, 10020);
    check_price("discount then tax", l, 1, 10020, 501, 1999, 11518);

    /* zero prices */
    l[0] = L("free", 10000, 0);
    l[1] = L("gift", 1, 0);
    check_price("zero-price lines", l, 2, 0, 0, 0, 0);

    /* the largest valid order: 100 x 10000 x 1e8 = 1e14 */
    for (int i = 0; i < PRICING_MAX_LINES; i++)
        l[i] = L("max", PRICING_QTY_MAX, PRICING_PRICE_MAX);
    check_price("max lines", l, PRICING_MAX_LINES, 100000000000000LL, 5000000000000LL,
                19950000000000LL, 114950000000000LL);

    /* no lines at all (callers refuse it; the function just prices nothing) */
    check_price("no lines", l, 0, 0, 0, 0, 0);

    /* overflow, with unbounded values */
    l[0] = L("a", INT64_MAX, 2);
    ok(is_overflow(pricing_compute(l, 1, &t)), "product overflow");
    l[0] = L("a", INT64_MAX / 2 + 1, 1);
    l[1] = L("b", INT64_MAX / 2 + 1, 1);
    ok(is_overflow(pricing_compute(l, 2, &t)), "sum overflow");
    l[0] = L("a", INT64_MAX / 10, 1); /* net * 21 overflows */
    ok(is_overflow(pricing_compute(l, 1, &t)), "tax overflow");
    l[0] = L("a", INT64_MAX, 1);
    ok(is_overflow(pricing_compute(l, 1, &t)), "INT64_MAX subtotal overflows in tax");
    l[0] = L("a", -1, 5);
    ok(is_overflow(pricing_compute(l, 1, &t)), "negative quantity refused");
    l[0] = L("a", 1, INT64_MIN);
    ok(is_overflow(pricing_compute(l, 1, &t)), "negative price refused");
    /* near the limit but fine: sub = 4e17, net*21 = 7.98e18 < 9.22e18 */
    l[0] = L("a", 400000000000000000LL, 1);
    check_price("4e17 cents", l, 1, 400000000000000000LL, 20000000000000000LL, 79800000000000000LL,
                459800000000000000LL);
    /* the largest subtotal whose tax fits: net*21+50 <= INT64_MAX */
    int64_t big = 0;
    for (int64_t s = (INT64_MAX - 50) / 21 / 95 * 100 + 100;; s--) {
        __int128 net = s - s * 5 / 100;
        if (net * 21 + 50 <= INT64_MAX) {
            big = s;
            break;
        }
    }
    l[0] = L("a", big, 1);
    ok(pricing_compute(l, 1, &t) == NULL, "largest pricable subtotal %lld", (long long)big);
    l[0] = L("a", big + 1, 1);
    ok(is_overflow(pricing_compute(l, 1, &t)), "one more overflows");
}

/* ---- canonical items ---- */

static void test_items(void)
{
    struct buf b;
    struct order_line l[3] = {L("A-1", 2, 1999), L("q\"\\", 1, 0), L("~", 10000, 100000000)};
    struct order_line back[PRICING_MAX_LINES];
    char err[PRICING_ERRMSG_MAX];
    size_t n = 0;
    const char *want = "[{\"sku\":\"A-1\",\"quantity\":2,\"unit_price_cents\":1999},"
                       "{\"sku\":\"q\\\"\\\\\",\"quantity\":1,\"unit_price_cents\":0},"
                       "{\"sku\":\"~\",\"quantity\":10000,\"unit_price_cents\":100000000}]";

    buf_init(&b, 0);
    pricing_write_items(&b, l, 3);
    ok(!b.failed && b.len == strlen(want) && memcmp(b.data, want, b.len) == 0,
       "canonical items: %.*s", (int)b.len, b.data);

    arena_reset(&g_arena, 1 << 20);
    ok(!pricing_parse_stored((struct str){b.data, b.len}, &g_arena, back, &n, err, sizeof err),
       "stored form parses back: %s", err);
    ok(n == 3 && str_eq(back[1].sku, STR_LIT("q\"\\")) && back[2].quantity == 10000 &&
           back[2].unit_price_cents == 100000000 && back[0].unit_price_cents == 1999,
       "round trip keeps every line");
    ok(pricing_parse_stored(STR_LIT("[{\"sku\":\"a\",\"quantity\":1,"), &g_arena, back, &n, err,
                            sizeof err) != NULL &&
           strncmp(err, "stored items: invalid json", 26) == 0,
       "truncated stored items refused: %s", err);
    ok(pricing_parse_stored(STR_LIT("[]"), &g_arena, back, &n, err, sizeof err) != NULL,
       "empty stored items refused");

    /* a capped buffer reports failure */
    struct buf small;
    buf_init(&small, 16);
    pricing_write_items(&small, l, 3);
    ok(small.failed, "write past the cap sets failed");
    buf_free(&small);
    buf_free(&b);
}

/* ---- receipts ---- */

/* HMAC-SHA256 in hex with OpenSSL's one-shot HMAC(), as an independent check. */
static void oneshot_hmac(const char *key, const char *msg, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)msg, len, md, &mdlen);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

struct thread_arg {
    int ok;
};

static void *sign_thread(void *p)
{
    struct thread_arg *a = p;
    struct order_line l = L("A-1", 2, 1999);
    char r[65];
    a->ok = 1;
    for (int i = 0; i < 2000; i++) {
        if (pricing_sign(STR_LIT("7"), 42, &l, 1, 4837, r) != 0 ||
            strcmp(r, "3c53dae923f39da075137370c532545d9fef07033c89adab2b134c36887840d5") != 0)
            a->ok = 0;
    }
    return NULL;
}

static void test_receipts(void)
{
    struct order_line l[PRICING_MAX_LINES];
    char r[65], r2[65], want[65];
    struct buf b;

    buf_init(&b, 0);
    l[0] = L("A-1", 2, 1999);
    pricing_receipt_message(&b, STR_LIT("7"), 42, l, 1, 4837);
    ok(b.len == 20 && memcmp(b.data, "7|42|A-1:2:1999|4837", 20) == 0, "message: %.*s", (int)b.len,
       b.data);

    /*
     * python3 -c "import hmac,hashlib;print(hmac.new(b'dev-receipt-key',
     *     b'7|42|A-1:2:1999|4837', hashlib.sha256).hexdigest())"
     */
    ok(pricing_sign(STR_LIT("7"), 42, l, 1, 4837, r) == 0 &&
           strcmp(r, "3c53dae923f39da075137370c532545d9fef07033c89adab2b134c36887840d5") == 0,
       "receipt with the default key: %s", r);
    oneshot_hmac("dev-receipt-key", "7|42|A-1:2:1999|4837", 20, want);
    ok(strcmp(r, want) == 0, "agrees with one-shot HMAC()");

    /* python3 -c "...hmac.new(b'other-key', b'7|42|A-1:2:1999|4837', ...)" */
    ok(pricing_set_key("other-key") == 0, "set key");
    ok(pricing_sign(STR_LIT("7"), 42, l, 1, 4837, r) == 0 &&
           strcmp(r, "19d6b4fea14063ee9f1374f6d4342341de228fc7bcede229e385c9ba472e7aae") == 0,
       "receipt with another key: %s", r);
    /*
     * A key longer than SHA-256's 64-byte block is hashed first (RFC 2104):
     * python3 -c "import hmac,hashlib;k=('0123456789abcdef'*9)[:131].encode()
     *     print(hmac.new(k, b'7|42|A-1:2:1999|4837', hashlib.sha256).hexdigest())"
     */
    char longkey[132];
    for (int i = 0; i < 131; i++)
        longkey[i] = "0123456789abcdef"[i % 16];
    longkey[131] = '\0';
    ok(pricing_set_key(longkey) == 0, "set a 131-byte key");
    ok(pricing_sign(STR_LIT("7"), 42, l, 1, 4837, r) == 0 &&
           strcmp(r, "3368e79d505a4e3452bd7b41d99a2b82ef477123fff78c24c2658b668b708f45") == 0,
       "receipt with a key longer than a block: %s", r);
    oneshot_hmac(longkey, "7|42|A-1:2:1999|4837", 20, want);
    ok(strcmp(r, want) == 0, "long key agrees with one-shot HMAC()");
    ok(pricing_set_key("") == -1, "empty key refused");
    ok(pricing_set_key("dev-receipt-key") == 0, "key back to the default");

    /*
     * python3 -c "import hmac,hashlib;print(hmac.new(b'dev-receipt-key',
     *     b'o-1|9223372036854775807|A:1:0,B-2:10000:100000000|0', hashlib.sha256).hexdigest())"
     */
    l[0] = L("A", 1, 0);
    l[1] = L("B-2", 10000, 100000000);
    ok(pricing_sign(STR_LIT("o-1"), INT64_MAX, l, 2, 0, r) == 0 &&
           strcmp(r, "4fa375ab4dd6a4fb2beecd2db5c26e753b359901cc18391fc7968c1927e0837f") == 0,
       "string id, two lines, INT64_MAX user: %s", r);

    /*
     * A 7695-byte message (streamed in several chunks):
     * python3 -c "import hmac,hashlib
     * lines=[('%03d'%i+'x'*61, i+1, (i*1000003)%100000001) for i in range(100)]
     * sub=sum(q*p for _,q,p in lines); disc=sub*5//100 if sub>=10000 else 0
     * tax=((sub-disc)*21+50)//100; tot=sub-disc+tax
     * msg='123|77|'+','.join('%s:%d:%d'%l for l in lines)+'|%d'%tot
     * print(tot, hmac.new(b'dev-receipt-key', msg.encode(), hashlib.sha256).hexdigest())"
     */
    static char skus[PRICING_MAX_LINES][65];
    for (int i = 0; i < PRICING_MAX_LINES; i++) {
        snprintf(skus[i], sizeof skus[i], "%03d", i);
        memset(skus[i] + 3, 'x', 61);
        skus[i][64] = '\0';
        l[i] = L(skus[i], i + 1, (int64_t)i * 1000003 % 100000001);
    }
    struct order_totals t;
    ok(pricing_compute(l, PRICING_MAX_LINES, &t) == NULL && t.total_cents == 383129499385LL,
       "long order total %lld", (long long)t.total_cents);
    ok(pricing_sign(STR_LIT("123"), 77, l, PRICING_MAX_LINES, t.total_cents, r) == 0 &&
           strcmp(r, "ebf7a3d50f7a9ac2c560dec278a4e1184b7352c1bc3e202aeeadc1812f733c48") == 0,
       "long message: %s", r);
    buf_reset(&b);
    pricing_receipt_message(&b, STR_LIT("123"), 77, l, PRICING_MAX_LINES, t.total_cents);
    oneshot_hmac("dev-receipt-key", b.data, b.len, want);
    ok(b.len == 7695 && strcmp(r, want) == 0, "long message bytes agree (%zu)", b.len);

    /* negative numbers are written with a sign (fuzzers pass anything) */
    buf_reset(&b);
    l[0] = L("a", -3, INT64_MIN);
    pricing_receipt_message(&b, STR_LIT("x"), -1, l, 1, -5);
    ok(b.len == strlen("x|-1|a:-3:-9223372036854775808|-5") &&
           memcmp(b.data, "x|-1|a:-3:-9223372036854775808|-5", b.len) == 0,
       "negative values: %.*s", (int)b.len, b.data);

    /* repeated signing on one context gives the same answer */
    l[0] = L("A-1", 2, 1999);
    ok(pricing_sign(STR_LIT("7"), 42, l, 1, 4837, r) == 0 &&
           pricing_sign(STR_LIT("7"), 42, l, 1, 4837, r2) == 0 && strcmp(r, r2) == 0,
       "context reuse is stable");

    /* stored form: id 7, user 42, A-1 x2 @1999 -> total 4838 */
    char err[PRICING_ERRMSG_MAX];
    const char *items = "[{\"sku\":\"A-1\",\"quantity\":2,\"unit_price_cents\":1999}]";
    arena_reset(&g_arena, 1 << 20);
    ok(pricing_sign_stored(7, 42, (struct str){items, strlen(items)}, 4838, &g_arena, r, err,
                           sizeof err) == NULL,
       "sign stored: %s", err);
    oneshot_hmac("dev-receipt-key", "7|42|A-1:2:1999|4838", 20, want);
    ok(strcmp(r, want) == 0, "sign stored uses the decimal id and stored lines");
    ok(pricing_sign_stored(7, 42, (struct str){items, strlen(items)}, 4837, &g_arena, r, err,
                           sizeof err) != NULL &&
           strstr(err, "differs") && r[0] == '\0',
       "sign stored refuses a total that does not match: %s", err);
    ok(pricing_sign_stored(7, 42, STR_LIT("nope"), 0, &g_arena, r, err, sizeof err) != NULL,
       "sign stored refuses bad json");

    /* threads: each gets its own context */
    pthread_t th[4];
    struct thread_arg args[4];
    int started = 0;
    for (int i = 0; i < 4; i++)
        if (pthread_create(&th[i], NULL, sign_thread, &args[i]) == 0)
            started++;
    ok(started == 4, "threads started");
    bool all = true;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        all = all && args[i].ok;
    }
    ok(all, "concurrent signing on 4 threads is correct");
    buf_free(&b);
}

static void test_request_hash(void)
{
    char h[65];
    const char *items = "[{\"sku\":\"A-1\",\"quantity\":2,\"unit_price_cents\":1999}]";
    /*
     * python3 -c "import hashlib;print(hashlib.sha256(
     *     b'42|[{\"sku\":\"A-1\",\"quantity\":2,\"unit_price_cents\":1999}]').hexdigest())"
     */
    ok(pricing_request_hash(42, (struct str){items, strlen(items)}, h) == 0 &&
           strcmp(h, "fa907d11d423359b01ec4d32998d86742cfb6cba9481238fc65bc5bcd4150c22") == 0,
       "request hash: %s", h);
    char h2[65];
    ok(pricing_request_hash(43, (struct str){items, strlen(items)}, h2) == 0 && strcmp(h, h2) != 0,
       "another user, another hash");
}

int main(void)
{
    arena_init(&g_arena, 64u << 20);
    test_lines();
    test_compute();
    test_items();
    test_receipts();
    test_request_hash();
    arena_free(&g_arena);
    return test_done();
}
