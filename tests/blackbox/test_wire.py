"""Wire rules: keep-alive, pipelining, HTTP/1.0, HEAD, common headers,
X-Request-Id, 404/405/OPTIONS, percent-encoding, Expect, chunked bodies."""

import email.utils
import json
import re
import socket
import time

from harness import (IMF_FIXDATE_RE, Conn, build_request, check, common_checks, eq, expect_error,
                     fail, request, test, uniq)


def create_user(ctx, name="Wire User", email=None, headers=None):
    email = email or "%s@example.com" % uniq("w")
    r = ctx.req("POST", "/users", {"name": name, "email": email}, headers)
    eq(r.status, 201, "create user status (body %r)" % r.body[:200])
    return r.json()


def read_ok(c, method="GET", timeout=5.0):
    try:
        r = c.read_response(method=method, timeout=timeout)
    except socket.timeout:
        fail("no response within %.1f s" % timeout)
    except EOFError:
        fail("connection closed without a response")
    common_checks(r, method)
    return r


def assert_eof(c, what, timeout=3.0):
    rest, state = c.read_rest(timeout)
    check(rest == b"", "%s: unexpected bytes after the response: %r" % (what, rest[:300]))
    check(state == "eof", "%s: connection not closed within %.1f s" % (what, timeout))


@test()
def keepalive_many_requests(ctx):
    with ctx.conn() as c:
        for i in range(100):
            c.send(build_request("GET", "/health", headers=[("X-Request-Id", "ka-%d" % i)]))
            r = read_ok(c)
            eq(r.status, 200, "request %d status" % i)
            eq(r.body, b"ok", "request %d body" % i)
            eq(r.header("X-Request-Id"), "ka-%d" % i, "request %d X-Request-Id" % i)
            check(not r.has_close(), "request %d: keep-alive connection got Connection: close" % i)


@test()
def pipelining_50_mixed_in_order(ctx):
    u = create_user(ctx)
    reqs = []
    expect = []
    for i in range(50):
        rid = "pipe-%03d" % i
        kind = i % 5
        if kind == 0:
            reqs.append(build_request("GET", "/health", headers=[("X-Request-Id", rid)]))
            expect.append(("GET", 200, rid))
        elif kind == 1:
            body = {"name": "Pipe %d" % i, "email": "pipe%d-%s@example.com" % (i, uniq())}
            reqs.append(build_request("POST", "/users", body, [("X-Request-Id", rid)]))
            expect.append(("POST", 201, rid))
        elif kind == 2:
            reqs.append(build_request("GET", "/users/%d" % u["id"], headers=[("X-Request-Id", rid)]))
            expect.append(("GET", 200, rid))
        elif kind == 3:
            reqs.append(build_request("HEAD", "/users/%d" % u["id"], headers=[("X-Request-Id", rid)]))
            expect.append(("HEAD", 200, rid))
        else:
            reqs.append(build_request("POST", "/users", '{"name":""}', [("X-Request-Id", rid)]))
            expect.append(("POST", 400, rid))
    with ctx.conn(timeout=15) as c:
        c.send(b"".join(reqs))
        for i, (method, status, rid) in enumerate(expect):
            r = read_ok(c, method, timeout=15)
            eq(r.header("X-Request-Id"), rid, "response %d X-Request-Id (order)" % i)
            eq(r.status, status, "response %d (%s) status" % (i, method))
            if method == "POST" and status == 201:
                eq(r.json()["name"], "Pipe %d" % i, "response %d created name" % i)
            if method == "HEAD":
                eq(r.body, b"", "HEAD response body")
        check(c.quiet_for(0.3), "extra bytes after 50 pipelined responses: %r" % c.buf[:200])


