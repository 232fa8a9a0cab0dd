"""Users API: create, validation, conflicts, get, list/pagination, patch, delete."""

import calendar
import re
import time

from harness import build_request, check, common_checks, eq, expect_error, fail, test, uniq

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def email():
    return "%s@example.com" % uniq("user")


def create(ctx, name="Ada Lovelace", mail=None):
    mail = mail or email()
    r = ctx.req("POST", "/users", {"name": name, "email": mail})
    if r.status != 201:
        fail("create %r/%r: expected 201, got %d %r" % (name, mail, r.status, r.body[:300]))
    return r.json()


def check_user(u, name=None, mail=None):
    check(isinstance(u, dict), "user is not an object: %r" % (u,))
    eq(sorted(u.keys()), ["created_at", "email", "id", "name"], "user fields")
    check(isinstance(u["id"], int) and not isinstance(u["id"], bool) and u["id"] > 0, "bad id %r" % u["id"])
    check(isinstance(u["created_at"], str) and RFC3339_UTC.match(u["created_at"]),
          "created_at %r is not RFC 3339 UTC with second precision" % u["created_at"])
    if name is not None:
        eq(u["name"], name, "name")
    if mail is not None:
        eq(u["email"], mail, "email")


def post_raw(ctx, body, ctype="application/json"):
    return ctx.req("POST", "/users", body, content_type=ctype)


# ---------------------------------------------------------------- create

@test()
def create_user(ctx):
    mail = email()
    t0 = time.time()
    r = ctx.req("POST", "/users", {"name": "Ada Lovelace", "email": mail})
    eq(r.status, 201, "status (%r)" % r.body[:200])
    eq((r.header("Content-Type") or "").split(";")[0], "application/json", "Content-Type")
    u = r.json()
    check_user(u, "Ada Lovelace", mail)
    eq(r.header("Location"), "/users/%d" % u["id"], "Location")
    ts = calendar.timegm(time.strptime(u["created_at"], "%Y-%m-%dT%H:%M:%SZ"))
    check(t0 - 5 <= ts <= time.time() + 5, "created_at %s is not now" % u["created_at"])
    g = ctx.req("GET", "/users/%d" % u["id"])
    eq(g.status, 200, "GET after create")
    eq(g.json(), u, "GET body equals the created user")


@test()
def create_ids_increase(ctx):
    a = create(ctx)
    b = create(ctx)
    check(b["id"] > a["id"], "ids not increasing: %d then %d" % (a["id"], b["id"]))


@test()
def create_missing_or_null_fields(ctx):
    cases = [
        ({"email": email()}, "name is required"),
        ({"name": None, "email": email()}, "name is required"),
        ({"name": "A"}, "email is required"),
        ({"name": "A", "email": None}, "email is required"),
    ]
    for body, msg in cases:
        expect_error(ctx.req("POST", "/users", body), 400, msg)
    r = ctx.req("POST", "/users", {})
    j = expect_error(r, 400)
    check(j["error"] in ("name is required", "email is required"), "message for {}: %r" % j["error"])


@test()
def create_wrong_types(ctx):
    for bad in (1, 0, True, False, [], {}, ["a"], 1.5):
        r = ctx.req("POST", "/users", {"name": bad, "email": email()})
        expect_error(r, 400, "name must be a string")
        r = ctx.req("POST", "/users", {"name": "A", "email": bad})
        expect_error(r, 400, "email must be a string")


