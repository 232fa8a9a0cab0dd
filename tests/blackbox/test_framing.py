"""Framing / smuggling checklist (field-notes.md): each bad request must get the
right status, `Connection: close`, the connection closed, and the bytes sent
after it must never be answered as a second request."""

import json
import socket

from harness import Conn, check, common_checks, eq, fail, test, uniq

SMUGGLED = b"GET /users/1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: smuggled\r\n\r\n"
JSON_CT = b"Content-Type: application/json\r\n"


def reject(ctx, raw, statuses, smuggle=True, what=None):
    """Send raw (+ a smuggled request); expect exactly one response with a status
    in `statuses`, Connection: close, then EOF."""
    if isinstance(statuses, int):
        statuses = (statuses,)
    what = what or repr(raw[:80])
    with ctx.conn(timeout=5) as c:
        c.send(raw + (SMUGGLED if smuggle else b""))
        try:
            r = c.read_response(timeout=5)
        except socket.timeout:
            fail("%s: no response within 5 s (server waits for more bytes?)" % what)
        except EOFError:
            fail("%s: connection closed without a response" % what)
        if r.status not in statuses:
            fail("%s: expected %s, got %d %r" % (what, "/".join(map(str, statuses)), r.status, r.body[:200]))
        common_checks(r)
        check(r.has_close(), "%s: %d without Connection: close" % (what, r.status))
        rest, state = c.read_rest(3.0)
        check(rest == b"", "%s: bytes after the error response (smuggled request answered?): %r"
              % (what, rest[:300]))
        check(state == "eof", "%s: connection not closed after %d" % (what, r.status))
    return r


def post(headers, body=b"", path=b"/users", version=b"HTTP/1.1", host=True):
    raw = b"POST " + path + b" " + version + b"\r\n"
    if host:
        raw += b"Host: x\r\n"
    raw += JSON_CT + headers + b"\r\n" + body
    return raw


def get(headers=b"", target=b"/health", version=b"HTTP/1.1", host=True):
    raw = b"GET " + target + b" " + version + b"\r\n"
    if host:
        raw += b"Host: x\r\n"
    return raw + headers + b"\r\n"


BODY = b'{"name":"Smug","email":"smug@example.com"}'


def valid_body():
    return json.dumps({"name": "Smug", "email": "%s@example.com" % uniq("s")}).encode()


# ---------------------------------------------------------------- Content-Length / Transfer-Encoding

@test()
def cl_and_te_both(ctx):
    reject(ctx, post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400)
    reject(ctx, post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), 400)


@test()
def cl_duplicate_different(ctx):
    reject(ctx, post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"{}xxxx"), 400)
    reject(ctx, post(b"Content-Length: 5, 6\r\n", b"{}xxxx"), 400)


@test()
def cl_duplicate_same(ctx):
    # RFC 9112 6.3 lets a recipient reject identical duplicates; brisk does (docs/http.md)
    body = valid_body()
    n = b"%d" % len(body)
    reject(ctx, post(b"Content-Length: " + n + b"\r\nContent-Length: " + n + b"\r\n", body), 400,
           what="two identical Content-Length fields")
    reject(ctx, post(b"Content-Length: " + n + b", " + n + b"\r\n", body), 400,
           what="Content-Length list of identical values")


@test()
def cl_invalid_values(ctx):
    for v in (b"+5", b"-5", b"0x5", b"5 5", b"1Z", b"", b"5.0", b"\x0b5", b"five", b"1_0",
              b"99999999999999999999", b"18446744073709551616", b"18446744073709551621"):
        reject(ctx, post(b"Content-Length: " + v + b"\r\n", b"{}xxx"), 400, what="Content-Length %r" % v)


@test()
def cl_negative_on_get(ctx):
    reject(ctx, get(b"Content-Length: -1\r\n"), 400)


@test()
def cl_too_large_413(ctx):
    for v in (b"8388609", b"1000000000", b"9223372036854775807"):
        reject(ctx, post(b"Content-Length: " + v + b"\r\n", b"{}"), 413, what="Content-Length %r" % v)


@test()
def te_not_exactly_chunked(ctx):
    for v in (b"chunked, identity", b",chunked", b"xchunked", b"identity", b"gzip, chunked",
              b"chunked, chunked", b"chunked;q=1", b"chunk", b"gzip", b"\"chunked\""):
        reject(ctx, post(b"Transfer-Encoding: " + v + b"\r\n", b"0\r\n\r\n"), (400, 501),
               what="Transfer-Encoding %r" % v)