@test()
def pipelined_get_with_body_does_not_leak(ctx):
    inner = b"GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-Id: leaked\r\n\r\n"
    first = (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: first\r\nContent-Length: %d\r\n\r\n"
             % len(inner)) + inner
    second = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: second\r\n\r\n"
    with ctx.conn() as c:
        c.send(first + second)
        r = read_ok(c)
        eq(r.header("X-Request-Id"), "first", "first response id")
        eq(r.status, 200, "first status")
        if r.has_close():
            assert_eof(c, "after Connection: close")
            return
        r2 = read_ok(c)
        eq(r2.header("X-Request-Id"), "second", "second response id (body bytes leaked as a request?)")
        eq(r2.status, 200, "second status")


@test()
def http10_closes_by_default(ctx):
    with ctx.conn() as c:
        c.send(b"GET /health HTTP/1.0\r\n\r\n")
        r = read_ok(c)
        eq(r.status, 200, "status")
        eq(r.body, b"ok", "body")
        check(r.header("Connection") is None or r.has_close(),
              "HTTP/1.0 response without keep-alive says Connection: %r" % r.header("Connection"))
        assert_eof(c, "HTTP/1.0 without keep-alive")


@test()
def http10_keepalive_when_asked(ctx):
    with ctx.conn() as c:
        c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = read_ok(c)
        eq(r.status, 200, "status")
        eq((r.header("Connection") or "").lower(), "keep-alive", "Connection header")
        c.send(b"GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\nX-Request-Id: again\r\n\r\n")
        r = read_ok(c)
        eq(r.header("X-Request-Id"), "again", "second response on the kept-alive 1.0 connection")
        eq((r.header("Connection") or "").lower(), "keep-alive", "Connection header (2)")
        c.send(b"GET /health HTTP/1.0\r\n\r\n")
        r = read_ok(c)
        eq(r.status, 200, "third status")
        assert_eof(c, "HTTP/1.0 request without keep-alive")


@test()
def http11_connection_close(ctx):
    with ctx.conn() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
               b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        r = read_ok(c)
        eq(r.status, 200, "status")
        check(r.has_close(), "response to Connection: close lacks Connection: close")
        assert_eof(c, "after Connection: close")


@test()
def head_same_headers_no_body(ctx):
    u = create_user(ctx)
    for path in ("/health", "/users/%d" % u["id"], "/ready", "/users?limit=3"):
        with ctx.conn() as c:
            c.send(build_request("GET", path))
            g = read_ok(c, "GET")
            c.send(build_request("HEAD", path))
            h = read_ok(c, "HEAD")
            eq(h.status, g.status, "HEAD %s status" % path)
            eq(h.header("Content-Length"), g.header("Content-Length"), "HEAD %s Content-Length" % path)
            eq(h.header("Content-Type"), g.header("Content-Type"), "HEAD %s Content-Type" % path)
            check(c.quiet_for(0.2), "HEAD %s: body bytes were sent: %r" % (path, c.buf[:100]))
            c.send(build_request("GET", "/health", headers=[("X-Request-Id", "after-head")]))
            r = read_ok(c)
            eq(r.header("X-Request-Id"), "after-head", "request after HEAD")
    r = ctx.req("HEAD", "/nope")
    eq(r.status, 404, "HEAD unknown path")
    eq(r.body, b"", "HEAD 404 body")


@test()
def date_and_server_headers(ctx):
    for method, path, body in (("GET", "/health", None), ("GET", "/nope", None),
                               ("POST", "/users", "{"), ("OPTIONS", "/users", None)):
        r = ctx.req(method, path, body)
        d = r.header("Date")
        check(d and IMF_FIXDATE_RE.match(d), "%s %s: Date %r" % (method, path, d))
        ts = email.utils.parsedate_to_datetime(d).timestamp()
        check(abs(ts - time.time()) < 10, "Date %r is not now" % d)
        eq(r.header("Server"), "brisk", "Server header")