@test()
def create_name_length(ctx):
    expect_error(ctx.req("POST", "/users", {"name": "", "email": email()}), 400,
                 "name must be 1 to 200 characters")
    expect_error(ctx.req("POST", "/users", {"name": "a" * 201, "email": email()}), 400,
                 "name must be 1 to 200 characters")
    expect_error(ctx.req("POST", "/users", {"name": "\u00e9" * 201, "email": email()}), 400,
                 "name must be 1 to 200 characters")
    expect_error(ctx.req("POST", "/users", {"name": "a" * 5000, "email": email()}), 400,
                 "name must be 1 to 200 characters")
    for name in ("a", "a" * 200, "\u00e9" * 200, "\u20ac" * 200, "\U0001F600" * 200, " "):
        u = create(ctx, name=name)
        eq(u["name"], name, "stored name (len %d)" % len(name))
    # the same characters sent as raw UTF-8 instead of \u escapes
    raw = ('{"name":"%s","email":"%s"}' % ("\u00e9" * 200, email())).encode("utf-8")
    r = post_raw(ctx, raw)
    eq(r.status, 201, "raw UTF-8 200 x U+00E9 (%r)" % r.body[:200])
    eq(r.json()["name"], "\u00e9" * 200, "name round trip")


@test()
def create_name_control_characters(ctx):
    for ch in ("\u0001", "\u007f", "\u0085", "\u0000", "\t", "\n", "\u001f", "\u009f"):
        r = ctx.req("POST", "/users", {"name": "ab" + ch + "cd", "email": email()})
        expect_error(r, 400, "name must not contain control characters")
    # raw C1 control (U+0085 as UTF-8 bytes C2 85), not escaped
    r = post_raw(ctx, b'{"name":"a\xc2\x85b","email":"%s"}' % email().encode())
    expect_error(r, 400, "name must not contain control characters")


