/*
 * pricing.h - order lines, prices and receipts: the pure part of the orders
 * feature (no I/O, no allocation beyond what the caller hands in), shared by
 * the handlers, the background worker, the unit tests and the fuzzers.
 *
 * Rules (docs: /work/shared/spec/API.md, Orders):
 *   line      {"sku": 1..64 visible ASCII (0x21..0x7E: printable ASCII without
 *             the space, so a sku never starts or ends with invisible text),
 *             "quantity": integer 1..10000, "unit_price_cents": integer
 *             0..100000000}; unknown members ignored; 1..100 lines.
 *   subtotal  = sum of quantity * unit_price_cents
 *   discount  = subtotal * 5 / 100 when subtotal >= 10000, else 0
 *   tax       = ((subtotal - discount) * 21 + 50) / 100
 *   total     = subtotal - discount + tax
 *   receipt   = lowercase hex HMAC-SHA256(key, "{id}|{user_id}|{sku}:{q}:{p},...|{total}")
 *
 * Every function is thread-safe once pricing_set_key has run (it runs once,
 * at start-up, before any thread signs).
 */
#ifndef BRISK_PRICING_H
#define BRISK_PRICING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/str.h"
#include "json/json.h"

#define PRICING_MAX_LINES 100
#define PRICING_SKU_MAX 64
#define PRICING_QTY_MAX 10000
#define PRICING_PRICE_MAX 100000000
#define PRICING_DISCOUNT_FROM 10000 /* subtotal (cents) from which the 5 % discount applies */
#define PRICING_HEX_LEN 64          /* SHA-256 / HMAC-SHA256 in lowercase hex, without NUL */
#define PRICING_ERRMSG_MAX 128      /* room for any message of pricing_parse_lines */

/* The message of pricing_compute's only failure (a 400 in the API). */
#define PRICING_ERR_OVERFLOW "order total overflows"

/* The default receipt key, used until pricing_set_key is called. */
#define PRICING_DEFAULT_KEY "dev-receipt-key"

struct order_line {
    struct str sku; /* points into the parsed JSON (or the caller's memory) */
    int64_t quantity;
    int64_t unit_price_cents;
};

struct order_totals {
    int64_t subtotal_cents;
    int64_t discount_cents;
    int64_t tax_cents;
    int64_t total_cents;
};

/*
 * True when s is 1..max bytes, each 0x21..0x7E (visible ASCII): the rule for
 * a sku (max PRICING_SKU_MAX).
 */
bool pricing_visible_ascii(struct str s, size_t max);

/*
 * True when s is 1..max bytes, each 0x20..0x7E (printable ASCII, space
 * included): the rule for a batch order id.
 */
bool pricing_printable_ascii(struct str s, size_t max);

/*
 * Parse and validate the order lines in v (the value of the "items" member,
 * NULL when absent) into out[0..*out_n) (out has room for PRICING_MAX_LINES).
 * name is the path used in messages ("items", "orders[3].items"). Returns
 * NULL, or an error message written into err (errcap >= PRICING_ERRMSG_MAX
 * recommended; longer names are cut), e.g.
 *   "items is required"                           absent or null
 *   "items must be an array"                      another type
 *   "items must have 1 to 100 lines"              empty or too many
 *   "items[3] must be an object"
 *   "items[3].sku is required" / "... must be a string" /
 *   "items[3].sku must be 1 to 64 printable ascii characters (no spaces)"
 *   "items[3].quantity is required" / "... must be an integer" /
 *   "items[3].quantity must be an integer from 1 to 10000"
 *   "items[3].unit_price_cents ..." likewise (0 to 100000000).
 * A number written with a fraction or an exponent (1.0, 1e2) is not an
 * integer; an integer literal beyond int64 is out of range. out[i].sku points
 * into v. On error *out_n and out are unspecified.
 */
const char *pricing_parse_lines(const struct json_value *v, const char *name,
                                struct order_line *out, size_t *out_n, char *err, size_t errcap);

/*
 * Price n lines with exact integer arithmetic. Accepts any values (the
 * fuzzers call it directly): every step is overflow-checked. Returns NULL and
 * fills *out, or PRICING_ERR_OVERFLOW (when a product, the sum or a later step
 * leaves int64, or a quantity or price is negative) with *out unspecified.
 * With lines that passed pricing_parse_lines it cannot fail (at most
 * 100 * 10000 * 1e8 = 1e14 cents).
 */
const char *pricing_compute(const struct order_line *lines, size_t n, struct order_totals *out);

/*
 * Append the canonical JSON array of the lines to b:
 * [{"sku":"A-1","quantity":2,"unit_price_cents":1999},...] in the given order,
 * no whitespace. This is what the database stores, what "items" shows and
 * what the idempotency hash covers. Check b->failed afterwards.
 */
void pricing_write_items(struct buf *b, const struct order_line *lines, size_t n);

/*
 * Parse a stored canonical items array (json, as written by
 * pricing_write_items) back into lines, with the same validation as
 * pricing_parse_lines. Parse memory comes from arena a (reset it after use);
 * out[i].sku points into json or a. Returns NULL or an error message in err.
 */
const char *pricing_parse_stored(struct str json, struct arena *a, struct order_line *out,
                                 size_t *out_n, char *err, size_t errcap);

/*
 * Set the receipt key (the bytes of a NUL-terminated string; at most 4096
 * bytes, longer keys are refused). Call once at start-up, before any thread
 * signs; calling it again later is only safe while no thread signs (tests).
 * Returns 0 or -1.
 */
int pricing_set_key(const char *key);

/*
 * Append the receipt message "{id}|{user_id}|{sku}:{q}:{p},...|{total}" to b
 * (the exact bytes pricing_sign authenticates; for tests and logs). Check
 * b->failed afterwards.
 */
void pricing_receipt_message(struct buf *b, struct str id, int64_t user_id,
                             const struct order_line *lines, size_t n, int64_t total_cents);

/*
 * Write the receipt (lowercase hex HMAC-SHA256 of the message above with the
 * current key) into out[0..64] (NUL-terminated). id is the order id as text.
 * Streams the message through a fixed stack buffer: no allocation (the
 * key's inner and outer SHA-256 states are computed once per key and copied).
 * Returns 0, or -1 when OpenSSL fails (out is then "").
 */
int pricing_sign(struct str id, int64_t user_id, const struct order_line *lines, size_t n,
                 int64_t total_cents, char out[PRICING_HEX_LEN + 1]);

/*
 * For the background worker: re-parse the stored items of order id, price
 * them again, check the totals equal the stored total_cents and sign with the
 * decimal id. Parse memory from arena a. Returns NULL with out filled, or an
 * error message (in err) naming what does not match.
 */
const char *pricing_sign_stored(int64_t id, int64_t user_id, struct str items_json,
                                int64_t total_cents, struct arena *a, char out[PRICING_HEX_LEN + 1],
                                char *err, size_t errcap);

/*
 * The idempotency fingerprint of POST /orders: lowercase hex SHA-256 of
 * "{user_id}|{canonical items}" into out[0..64] (NUL-terminated). Requests
 * that differ only in whitespace, member order or unknown members get the
 * same hash. Returns 0, or -1 when OpenSSL fails.
 */
int pricing_request_hash(int64_t user_id, struct str canonical_items,
                         char out[PRICING_HEX_LEN + 1]);

#endif
