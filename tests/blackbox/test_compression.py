"""Response compression (issue 14, item 2): Accept-Encoding: gzip gets JSON
bodies of BRISK_COMPRESS_MIN_BYTES (1024) or more gzip'd, with
Content-Encoding and Vary: Accept-Encoding; q-values are honoured; /health and
/metrics (text/plain) and 204s are never compressed; HEAD gets GET's headers;
BRISK_COMPRESS_MIN_BYTES=0 turns it off. Every gzip'd body is decoded with
Python's gzip module and compared with the same request made without
Accept-Encoding. Rules: docs/http.md, "Compression"."""

import gzip
import json
import time
import zlib

from harness import Conn, build_request, check, eq, fail, test, uniq


def _start(ctx, env=None, name="gz"):
    e = {"BRISK_LOG_FORMAT": "json"}
    e.update(env or {})
    return ctx.new_server(env=e, name=name).start()


def _stop(srv):
    why = srv.stop()
    if why:
        fail(why)


def _get(srv, path, ae=None, method="GET", body=None, extra=None):
    """One request; ae: None (no field), a string (one field) or a list of fields."""
    hdrs = []
    if isinstance(ae, str):
        hdrs.append(("Accept-Encoding", ae))
    elif ae is not None:
        hdrs += [("Accept-Encoding", v) for v in ae]
    hdrs += extra or []
    with Conn(srv.port, timeout=10) as c:
        c.send(build_request(method, path, body, hdrs))
        return c.read_response(method=method)


def _users(srv, n):
    """Create n users; returns their ids (consecutive on this server's own database)."""
    ids = []
    with Conn(srv.port, timeout=10) as c:
        for i in range(n):
            tag = uniq("gz")
            c.send(build_request("POST", "/users", {"name": "Gzip User %d %s" % (i, tag),
                                                    "email": "%s@example.com" % tag}))
            r = c.read_response()
            eq(r.status, 201, "POST /users")
            ids.append(r.json()["id"])
    return ids


def _vary(r):
    return [t.strip().lower() for v in r.all("Vary") for t in v.split(",")]


def _plain(r, what):
    """A response sent without a content coding but negotiable: Vary, no Content-Encoding."""
    eq(r.header("Content-Encoding"), None, "%s: Content-Encoding" % what)
    check("accept-encoding" in _vary(r), "%s: no Vary: Accept-Encoding in %r" % (what, r.headers))
    eq(int(r.header("Content-Length")), len(r.body), "%s: Content-Length" % what)


def _gzipped(r, plain, what):
    """r is the gzip'd form of the plain response `plain`."""
    eq(r.status, plain.status, "%s: status" % what)
    eq(r.header("Content-Encoding"), "gzip", "%s: Content-Encoding" % what)
    check("accept-encoding" in _vary(r), "%s: no Vary: Accept-Encoding in %r" % (what, r.headers))
    eq(r.header("Content-Type"), plain.header("Content-Type"), "%s: Content-Type" % what)
    eq(int(r.header("Content-Length")), len(r.body), "%s: Content-Length" % what)
    eq(gzip.decompress(r.body), plain.body, "%s: decoded body" % what)
    # zlib with a gzip wrapper (wbits 31) agrees, and there is exactly one member
    d = zlib.decompressobj(31)
    eq(d.decompress(r.body) + d.flush(), plain.body, "%s: zlib decode" % what)
    eq(d.unused_data, b"", "%s: bytes after the gzip member" % what)


def _batch(n):
    orders = [{"id": "o-%d" % i, "user_id": 1 + i % 7,
               "items": [{"sku": "SKU-%d" % (i % 13), "quantity": 1 + i % 3,
                          "unit_price_cents": 199 + i}]} for i in range(n)]
    return json.dumps({"orders": orders}).encode()