@test()
def create_invalid_utf8(ctx):
    for raw_name in (b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"):
        r = post_raw(ctx, b'{"name":"a' + raw_name + b'b","email":"%s"}' % email().encode())
        expect_error(r, 400)
    for esc in ("\\ud800", "\\udc00", "\\ud800x"):
        r = post_raw(ctx, '{"name":"a%sb","email":"%s"}' % (esc, email()))
        expect_error(r, 400)
    # a correct surrogate pair is fine
    r = post_raw(ctx, '{"name":"a\\ud83d\\ude00b","email":"%s"}' % email())
    eq(r.status, 201, "surrogate pair (%r)" % r.body[:200])
    eq(r.json()["name"], "a\U0001F600b", "decoded surrogate pair")


@test()
def create_email_rules(ctx):
    length = "email must be 3 to 254 bytes"
    shape = "email must contain one @ with text on both sides"
    cases = [
        ("ab", length),
        ("", length),
        ("a" * 243 + "@example.com", length),   # 255 bytes
        ("abc", shape),
        ("a@b@c", shape),
        ("@abc", shape),
        ("abc@", shape),
        ("@@@", shape),
        ("@", length),
    ]
    for mail, msg in cases:
        expect_error(ctx.req("POST", "/users", {"name": "E", "email": mail}), 400, msg)
    ok = ["a@b", "x" * 242 + "@example.com"]  # 3 and 254 bytes
    for mail in ok:
        u = create(ctx, name="E", mail=mail)
        eq(u["email"], mail, "email stored as sent")
    # 254 bytes counted in bytes: 2-byte characters
    mail = "\u00e9" * 121 + "@example.com"   # 242 + 12 = 254 bytes
    u = create(ctx, name="E", mail=mail)
    mail = "\u00e9" * 122 + "@example.com"   # 256 bytes, 134 characters
    expect_error(ctx.req("POST", "/users", {"name": "E", "email": mail}), 400, length)


@test()
def create_duplicate_keys(ctx):
    mail = email()
    r = post_raw(ctx, '{"name":"A","email":"%s","name":"B"}' % mail)
    expect_error(r, 400, prefix="duplicate key")
    check("name" in r.json()["error"], "duplicate key message does not name the key: %r" % r.json()["error"])
    r = post_raw(ctx, '{"name":"A","email":"%s","email":"%s"}' % (mail, mail))
    expect_error(r, 400, prefix="duplicate key")
    r = post_raw(ctx, '{"x":1,"name":"A","email":"%s","x":2}' % mail)
    expect_error(r, 400, prefix="duplicate key")
    r = post_raw(ctx, '{"name":"A","email":"%s","extra":{"k":1,"k":2}}' % mail)
    expect_error(r, 400, prefix="duplicate key")
    # escaped spelling of the same key is still a duplicate
    r = post_raw(ctx, '{"name":"A","email":"%s","n\\u0061me":"B"}' % mail)
    expect_error(r, 400, prefix="duplicate key")


@test()
def create_nesting_depth(ctx):
    def nested(levels):  # total depth including the top-level object
        inner = "[" * (levels - 1) + "]" * (levels - 1)
        return '{"name":"Deep","email":"%s","x":%s}' % (email(), inner)

    r = post_raw(ctx, nested(64))
    eq(r.status, 201, "depth 64 accepted (%r)" % r.body[:200])
    r = post_raw(ctx, nested(65))
    j = expect_error(r, 400)
    check(re.search(r"deep|depth|nest", j["error"]), "depth message %r does not name the problem" % j["error"])
    r = post_raw(ctx, '{"a":' * 65 + "1" + "}" * 65)
    expect_error(r, 400)


@test()
def create_very_deep_json_no_crash(ctx):
    body = '{"name":"D","email":"%s","x":%s}' % (email(), "[" * 100000 + "]" * 100000)
    r = post_raw(ctx, body)
    expect_error(r, 400)
    r = post_raw(ctx, "[" * 200000)
    expect_error(r, 400)
    r = ctx.req("GET", "/health")
    eq(r.status, 200, "server alive after deep JSON")


@test()
def access_log_after_large_body_is_intact(ctx):
    # a body that is large enough to make the server grow its read buffer must not
    # corrupt the method/path recorded for the access log
    rid = uniq("biglog")
    body = '{"name":"D","email":"%s","pad":"%s"}' % (email(), "p" * 300000)
    r = ctx.req("POST", "/users", body, headers=[("X-Request-Id", rid)])
    eq(r.status, 201, "large body create (%r)" % r.body[:200])
    line = None
    deadline = time.time() + 3
    while time.time() < deadline and line is None:
        for ln in ctx.server.stderr().splitlines():
            if rid in ln:
                line = ln
        time.sleep(0.05)
    check(line is not None, "no access log line for request id %s" % rid)
    check(" POST /users " in line and "status=201" in line,
          "access log line for a large POST is wrong: %r" % line[:300])


@test()
def create_invalid_json(ctx):
    mail = email()
    cases = [
        '{"name":"A","email":"%s"' % mail,
        '{"name":"A","email":"%s"} x' % mail,
        '{"name":"A","email":"%s"}{}' % mail,
        '{"name":"A" "email":"%s"}' % mail,
        '{"name":"A","email":"%s",}' % mail,
        "{'name':'A'}",
        '{"name":"A\x01","email":"%s"}' % mail,  # raw control char in a string
        '{"name":"A","email":"%s","n":01}' % mail,
        '{"name":"A","email":"%s","n":1.}' % mail,
        '{"name":"A","email":"%s","n":NaN}' % mail,
        '{"name":"A","email":"%s","n":tru}' % mail,
        '{"name":"\\x41","email":"%s"}' % mail,
        "",
        " ",
        "\ufeff{}",
    ]
    for body in cases:
        r = post_raw(ctx, body)
        expect_error(r, 400)
    j = expect_error(post_raw(ctx, '{"name":"A","email":"%s"' % mail), 400)
    check("json" in j["error"], "invalid JSON message %r does not say json" % j["error"])
    # whitespace around the value is fine
    r = post_raw(ctx, ' \r\n\t{"name":"Ws","email":"%s"} \n\t ' % email())
    eq(r.status, 201, "surrounding whitespace (%r)" % r.body[:200])


@test()
def create_non_object_body(ctx):
    for body in ("[]", '["a"]', '"str"', "1", "null", "true", "[{\"name\":\"A\",\"email\":\"a@b\"}]"):
        expect_error(post_raw(ctx, body), 400, "body must be a json object")


@test()
def create_unknown_fields_ignored(ctx):
    mail = email()
    r = ctx.req("POST", "/users", {"name": "Extra", "email": mail, "id": 999999, "created_at": "x",
                                   "admin": True, "nested": {"a": [1, 2, {"b": None}]}})
    eq(r.status, 201, "status (%r)" % r.body[:200])
    u = r.json()
    check_user(u, "Extra", mail)
    check(u["id"] != 999999, "client-supplied id was used")
    check(u["created_at"] != "x", "client-supplied created_at was used")


@test()
def create_content_type(ctx):
    body = '{"name":"Ct","email":"%s"}'
    for ct in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx", "json",
               "application/json-patch+json", "multipart/form-data; boundary=x"):
        r = ctx.req("POST", "/users", body % email(), content_type=ct)
        expect_error(r, 415)
    r = ctx.req("POST", "/users", body % email(), content_type=None)
    expect_error(r, 415)
    for ct in ("application/json; charset=utf-8", "application/json;charset=UTF-8",
               "Application/JSON", "application/json ; charset=utf-8"):
        r = ctx.req("POST", "/users", body % email(), content_type=ct)
        eq(r.status, 201, "Content-Type %r (%r)" % (ct, r.body[:200]))


