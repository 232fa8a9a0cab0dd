#!/usr/bin/env python3
"""Deterministic POST /orders/process batches and the contract's reference pricing.

  gen_orders.py N OUT.json      write a batch of N orders (same bytes every run)

The batch mixes 1..5 lines per order, subtotals on both sides of the discount
threshold (10000 cents), zero prices and maximum quantities, so that a wrong
rounding or message format shows up in the receipts.
"""
import hashlib
import hmac
import json
import random
import sys


def batch(n, seed=4):
    rnd = random.Random(seed)
    orders = []
    for i in range(n):
        items = []
        for j in range(rnd.randint(1, 5)):
            items.append({
                "sku": "SKU-%d-%s" % (rnd.randint(1, 9999), rnd.choice("ABCDEFGH")),
                "quantity": rnd.choice([1, 1, 2, 3, 7, 10, 99, 10000]),
                "unit_price_cents": rnd.choice([0, 1, 99, 1999, 4999, 9999, 10000, 123456, 100000000]),
            })
        orders.append({"id": "o-%d" % (i + 1), "user_id": rnd.randint(1, 1000000), "items": items})
    return {"orders": orders}


def price(order, key=b"dev-receipt-key"):
    """The contract's pricing (API.md, Orders), as the reference."""
    sub = sum(l["quantity"] * l["unit_price_cents"] for l in order["items"])
    disc = sub * 5 // 100 if sub >= 10000 else 0
    tax = ((sub - disc) * 21 + 50) // 100
    total = sub - disc + tax
    msg = "%s|%d|%s|%d" % (order["id"], order["user_id"],
                           ",".join("%s:%d:%d" % (l["sku"], l["quantity"], l["unit_price_cents"])
                                    for l in order["items"]), total)
    return {"id": order["id"], "subtotal_cents": sub, "discount_cents": disc, "tax_cents": tax,
            "total_cents": total,
            "receipt": hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()}


if __name__ == "__main__":
    n, out = int(sys.argv[1]), sys.argv[2]
    with open(out, "w") as f:
        json.dump(batch(n), f, separators=(",", ":"))