def _access(srv, rid, timeout=3.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for ln in srv.stderr().splitlines():
            if rid in ln and ln.startswith("{"):
                e = json.loads(ln)
                if e.get("msg") == "access":
                    return e
        time.sleep(0.05)
    fail("no access line for %s" % rid)


@test(server=None)
def gzip_bodies_decode_to_the_plain_ones(ctx):
    srv = _start(ctx)
    try:
        ids = _users(srv, 40)
        batch = _batch(300)
        cases = [
            ("GET", "/users?limit=40&after=%d" % (ids[0] - 1), None),
            ("GET", "/users?limit=1000", None),
            ("POST", "/orders/process", batch),
        ]
        for method, path, body in cases:
            plain = _get(srv, path, method=method, body=body)
            eq(plain.status, 200, "%s %s" % (method, path))
            check(len(plain.body) >= 1024, "%s %s: body only %d bytes" % (method, path, len(plain.body)))
            _plain(plain, "%s %s without Accept-Encoding" % (method, path))
            for ae in ["gzip", "GZip", "x-gzip", "*", "deflate, gzip;q=0.5, br", "gzip;q=1.0",
                       " gzip , identity;q=0.5"]:
                r = _get(srv, path, ae, method=method, body=body)
                _gzipped(r, plain, "%s %s, Accept-Encoding %r" % (method, path, ae))
                check(len(r.body) * 2 < len(plain.body),
                      "%s %s: gzip %d bytes of %d" % (method, path, len(r.body), len(plain.body)))
        # a 404's JSON error is small: negotiable (Vary) but sent as it is
        r = _get(srv, "/users/999999999", "gzip")
        eq(r.status, 404, "unknown user")
        _plain(r, "404 with Accept-Encoding: gzip")
        # the access log counts the bytes on the wire: the compressed ones
        rid = uniq("gzlog")
        r = _get(srv, "/users?limit=1000", "gzip", extra=[("X-Request-Id", rid)])
        eq(r.header("Content-Encoding"), "gzip", "logged request compressed")
        e = _access(srv, rid)
        eq(e.get("bytes"), len(r.head_bytes) + len(r.body), "access log bytes (head + gzip body)")
    finally:
        _stop(srv)


@test(server=None)
def q_values_and_identity(ctx):
    srv = _start(ctx)
    try:
        ids = _users(srv, 30)
        path = "/users?limit=30&after=%d" % (ids[0] - 1)
        plain = _get(srv, path)
        small = _get(srv, "/users/%d" % ids[0])
        check(len(small.body) < 1024, "a user is small")
        identity = [
            "gzip;q=0",                    # refused
            "identity",                    # only identity named: gzip not acceptable
            "",                            # empty field: identity only
            "deflate, br",                 # nothing brisk has
            "gzip;q=0.5, identity",        # identity preferred
            "*;q=0.8, gzip;q=0.5",         # identity gets *'s higher q
            "gzip;q=2",                    # malformed element: ignored
            "gzip;level=9",                # not a weight: ignored
            "identity;q=0",                # nothing acceptable: identity anyway (no 406)
            "*;q=0",                       # the same through *
            "gzip;q=0, identity;q=0",
            ["gzip", "gzip;q=0"],          # named twice: the lowest q
        ]
        for ae in identity:
            r = _get(srv, path, ae)
            eq(r.status, 200, "Accept-Encoding %r: status" % (ae,))
            _plain(r, "Accept-Encoding %r" % (ae,))
            eq(r.body, plain.body, "Accept-Encoding %r: body" % (ae,))
        gz = [
            "gzip;q=0.001",                # identity not named: preferred least
            "gzip, identity;q=0.5",
            "gzip;q=0.5, identity;q=0.5",  # a tie goes to gzip
            "*;q=0, gzip",                 # gzip named: * does not apply
            ["identity;q=0.5", "gzip"],    # two fields are one list
        ]
        for ae in gz:
            _gzipped(_get(srv, path, ae), plain, "Accept-Encoding %r" % (ae,))
        # identity refused and gzip available: even a body below the threshold
        for ae in ["gzip, identity;q=0", "gzip, *;q=0"]:
            _gzipped(_get(srv, "/users/%d" % ids[0], ae), small, "small body, %r" % ae)
        r = _get(srv, "/users/%d" % ids[0], "gzip, *;q=0, identity")
        _plain(r, "small body, identity named after *;q=0")
    finally:
        _stop(srv)


@test(server=None)
def threshold_and_small_responses(ctx):
    srv = _start(ctx)
    try:
        ids = _users(srv, 30)
        # the smallest list page of at least 1024 bytes is compressed, the one below is not
        lens = {}
        for n in range(1, 31):
            lens[n] = len(_get(srv, "/users?limit=%d&after=%d" % (n, ids[0] - 1)).body)
        above = min(n for n in lens if lens[n] >= 1024)
        check(above > 1 and lens[above - 1] < 1024, "page sizes %r" % lens)
        for n, want in [(above - 1, None), (above, "gzip")]:
            path = "/users?limit=%d&after=%d" % (n, ids[0] - 1)
            r = _get(srv, path, "gzip")
            eq(r.header("Content-Encoding"), want, "%d-byte body" % lens[n])
            if want:
                _gzipped(r, _get(srv, path), "%d-byte body" % lens[n])
            else:
                _plain(r, "%d-byte body" % lens[n])
        # a single user, /ready: small JSON, Vary but not compressed
        for path in ["/users/%d" % ids[0], "/ready"]:
            _plain(_get(srv, path, "gzip"), path)
    finally:
        _stop(srv)
    # a threshold of its own: 200 bytes
    srv = _start(ctx, {"BRISK_COMPRESS_MIN_BYTES": "200"}, name="gz200")
    try:
        ids = _users(srv, 3)
        path = "/users?limit=3&after=%d" % (ids[0] - 1)
        plain = _get(srv, path)
        check(200 <= len(plain.body) < 1024, "3 users: %d bytes" % len(plain.body))
        _gzipped(_get(srv, path, "gzip"), plain, "3 users with a 200-byte threshold")
        _plain(_get(srv, "/users/%d" % ids[0], "gzip"), "one user with a 200-byte threshold")
    finally:
        _stop(srv)


@test(server=None)
def min_bytes_zero_disables(ctx):
    srv = _start(ctx, {"BRISK_COMPRESS_MIN_BYTES": "0"}, name="gz0")
    try:
        _users(srv, 20)
        for ae in [None, "gzip", "gzip, identity;q=0", "*"]:
            r = _get(srv, "/users?limit=1000", ae)
            eq(r.status, 200, "list")
            eq(r.header("Content-Encoding"), None, "off, Accept-Encoding %r" % ae)
            eq(r.all("Vary"), [], "off: no Vary, Accept-Encoding %r" % ae)
            check(len(r.body) > 1024, "list is big")
            r.json()
    finally:
        _stop(srv)
    srv = ctx.new_server(env={"BRISK_COMPRESS_MIN_BYTES": "12k"}, name="gzbad").start(wait=False)
    code = srv.wait_exit(10)
    srv.kill()
    eq(code, 2, "a bad BRISK_COMPRESS_MIN_BYTES: exit status")
    check("BRISK_COMPRESS_MIN_BYTES" in srv.stderr(), "the error names the setting: %r" % srv.stderr())


@test(server=None)
def head_gets_get_headers(ctx):
    srv = _start(ctx)
    try:
        _users(srv, 20)
        with Conn(srv.port, timeout=10) as c:
            hdrs = [("Accept-Encoding", "gzip")]
            c.send(build_request("GET", "/users?limit=1000", headers=hdrs))
            g = c.read_response()
            c.send(build_request("HEAD", "/users?limit=1000", headers=hdrs))
            h = c.read_response(method="HEAD")
            # the next response on the connection follows at once: HEAD sent no body
            c.send(build_request("GET", "/health"))
            nxt = c.read_response()
        eq(g.header("Content-Encoding"), "gzip", "GET compressed")
        for name in ["Content-Encoding", "Content-Length", "Vary", "Content-Type"]:
            eq(h.header(name), g.header(name), "HEAD %s" % name)
        eq(nxt.status, 200, "request after HEAD")
        eq(nxt.body, b"ok", "request after HEAD")
        # HEAD without Accept-Encoding: the plain length
        p = _get(srv, "/users?limit=1000")
        with Conn(srv.port, timeout=10) as c:
            c.send(build_request("HEAD", "/users?limit=1000"))
            h = c.read_response(method="HEAD")
        eq(h.header("Content-Length"), str(len(p.body)), "HEAD plain Content-Length")
        eq(h.header("Content-Encoding"), None, "HEAD plain Content-Encoding")
    finally:
        _stop(srv)


@test(server=None)
def never_compressed(ctx):
    srv = _start(ctx)
    try:
        ids = _users(srv, 20)
        for ae in ["gzip", "gzip, identity;q=0", "*"]:
            r = _get(srv, "/health", ae)
            eq((r.status, r.body), (200, b"ok"), "/health")
            eq(r.header("Content-Encoding"), None, "/health, %r" % ae)
            eq(r.all("Vary"), [], "/health: no Vary")
            r = _get(srv, "/metrics", ae)
            eq(r.status, 200, "/metrics")
            check(len(r.body) > 1024, "/metrics is big enough to compress")
            eq(r.header("Content-Encoding"), None, "/metrics, %r" % ae)
            check(r.body.startswith(b"#"), "/metrics is plain text")
        # 204s carry no body, so neither coding nor Vary
        r = _get(srv, "/users/%d" % ids[0], "gzip", method="DELETE")
        eq(r.status, 204, "DELETE")
        eq((r.header("Content-Encoding"), r.all("Vary")), (None, []), "204")
        r = _get(srv, "/users", "gzip", method="OPTIONS")
        eq(r.status, 204, "OPTIONS")
        eq((r.header("Content-Encoding"), r.all("Vary")), (None, []), "OPTIONS 204")
    finally:
        _stop(srv)


@test(server=None)
def pipelined_mixed_codings(ctx):
    """The loop's compressor and its buffer are reused request after request:
    a pipeline alternating gzip and plain answers each one right."""
    srv = _start(ctx)
    try:
        ids = _users(srv, 30)
        paths = ["/users?limit=%d&after=%d" % (n, ids[0] - 1) for n in (30, 20, 25)]
        plain = {p: _get(srv, p) for p in paths}
        reqs, want = b"", []
        for i in range(12):
            p = paths[i % 3]
            ae = "gzip" if i % 2 == 0 else None
            reqs += build_request("GET", p, headers=[("Accept-Encoding", ae)] if ae else [])
            want.append((p, ae))
        with Conn(srv.port, timeout=10) as c:
            c.send(reqs)
            for i, (p, ae) in enumerate(want):
                r = c.read_response()
                if ae:
                    _gzipped(r, plain[p], "pipelined %d" % i)
                else:
                    _plain(r, "pipelined %d" % i)
                    eq(r.body, plain[p].body, "pipelined %d body" % i)
    finally:
        _stop(srv)