@test()
def create_email_conflict_case_insensitive(ctx):
    base = uniq("Mixed")
    u = create(ctx, mail="%s@Example.COM" % base)
    for variant in ("%s@Example.COM" % base, "%s@example.com" % base.lower(), "%s@EXAMPLE.com" % base.upper()):
        r = ctx.req("POST", "/users", {"name": "Dup", "email": variant})
        expect_error(r, 409, "email already exists")
    g = ctx.req("GET", "/users/%d" % u["id"])
    eq(g.json(), u, "original user unchanged")


# ---------------------------------------------------------------- get

@test()
def get_user_by_id(ctx):
    u = create(ctx, name="Getter")
    r = ctx.req("GET", "/users/%d" % u["id"])
    eq(r.status, 200, "status")
    eq(r.json(), u, "body")
    expect_error(ctx.req("GET", "/users/9223372036854775807"), 404, "user not found")
    expect_error(ctx.req("GET", "/users/%d" % (u["id"] + 100000)), 404, "user not found")


@test()
def get_user_invalid_id(ctx):
    for bad in ("0", "-1", "abc", "9223372036854775808", "18446744073709551616", "99999999999999999999",
                "1.0", "1e3", "+1", "0x1", "1a", "%20%31", "%31%20", "00"):
        expect_error(ctx.req("GET", "/users/" + bad), 400, "invalid id")


@test()
def get_user_leading_zero(ctx):
    u = create(ctx, name="Zero")
    r = ctx.req("GET", "/users/0%d" % u["id"])
    if r.status == 200:
        eq(r.json(), u, "leading zero id resolves to the same user")
    else:
        expect_error(r, 400, "invalid id")


# ---------------------------------------------------------------- list

@test()
def list_pagination_walk(ctx):
    made = [create(ctx, name="Page %d" % i) for i in range(5)]
    ids = [u["id"] for u in made]
    start = ids[0] - 1
    seen = []
    after = start
    for _ in range(100):
        r = ctx.req("GET", "/users?limit=2&after=%d" % after)
        eq(r.status, 200, "list status (%r)" % r.body[:200])
        j = r.json()
        eq(sorted(j.keys()), ["next_after", "users"], "list keys")
        check(isinstance(j["users"], list) and len(j["users"]) <= 2, "page size > limit: %r" % j)
        for u in j["users"]:
            check_user(u)
            check(u["id"] > after, "id %d not > after %d" % (u["id"], after))
        seen.extend(u["id"] for u in j["users"])
        if j["next_after"] is None:
            break
        check(isinstance(j["next_after"], int), "next_after %r" % j["next_after"])
        check(j["users"], "empty page with non-null next_after")
        eq(j["next_after"], j["users"][-1]["id"], "next_after = last id of the page")
        after = j["next_after"]
    else:
        fail("pagination did not end after 100 pages")
    eq(seen, sorted(set(seen)), "ids ascending without duplicates")
    for i in ids:
        check(i in seen, "created user %d missing from the walk %r" % (i, seen))
    byid = {u["id"]: u for u in made}
    r = ctx.req("GET", "/users?limit=5&after=%d" % start)
    got = [u for u in r.json()["users"] if u["id"] in byid]
    eq(got, made, "listed users equal created ones")


