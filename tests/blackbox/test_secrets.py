"""Secrets (API token, receipt key, a database password in the URL) never show
up in logs, error messages or /metrics: after a variety of requests at debug
level, and after start-ups that fail for many reasons."""

import os
import signal
import subprocess
import urllib.parse

import harness
from harness import Conn, build_request, check, eq, fail, free_port, request, test, uniq

# distinctive values: each also checked by its core, so a truncated echo is caught too
TOKEN = "tok-Zq8vSECRETtoken41"
RECEIPT = "rk-Zq8vSECRETreceipt77"
DBPW = "pw-Zq8vSECRETdbpass93"
CORES = ("SECRETtoken", "SECRETreceipt", "SECRETdbpass")
AUTH = [("Authorization", "Bearer " + TOKEN)]


def leaks(text):
    return [s for s in (TOKEN, RECEIPT, DBPW) + CORES if s in text]


def check_no_secrets(text, where):
    found = leaks(text)
    if found:
        i = text.find(found[0])
        fail("%s shows a secret (%s): ...%r..." % (where, found[0], text[max(0, i - 120):i + 60]))


def traffic(port):
    """Requests touching auth (good and bad tokens), users, orders, errors, metrics."""
    bodies = []

    def req(method, path, body=None, headers=None):
        r = request(port, method, path, body, headers, check_common=False)
        bodies.append(r.head_bytes.decode("latin-1") + r.text())
        return r

    req("GET", "/health")
    req("GET", "/ready")
    eq(req("GET", "/users/1").status, 401, "no token")
    for bad in ("Bearer " + TOKEN + "x", "Bearer " + TOKEN[:-1], "Basic " + TOKEN, TOKEN, "bearer  " + TOKEN):
        eq(req("GET", "/users/1", headers=[("Authorization", bad)]).status, 401, "bad token %r" % bad)
    r = req("POST", "/users", {"name": "Secret Keeper", "email": "%s@example.com" % uniq("sec")}, AUTH)
    eq(r.status, 201, "create with the token (%r)" % r.body[:200])
    uid = r.json()["id"]
    req("GET", "/users/%d" % uid, headers=AUTH)
    req("PATCH", "/users/%d" % uid, {"email": "not-an-email"}, AUTH)
    # orders sign receipts with the receipt key (whatever this build's order routes answer)
    order = {"user_id": uid, "items": [{"sku": "S-1", "quantity": 2, "unit_price_cents": 1999}]}
    req("POST", "/orders", order, AUTH + [("Idempotency-Key", uniq("idem"))])
    req("POST", "/orders/process", {"orders": [dict(order, id="o-1")]}, AUTH)
    req("GET", "/orders?user_id=%d" % uid, headers=AUTH)
    req("POST", "/users", "{not json", AUTH)
    req("GET", "/users/abc", headers=AUTH)
    # framing errors and a duplicate Authorization (the token in an error path)
    for raw in (b"GET /users/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                + b"\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n",
                b"GET /users/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                + b"\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                b"GET /users/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                + b"\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"):
        with Conn(port) as c:
            c.send(raw)
            data, _ = c.read_rest(3)
            bodies.append(data.decode("latin-1"))
    with Conn(port) as c:  # pipelined, then closed mid-request
        c.send(build_request("GET", "/users/%d" % uid, headers=AUTH) * 3
               + b"GET /users/1 HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode()[:10])
        c.read_response()
    m = req("GET", "/metrics")
    eq(m.status, 200, "/metrics")
    return bodies, m.text()


def server_env(db_url=None):
    env = {"BRISK_THREADS": "2", "BRISK_API_TOKEN": TOKEN, "BRISK_RECEIPT_KEY": RECEIPT,
           "BRISK_LOG_LEVEL": "debug"}
    if db_url:
        env["BRISK_DATABASE_URL"] = db_url
    return env


def with_password(url):
    u = urllib.parse.urlsplit(url)
    host = u.netloc.rsplit("@", 1)[-1]
    user = u.username or "brisk"
    return urllib.parse.urlunsplit((u.scheme, "%s:%s@%s" % (user, DBPW, host), u.path, u.query, u.fragment))


def run_server_and_scan(ctx, env, name, log_format):
    env = dict(env, BRISK_LOG_FORMAT=log_format)
    srv = ctx.new_server(env=env, name=name).start()
    try:
        bodies, metrics = traffic(srv.port)
        check_no_secrets(metrics, "/metrics")
        for b in bodies:
            check_no_secrets(b, "a response")
        reason = srv.stop(signal.SIGTERM, timeout=20)
        check(reason is None, reason or "")
        check_no_secrets(srv.stderr() + srv.stdout(), "the %s log" % log_format)
        check("/users/{id}" in srv.stderr(), "no access log lines: the scan saw nothing")
    finally:
        srv.kill()


@test(server=None)
def secrets_not_in_text_logs_metrics_or_responses(ctx):
    db_url = None
    if harness.pg_mode():  # a password in the URL (trust authentication ignores it)
        db_url = with_password(harness.pg_database())
    run_server_and_scan(ctx, server_env(db_url), "secrets-text", "text")


@test(server=None)
def secrets_not_in_json_logs_metrics_or_responses(ctx):
    db_url = None
    if harness.pg_mode():
        db_url = with_password(harness.pg_database())
    run_server_and_scan(ctx, server_env(db_url), "secrets-json", "json")


def run_failing(ctx, args, env_extra, timeout=20):
    env = harness.base_env()
    d = ctx.tmpdir()
    env["BRISK_ADDR"] = "127.0.0.1:%d" % free_port()
    env["BRISK_DATABASE_URL"] = "sqlite:%s" % os.path.join(d, "fail.db")
    env["BRISK_API_TOKEN"] = TOKEN
    env["BRISK_RECEIPT_KEY"] = RECEIPT
    env["BRISK_LOG_LEVEL"] = "debug"
    env.update(env_extra)
    try:
        p = subprocess.run([ctx.binary] + args, env=env, cwd=d, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("%r %r: still running after %d s (expected a failed start-up)" % (args, env_extra, timeout))
    return p.returncode, p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")


@test(server=None)
def secrets_not_in_failed_startups(ctx):
    dead = free_port()  # nothing listens there
    cases = [
        (["serve"], {"BRISK_DATABASE_URL": "postgres://alice:%s@127.0.0.1:%d/db" % (DBPW, dead)}),
        (["serve"], {"BRISK_DATABASE_URL": "postgresql://alice:%s@127.0.0.1:%d/db?sslmode=disable" % (DBPW, dead)}),
        (["serve"], {"BRISK_DATABASE_URL": "host=127.0.0.1 port=%d user=alice password=%s dbname=x" % (dead, DBPW)}),
        (["serve"], {"BRISK_DATABASE_URL": "postgres://alice:%s@127.0.0.1:%d/db?no_such_option=1" % (DBPW, dead)}),
        (["serve"], {"BRISK_DATABASE_URL": "postgres://alice:%s@[::1/db" % DBPW}),
        (["serve"], {"BRISK_DATABASE_URL": "mysql://alice:%s@127.0.0.1/db" % DBPW}),
        (["migrate"], {"BRISK_DATABASE_URL": "postgres://alice:%s@127.0.0.1:%d/db" % (DBPW, dead)}),
        (["serve"], {"BRISK_THREADS": "0"}),
        (["serve"], {"BRISK_API_TOKEN": TOKEN + "x" * 5000}),
        (["serve"], {"BRISK_RECEIPT_KEY": RECEIPT + "y" * 5000}),
        (["serve"], {"BRISK_RECEIPT_KEY": ""}),
        (["serve"], {"BRISK_USER": "no-such-user-%d" % os.getpid()}),
        (["serve"], {"BRISK_SANDBOX": "maybe"}),
        (["serve", "--api-token=" + TOKEN, "--bogus"], {}),
        (["serve", "--threads", "--api-token=" + TOKEN], {}),  # a flag missing its value
        (["serve", "--api_token=" + TOKEN], {}),  # a mistyped secret flag
        (["serve", "--api-token=", TOKEN], {}),  # a secret that lost its flag
        (["serve", "--receipt-key", RECEIPT, "--threads=x"], {}),
        (["serve", "--receipt-key"], {}),
        (["serve", "--database-url=postgres://u:%s@127.0.0.1:%d/d" % (DBPW, dead), "--threads=0"], {}),
        (["--help"], {}),
    ]
    for args, env in cases:
        rc, out = run_failing(ctx, args, env)
        if args != ["--help"]:
            check(rc != 0, "%r %r: started (exit %s) where it should fail: %r" % (args, env, rc, out[-300:]))
        check(out.strip(), "%r %r: failed without saying why" % (args, env))
        found = leaks(out)
        check(not found, "%r %r: output shows a secret %s: %r" % (args, env, found, out[-600:]))
