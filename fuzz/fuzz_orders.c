/*
 * fuzz_orders.c - order-body validation and pricing.
 *
 * Two properties per input:
 *  1. The input as a POST /orders body: when pricing_parse_lines accepts its
 *     "items", every line is within the contract's bounds, pricing never
 *     overflows, the totals equal an independent 128-bit computation, the
 *     canonical items JSON parses back (pricing_parse_stored) to the same
 *     lines, and signing is deterministic.
 *  2. The raw bytes as up to 8 lines of unbounded int64 quantity/price:
 *     pricing_compute either reports overflow or agrees with 128-bit
 *     arithmetic (which then must fit in int64).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "app/pricing.h"
#include "base/arena.h"
#include "base/buf.h"
#include "json/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The contract's pricing, in 128-bit integers. Returns 0, or -1 when a value (or the tax
 * step's intermediate) leaves int64. */
static int reference(const struct order_line *lines, size_t n, struct order_totals *t)
{
    __int128 sub = 0;
    for (size_t i = 0; i < n; i++) {
        sub += (__int128)lines[i].quantity * lines[i].unit_price_cents;
        if (sub > INT64_MAX || sub < INT64_MIN)
            return -1;
    }
    __int128 disc = sub >= PRICING_DISCOUNT_FROM ? sub * 5 / 100 : 0;
    /* the tax step's intermediate (net * 21 + 50) must fit in int64 too: past
     * that the order "overflows" (400), as every implementation in int64 must say */
    if ((sub - disc) * 21 + 50 > INT64_MAX)
        return -1;
    __int128 tax = ((sub - disc) * 21 + 50) / 100;
    __int128 total = sub - disc + tax;
    if (total > INT64_MAX || tax > INT64_MAX)
        return -1;
    t->subtotal_cents = (int64_t)sub;
    t->discount_cents = (int64_t)disc;
    t->tax_cents = (int64_t)tax;
    t->total_cents = (int64_t)total;
    return 0;
}

static void same_totals(const struct order_totals *a, const struct order_totals *b)
{
    if (a->subtotal_cents != b->subtotal_cents || a->discount_cents != b->discount_cents ||
        a->tax_cents != b->tax_cents || a->total_cents != b->total_cents)
        abort();
}

static void check_body(const uint8_t *data, size_t size, struct arena *a)
{
    const struct json_value *v;
    struct json_error jerr;
    if (json_parse((const char *)data, size, a, &v, &jerr) != 0 || v->type != JSON_OBJECT)
        return;
    struct order_line lines[PRICING_MAX_LINES];
    size_t n = 0;
    char err[PRICING_ERRMSG_MAX];
    if (pricing_parse_lines(json_get(v, "items"), "items", lines, &n, err, sizeof err)) {
        if (!memchr(err, 0, sizeof err) || err[0] == 0)
            abort(); /* an error always comes with a message */
        return;
    }
    if (n < 1 || n > PRICING_MAX_LINES)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (lines[i].quantity < 1 || lines[i].quantity > PRICING_QTY_MAX ||
            lines[i].unit_price_cents < 0 || lines[i].unit_price_cents > PRICING_PRICE_MAX ||
            !pricing_visible_ascii(lines[i].sku, PRICING_SKU_MAX))
            abort();
    }
    struct order_totals got, want;
    if (pricing_compute(lines, n, &got) != NULL || reference(lines, n, &want) != 0)
        abort(); /* within the contract's bounds nothing can overflow */
    same_totals(&got, &want);
    if (got.discount_cents > got.subtotal_cents || got.total_cents < 0)
        abort();

    /* canonical form round trip */
    struct buf canon;
    buf_init(&canon, 0);
    pricing_write_items(&canon, lines, n);
    if (canon.failed)
        abort();
    struct order_line back[PRICING_MAX_LINES];
    size_t nb = 0;
    if (pricing_parse_stored((struct str){canon.data, canon.len}, a, back, &nb, err, sizeof err))
        abort();
    if (nb != n)
        abort();
    for (size_t i = 0; i < n; i++)
        if (back[i].quantity != lines[i].quantity ||
            back[i].unit_price_cents != lines[i].unit_price_cents ||
            !str_eq(back[i].sku, lines[i].sku))
            abort();

    /* receipts are deterministic and hex */
    char r1[PRICING_HEX_LEN + 1], r2[PRICING_HEX_LEN + 1];
    struct str id = STR_LIT("o-1");
    if (pricing_sign(id, 42, lines, n, got.total_cents, r1) != 0 ||
        pricing_sign(id, 42, back, nb, got.total_cents, r2) != 0 || memcmp(r1, r2, sizeof r1))
        abort();
    for (size_t i = 0; i < PRICING_HEX_LEN; i++)
        if (!((r1[i] >= '0' && r1[i] <= '9') || (r1[i] >= 'a' && r1[i] <= 'f')))
            abort();
    buf_free(&canon);
}

static void check_raw(const uint8_t *data, size_t size)
{
    struct order_line lines[8];
    size_t n = 0;
    while (n < 8 && size >= 16) {
        memcpy(&lines[n].quantity, data, 8);
        memcpy(&lines[n].unit_price_cents, data + 8, 8);
        lines[n].sku = STR_LIT("X");
        n++;
        data += 16;
        size -= 16;
    }
    if (n == 0)
        return;
    bool negative = false;
    for (size_t i = 0; i < n; i++)
        negative |= lines[i].quantity < 0 || lines[i].unit_price_cents < 0;
    struct order_totals got, want;
    const char *e = pricing_compute(lines, n, &got);
    int r = reference(lines, n, &want);
    if (e) {
        /* refused: only negatives or a value outside int64 may cause that */
        if (!negative && r == 0)
            abort();
        return;
    }
    if (negative || r != 0)
        abort(); /* accepted something the contract cannot price */
    same_totals(&got, &want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct arena a;
    static int ready;
    if (!ready) {
        arena_init(&a, (size_t)64 << 20);
        if (pricing_set_key(PRICING_DEFAULT_KEY) != 0)
            abort();
        ready = 1;
    }
    check_body(data, size, &a);
    arena_reset(&a, 1 << 16);
    check_raw(data, size);
    return 0;
}