@test()
def list_default_limit_and_bounds(ctx):
    for _ in range(3):
        create(ctx)
    r = ctx.req("GET", "/users")
    eq(r.status, 200, "GET /users")
    j = r.json()
    check(1 <= len(j["users"]) <= 50, "default page size %d" % len(j["users"]))
    ids = [u["id"] for u in j["users"]]
    eq(ids, sorted(ids), "ascending ids")
    for q in ("limit=1", "limit=1000", "after=0", "limit=1&after=0", "unknown=1", "limit=3&foo=bar&x"):
        r = ctx.req("GET", "/users?" + q)
        eq(r.status, 200, "GET /users?%s (%r)" % (q, r.body[:200]))
    r = ctx.req("GET", "/users?limit=1")
    eq(len(r.json()["users"]), 1, "limit=1 page size")
    check(r.json()["next_after"] is not None, "limit=1 with more users: next_after null")
    r = ctx.req("GET", "/users?after=9223372036854775807")
    eq(r.json(), {"users": [], "next_after": None}, "page after the largest id")


@test()
def list_bad_params(ctx):
    for q in ("limit=0", "limit=1001", "limit=abc", "limit=", "limit=-1", "limit=1.5", "limit=+5",
              "limit=99999999999999999999", "after=-1", "after=abc", "after=", "after=1.5",
              "after=99999999999999999999", "limit=2&limit=3", "after=1&after=2", "limit=2&limit=2",
              "limit=%zz", "limit=%", "limit=1%00", "limit=%201", "after=%2D1"):
        r = ctx.req("GET", "/users?" + q)
        expect_error(r, 400)


@test()
def list_percent_encoded_params(ctx):
    r = ctx.req("GET", "/users?%6cimit=%31")
    eq(r.status, 200, "percent-encoded query (%r)" % r.body[:200])
    eq(len(r.json()["users"]), 1, "limit=1 via percent-encoding")


# ---------------------------------------------------------------- patch

def patch(ctx, uid, body, ctype="application/json"):
    return ctx.req("PATCH", "/users/%d" % uid, body, content_type=ctype)


@test()
def patch_fields(ctx):
    u = create(ctx, name="Before")
    r = patch(ctx, u["id"], {"name": "After"})
    eq(r.status, 200, "patch name (%r)" % r.body[:200])
    v = r.json()
    check_user(v, "After", u["email"])
    eq((v["id"], v["created_at"]), (u["id"], u["created_at"]), "id/created_at unchanged")
    mail = email()
    r = patch(ctx, u["id"], {"email": mail})
    eq(r.status, 200, "patch email")
    check_user(r.json(), "After", mail)
    mail2 = email()
    r = patch(ctx, u["id"], {"name": "Both", "email": mail2})
    eq(r.status, 200, "patch both")
    check_user(r.json(), "Both", mail2)
    for body in ({}, {"name": None}, {"email": None}, {"name": None, "email": None}, {"other": 1}):
        r = patch(ctx, u["id"], body)
        eq(r.status, 200, "patch %r" % body)
        check_user(r.json(), "Both", mail2)
    g = ctx.req("GET", "/users/%d" % u["id"])
    check_user(g.json(), "Both", mail2)
    eq(g.json()["created_at"], u["created_at"], "created_at after patches")


@test()
def patch_conflict(ctx):
    a = create(ctx, name="A")
    b = create(ctx, name="B")
    expect_error(patch(ctx, b["id"], {"email": a["email"]}), 409, "email already exists")
    expect_error(patch(ctx, b["id"], {"email": a["email"].upper()}), 409, "email already exists")
    eq(ctx.req("GET", "/users/%d" % b["id"]).json(), b, "B unchanged after conflict")
    # re-casing one's own email is not a conflict
    r = patch(ctx, a["id"], {"email": a["email"].upper()})
    eq(r.status, 200, "re-case own email (%r)" % r.body[:200])
    eq(r.json()["email"], a["email"].upper(), "re-cased email")
    r = patch(ctx, a["id"], {"email": a["email"].upper()})
    eq(r.status, 200, "patch to the same email")


