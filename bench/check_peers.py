#!/usr/bin/env python3
"""Prove that every server of the benchmark gives the same answers on the
benchmark subset of the contract (shared/spec/API.md):

  GET /health           200, text/plain, body "ok"
  POST /users           201, Location: /users/{id}, body exactly {id,name,email,created_at}
                        with the sent name/email, created_at RFC 3339 UTC seconds;
                        GET /users/{id} returns the same object; the same email in
                        another case is 409 {"error":"email already exists"}
  GET /users/{id}       unknown id 404 {"error":"user not found"}; "0" and "abc" 400
                        {"error":"invalid id"}
  POST /users invalid   missing name, bad email: 400 {"error": <string>}
  POST /orders/process  the same batch gives the same results on every server, equal
                        to the reference pricing of bench/gen_orders.py (receipts too);
                        an invalid line is 400 {"error": <string>}

  check_peers.py [--receipt-key K] NAME=http://127.0.0.1:PORT ...

Prints one line per check and server, then "N passed, N failed"; exit 1 on failure.
"""
import http.client
import json
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_orders  # noqa: E402

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Client:
    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)

    def req(self, method, path, body=None):
        headers = {}
        if body is not None:
            body = json.dumps(body).encode() if not isinstance(body, bytes) else body
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def main():
    args = sys.argv[1:]
    key = "dev-receipt-key"
    if args[:1] == ["--receipt-key"]:
        key, args = args[1], args[2:]
    servers = [a.split("=", 1) for a in args]
    passed = failed = 0
    tag = "%d" % (time.time() * 1000)
    batch = gen_orders.batch(1000)
    expected = [gen_orders.price(o, key.encode()) for o in batch["orders"]]

    def check(name, what, ok, detail=""):
        nonlocal passed, failed
        if ok:
            passed += 1
            print("  ok    %-12s %s" % (name, what))
        else:
            failed += 1
            print("  FAIL  %-12s %s %s" % (name, what, detail))

    def is_error(data):
        try:
            v = json.loads(data)
            return isinstance(v, dict) and list(v) == ["error"] and isinstance(v["error"], str)
        except ValueError:
            return False

    for name, base in servers:
        c = Client(base)
        st, h, body = c.req("GET", "/health")
        check(name, "GET /health 200 text/plain ok",
              st == 200 and body == b"ok" and h.get("content-type", "").startswith("text/plain"),
              "%s %r %r" % (st, h.get("content-type"), body[:80]))

        email = "check-%s-%s@example.com" % (name, tag)
        st, h, body = c.req("POST", "/users", {"name": "Ada Lovelace", "email": email})
        user = json.loads(body) if st == 201 else {}
        shape = (isinstance(user, dict) and list(user) == ["id", "name", "email", "created_at"]
                 and isinstance(user.get("id"), int) and user["id"] > 0
                 and user["name"] == "Ada Lovelace" and user["email"] == email
                 and RFC3339.match(user["created_at"]) is not None)
        check(name, "POST /users 201 + user shape", st == 201 and shape, "%s %r" % (st, body[:200]))
        check(name, "POST /users Location",
              user and h.get("location") == "/users/%d" % user["id"], repr(h.get("location")))
        check(name, "POST /users application/json",
              h.get("content-type", "").startswith("application/json"), repr(h.get("content-type")))
        if user:
            st, h, body = c.req("GET", "/users/%d" % user["id"])
            check(name, "GET /users/{id} same user", st == 200 and json.loads(body) == user,
                  "%s %r" % (st, body[:200]))
        st, h, body = c.req("POST", "/users", {"name": "Ada", "email": email.upper()})
        check(name, "POST /users duplicate email (other case) 409",
              st == 409 and json.loads(body) == {"error": "email already exists"}, "%s %r" % (st, body))
        st, h, body = c.req("GET", "/users/9000000000000000000")
        check(name, "GET /users/{unknown} 404",
              st == 404 and json.loads(body) == {"error": "user not found"}, "%s %r" % (st, body))
        for bad in ("0", "abc", "-1"):
            st, h, body = c.req("GET", "/users/" + bad)
            check(name, "GET /users/%s 400 invalid id" % bad,
                  st == 400 and json.loads(body) == {"error": "invalid id"}, "%s %r" % (st, body))
        st, h, body = c.req("POST", "/users", {"email": "x" + email})
        check(name, "POST /users without name 400", st == 400 and is_error(body), "%s %r" % (st, body))
        st, h, body = c.req("POST", "/users", {"name": "Ada", "email": "no-at-sign"})
        check(name, "POST /users bad email 400", st == 400 and is_error(body), "%s %r" % (st, body))

        st, h, body = c.req("POST", "/orders/process", batch)
        got = json.loads(body).get("results") if st == 200 else None
        check(name, "POST /orders/process 1000 orders == reference (receipts too)",
              got == expected,
              "%s %r" % (st, body[:200]) if got is None else
              "first difference at %d: %r vs %r" % (
                  next(i for i in range(min(len(got), len(expected))) if got[i] != expected[i])
                  if any(g != e for g, e in zip(got, expected)) else min(len(got), len(expected)),
                  got[:1], expected[:1]))
        bad_batch = {"orders": [{"id": "o-1", "user_id": 1,
                                 "items": [{"sku": "A", "quantity": 0, "unit_price_cents": 1}]}]}
        st, h, body = c.req("POST", "/orders/process", bad_batch)
        check(name, "POST /orders/process quantity 0 400", st == 400 and is_error(body),
              "%s %r" % (st, body))

    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
