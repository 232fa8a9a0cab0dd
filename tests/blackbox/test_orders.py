"""Orders API: create (pricing, validation, idempotency), get, list, the user
delete rule, the stateless POST /orders/process batch and background
processing.  Every expected total and receipt is computed here, in Python,
from the contract's formulas."""

import calendar
import hashlib
import hmac
import json
import re
import threading
import time

from harness import check, eq, expect_error, fail, test, uniq
from oracle import DEFAULT_KEY as KEY, price, receipt

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
ORDER_KEYS = ["created_at", "discount_cents", "id", "items", "processed_at", "receipt", "status",
              "subtotal_cents", "tax_cents", "total_cents", "user_id"]


# ---------------------------------------------------------------- helpers







def canonical(items):
    return [{"sku": it["sku"], "quantity": it["quantity"], "unit_price_cents": it["unit_price_cents"]}
            for it in items]


def line(sku="A-1", q=1, p=100):
    return {"sku": sku, "quantity": q, "unit_price_cents": p}


def new_user(ctx):
    return ctx.create_user("Buyer", "%s@example.com" % uniq("buyer"))["id"]


def ts(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def check_order(o, uid=None, items=None):
    """Shape of a stored order, and its totals against Python's."""
    check(isinstance(o, dict), "order is not an object: %r" % (o,))
    eq(sorted(o.keys()), ORDER_KEYS, "order fields")
    check(isinstance(o["id"], int) and o["id"] > 0, "bad id %r" % o["id"])
    check(RFC3339_UTC.match(o["created_at"]), "created_at %r" % o["created_at"])
    if uid is not None:
        eq(o["user_id"], uid, "user_id")
    if items is not None:
        eq(o["items"], canonical(items), "items")
    for k, v in price(o["items"]).items():
        eq(o[k], v, k)
    if o["status"] == "pending":
        eq(o["receipt"], None, "receipt of a pending order")
        eq(o["processed_at"], None, "processed_at of a pending order")
    else:
        eq(o["status"], "processed", "status")
        eq(o["receipt"], receipt(o["id"], o["user_id"], o["items"], o["total_cents"]), "receipt")
        check(RFC3339_UTC.match(o["processed_at"] or ""), "processed_at %r" % o["processed_at"])
        check(ts(o["processed_at"]) >= ts(o["created_at"]), "processed before created")


def create(ctx, uid, items, headers=None, status=201):
    r = ctx.req("POST", "/orders", {"user_id": uid, "items": items}, headers)
    if r.status != status:
        fail("POST /orders %r: expected %d, got %d %r" % (items[:3], status, r.status, r.body[:300]))
    return r


def same_order(a, b):
    """Equal except for what background processing may have changed meanwhile."""
    skip = ("status", "receipt", "processed_at")
    return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


def post_orders_raw(ctx, raw, headers=None):
    return ctx.req("POST", "/orders", raw, headers)


# ---------------------------------------------------------------- create

@test()
def create_order(ctx):
    uid = new_user(ctx)
    items = [line("A-1", 2, 1999)]
    t0 = time.time()
    r = create(ctx, uid, items)
    eq((r.header("Content-Type") or "").split(";")[0], "application/json", "Content-Type")
    o = r.json()
    check_order(o, uid, items)
    eq(o["status"], "pending", "status of a new order")
    eq(o["receipt"], None, "receipt")
    eq(o["processed_at"], None, "processed_at")
    eq((o["subtotal_cents"], o["discount_cents"], o["tax_cents"], o["total_cents"]),
       (3998, 0, 840, 4838), "contract example totals")
    eq(r.header("Location"), "/orders/%d" % o["id"], "Location")
    check(t0 - 5 <= ts(o["created_at"]) <= time.time() + 5, "created_at %s is not now" % o["created_at"])
    g = ctx.req("GET", "/orders/%d" % o["id"])
    eq(g.status, 200, "GET after create")
    check_order(g.json(), uid, items)
    check(same_order(g.json(), o), "GET differs from the created order: %r vs %r" % (g.json(), o))
    # the exact wire form of the contract (member order, no spaces)
    check(r.body.startswith(b'{"id":%d,"user_id":%d,"status":"pending","items":[{"sku":"A-1",'
                            b'"quantity":2,"unit_price_cents":1999}],"subtotal_cents":3998,'
                            b'"discount_cents":0,"tax_cents":840,"total_cents":4838,"receipt":null,'
                            b'"created_at":"' % (o["id"], uid)), "wire form: %r" % r.body)
    check(r.body.endswith(b'","processed_at":null}'), "wire form end: %r" % r.body)


@test()
def create_pricing_cases(ctx):
    uid = new_user(ctx)
    cases = [
        [line("a", 1, 9999)],                       # no discount
        [line("a", 1, 10000)],                      # discount threshold
        [line("a", 1, 10001)],
        [line("a", 3, 3333), line("b", 1, 1)],      # sums to 10000
        [line("a", 1, 50)],                         # tax 10.5 -> 11
        [line("a", 1, 69)],                         # tax 14.49 -> 14
        [line("a", 1, 31)],                         # tax 6.51 -> 7
        [line("a", 1, 10020)],                      # discount, then tax
        [line("free", 10000, 0), line("gift", 1, 0)],
        [line("x", 1, 0)],
        [line("max-%d" % i, 10000, 100000000) for i in range(100)],  # 1e14
        [line("%03d" % i + "y" * 61, i + 1, (i * 1000003) % 100000001) for i in range(100)],
        [line("!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\"", 7, 12345)],
    ]
    for items in cases:
        o = create(ctx, uid, items).json()
        check_order(o, uid, items)
        eq(o["status"], "pending", "status")
    big = create(ctx, uid, cases[10]).json()
    eq((big["subtotal_cents"], big["discount_cents"], big["tax_cents"], big["total_cents"]),
       (10 ** 14, 5 * 10 ** 12, 19950000000000, 114950000000000), "largest order")


@test()
def create_ignores_unknown_fields(ctx):
    uid = new_user(ctx)
    body = {"note": "x", "user_id": uid, "coupon": None,
            "items": [{"sku": "A", "quantity": 1, "unit_price_cents": 5, "colour": "red"}]}
    r = ctx.req("POST", "/orders", body)
    eq(r.status, 201, "unknown fields (%r)" % r.body[:200])
    eq(r.json()["items"], [line("A", 1, 5)], "items stored without unknown members")


@test()
def create_validation(ctx):
    uid = new_user(ctx)
    ok_items = [line()]
    e = expect_error
    e(ctx.req("POST", "/orders", [1]), 400, "body must be a json object")
    e(ctx.req("POST", "/orders", "3"), 400, "body must be a json object")
    # user_id
    e(ctx.req("POST", "/orders", {"items": ok_items}), 400, "user_id is required")
    e(ctx.req("POST", "/orders", {"user_id": None, "items": ok_items}), 400, "user_id is required")
    for bad in (0, -1, "1", 1.5, True, [], {}, 99999999999999999999):
        e(ctx.req("POST", "/orders", {"user_id": bad, "items": ok_items}), 400,
          "user_id must be a positive integer")
    e(post_orders_raw(ctx, '{"user_id":1.0,"items":[{"sku":"a","quantity":1,"unit_price_cents":1}]}'),
      400, "user_id must be a positive integer")
    e(post_orders_raw(ctx, '{"user_id":1e2,"items":[{"sku":"a","quantity":1,"unit_price_cents":1}]}'),
      400, "user_id must be a positive integer")
    # items
    e(ctx.req("POST", "/orders", {"user_id": uid}), 400, "items is required")
    e(ctx.req("POST", "/orders", {"user_id": uid, "items": None}), 400, "items is required")
    for bad in ({}, "x", 1, True):
        e(ctx.req("POST", "/orders", {"user_id": uid, "items": bad}), 400, "items must be an array")
    e(ctx.req("POST", "/orders", {"user_id": uid, "items": []}), 400, "items must have 1 to 100 lines")
    e(ctx.req("POST", "/orders", {"user_id": uid, "items": [line()] * 101}), 400,
      "items must have 1 to 100 lines")
    e(ctx.req("POST", "/orders", {"user_id": uid, "items": [line(), 5]}), 400,
      "items[1] must be an object")
    e(ctx.req("POST", "/orders", {"user_id": uid, "items": [line(), line(), None]}), 400,
      "items[2] must be an object")
    # sku
    sku_rule = "items[0].sku must be 1 to 64 printable ascii characters (no spaces)"
    cases = [
        ({"quantity": 1, "unit_price_cents": 1}, "items[0].sku is required"),
        ({"sku": None, "quantity": 1, "unit_price_cents": 1}, "items[0].sku is required"),
        ({"sku": 5, "quantity": 1, "unit_price_cents": 1}, "items[0].sku must be a string"),
        ({"sku": ["a"], "quantity": 1, "unit_price_cents": 1}, "items[0].sku must be a string"),
        ({"sku": "", "quantity": 1, "unit_price_cents": 1}, sku_rule),
        ({"sku": "k" * 65, "quantity": 1, "unit_price_cents": 1}, sku_rule),
        ({"sku": "a b", "quantity": 1, "unit_price_cents": 1}, sku_rule),
        ({"sku": " a", "quantity": 1, "unit_price_cents": 1}, sku_rule),
        ({"sku": "a\t", "quantity": 1, "unit_price_cents": 1}, sku_rule),
        ({"sku": "caf\u00e9", "quantity": 1, "unit_price_cents": 1}, sku_rule),
        ({"sku": "a\u0000", "quantity": 1, "unit_price_cents": 1}, sku_rule),
        ({"sku": "a\u007f", "quantity": 1, "unit_price_cents": 1}, sku_rule),
        # quantity
        ({"sku": "a", "unit_price_cents": 1}, "items[0].quantity is required"),
        ({"sku": "a", "quantity": None, "unit_price_cents": 1}, "items[0].quantity is required"),
        ({"sku": "a", "quantity": "1", "unit_price_cents": 1}, "items[0].quantity must be an integer"),
        ({"sku": "a", "quantity": 1.5, "unit_price_cents": 1}, "items[0].quantity must be an integer"),
        ({"sku": "a", "quantity": False, "unit_price_cents": 1}, "items[0].quantity must be an integer"),
        ({"sku": "a", "quantity": 0, "unit_price_cents": 1},
         "items[0].quantity must be an integer from 1 to 10000"),
        ({"sku": "a", "quantity": -3, "unit_price_cents": 1},
         "items[0].quantity must be an integer from 1 to 10000"),
        ({"sku": "a", "quantity": 10001, "unit_price_cents": 1},
         "items[0].quantity must be an integer from 1 to 10000"),
        ({"sku": "a", "quantity": 10 ** 30, "unit_price_cents": 1},
         "items[0].quantity must be an integer from 1 to 10000"),
        # unit_price_cents
        ({"sku": "a", "quantity": 1}, "items[0].unit_price_cents is required"),
        ({"sku": "a", "quantity": 1, "unit_price_cents": None}, "items[0].unit_price_cents is required"),
        ({"sku": "a", "quantity": 1, "unit_price_cents": "5"},
         "items[0].unit_price_cents must be an integer"),
        ({"sku": "a", "quantity": 1, "unit_price_cents": 0.5},
         "items[0].unit_price_cents must be an integer"),
        ({"sku": "a", "quantity": 1, "unit_price_cents": -1},
         "items[0].unit_price_cents must be an integer from 0 to 100000000"),
        ({"sku": "a", "quantity": 1, "unit_price_cents": 100000001},
         "items[0].unit_price_cents must be an integer from 0 to 100000000"),
    ]
    for it, msg in cases:
        e(ctx.req("POST", "/orders", {"user_id": uid, "items": [it]}), 400, msg)
    # the index names the bad line
    e(ctx.req("POST", "/orders", {"user_id": uid, "items": [line(), line(), line(), line("a", 0, 1)]}),
      400, "items[3].quantity must be an integer from 1 to 10000")
    e(post_orders_raw(ctx, '{"user_id":%d,"items":[{"sku":"a","quantity":1.0,"unit_price_cents":1}]}'
                      % uid), 400, "items[0].quantity must be an integer")
    # limits themselves are fine
    create(ctx, uid, [line("k" * 64, 10000, 100000000), line("!", 1, 0), line("~", 1, 0)])
    # JSON-level problems
    e(post_orders_raw(ctx, '{"user_id":%d,"user_id":%d,"items":[]}' % (uid, uid)), 400,
      prefix="duplicate key")
    e(post_orders_raw(ctx, '{"user_id":%d,"items":[{"sku":"a","sku":"b","quantity":1,'
                      '"unit_price_cents":1}]}' % uid), 400, prefix="duplicate key")
    e(post_orders_raw(ctx, '{"user_id":%d,' % uid), 400, prefix="invalid json")
    r = ctx.req("POST", "/orders", '{"user_id":%d,"items":[]}' % uid, content_type="text/plain")
    e(r, 415)
    # nothing was stored by any of these
    lst = ctx.req("GET", "/users/%d/orders" % uid).json()
    eq(len(lst["orders"]), 1, "only the one valid order stored")


@test()
def create_unknown_user(ctx):
    expect_error(ctx.req("POST", "/orders", {"user_id": 987654321, "items": [line()]}), 422,
                 "user not found")
    expect_error(ctx.req("POST", "/orders", {"user_id": 2 ** 63 - 1, "items": [line()]}), 422,
                 "user not found")
    # validation comes first: a bad line of an unknown user is a 400
    expect_error(ctx.req("POST", "/orders", {"user_id": 987654321, "items": []}), 400)


# ---------------------------------------------------------------- idempotency

@test()
def idempotency_replay(ctx):
    uid = new_user(ctx)
    key = uniq("key-")
    items = [line("A-1", 2, 1999), line("B", 1, 500)]
    first = create(ctx, uid, items, [("Idempotency-Key", key)]).json()
    check_order(first, uid, items)
    again = create(ctx, uid, items, [("Idempotency-Key", key)], status=200)
    check(same_order(again.json(), first), "replay differs: %r vs %r" % (again.json(), first))
    check_order(again.json(), uid, items)
    # the same request written differently: whitespace, member order, unknown members
    raw = ('{ "items" : [ {"unit_price_cents":1999, "quantity":2,"sku":"A-1", "x":1},\n'
           '  {"sku":"B","unit_price_cents":500,"quantity":1} ],\t"user_id": %d, "note":"hi" }' % uid)
    r = post_orders_raw(ctx, raw, [("Idempotency-Key", key)])
    eq(r.status, 200, "semantically equal body (%r)" % r.body[:200])
    eq(r.json()["id"], first["id"], "same order")
    # another request under the same key
    for body in ({"user_id": uid, "items": [line("A-1", 3, 1999), line("B", 1, 500)]},
                 {"user_id": uid, "items": [line("B", 1, 500), line("A-1", 2, 1999)]},  # line order
                 {"user_id": uid, "items": items[:1]}):
        expect_error(ctx.req("POST", "/orders", body, [("Idempotency-Key", key)]), 409,
                     "idempotency key reused with a different request")
    other = new_user(ctx)
    expect_error(ctx.req("POST", "/orders", {"user_id": other, "items": items},
                         [("Idempotency-Key", key)]), 409,
                 "idempotency key reused with a different request")
    # keys are case-sensitive and independent
    r = create(ctx, uid, items, [("Idempotency-Key", key.upper() + "X")])
    check(r.json()["id"] != first["id"], "another key made another order")
    # the header name is case-insensitive
    r = create(ctx, uid, items, [("idempotency-key", key)], status=200)
    eq(r.json()["id"], first["id"], "lower-case header name")
    # without a key, the same body makes a new order each time
    a = create(ctx, uid, items).json()
    b = create(ctx, uid, items).json()
    check(a["id"] != b["id"] and first["id"] not in (a["id"], b["id"]), "keyless creates are new orders")
    eq(len(ctx.req("GET", "/users/%d/orders" % uid).json()["orders"]), 4, "orders stored")


@test()
def idempotency_bad_keys(ctx):
    uid = new_user(ctx)
    body = {"user_id": uid, "items": [line()]}
    for key in ("", "k" * 129, "caf\u00e9"):
        r = ctx.req("POST", "/orders", body, [("Idempotency-Key", key)])
        expect_error(r, 400, "invalid idempotency-key")
    r = ctx.req("POST", "/orders", body, [("Idempotency-Key", "a"), ("Idempotency-Key", "a")])
    expect_error(r, 400, "invalid idempotency-key")
    # limits: 1 and 128 bytes, every printable character, inner spaces
    for key in ("k", "k" * 128, "".join(chr(c) for c in range(0x20, 0x7F)), "a b  c"):
        create(ctx, uid, [line()], [("Idempotency-Key", key)])
    # an unknown user under a key stores nothing: the key stays free
    key = uniq("free-")
    r = ctx.req("POST", "/orders", {"user_id": 987654321, "items": [line()]}, [("Idempotency-Key", key)])
    expect_error(r, 422, "user not found")
    create(ctx, uid, [line()], [("Idempotency-Key", key)])
    # a refused body stores nothing either
    key = uniq("bad-")
    r = ctx.req("POST", "/orders", {"user_id": uid, "items": []}, [("Idempotency-Key", key)])
    expect_error(r, 400)
    create(ctx, uid, [line()], [("Idempotency-Key", key)])


@test()
def idempotency_concurrent(ctx):
    uid = new_user(ctx)
    key = uniq("race-")
    results = []
    lock = threading.Lock()

    def go():
        r = ctx.req("POST", "/orders", {"user_id": uid, "items": [line("R", 1, 777)]},
                    [("Idempotency-Key", key)], timeout=20)
        with lock:
            results.append((r.status, r.json().get("id")))

    threads = [threading.Thread(target=go) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(s for s, _ in results)
    eq(statuses.count(201), 1, "exactly one 201 among %r" % statuses)
    eq(statuses.count(200), 11, "the rest replayed: %r" % statuses)
    eq(len(set(i for _, i in results)), 1, "one order id")
    eq(len(ctx.req("GET", "/users/%d/orders" % uid).json()["orders"]), 1, "one order stored")


# ---------------------------------------------------------------- get, list, delete

@test()
def user_order_count(ctx):
    uid = new_user(ctx)
    eq(ctx.req("GET", "/users/%d/orders/count" % uid).json(), {"count": 0}, "no orders yet")
    for _ in range(3):
        eq(ctx.req("POST", "/orders", {"user_id": uid, "items": [line()]}).status, 201, "create")
    eq(ctx.req("GET", "/users/%d/orders/count" % uid).json(), {"count": 3}, "three orders")
    expect_error(ctx.req("GET", "/users/987654321/orders/count"), 404, "user not found")
    expect_error(ctx.req("GET", "/users/01/orders/count"), 400, "invalid id")


@test()
def get_order_errors(ctx):
    expect_error(ctx.req("GET", "/orders/987654321"), 404, "order not found")
    expect_error(ctx.req("GET", "/orders/9223372036854775807"), 404, "order not found")
    for bad in ("0", "-1", "abc", "1.5", "99999999999999999999", "%31x", "01"):
        r = ctx.req("GET", "/orders/%s" % bad)
        expect_error(r, 400, "invalid id")
    r = ctx.req("DELETE", "/orders/1")
    eq(r.status, 405, "DELETE /orders/1")
    check("GET" in (r.header("Allow") or ""), "Allow %r" % r.header("Allow"))
    r = ctx.req("GET", "/orders")
    eq(r.status, 405, "GET /orders")


@test()
def list_orders(ctx):
    uid = new_user(ctx)
    other = new_user(ctx)
    lst = ctx.req("GET", "/users/%d/orders" % uid)
    eq(lst.status, 200, "empty list")
    eq(lst.json(), {"orders": [], "next_after": None}, "no orders yet")
    made = []
    for i in range(5):
        items = [line("L-%d" % i, i + 1, 1000 * (i + 1))]
        made.append(create(ctx, uid, items).json())
        create(ctx, other, items)  # interleaved orders of someone else
    j = ctx.req("GET", "/users/%d/orders" % uid).json()
    eq(sorted(j.keys()), ["next_after", "orders"], "list fields")
    eq([o["id"] for o in j["orders"]], [o["id"] for o in made], "all of the user's orders, ascending")
    eq(j["next_after"], None, "no next page")
    for o, m in zip(j["orders"], made):
        check_order(o, uid)
        check(same_order(o, m), "listed order differs")
    # walk in pages of 2
    seen, after, pages = [], 0, 0
    while True:
        r = ctx.req("GET", "/users/%d/orders?limit=2&after=%d" % (uid, after))
        eq(r.status, 200, "page")
        page = r.json()
        seen += [o["id"] for o in page["orders"]]
        pages += 1
        check(len(page["orders"]) <= 2, "page larger than limit")
        if page["next_after"] is None:
            break
        eq(page["next_after"], page["orders"][-1]["id"], "next_after is the last id")
        after = page["next_after"]
        check(pages < 10, "pagination does not end")
    eq(seen, [o["id"] for o in made], "pages cover every order once")
    eq(pages, 3, "5 orders in pages of 2")
    r = ctx.req("GET", "/users/%d/orders?limit=5" % uid).json()
    eq((len(r["orders"]), r["next_after"]), (5, None), "exactly limit orders: no next page")
    r = ctx.req("GET", "/users/%d/orders?limit=4" % uid).json()
    eq(r["next_after"], made[3]["id"], "limit 4: next page")
    r = ctx.req("GET", "/users/%d/orders?after=%d" % (uid, made[-1]["id"])).json()
    eq(r, {"orders": [], "next_after": None}, "after the last")
    # errors
    expect_error(ctx.req("GET", "/users/987654321/orders"), 404, "user not found")
    expect_error(ctx.req("GET", "/users/0/orders"), 400, "invalid id")
    expect_error(ctx.req("GET", "/users/x/orders"), 400, "invalid id")
    for q in ("limit=0", "limit=1001", "limit=x", "limit=-1"):
        expect_error(ctx.req("GET", "/users/%d/orders?%s" % (uid, q)), 400,
                     "limit must be an integer from 1 to 1000")
    expect_error(ctx.req("GET", "/users/%d/orders?limit=1&limit=2" % uid), 400,
                 "limit given more than once")
    expect_error(ctx.req("GET", "/users/%d/orders?after=-5" % uid), 400,
                 "after must be a non-negative integer")
    eq(ctx.req("GET", "/users/%d/orders?limit=1000&x=y" % uid).status, 200, "unknown parameter ignored")


@test()
def delete_user_with_orders(ctx):
    uid = new_user(ctx)
    create(ctx, uid, [line()])
    expect_error(ctx.req("DELETE", "/users/%d" % uid), 409, "user has orders")
    eq(ctx.req("GET", "/users/%d" % uid).status, 200, "user still there")
    lonely = new_user(ctx)
    eq(ctx.req("DELETE", "/users/%d" % lonely).status, 204, "user without orders deleted")
    expect_error(ctx.req("GET", "/users/%d/orders" % lonely), 404, "user not found")
    expect_error(ctx.req("POST", "/orders", {"user_id": lonely, "items": [line()]}), 422,
                 "user not found")


# ---------------------------------------------------------------- POST /orders/process

def process(ctx, orders, timeout=60):
    body = json.dumps({"orders": orders}, separators=(",", ":"))
    return ctx.req("POST", "/orders/process", body, timeout=timeout)


def check_results(r, orders):
    eq(r.status, 200, "process (%r)" % r.body[:300])
    j = r.json()
    eq(list(j.keys()), ["results"], "response fields")
    res = j["results"]
    eq(len(res), len(orders), "one result per order")
    for o, got in zip(orders, res):
        want = price(o["items"])
        want = {"id": o["id"], "subtotal_cents": want["subtotal_cents"],
                "discount_cents": want["discount_cents"], "tax_cents": want["tax_cents"],
                "total_cents": want["total_cents"],
                "receipt": receipt(o["id"], o["user_id"], o["items"], want["total_cents"])}
        if got != want:
            fail("result for %r: expected %r, got %r" % (o["id"], want, got))
        eq(list(got.keys()), ["id", "subtotal_cents", "discount_cents", "tax_cents", "total_cents",
                              "receipt"], "result member order")


def batch(n, seed=0):
    out = []
    for i in range(n):
        k = 1 + (i * 7 + seed) % 5
        items = [line("S-%d-%d" % (i % 13, j), 1 + (i + j) % 10000, (i * 7919 + j * 104729) % 100000001)
                 for j in range(k)]
        out.append({"id": "o-%d" % i, "user_id": 1 + (i * 31 + seed) % 1000000, "items": items})
    return out


@test()
def process_one(ctx):
    orders = [{"id": "o-1", "user_id": 42, "items": [line("A-1", 2, 1999)]}]
    r = process(ctx, orders)
    check_results(r, orders)
    eq(r.json()["results"][0]["receipt"],
       hmac.new(KEY, b"o-1|42|A-1:2:1999|4838", hashlib.sha256).hexdigest(), "receipt of the example")
    # user ids need not exist: nothing touches the database
    orders = [{"id": "x", "user_id": 2 ** 63 - 1, "items": [line("k" * 64, 10000, 100000000)] * 100}]
    check_results(process(ctx, orders), orders)


@test()
def process_many(ctx):
    for n in (2, 255, 256, 257, 1000):
        orders = batch(n, seed=n)
        check_results(process(ctx, orders), orders)
    # ids are echoed as sent, duplicates included, order preserved
    orders = [{"id": i, "user_id": 7, "items": [line()]} for i in ("b", "a", "b", "~!\"\\", "z" * 64)]
    check_results(process(ctx, orders), orders)
    # any printable ASCII, space included (inside, leading, trailing, alone)
    orders = [{"id": i, "user_id": 7, "items": [line()]}
              for i in ("A 1", " ", " lead", "trail ", "".join(map(chr, range(0x20, 0x5f))))]
    r = process(ctx, orders)
    check_results(r, orders)
    eq(r.json()["results"][0]["id"], "A 1", "id with a space echoed")
    # unknown fields ignored
    orders = [{"id": "u", "user_id": 3, "items": [line()], "extra": [1, 2]}]
    r = ctx.req("POST", "/orders/process", {"orders": orders, "meta": {"a": 1}})
    check_results(r, orders)


@test()
def process_validation(ctx):
    e = expect_error
    good = {"id": "o", "user_id": 1, "items": [line()]}
    e(ctx.req("POST", "/orders/process", {"orders": []}), 400, "orders must have 1 to 100000 entries")
    e(ctx.req("POST", "/orders/process", {}), 400, "orders is required")
    e(ctx.req("POST", "/orders/process", {"orders": None}), 400, "orders is required")
    e(ctx.req("POST", "/orders/process", {"orders": {}}), 400, "orders must be an array")
    e(ctx.req("POST", "/orders/process", [good]), 400, "body must be a json object")
    e(ctx.req("POST", "/orders/process", {"orders": [good, 1]}), 400, "orders[1] must be an object")
    id_rule = "orders[2].id must be 1 to 64 printable ascii characters"
    cases = [
        ({"user_id": 1, "items": [line()]}, "orders[2].id is required"),
        ({"id": None, "user_id": 1, "items": [line()]}, "orders[2].id is required"),
        ({"id": 5, "user_id": 1, "items": [line()]}, "orders[2].id must be a string"),
        ({"id": "", "user_id": 1, "items": [line()]}, id_rule),
        ({"id": "i" * 65, "user_id": 1, "items": [line()]}, id_rule),
        ({"id": "a\tb", "user_id": 1, "items": [line()]}, id_rule),
        ({"id": "a\u007fb", "user_id": 1, "items": [line()]}, id_rule),
        ({"id": "\u00e9", "user_id": 1, "items": [line()]}, id_rule),
        ({"id": "o", "items": [line()]}, "orders[2].user_id is required"),
        ({"id": "o", "user_id": 0, "items": [line()]}, "orders[2].user_id must be a positive integer"),
        ({"id": "o", "user_id": "1", "items": [line()]}, "orders[2].user_id must be a positive integer"),
        ({"id": "o", "user_id": 1}, "orders[2].items is required"),
        ({"id": "o", "user_id": 1, "items": []}, "orders[2].items must have 1 to 100 lines"),
        ({"id": "o", "user_id": 1, "items": [line()] * 101}, "orders[2].items must have 1 to 100 lines"),
        ({"id": "o", "user_id": 1, "items": [line(), line("a", 0, 1)]},
         "orders[2].items[1].quantity must be an integer from 1 to 10000"),
        ({"id": "o", "user_id": 1, "items": [line("", 1, 1)]},
         "orders[2].items[0].sku must be 1 to 64 printable ascii characters (no spaces)"),
        ({"id": "o", "user_id": 1, "items": [line("a", 1, -1)]},
         "orders[2].items[0].unit_price_cents must be an integer from 0 to 100000000"),
    ]
    for bad, msg in cases:
        e(ctx.req("POST", "/orders/process", {"orders": [good, good, bad, good]}), 400, msg)
    # the first bad order is named, even far into a big batch
    orders = batch(5000)
    orders[4321]["id"] = "x" * 65
    orders[4999]["user_id"] = -1
    e(process(ctx, orders), 400, "orders[4321].id must be 1 to 64 printable ascii characters")
    # more than 100000 orders
    body = '{"orders":[' + ",".join(['{"id":"o","user_id":1,"items":[{"sku":"a","quantity":1,'
                                     '"unit_price_cents":1}]}'] * 100001) + "]}"
    e(ctx.req("POST", "/orders/process", body, timeout=60), 400, "orders must have 1 to 100000 entries")
    r = ctx.req("GET", "/orders/process")
    check(r.status in (400, 405), "GET /orders/process: %d" % r.status)


@test()
def process_body_shapes(ctx):
    """POST /orders/process reads the orders array one order at a time and leaves
    anything unusual to the whole-document reader: the answers must not depend on
    which of the two read the body."""
    e = expect_error
    o1 = {"id": "a\"b\\c", "user_id": 5, "items": [line("x{y]z", 2, 300), line("Q", 1, 1)]}
    o2 = {"id": "}{][", "user_id": 6, "items": [line("[", 1, 99)], "note": {"deep": [[[{"a": "]"}]]]}}
    orders = [o1, o2]
    # escapes and brackets inside strings, unknown members, whitespace everywhere
    body = json.dumps({"before": [1, {"x": "]}"}], "orders": orders, "after": None}, indent=1)
    check_results(ctx.req("POST", "/orders/process", body), orders)
    # strings the reader decodes (\u0041), in an id and a sku
    raw = ('{"orders":[{"id":"\\u0069d","user_id":1,"items":[{"sku":"\\u0041-1",'
           '"quantity":1,"unit_price_cents":100}]}]}')
    check_results(ctx.req("POST", "/orders/process", raw),
                  [{"id": "id", "user_id": 1, "items": [line("A-1", 1, 100)]}])
    good = json.dumps({"id": "o", "user_id": 1, "items": [line()]})
    # a member name written with an escape is "orders" all the same
    check_results(ctx.req("POST", "/orders/process", '{"\\u006frders":[%s]}' % good),
                  [{"id": "o", "user_id": 1, "items": [line()]}])
    e(ctx.req("POST", "/orders/process", '{"orders":[%s],"\\u006frders":[]}' % good), 400,
      'duplicate key "orders"')
    e(ctx.req("POST", "/orders/process", '{"orders":[%s],"orders":[%s]}' % (good, good)), 400,
      'duplicate key "orders"')
    # a syntax error anywhere is the answer, also after valid orders or a bad one
    e(ctx.req("POST", "/orders/process", '{"orders":[%s],"x":tru}' % good), 400,
      "invalid json at offset %d: invalid literal" % len('{"orders":[%s],"x":' % good))
    bad = json.dumps({"id": "o", "user_id": 0, "items": [line()]})
    text = '{"orders":[%s,%s] ' % (good, bad)
    e(ctx.req("POST", "/orders/process", text), 400,
      "invalid json at offset %d: unexpected end of input" % len(text))
    e(ctx.req("POST", "/orders/process", '{"orders":[%s,%s]}' % (good, bad)), 400,
      "orders[1].user_id must be a positive integer")

    # nesting: at most 64 levels, counted from the document's root
    def nested(k):
        return "[" * k + "]" * k

    for k, ok in ((61, True), (62, False)):  # the root, orders, an order, then k arrays
        order = ('{"id":"o","user_id":1,"items":[{"sku":"a","quantity":1,"unit_price_cents":1}],'
                 '"x":%s}' % nested(k))
        r = ctx.req("POST", "/orders/process", '{"orders":[%s]}' % order)
        if ok:
            eq(r.status, 200, "an order nesting %d arrays (%r)" % (k, r.body[:200]))
        else:
            e(r, 400, "nesting deeper than 64 levels")
    for k, ok in ((63, True), (64, False)):  # the root, then k arrays beside the orders
        r = ctx.req("POST", "/orders/process", '{"x":%s,"orders":[%s]}' % (nested(k), good))
        if ok:
            eq(r.status, 200, "a member nesting %d arrays (%r)" % (k, r.body[:200]))
        else:
            e(r, 400, "nesting deeper than 64 levels")
    # many top-level members
    many = {"m%d" % i: i for i in range(40)}
    many["orders"] = [{"id": "o", "user_id": 1, "items": [line()]}]
    check_results(ctx.req("POST", "/orders/process", many), many["orders"])


# ---------------------------------------------------------------- background processing

@test()
def background_processing(ctx):
    uid = new_user(ctx)
    made = [create(ctx, uid, items).json() for items in (
        [line("A-1", 2, 1999)],
        [line("B", 3, 5000), line("C", 1, 1)],
        [line("%02d" % i, 10000, 100000000) for i in range(100)],
    )]
    deadline = time.time() + 10
    pending = {o["id"]: o for o in made}
    last = None
    while pending and time.time() < deadline:
        for oid in list(pending):
            r = ctx.req("GET", "/orders/%d" % oid)
            eq(r.status, 200, "GET order")
            last = r.json()
            if last["status"] == "processed":
                check_order(last, uid)
                check(same_order(last, pending[oid]), "processing changed more than status/receipt")
                eq(last["receipt"], receipt(oid, uid, last["items"], last["total_cents"]),
                   "receipt over '{id}|{user_id}|...|{total}'")
                check(HEX64.match(last["receipt"]), "receipt is lowercase hex")
                del pending[oid]
        if pending:
            time.sleep(0.2)
    if pending:
        fail("orders %r still pending after 10 s (last seen %r)" % (sorted(pending), last))
    # listing shows them processed too
    for o in ctx.req("GET", "/users/%d/orders" % uid).json()["orders"]:
        eq(o["status"], "processed", "listed status")
        check_order(o, uid)