@test()
def patch_invalid(ctx):
    u = create(ctx, name="Valid")
    expect_error(patch(ctx, u["id"], {"name": ""}), 400, "name must be 1 to 200 characters")
    expect_error(patch(ctx, u["id"], {"name": "x" * 201}), 400, "name must be 1 to 200 characters")
    expect_error(patch(ctx, u["id"], {"name": "a\u0001"}), 400, "name must not contain control characters")
    expect_error(patch(ctx, u["id"], {"name": 5}), 400, "name must be a string")
    expect_error(patch(ctx, u["id"], {"email": "ab"}), 400, "email must be 3 to 254 bytes")
    expect_error(patch(ctx, u["id"], {"email": "abc"}), 400, "email must contain one @ with text on both sides")
    expect_error(patch(ctx, u["id"], {"email": False}), 400, "email must be a string")
    expect_error(patch(ctx, u["id"], "[]"), 400, "body must be a json object")
    expect_error(patch(ctx, u["id"], '{"name":"a","name":"b"}'), 400, prefix="duplicate key")
    expect_error(patch(ctx, u["id"], '{"name":'), 400)
    expect_error(patch(ctx, u["id"], {"name": "Ok"}, ctype="text/plain"), 415)
    # a valid name with an invalid email changes nothing
    expect_error(patch(ctx, u["id"], {"name": "Changed", "email": "bad"}), 400)
    eq(ctx.req("GET", "/users/%d" % u["id"]).json(), u, "user unchanged after failed patches")


@test()
def patch_missing_and_invalid_id(ctx):
    expect_error(ctx.req("PATCH", "/users/9223372036854775807", {"name": "X"}), 404, "user not found")
    expect_error(ctx.req("PATCH", "/users/0", {"name": "X"}), 400, "invalid id")
    expect_error(ctx.req("PATCH", "/users/abc", {"name": "X"}), 400, "invalid id")


# ---------------------------------------------------------------- delete

@test()
def delete_user(ctx):
    u = create(ctx, name="Doomed")
    r = ctx.req("DELETE", "/users/%d" % u["id"])
    eq(r.status, 204, "delete status (%r)" % r.body[:200])
    eq(r.body, b"", "204 body")
    expect_error(ctx.req("GET", "/users/%d" % u["id"]), 404, "user not found")
    expect_error(ctx.req("DELETE", "/users/%d" % u["id"]), 404, "user not found")
    expect_error(ctx.req("PATCH", "/users/%d" % u["id"], {"name": "Z"}), 404, "user not found")
    # the deleted user is gone from listings and its email can be reused
    r = ctx.req("GET", "/users?limit=1&after=%d" % (u["id"] - 1))
    check(all(x["id"] != u["id"] for x in r.json()["users"]), "deleted user still listed")
    v = create(ctx, name="Reuse", mail=u["email"])
    check(v["id"] != u["id"], "id reused after delete")


@test()
def delete_invalid_id(ctx):
    expect_error(ctx.req("DELETE", "/users/0"), 400, "invalid id")
    expect_error(ctx.req("DELETE", "/users/x"), 400, "invalid id")
    expect_error(ctx.req("DELETE", "/users/9223372036854775807"), 404, "user not found")


@test()
def keepalive_after_json_errors(ctx):
    # 4xx that are not framing errors keep the connection usable
    with ctx.conn() as c:
        seq = [("POST", "/users", "{", 400), ("POST", "/users", '{"name":"a"}', 400),
               ("GET", "/users/abc", None, 400), ("GET", "/users/9223372036854775807", None, 404),
               ("GET", "/health", None, 200)]
        for method, path, body, status in seq:
            c.send(build_request(method, path, body))
            r = c.read_response(method=method)
            common_checks(r, method)
            eq(r.status, status, "%s %s" % (method, path))
            check(not r.has_close(), "%s %s -> %d closed the connection" % (method, path, status))