@test()
def te_duplicate_headers(ctx):
    reject(ctx, post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
           (400, 501))
    reject(ctx, post(b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
           (400, 501))


@test()
def te_on_http10(ctx):
    reject(ctx, post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", version=b"HTTP/1.0", host=False), 400)


# ---------------------------------------------------------------- header syntax

@test()
def obs_fold(ctx):
    reject(ctx, get(b"X-Folded: a\r\n  b\r\n"), 400)
    reject(ctx, get(b"X-Folded: a\r\n\tb\r\n"), 400)


@test()
def bare_lf(ctx):
    reject(ctx, b"GET /health HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400, what="bare LF in header")
    reject(ctx, b"GET /health HTTP/1.1\nHost: x\r\n\r\n", 400, what="bare LF after request line")
    reject(ctx, b"GET /health HTTP/1.1\nHost: x\n\n", 400, what="all bare LF")


@test()
def bare_cr(ctx):
    reject(ctx, b"GET /health HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", 400, what="bare CR in header")
    reject(ctx, b"GET /health HTTP/1.1\rHost: x\r\n\r\n", 400, what="bare CR after request line")
    reject(ctx, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\r\n", 400, what="bare CR at end of head")


@test()
def ctl_bytes_in_headers(ctx):
    for v in (b"a\x00b", b"a\x01b", b"a\x7fb", b"a\x1bb", b"\x00"):
        reject(ctx, get(b"X-Ctl: " + v + b"\r\n"), 400, what="header value %r" % v)
    for n in (b"X\x01Y", b"X\x00Y", b"X\x7fY", b"X Y", b"X(Y)", b"X\"Y"):
        reject(ctx, get(n + b": v\r\n"), 400, what="header name %r" % n)


@test()
def nul_in_request_line(ctx):
    reject(ctx, b"GET /hea\x00lth HTTP/1.1\r\nHost: x\r\n\r\n", 400)
    reject(ctx, b"GET /health\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400)


@test()
def empty_header_name(ctx):
    reject(ctx, get(b": value\r\n"), 400)


@test()
def header_missing_colon(ctx):
    reject(ctx, get(b"X-No-Colon value\r\n"), 400)
    reject(ctx, get(b"X-No-Colon\r\n"), 400)


@test()
def whitespace_before_colon(ctx):
    reject(ctx, b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n", 400, what="space before colon (Host)")
    reject(ctx, get(b"X-A : b\r\n"), 400, what="space before colon")
    reject(ctx, get(b"X-A\t: b\r\n"), 400, what="tab before colon")
    reject(ctx, post(b"Content-Length : 5\r\n", b"{}xxx"), 400, what="space before colon (CL)")
    reject(ctx, post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), 400, what="space before colon (TE)")


@test()
def leading_whitespace_first_header(ctx):
    reject(ctx, b"GET /health HTTP/1.1\r\n Host: x\r\n\r\n", 400)


@test()
def host_missing_or_duplicate(ctx):
    reject(ctx, get(host=False), 400, what="no Host")
    reject(ctx, get(b"Host: y\r\n"), 400, what="two Host (different)")
    reject(ctx, get(b"Host: x\r\n"), 400, what="two Host (same)")
    reject(ctx, get(b"Host: x, y\r\n", host=False), 400, what="Host list")


@test()
def http10_without_host_ok(ctx):
    with ctx.conn() as c:
        c.send(b"GET /health HTTP/1.0\r\n\r\n")
        r = c.read_response()
        common_checks(r)
        eq(r.status, 200, "HTTP/1.0 without Host")


@test()
def request_line_malformed(ctx):
    cases = [
        b"GET  /health HTTP/1.1\r\n",
        b"GET /health  HTTP/1.1\r\n",
        b"GET /health http/1.1\r\n",
        b"GET /health HTTP/1.1 \r\n",
        b" GET /health HTTP/1.1\r\n",
        b"GET /health\r\n",
        b"GET\r\n",
        b"GET /health HTTP/1\r\n",
        b"GET /health HTTP/1.1.1\r\n",
        b"GET /health HTTP/11\r\n",
        b"GET /health HTTX/1.1\r\n",
        b"GET\t/health HTTP/1.1\r\n",
        b"G(T /health HTTP/1.1\r\n",
        b"GET health HTTP/1.1\r\n",
        b"\r\n\r\nGET /health HTTP/1.1 x\r\n",
    ]
    for rl in cases:
        reject(ctx, rl + b"Host: x\r\n\r\n", 400, what="request line %r" % rl)


@test()
def empty_lines_before_request_line(ctx):
    # RFC 9112 2.2: one empty line before the request-line is skipped; two are 400 (docs/http.md)
    with ctx.conn() as c:
        c.send(b"\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        common_checks(r)
        eq(r.status, 200, "one empty line before the request line")
    reject(ctx, b"\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n", 400, what="two empty lines")


@test()
def request_target_forms(ctx):
    reject(ctx, b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, what="GET *")
    reject(ctx, b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n", 400,
           what="authority-form")
    reject(ctx, b"GET /health#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400, what="fragment")
    reject(ctx, b"GET /h\x80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, what="non-ASCII byte in target")
    reject(ctx, b"GET /h\x7f HTTP/1.1\r\nHost: x\r\n\r\n", 400, what="DEL in target")
    reject(ctx, b"GET ftp://x/health HTTP/1.1\r\nHost: x\r\n\r\n", 400, what="ftp absolute-form")


@test()
def host_value_syntax(ctx):
    for v in (b"a b", b"x/y", b"x@y", b"x?y", b"x#y", b"x\\y"):
        reject(ctx, get(b"Host: " + v + b"\r\n", host=False), 400, what="Host %r" % v)
    reject(ctx, get(b"Host: x\r\nHost: x\r\n", version=b"HTTP/1.0", host=False), 400,
           what="two Host fields in HTTP/1.0")
    for v in (b"127.0.0.1:8080", b"[::1]:80", b"example.com", b"xn--bcher-kva.example"):
        with ctx.conn() as c:
            c.send(get(b"Host: " + v + b"\r\n", host=False))
            r = c.read_response()
            eq(r.status, 200, "Host %r" % v)


@test()
def host_malformed_ip_literal(ctx):
    # RFC 9112 3.2: a Host with an invalid field value -> 400 (RFC 3986 IP-literal syntax)
    for v in (b"[::1", b"::1]", b"[::1]x", b"[::1]:80:80", b"x:80:80", b"x:port"):
        reject(ctx, get(b"Host: " + v + b"\r\n", host=False), 400, what="Host %r" % v)


@test()
def duplicate_content_type_or_authorization(ctx):
    body = valid_body()
    reject(ctx, post(b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body), body), 400,
           what="two Content-Type fields")
    reject(ctx, get(b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"), 400,
           what="two Authorization fields")


@test()
def http_version_unsupported_505(ctx):
    for v in (b"HTTP/2.0", b"HTTP/3.0", b"HTTP/9.9", b"HTTP/0.9"):
        reject(ctx, get(version=v), 505, what=v.decode())


@test()
def http_1_higher_minor_served_as_1_1(ctx):
    """RFC 9110 2.5: a higher minor version is answered as the highest 1.x we
    implement - HTTP/1.1, with its rules (keep-alive, Host required)."""
    with ctx.conn(timeout=5) as c:
        for v in (b"HTTP/1.2", b"HTTP/1.9"):
            c.send(get(version=v))
            r = c.read_response()
            eq((r.status, r.body, r.has_close()), (200, b"ok", False), v.decode())
            check(r.head_bytes.startswith(b"HTTP/1.1 200"), "%s answered as %r"
                  % (v.decode(), r.head_bytes[:12]))
    reject(ctx, get(version=b"HTTP/1.2", host=False), 400, what="HTTP/1.2 without Host")


# ---------------------------------------------------------------- chunked bodies

def chunked(body_chunks):
    return post(b"Transfer-Encoding: chunked\r\n", body_chunks)


@test()
def chunk_size_invalid(ctx):
    cases = [
        b"\r\nabc\r\n0\r\n\r\n",                  # empty size
        b"0x5\r\nabcde\r\n0\r\n\r\n",
        b" 5\r\nabcde\r\n0\r\n\r\n",
        b"-1\r\na\r\n0\r\n\r\n",
        b"+5\r\nabcde\r\n0\r\n\r\n",
        b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",  # 19 hex digits: overflow
        b"10000000000000000\r\nabc\r\n0\r\n\r\n",    # 2^64
        b"5;ext\nabcde\r\n0\r\n\r\n",             # bare LF after extension
        b"5\nabcde\r\n0\r\n\r\n",                 # bare LF after size
        b"5;a=\"b\rc\"\r\nabcde\r\n0\r\n\r\n",   # CR inside chunk-ext
        b"0_2e\r\n\r\n",
        b"5g\r\nabcde\r\n0\r\n\r\n",
        b"g\r\nabcde\r\n0\r\n\r\n",
        b"0\n\r\n",                               # bare LF on last chunk
        # RFC 9112 7.1.1: chunk-ext-name is a token, chunk-ext-val a token or quoted-string
        b"5;a@b\r\nabcde\r\n0\r\n\r\n",
        b"5;a b\r\nabcde\r\n0\r\n\r\n",
        b"5;a/b=1\r\nabcde\r\n0\r\n\r\n",
        b"5;a=b c\r\nabcde\r\n0\r\n\r\n",
        b"5;a=\"b\"c\r\nabcde\r\n0\r\n\r\n",
        b"5;a=\r\nabcde\r\n0\r\n\r\n",
        b"5\r\nabcde\r\n0;a,b\r\n\r\n",
    ]
    for body in cases:
        reject(ctx, chunked(body), 400, what="chunked body %r" % body[:40])


@test()
def chunk_data_crlf_missing(ctx):
    cases = [
        b"5\r\nabcdeXX0\r\n\r\n",         # no CRLF after data
        b"5\r\nabcdef\r\n0\r\n\r\n",      # data longer than the size
        b"5\r\nabcde\n0\r\n\r\n",         # bare LF after data
        b"5\r\nabcde\r0\r\n\r\n",         # bare CR after data
        b"3\r\nabcde\r\n0\r\n\r\n",       # data longer than the size
    ]
    for body in cases:
        reject(ctx, chunked(body), 400, what="chunked body %r" % body)


@test()
def chunk_bad_trailer(ctx):
    reject(ctx, chunked(b"2\r\n{}\r\n0\r\nX-T\x00: 1\r\n\r\n"), 400, what="NUL in trailer name")
    reject(ctx, chunked(b"2\r\n{}\r\n0\r\nX-T: 1\n\r\n"), 400, what="bare LF in trailer")
    reject(ctx, chunked(b"2\r\n{}\r\n0\r\nno colon\r\n\r\n"), 400, what="trailer without colon")


@test()
def chunk_size_over_limit_413(ctx):
    reject(ctx, chunked(b"800001\r\nabc"), 413, smuggle=False, what="single chunk of 8 MiB + 1")
    reject(ctx, chunked(b"ffffffff\r\nabc"), 413, smuggle=False, what="chunk of 4 GiB")


# ---------------------------------------------------------------- head limits (defaults: 100 fields, 16 KiB)

@test()
def too_many_headers_431(ctx):
    hdrs = b"".join(b"X-H%d: v\r\n" % i for i in range(100))  # + Host = 101
    reject(ctx, get(hdrs), 431, what="101 header fields")


@test()
def max_headers_exactly_ok(ctx):
    hdrs = b"".join(b"X-H%d: v\r\n" % i for i in range(99))  # + Host = 100
    with ctx.conn() as c:
        c.send(get(hdrs))
        r = c.read_response()
        common_checks(r)
        eq(r.status, 200, "100 header fields")


@test()
def header_block_too_large_431(ctx):
    reject(ctx, get(b"X-Big: " + b"a" * 17000 + b"\r\n"), 431, what="17 KB header")
    reject(ctx, get(b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 400) for i in range(50))), 431,
           what="50 headers of 400 bytes")


@test()
def long_uri_rejected(ctx):
    reject(ctx, get(target=b"/health?" + b"q" * 20000), (414, 431), what="20 KB request target")


@test()
def header_block_under_limit_ok(ctx):
    with ctx.conn() as c:
        c.send(get(b"X-Big: " + b"a" * 15000 + b"\r\n"))
        r = c.read_response()
        common_checks(r)
        eq(r.status, 200, "15 KB header")


@test()
def endless_header_line_431(ctx):
    # one header line that never ends: must be refused once past the limit,
    # not buffered forever
    with ctx.conn() as c:
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        r = None
        try:
            for _ in range(64):
                if not c.try_send(b"z" * 1024):
                    break
        except OSError:
            pass
        try:
            r = c.read_response(timeout=5)
        except (socket.timeout, EOFError) as e:
            fail("no 431 for an endless header line: %s" % type(e).__name__)
        eq(r.status, 431, "status")
        check(r.has_close(), "431 without Connection: close")


# ---------------------------------------------------------------- small limits server

@test(server="small")
def small_chunked_grows_past_limit_413(ctx):
    chunks = b"".join(b"100\r\n" + b" " * 256 + b"\r\n" for _ in range(5))  # 1280 > 1024
    reject(ctx, chunked(chunks + b"0\r\n\r\n"), 413, what="chunked body of 1280 bytes, limit 1024")


@test(server="small")
def small_cl_over_limit_413(ctx):
    reject(ctx, post(b"Content-Length: 1025\r\nExpect: 100-continue\r\n"), 413, smuggle=False)
    reject(ctx, post(b"Content-Length: 1025\r\n", b"{" + b" " * 1024), 413)


@test(server="small")
def small_body_at_limit_ok(ctx):
    body = json.dumps({"name": "Limit", "email": "%s@example.com" % uniq("l")}).encode()
    body = body + b" " * (1024 - len(body))
    for mode in ("cl", "chunked"):
        if mode == "chunked":
            body = json.dumps({"name": "Limit", "email": "%s@example.com" % uniq("l")}).encode()
            body = body + b" " * (1024 - len(body))
            raw = post(b"Transfer-Encoding: chunked\r\n", b"400\r\n" + body + b"\r\n0\r\n\r\n")
        else:
            raw = post(b"Content-Length: 1024\r\n", body)
        with ctx.conn() as c:
            c.send(raw)
            r = c.read_response()
            common_checks(r)
            eq(r.status, 201, "%s body of exactly max-body-bytes (%r)" % (mode, r.body[:200]))


@test(server="small")
def small_too_many_headers_431(ctx):
    reject(ctx, get(b"".join(b"X-H%d: v\r\n" % i for i in range(20))), 431, what="21 fields, limit 20")
    with ctx.conn() as c:
        c.send(get(b"".join(b"X-H%d: v\r\n" % i for i in range(19))))
        r = c.read_response()
        eq(r.status, 200, "20 fields, limit 20")


@test(server="small")
def small_header_bytes_431(ctx):
    reject(ctx, get(b"X-Big: " + b"a" * 2100 + b"\r\n"), 431, what="2.1 KB head, limit 2048")
    with ctx.conn() as c:
        c.send(get(b"X-Big: " + b"a" * 1800 + b"\r\n"))
        r = c.read_response()
        eq(r.status, 200, "1.8 KB head, limit 2048")


# ---------------------------------------------------------------- leniency the RFC requires

def one_ok(ctx, raw, status=200, what=None):
    with ctx.conn() as c:
        c.send(raw)
        try:
            r = c.read_response()
        except (socket.timeout, EOFError) as e:
            fail("%s: %s" % (what or repr(raw[:60]), type(e).__name__))
        common_checks(r)
        eq(r.status, status, "%s (%r)" % (what or repr(raw[:60]), r.body[:200]))
        return r


@test()
def ows_around_field_values_ok(ctx):
    body = valid_body()
    one_ok(ctx, post(b"Content-Length: \t %d \t\r\n" % len(body), body), 201, "OWS around Content-Length")
    body = valid_body()
    one_ok(ctx, post(b"Transfer-Encoding:  chunked \r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)),
           201, "OWS around Transfer-Encoding")
    one_ok(ctx, get(b"X-Empty:\r\nX-Blank: \t\r\n"), 200, "empty field values")


@test()
def field_names_case_insensitive(ctx):
    body = valid_body()
    raw = (b"POST /users HTTP/1.1\r\nhOsT: x\r\ncontent-type: application/json\r\n"
           b"CONTENT-LENGTH: %d\r\n\r\n" % len(body)) + body
    one_ok(ctx, raw, 201, "mixed-case field names")
    body = valid_body()
    raw = (b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"transfer-encoding: CHUNKED\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    one_ok(ctx, raw, 201, "upper-case chunked coding")


@test()
def absolute_form_target_ok(ctx):
    # RFC 9112 3.2.2: a server MUST accept the absolute-form in requests
    r = one_ok(ctx, b"GET http://127.0.0.1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, "absolute-form")
    eq(r.body, b"ok", "body")


@test()
def chunk_extension_too_long(ctx):
    reject(ctx, chunked(b"5;" + b"e" * 100000 + b"\r\n{\"nam\r\n0\r\n\r\n"), (400, 413, 431),
           what="100 KB chunk extension")


@test()
def chunk_trailers_too_large(ctx):
    reject(ctx, chunked(b"2\r\n{}\r\n0\r\n" + b"X-T: a\r\n" * 5000 + b"\r\n"), (400, 413, 431),
           what="5000 trailer fields")
    reject(ctx, chunked(b"2\r\n{}\r\n0\r\nX-T: " + b"t" * 40000 + b"\r\n\r\n"), (400, 413, 431),
           what="40 KB trailer field")
