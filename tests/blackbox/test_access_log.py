"""The access log carries what a log pipeline needs (issue 13, item 6): the
client address (behind BRISK_TRUSTED_PROXIES the first untrusted address of
X-Forwarded-For), the protocol and the request bytes; the unmatched route is
named as in /metrics."""

import json
import time

from harness import Conn, build_request, check, eq, fail, test, uniq


def _entries(srv, rid, timeout=3.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = []
        for ln in srv.stderr().splitlines():
            if rid in ln and ln.startswith("{"):
                e = json.loads(ln)
                if e.get("msg") == "access":
                    found.append(e)
        if found:
            return found
        time.sleep(0.05)
    fail("no access line for %s" % rid)


def _send(srv, raw):
    with Conn(srv.port, timeout=5) as c:
        c.send(raw)
        return c.read_response()


@test(server=None)
def access_log_client_proto_bytes(ctx):
    env = {"BRISK_LOG_FORMAT": "json", "BRISK_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"}
    srv = ctx.new_server(env=env, name="access").start()
    try:
        cases = [
            # (X-Forwarded-For fields, client logged)
            ([], "127.0.0.1"),
            (["203.0.113.7"], "203.0.113.7"),
            (["198.51.100.1, 203.0.113.7, 10.1.2.3"], "203.0.113.7"),  # 10/8 is a trusted hop
            (["6.6.6.6, 198.51.100.9", "10.0.0.5"], "198.51.100.9"),  # two fields, one list
            (["10.0.0.1, 10.0.0.2"], "10.0.0.1"),  # every hop trusted: the leftmost
            (["not-an-address, 10.0.0.9"], "10.0.0.9"),  # forged junk: the last good hop
        ]
        for i, (xff, want) in enumerate(cases):
            rid = uniq("acc%d-" % i)
            hdrs = [("X-Request-Id", rid)] + [("X-Forwarded-For", v) for v in xff]
            raw = build_request("GET", "/health", headers=hdrs)
            eq(_send(srv, raw).status, 200, "/health")
            e = _entries(srv, rid)[0]
            eq(e.get("client"), want, "client for X-Forwarded-For %r" % xff)
            eq(e.get("proto"), "HTTP/1.1", "proto")
            eq(e.get("bytes_in"), len(raw), "bytes_in")
            check(isinstance(e.get("loop"), int), "access line without the loop's number: %r" % e)
        rid = uniq("acc10-")
        body = json.dumps({"name": "Log", "email": "%s@example.com" % rid}).encode()
        raw = build_request("POST", "/users", body, [("X-Request-Id", rid)], version="HTTP/1.0")
        eq(_send(srv, raw).status, 201, "POST /users over HTTP/1.0")
        e = _entries(srv, rid)[0]
        eq((e.get("proto"), e.get("bytes_in"), e.get("route")), ("HTTP/1.0", len(raw), "/users"),
           "HTTP/1.0 POST")
        rid = uniq("acc11-")
        eq(_send(srv, build_request("GET", "/nowhere", headers=[("X-Request-Id", rid)])).status,
           404, "unmatched path")
        eq(_entries(srv, rid)[0].get("route"), "unmatched", "route of an unmatched path")
    finally:
        why = srv.stop()
        if why:
            fail(why)


@test(server=None)
def forwarded_for_ignored_without_trusted_proxies(ctx):
    srv = ctx.new_server(env={"BRISK_LOG_FORMAT": "json"}, name="access2").start()
    try:
        rid = uniq("acc-untrusted-")
        raw = build_request("GET", "/health", headers=[("X-Request-Id", rid),
                                                       ("X-Forwarded-For", "203.0.113.7")])
        eq(_send(srv, raw).status, 200, "/health")
        eq(_entries(srv, rid)[0].get("client"), "127.0.0.1", "a client's own X-Forwarded-For")
    finally:
        why = srv.stop()
        if why:
            fail(why)
