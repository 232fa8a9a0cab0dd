"""The reference for the order arithmetic and receipts of shared/spec/API.md,
written independently of brisk's C code: every test that checks a price or a
receipt uses this one copy."""

import hashlib
import hmac

DEFAULT_KEY = b"dev-receipt-key"  # BRISK_RECEIPT_KEY's default; the harness sets none


def price(items):
    """Totals of order lines: 5 % discount from 100.00, 21 % tax rounded half up."""
    sub = sum(it["quantity"] * it["unit_price_cents"] for it in items)
    disc = sub * 5 // 100 if sub >= 10000 else 0
    tax = ((sub - disc) * 21 + 50) // 100
    return {"subtotal_cents": sub, "discount_cents": disc, "tax_cents": tax,
            "total_cents": sub - disc + tax}


def receipt(oid, uid, items, total, key=DEFAULT_KEY):
    """hex HMAC-SHA256(key, "{id}|{user_id}|{sku}:{q}:{p},...|{total}")."""
    if isinstance(key, str):
        key = key.encode()
    lines = ",".join("%s:%d:%d" % (it["sku"], it["quantity"], it["unit_price_cents"]) for it in items)
    msg = "%s|%d|%s|%d" % (oid, uid, lines, total)
    return hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()