@test()
def concurrent_creates(ctx):
    import threading
    results = []
    lock = threading.Lock()
    same = "%s@example.com" % uniq("race")

    def worker(k):
        for j in range(8):
            mail = same if j == 0 else "%s@example.com" % uniq("conc")
            try:
                r = ctx.req("POST", "/users", {"name": "C%d-%d" % (k, j), "email": mail}, timeout=20)
                with lock:
                    results.append((mail == same, r.status, r.json()))
            except Exception as e:  # noqa: BLE001
                with lock:
                    results.append((mail == same, None, str(e)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    racing = [(s, b) for is_same, s, b in results if is_same]
    others = [(s, b) for is_same, s, b in results if not is_same]
    eq(len(results), 96, "completed requests")
    eq(sorted(s for s, _ in racing), [201] + [409] * 11, "statuses for 12 concurrent creates of one email")
    for s, b in racing:
        if s == 409:
            eq(b, {"error": "email already exists"}, "409 body")
    bad = [(s, b) for s, b in others if s != 201]
    check(not bad, "concurrent creates failed: %r" % bad[:3])
    ids = [b["id"] for s, b in others + racing if s == 201]
    eq(len(ids), len(set(ids)), "distinct ids")


@test()
def burst_of_creates_each_gets_its_own_row(ctx):
    """Creates arriving together are committed together (one transaction per loop
    turn on SQLite, one INSERT per batch on PostgreSQL): each answer must still be
    the caller's own row, exactly one create per email (case-insensitively) wins,
    and every 201 is stored."""
    base = uniq("burst")
    groups = 8
    sends = []  # (name, email, group)
    for g in range(groups):
        addr = "%s-%d@example.com" % (base, g)
        for k, mail in enumerate((addr, addr.upper(), addr, addr.title())):
            name = 'n%d-%d "q" \\ {b},c NULL \u00e9' % (g, k)
            sends.append((name, mail, g))
    conns = [ctx.conn(timeout=20) for _ in sends]
    try:
        reqs = [build_request("POST", "/users", {"name": n, "email": m}) for n, m, _ in sends]
        for c, data in zip(conns, reqs):  # all on the wire before any answer is read
            c.send(data)
        answers = [c.read_response("POST") for c in conns]
    finally:
        for c in conns:
            c.close()
    winners = {}
    for (name, mail, g), r in zip(sends, answers):
        common_checks(r, "POST")
        check(r.status in (201, 409), "burst create %r: %d %r" % (mail, r.status, r.body[:200]))
        if r.status == 201:
            check_user(r.json(), name=name, mail=mail)
            check(g not in winners, "two creates of email group %d won" % g)
            winners[g] = r.json()
        else:
            eq(r.json(), {"error": "email already exists"}, "409 body")
    eq(sorted(winners), list(range(groups)), "one winner per email group")
    for u in winners.values():
        r = ctx.req("GET", "/users/%d" % u["id"])
        eq(r.status, 200, "GET of a burst winner")
        eq(r.json(), u, "stored user equals the 201 body")


@test()
def json_escaping_round_trip(ctx):
    names = ['"quoted" \\ back/slash', "snow \u2603 face \U0001F600 <tag> &amp;", "line\u2028sep",
             "\ufeffbom", "tab-less \u00a0nbsp", "'single'", "{\"json\":[1]}"]
    for name in names:
        u = create(ctx, name=name)
        eq(u["name"], name, "name round trip")
        r = ctx.req("GET", "/users/%d" % u["id"])
        eq(r.json()["name"], name, "name after GET")
        try:
            r.body.decode("utf-8")
        except UnicodeDecodeError:
            fail("response is not UTF-8: %r" % r.body[:200])
    mail = 'we"ird\\x@example.com'
    u = create(ctx, name="Weird", mail=mail)
    eq(u["email"], mail, "email with quote and backslash")