@test()
def request_id_echo_and_generation(ctx):
    r = ctx.req("GET", "/health", headers=[("X-Request-Id", "abc-123_XYZ.7")])
    eq(r.header("X-Request-Id"), "abc-123_XYZ.7", "echoed id")
    printable = "".join(chr(c) for c in range(0x21, 0x7F))
    for rid in (printable, "A" * 128, "a b c", "x"):
        r = ctx.req("GET", "/health", headers=[("X-Request-Id", rid)])
        eq(r.header("X-Request-Id"), rid, "echoed id (len %d)" % len(rid))
    ids = set()
    for _ in range(5):
        r = ctx.req("GET", "/health")
        rid = r.header("X-Request-Id")
        check(rid, "no generated X-Request-Id")
        check(re.fullmatch(r"[0-9a-f]{8}-(0|[1-9a-f][0-9a-f]*)-[1-9a-f][0-9a-f]*", rid),
              "generated id %r is not <prefix>-<loop>-<seq> in hex" % rid)
        ids.add(rid)
    eq(len(ids), 5, "distinct generated ids")
    long_id = "B" * 129
    r = ctx.req("GET", "/health", headers=[("X-Request-Id", long_id)])
    eq(r.status, 200, "status with 129-char id")
    rid = r.header("X-Request-Id")
    check(rid and rid != long_id and rid not in ids and len(rid) <= 128,
          "129-char id was not replaced by a generated one: %r" % rid)
    # obs-text (non-ASCII) is allowed in a field value but is not printable ASCII
    raw = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: caf\xc3\xa9\r\n\r\n"
    with ctx.conn() as c:
        c.send(raw)
        r = read_ok(c)
        rid = r.header("X-Request-Id")
        check(r.status in (200, 400), "status %d for non-ASCII id" % r.status)
        # replaced by a generated id (whose hex prefix may well contain "caf")
        check(rid and re.fullmatch(r"[0-9a-f]{8}-(0|[1-9a-f][0-9a-f]*)-[1-9a-f][0-9a-f]*", rid),
              "non-ASCII X-Request-Id not replaced by a generated one: %r" % rid)


@test()
def not_found(ctx):
    for path in ("/nope", "/health/x", "/userss", "/users/1/nope/x", "/"):
        r = ctx.req("GET", path)
        expect_error(r, 404, "not found")


@test()
def method_not_allowed_with_allow(ctx):
    def allow_set(r):
        return {m.strip() for m in (r.header("Allow") or "").split(",") if m.strip()}

    cases = [
        ("POST", "/users/1", {"GET", "HEAD", "PATCH", "DELETE", "OPTIONS"}),
        ("PUT", "/users/1", {"GET", "HEAD", "PATCH", "DELETE", "OPTIONS"}),
        ("DELETE", "/users", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("POST", "/health", {"GET", "HEAD", "OPTIONS"}),
        ("DELETE", "/metrics", {"GET", "HEAD", "OPTIONS"}),
    ]
    for method, path, allow in cases:
        r = ctx.req(method, path)
        expect_error(r, 405)
        eq(allow_set(r), allow, "%s %s Allow" % (method, path))
    r = ctx.req("POST", "/users/1")
    eq(r.header("Allow"), "GET, HEAD, PATCH, DELETE, OPTIONS", "Allow for /users/{id} exactly")


@test()
def options_known_path(ctx):
    for path, allow in (("/users/1", "GET, HEAD, PATCH, DELETE, OPTIONS"),
                        ("/users", None), ("/health", None)):
        with ctx.conn() as c:
            c.send(build_request("OPTIONS", path) + build_request("GET", "/health", headers=[
                ("X-Request-Id", "after-options")]))
            r = read_ok(c, "OPTIONS")
            eq(r.status, 204, "OPTIONS %s status" % path)
            check(r.header("Allow"), "OPTIONS %s: no Allow" % path)
            if allow:
                eq(r.header("Allow"), allow, "OPTIONS %s Allow" % path)
            r2 = read_ok(c)
            eq(r2.header("X-Request-Id"), "after-options", "request after 204 (body framing)")
    expect_error(ctx.req("OPTIONS", "/nope"), 404, "not found")


@test()
def percent_encoded_path(ctx):
    u = create_user(ctx, name="Percent")
    enc = "".join("%%%02X" % ord(ch) for ch in str(u["id"]))
    r = ctx.req("GET", "/users/" + enc)
    eq(r.status, 200, "GET /users/%s" % enc)
    eq(r.json(), u, "user via percent-encoded id")
    enc_lower = "".join("%%%02x" % ord(ch) for ch in str(u["id"]))
    r = ctx.req("GET", "/users/" + enc_lower)
    eq(r.status, 200, "GET /users/%s" % enc_lower)


@test()
def query_string_on_health(ctx):
    r = ctx.req("GET", "/health?x=1&y")
    eq(r.status, 200, "GET /health?x=1")
    eq(r.body, b"ok", "body")


@test()
def expect_100_continue(ctx):
    body = json.dumps({"name": "Expect", "email": "%s@example.com" % uniq("e")}).encode()
    head = (b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    with ctx.conn() as c:
        c.send(head)
        try:
            r = c.read_response(timeout=5)
        except socket.timeout:
            fail("no 100 Continue before the body was sent")
        eq(r.status, 100, "interim status")
        eq(r.body, b"", "100 body")
        c.send(body)
        r = read_ok(c)
        eq(r.status, 201, "final status")
        eq(r.json()["name"], "Expect", "created name")
        # the connection stays usable
        c.send(build_request("GET", "/health", headers=[("X-Request-Id", "after-100")]))
        r = read_ok(c)
        eq(r.header("X-Request-Id"), "after-100", "request after 100-continue exchange")


@test()
def expect_100_not_sent_when_too_large(ctx):
    head = (b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 8388609\r\n\r\n")
    with ctx.conn() as c:
        c.send(head)
        r = read_ok(c)
        eq(r.status, 413, "status for CL over the 8 MiB default limit")
        check(r.has_close(), "413 without Connection: close")
        assert_eof(c, "after 413")


@test()
def expect_100_not_sent_on_404_or_405(ctx):
    for method, path, status in (("POST", "/nope", 404), ("PUT", "/users/1", 405)):
        head = (b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: 20\r\n\r\n" % (method.encode(), path.encode()))
        with ctx.conn() as c:
            c.send(head)
            r = read_ok(c)
            eq(r.status, status, "%s %s status (100 must not precede it)" % (method, path))
            check(r.has_close(), "%d refused before the body was read lacks Connection: close" % status)
            assert_eof(c, "after %d" % status)


@test()
def expect_unknown_417(ctx):
    with ctx.conn() as c:
        c.send(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Expect: something-else\r\nContent-Length: 2\r\n\r\n{}")
        r = read_ok(c)
        expect_error(r, 417)
        check(r.has_close(), "417 without Connection: close")
        assert_eof(c, "after 417")


@test()
def body_refused_before_read_closes(ctx):
    # a 404 with an unread body must close, and the body must not be parsed as a request
    inner = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: smuggled\r\n\r\n"
    raw = (b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(inner)) + inner
    with ctx.conn() as c:
        c.send(raw)
        r = read_ok(c)
        eq(r.status, 404, "status")
        if not r.has_close():
            # allowed only if the server read and discarded the body: then nothing else comes
            check(c.quiet_for(0.5), "body of refused request was answered as a request: %r" % c.buf[:200])
        else:
            assert_eof(c, "after 404 with body")


def chunked_post(c, chunks, trailers=b"", te=b"chunked", extra=b""):
    raw = (b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: " + te + b"\r\n" + extra + b"\r\n")
    for ch in chunks:
        if isinstance(ch, tuple):
            size_line, data = ch
        else:
            size_line, data = b"%x" % len(ch), ch
        raw += size_line + b"\r\n" + data + b"\r\n"
    raw += b"0\r\n" + trailers + b"\r\n"
    c.send(raw)


@test()
def chunked_request_body(ctx):
    email = "%s@example.com" % uniq("c")
    body = json.dumps({"name": "Chunky", "email": email}).encode()
    parts = [body[:5], body[5:17], body[17:]]
    with ctx.conn() as c:
        chunked_post(c, parts)
        r = read_ok(c)
        eq(r.status, 201, "chunked POST status (%r)" % r.body[:200])
        eq(r.json()["email"], email, "email")
        c.send(build_request("GET", "/health", headers=[("X-Request-Id", "after-chunked")]))
        eq(read_ok(c).header("X-Request-Id"), "after-chunked", "request after chunked body")


@test()
def chunked_with_extensions_and_trailers(ctx):
    email = "%s@example.com" % uniq("c")
    body = json.dumps({"name": "Chunk Ext", "email": email}).encode()
    a, b = body[:10], body[10:]
    chunks = [(b"%x;foo=bar" % len(a), a), (b"%X;name=\"quoted;value\";x" % len(b), b)]
    with ctx.conn() as c:
        chunked_post(c, chunks, trailers=b"X-Trailer: yes\r\nX-Other: 1\r\n")
        r = read_ok(c)
        eq(r.status, 201, "status (%r)" % r.body[:200])
        eq(r.json()["name"], "Chunk Ext", "name")
        c.send(build_request("GET", "/health", headers=[("X-Request-Id", "after-trailers")]))
        eq(read_ok(c).header("X-Request-Id"), "after-trailers", "request after trailers")


@test()
def chunked_te_case_insensitive_and_byte_chunks(ctx):
    email = "%s@example.com" % uniq("c")
    body = json.dumps({"name": "Bytes", "email": email}).encode()
    with ctx.conn() as c:
        chunked_post(c, [body[i:i + 1] for i in range(len(body))], te=b"Chunked")
        r = read_ok(c)
        eq(r.status, 201, "status (%r)" % r.body[:200])


@test()
def chunked_body_sent_slowly(ctx):
    email = "%s@example.com" % uniq("c")
    body = json.dumps({"name": "Slow", "email": email}).encode()
    with ctx.conn() as c:
        c.send(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        for piece in (b"%x\r" % len(body), b"\n", body[:7], body[7:] + b"\r", b"\n0", b"\r\n", b"\r\n"):
            time.sleep(0.03)
            c.send(piece)
        r = read_ok(c)
        eq(r.status, 201, "status (%r)" % r.body[:200])


@test()
def pipelining_backpressure_many(ctx):
    # far more pipelined requests than fit in the server's output budget (1 MiB) while
    # the client is not reading yet: all are answered, in order, nothing dropped
    n = 8000
    reqs = b"".join(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: bp-%d\r\n\r\n" % i for i in range(n))
    import threading
    with ctx.conn(timeout=30) as c:
        err = []

        def writer():
            try:
                c.sock.sendall(reqs)
            except OSError as e:
                err.append(e)

        th = threading.Thread(target=writer, daemon=True)
        th.start()
        time.sleep(0.5)
        for i in range(n):
            try:
                r = c.read_response(timeout=20)
            except (socket.timeout, EOFError) as e:
                fail("response %d of %d: %s" % (i, n, type(e).__name__))
            if r.status != 200 or r.header("X-Request-Id") != "bp-%d" % i:
                fail("response %d: %d id %r" % (i, r.status, r.header("X-Request-Id")))
        th.join(10)
        check(not err, "sending failed: %r" % err)


@test()
def many_open_connections(ctx):
    # 300 connections that have sent nothing (or half a head) do not stop others being served
    conns = []
    try:
        for i in range(300):
            c = Conn(ctx.port, timeout=10)
            if i % 2:
                c.send(b"GET /health HTTP/1.1\r\nHo")
            conns.append(c)
        t0 = time.time()
        r = ctx.req("GET", "/health", timeout=10)
        eq(r.status, 200, "request with 300 other connections open")
        check(time.time() - t0 < 3, "request took %.1f s" % (time.time() - t0))
        # the open ones are still served when they finish
        for c in conns[:20]:
            c.send(b"st: x\r\n\r\n" if conns.index(c) % 2 else b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in conns[:20]:
            r = read_ok(c)
            eq(r.status, 200, "pending connection finished")
    finally:
        for c in conns:
            c.close()
