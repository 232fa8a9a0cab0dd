"""Operations: /health, /ready, /metrics, auth, access logs, configuration
errors, signals and drain, durability across kill -9."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import harness
from harness import (TOKEN, Conn, build_request, check, common_checks, eq, expect_error, fail,
                     free_port, parse_metrics, metric, metric_sum, request, sanitizer_summary, test, uniq,
                     wait_health)

AUTH = [("Authorization", "Bearer " + TOKEN)]


# ---------------------------------------------------------------- health / ready / metrics

@test()
def health_plain_ok(ctx):
    r = ctx.req("GET", "/health")
    eq(r.status, 200, "status")
    eq(r.body, b"ok", "body")
    ct = r.header("Content-Type") or ""
    eq(ct.split(";")[0].strip(), "text/plain", "Content-Type")
    eq(r.header("Content-Length"), "2", "Content-Length")


@test()
def ready_json(ctx):
    r = ctx.req("GET", "/ready")
    eq(r.status, 200, "status")
    eq((r.header("Content-Type") or "").split(";")[0].strip(), "application/json", "Content-Type")
    eq(r.json(), {"status": "ready"}, "body")
    eq(r.body, b'{"status":"ready"}', "exact body")


def get_metrics(ctx, headers=None):
    r = ctx.req("GET", "/metrics", headers=headers)
    eq(r.status, 200, "/metrics status")
    ct = r.header("Content-Type") or ""
    check(ct.startswith("text/plain"), "metrics Content-Type %r" % ct)
    check("version=0.0.4" in ct, "metrics Content-Type %r lacks version=0.0.4" % ct)
    return r.text(), parse_metrics(r.text())


@test()
def metrics_format_and_families(ctx):
    ctx.req("GET", "/health")
    ctx.req("GET", "/nope")
    text, m = get_metrics(ctx)
    for fam, typ in (("http_requests_total", "counter"), ("http_request_duration_seconds", "histogram"),
                     ("db_pool_connections", "gauge"), ("orders_processed_total", "counter"),
                     ("http_requests_in_flight", "gauge"), ("db_errors_total", "counter"),
                     ("db_reconnects_total", "counter")):
        check(re.search(r"^# TYPE %s %s$" % (fam, typ), text, re.M), "no '# TYPE %s %s'" % (fam, typ))
    check(any(k[0] == "db_pool_connections" for k in m), "no db_pool_connections sample")
    # the scrape itself is in flight (other tests may share the server)
    inflight = metric(m, "http_requests_in_flight")
    check(inflight is not None and inflight >= 1, "http_requests_in_flight %r during a scrape" % inflight)
    for kind in ("unavailable", "error"):
        check(metric(m, "db_errors_total", backend="sqlite", kind=kind) is not None
              or metric(m, "db_errors_total", backend="postgres", kind=kind) is not None,
              "no db_errors_total{kind=%r} sample" % kind)
    # orders_pending is the shared queue's depth: each process reports all of it
    if "orders_pending" in text:
        check(re.search(r"^# HELP orders_pending .*max\(\)", text, re.M),
              "orders_pending's HELP does not say to aggregate with max()")
    check(any(k[0] == "orders_processed_total" for k in m), "no orders_processed_total sample")
    check(metric_sum(m, "http_requests_total", method="GET", route="/health", status="200") is not None,
          'no http_requests_total{method="GET",route="/health",status="200"}')
    # histogram invariants per route
    routes = {dict(k[1]).get("route") for k in m if k[0] == "http_request_duration_seconds_bucket"}
    check("/health" in routes, "no duration histogram for /health")
    for route in routes:
        buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in m.items()
                          if k[0] == "http_request_duration_seconds_bucket" and dict(k[1]).get("route") == route))
        check(buckets and buckets[-1][0] == float("inf"), "route %s: no +Inf bucket" % route)
        counts = [v for _, v in buckets]
        eq(counts, sorted(counts), "route %s: cumulative bucket counts" % route)
        count = metric(m, "http_request_duration_seconds_count", route=route)
        s = metric(m, "http_request_duration_seconds_sum", route=route)
        check(count is not None and s is not None, "route %s: no _count/_sum" % route)
        eq(count, counts[-1], "route %s: _count equals +Inf bucket" % route)
        check(s >= 0, "route %s: negative _sum" % route)
    # the 404 is counted too (under some route label) with status 404
    check(any(k[0] == "http_requests_total" and dict(k[1]).get("status") == "404" for k in m),
          "404 responses not counted in http_requests_total")


@test()
def metrics_counters_increase(ctx):
    _, m0 = get_metrics(ctx)
    before = metric_sum(m0, "http_requests_total", method="GET", route="/health", status="200") or 0
    cnt0 = metric(m0, "http_request_duration_seconds_count", route="/health") or 0
    for _ in range(3):
        eq(ctx.req("GET", "/health").status, 200, "health")
    u = ctx.req("POST", "/users", {"name": "M", "email": "%s@example.com" % uniq("m")})
    eq(u.status, 201, "create")
    delta = None
    for _ in range(20):
        _, m1 = get_metrics(ctx)
        after = metric_sum(m1, "http_requests_total", method="GET", route="/health", status="200") or 0
        delta = after - before
        if delta >= 3:
            break
        time.sleep(0.05)
    eq(delta, 3, "GET /health 200 counter delta after 3 requests")
    cnt1 = metric(m1, "http_request_duration_seconds_count", route="/health")
    eq(cnt1 - cnt0, 3, "/health histogram count delta")
    check((metric_sum(m1, "http_requests_total", method="POST", route="/users", status="201") or 0) >= 1,
          "POST /users 201 not counted")
    # route labels are patterns, not raw paths
    ctx.req("GET", "/users/%d" % u.json()["id"])
    _, m2 = get_metrics(ctx)
    check(metric_sum(m2, "http_requests_total", method="GET", route="/users/{id}", status="200") is not None,
          'no series with route="/users/{id}"')
    check(not any(k[0] == "http_requests_total" and dict(k[1]).get("route", "").startswith("/users/")
                  and dict(k[1])["route"] != "/users/{id}" for k in m2),
          "raw paths used as route labels")


@test()
def metrics_not_flooded_by_unknown_paths(ctx):
    for i in range(30):
        ctx.req("GET", "/random-%d-%s" % (i, uniq()))
    text, m = get_metrics(ctx)
    check("random-" not in text, "unmatched paths leak into metric labels (unbounded cardinality)")


# ---------------------------------------------------------------- auth

@test(server="auth")
def auth_required(ctx):
    for method, path, body in (("GET", "/users/1", None), ("GET", "/users", None),
                               ("DELETE", "/users/1", None), ("PATCH", "/users/1", {"name": "x"}),
                               ("POST", "/users", {"name": "x", "email": "x@y"})):
        r = ctx.req(method, path, body)
        expect_error(r, 401, "unauthorized")
        www = r.header("WWW-Authenticate") or ""
        check(www.startswith("Bearer"), "%s %s: WWW-Authenticate %r" % (method, path, www))


@test(server="auth")
def auth_required_for_options(ctx):
    # API.md: with a token set, every endpoint except /health, /ready, /metrics needs it
    for path in ("/users", "/users/1"):
        r = ctx.req("OPTIONS", path)
        expect_error(r, 401, "unauthorized")
    r = ctx.req("OPTIONS", "/health")
    eq(r.status, 204, "OPTIONS /health without token")


@test(server="auth")
def auth_post_without_token_closes_before_body(ctx):
    body = json.dumps({"name": "NoAuth", "email": "%s@example.com" % uniq("a")}).encode()
    with ctx.conn() as c:
        c.send(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        r = c.read_response()
        common_checks(r)
        expect_error(r, 401, "unauthorized")
        check(r.has_close(), "401 with unread body lacks Connection: close")
        rest, state = c.read_rest(3)
        check(rest == b"" and state == "eof", "after 401: %r %s" % (rest[:200], state))
    with ctx.conn() as c:  # body sent along: must not be treated as a request
        inner = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: leak\r\n\r\n"
        c.send(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(inner) + inner)
        r = c.read_response()
        expect_error(r, 401, "unauthorized")
        if r.has_close():
            rest, state = c.read_rest(3)
            check(rest == b"", "body of a refused request answered: %r" % rest[:200])
        else:
            check(c.quiet_for(0.5), "body of a refused request answered: %r" % c.buf[:200])


@test(server="auth")
def auth_token_accepted(ctx):
    r = ctx.req("POST", "/users", {"name": "Auth", "email": "%s@example.com" % uniq("a")}, AUTH)
    eq(r.status, 201, "create with token (%r)" % r.body[:200])
    uid = r.json()["id"]
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = ctx.req("GET", "/users/%d" % uid, headers=[("Authorization", "%s %s" % (scheme, TOKEN))])
        eq(r.status, 200, "scheme %r" % scheme)
    r = ctx.req("GET", "/users/9223372036854775807", headers=AUTH)
    expect_error(r, 404, "user not found")
    r = ctx.req("OPTIONS", "/users", headers=AUTH)
    eq(r.status, 204, "OPTIONS with token")


@test(server="auth")
def auth_wrong_tokens(ctx):
    bad = ["Bearer wrong", "Bearer " + TOKEN[:-1], "Bearer " + TOKEN + "x", "Bearer  " + TOKEN + "z",
           "Bearer " + TOKEN.upper(), "Basic " + TOKEN, TOKEN, "Bearer", "Bearer ", "Token " + TOKEN,
           "Bearer" + TOKEN, "Bearer " + TOKEN[1:]]
    for value in bad:
        r = ctx.req("GET", "/users/1", headers=[("Authorization", value)])
        expect_error(r, 401, "unauthorized")
        check((r.header("WWW-Authenticate") or "").startswith("Bearer"), "WWW-Authenticate missing")
    r = ctx.req("GET", "/users/1", headers=AUTH + [("Authorization", "Bearer wrong")])
    check(r.status in (400, 401), "two Authorization headers -> %d" % r.status)


@test(server="auth")
def auth_open_endpoints(ctx):
    for path in ("/health", "/ready", "/metrics"):
        r = ctx.req("GET", path)
        eq(r.status, 200, "%s without token" % path)
        r = ctx.req("GET", path, headers=[("Authorization", "Bearer wrong")])
        eq(r.status, 200, "%s with a wrong token" % path)


@test(server="auth")
def json_access_log(ctx):
    rid = uniq("jsonlog")
    ctx.req("GET", "/users/9223372036854775807", headers=AUTH + [("X-Request-Id", rid)])
    deadline = time.time() + 3
    entry = None
    while time.time() < deadline and entry is None:
        for ln in ctx.server.stderr().splitlines():
            if rid in ln:
                try:
                    entry = json.loads(ln)
                except ValueError:
                    fail("access log line is not JSON: %r" % ln[:300])
        time.sleep(0.05)
    check(entry is not None, "no access log line with request id %s" % rid)
    vals = set(str(v) for v in entry.values())
    for want in ("GET", "/users/{id}", "404", rid):
        check(want in vals, "json access log lacks %r: %r" % (want, entry))
    for ln in ctx.server.stderr().splitlines():
        if ln.strip():
            try:
                obj = json.loads(ln)
            except ValueError:
                fail("stderr line is not JSON with BRISK_LOG_FORMAT=json: %r" % ln[:300])
            check(isinstance(obj, dict), "log line is not an object: %r" % ln[:200])


@test(server="auth")
def json_log_escapes_untrusted_text(ctx):
    rid = 'q"uo\\te-' + uniq("esc")
    path = '/nope/a"b\\c'
    r = ctx.req("GET", path, headers=[("X-Request-Id", rid)])
    eq(r.header("X-Request-Id"), rid, "echoed id with quote and backslash")
    deadline = time.time() + 3
    entry = None
    while time.time() < deadline and entry is None:
        for ln in ctx.server.stderr().splitlines():
            if rid.split("-", 1)[1] in ln:
                try:
                    entry = json.loads(ln)
                except ValueError:
                    fail("log line with a quote in the request id is not JSON: %r" % ln[:300])
        time.sleep(0.05)
    check(entry is not None, "no access log line for %r" % rid)
    eq(entry.get("request_id"), rid, "request_id in the json log")
    eq(entry.get("path"), path, "path in the json log")


@test(server="auth")
def token_never_logged_or_exposed(ctx):
    # runs last in the auth group: all requests above used the token
    ctx.req("GET", "/users/1", headers=AUTH + [("X-Request-Id", "tok-check")])
    ctx.req("GET", "/users/1", headers=[("Authorization", "Bearer wrong-" + TOKEN)])
    r = ctx.req("GET", "/metrics")
    check(TOKEN not in r.text(), "token appears in /metrics")
    time.sleep(0.2)
    err = ctx.server.stderr() + ctx.server.stdout()
    check(TOKEN not in err, "token appears in the logs")


@test()
def text_access_log(ctx):
    rid = uniq("textlog")
    ctx.req("GET", "/users/9223372036854775807", headers=[("X-Request-Id", rid)])
    rid2 = uniq("textlog")
    ctx.req("POST", "/users", {"name": "L", "email": "%s@example.com" % uniq("l")}, [("X-Request-Id", rid2)])
    lines = {}
    deadline = time.time() + 3
    while time.time() < deadline and len(lines) < 2:
        for ln in ctx.server.stderr().splitlines():
            for r in (rid, rid2):
                if re.search(r"(^|[\s=\"])%s($|[\s\"])" % re.escape(r), ln):
                    lines[r] = ln
        time.sleep(0.05)
    check(rid in lines, "no access log line with request id %s" % rid)
    check(rid2 in lines, "no access log line with request id %s" % rid2)
    for r, (method, route, status) in ((rid, ("GET", "/users/{id}", "404")), (rid2, ("POST", "/users", "201"))):
        ln = lines[r]
        check(re.search(r"\b%s\b" % method, ln), "log line lacks method %s: %r" % (method, ln))
        check(route in ln, "log line lacks route %s: %r" % (route, ln))
        check(re.search(r"\b%s\b" % status, ln), "log line lacks status %s: %r" % (status, ln))
        check(not ln.lstrip().startswith("{"), "text format produced JSON: %r" % ln)


@test()
def one_access_log_line_per_request(ctx):
    rid = uniq("once")
    with Conn(ctx.port) as c:
        for i in range(3):
            c.send(build_request("GET", "/health", headers=[("X-Request-Id", "%s-%d" % (rid, i))]))
            c.read_response()
    time.sleep(0.3)
    err = ctx.server.stderr()
    for i in range(3):
        n = len(re.findall(r"%s-%d\b" % (re.escape(rid), i), err))
        eq(n, 1, "access log lines for request %d" % i)


# ---------------------------------------------------------------- configuration

def run_binary(ctx, args, env_extra, timeout=15):
    env = harness.base_env()
    env["BRISK_ADDR"] = "127.0.0.1:%d" % free_port()
    env["BRISK_DATABASE_URL"] = "sqlite:%s" % os.path.join(ctx.tmpdir(), "cfg.db")
    env.update(env_extra)
    try:
        p = subprocess.run([ctx.binary] + args, env=env, stdin=subprocess.DEVNULL, cwd=ctx.tmpdir(),
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("%r %r did not exit within %d s (started anyway?)" % (args, env_extra, timeout))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def no_sanitizer(out):
    rep = sanitizer_summary(out)
    check(rep is None, rep or "")


@test(server=None)
def config_bad_values_exit_2(ctx):
    cases = [
        ({"BRISK_THREADS": "0"}, "BRISK_THREADS"),
        ({"BRISK_THREADS": "abc"}, "BRISK_THREADS"),
        ({"BRISK_THREADS": "-3"}, "BRISK_THREADS"),
        ({"BRISK_ADDR": "nonsense"}, "BRISK_ADDR"),
        ({"BRISK_ADDR": "127.0.0.1:99999"}, "BRISK_ADDR"),
        ({"BRISK_ADDR": "127.0.0.1:"}, "BRISK_ADDR"),
        ({"BRISK_LOG_FORMAT": "xml"}, "BRISK_LOG_FORMAT"),
        ({"BRISK_LOG_LEVEL": "loud"}, "BRISK_LOG_LEVEL"),
        ({"BRISK_MAX_BODY_BYTES": "-1"}, "BRISK_MAX_BODY_BYTES"),
        ({"BRISK_MAX_BODY_BYTES": "10x"}, "BRISK_MAX_BODY_BYTES"),
        ({"BRISK_MAX_BODY_BYTES": "99999999999999999999999"}, "BRISK_MAX_BODY_BYTES"),
        ({"BRISK_MAX_HEADER_BYTES": "0"}, "BRISK_MAX_HEADER_BYTES"),
        ({"BRISK_MAX_HEADERS": "-5"}, "BRISK_MAX_HEADERS"),
        ({"BRISK_HEADER_TIMEOUT_MS": "abc"}, "BRISK_HEADER_TIMEOUT_MS"),
        ({"BRISK_BODY_TIMEOUT_MS": ""}, "BRISK_BODY_TIMEOUT_MS"),
        ({"BRISK_IDLE_TIMEOUT_MS": "1.5"}, "BRISK_IDLE_TIMEOUT_MS"),
        ({"BRISK_DRAIN_SECONDS": "-1"}, "BRISK_DRAIN_SECONDS"),
        ({"BRISK_DB_BUSY_TIMEOUT_MS": "x"}, "BRISK_DB_BUSY_TIMEOUT_MS"),
        ({"BRISK_DB_POOL": "0"}, "BRISK_DB_POOL"),
        ({"BRISK_DB_POOL": "65"}, "BRISK_DB_POOL"),
        ({"BRISK_DB_POOL": "two"}, "BRISK_DB_POOL"),
        ({"BRISK_DB_POOL": "-1"}, "BRISK_DB_POOL"),
    ]
    check_config_cases(ctx, cases)


@test(server=None)
def config_bad_database_url_exit_2(ctx):
    check_config_cases(ctx, [({"BRISK_DATABASE_URL": "mysql://x"}, "BRISK_DATABASE_URL"),
                             ({"BRISK_DATABASE_URL": "http://x/y"}, "BRISK_DATABASE_URL"),
                             ({"BRISK_DATABASE_URL": "sqlite:"}, "BRISK_DATABASE_URL")])


def check_config_cases(ctx, cases):
    for env, name in cases:
        rc, out, err = run_binary(ctx, ["serve"], env)
        no_sanitizer(err)
        eq(rc, 2, "exit status for %r (stderr %r)" % (env, err[-300:]))
        lines = [ln for ln in err.splitlines() if ln.strip()]
        eq(len(lines), 1, "stderr lines for %r: %r" % (env, lines))
        check(name in lines[0], "error line for %r does not name %s: %r" % (env, name, lines[0]))


@test(server=None)
def config_bad_flags_exit_2(ctx):
    cases = [
        (["--bogus=1"], ("bogus",)),
        (["serve", "--bogus=1"], ("bogus",)),
        (["serve", "--threads=0"], ("--threads", "BRISK_THREADS")),
        (["serve", "--log-format=xml"], ("--log-format", "BRISK_LOG_FORMAT")),
        (["frobnicate"], ("frobnicate",)),
    ]
    for args, names in cases:
        rc, out, err = run_binary(ctx, args, {})
        no_sanitizer(err)
        eq(rc, 2, "exit status for %r (stderr %r)" % (args, err[-300:]))
        lines = [ln for ln in err.splitlines() if ln.strip()]
        eq(len(lines), 1, "stderr lines for %r: %r" % (args, lines))
        check(any(n in lines[0] for n in names), "error line for %r names none of %r: %r" % (args, names, lines[0]))


@test(server=None)
def help_and_version(ctx):
    rc, out, err = run_binary(ctx, ["--help"], {})
    eq(rc, 0, "--help exit status")
    for word in ("BRISK_ADDR", "BRISK_DATABASE_URL", "BRISK_API_TOKEN", "BRISK_MAX_BODY_BYTES"):
        check(word in out + err, "--help does not mention %s" % word)
    no_sanitizer(err)
    rc, out, err = run_binary(ctx, ["--version"], {})
    eq(rc, 0, "--version exit status")
    check(re.search(r"\bbrisk\b.*\d+\.\d+\.\d+", out + err), "--version output %r" % (out + err))
    no_sanitizer(err)


@test(server=None)
def flags_override_environment(ctx):
    port = free_port()
    env = harness.base_env()
    env.update({"BRISK_DATABASE_URL": "sqlite:" + os.path.join(ctx.tmpdir(), "flags.db"),
                "BRISK_ADDR": "127.0.0.1:%d" % free_port(), "BRISK_THREADS": "1"})
    p = subprocess.Popen([ctx.binary, "serve", "--addr=127.0.0.1:%d" % port, "--log-format=json"],
                         env=env, cwd=ctx.tmpdir(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        if not wait_health(port, p):
            p.kill()
            _, e = p.communicate(timeout=10)
            fail("serve --addr=... did not listen on the flag's port (env BRISK_ADDR differs): rc=%s %r"
                 % (p.returncode, e.decode("utf-8", "replace")[-300:]))
        p.send_signal(signal.SIGTERM)
        _, e = p.communicate(timeout=20)
        e = e.decode("utf-8", "replace")
        no_sanitizer(e)
        eq(p.returncode, 0, "exit status after SIGTERM")
        for ln in e.splitlines():
            if ln.strip():
                try:
                    json.loads(ln)
                except ValueError:
                    fail("--log-format=json flag ignored: %r" % ln[:200])
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@test(server=None)
def default_threads_follow_cpu_affinity(ctx):
    """Without BRISK_THREADS, one loop per CPU the process may run on (taskset,
    cpusets), as Go's GOMAXPROCS and tokio do: not one per online CPU."""
    if not shutil.which("taskset") or (os.cpu_count() or 1) < 2:
        return
    port = free_port()
    env = harness.base_env()
    env.update({"BRISK_DATABASE_URL": "sqlite:" + os.path.join(ctx.tmpdir(), "aff.db"),
                "BRISK_ADDR": "127.0.0.1:%d" % port})
    p = subprocess.Popen(["taskset", "-c", "0", ctx.binary, "serve"], env=env, cwd=ctx.tmpdir(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_health(port, p)
        p.send_signal(signal.SIGTERM)
        _, e = p.communicate(timeout=20)
        e = e.decode("utf-8", "replace")
        check(re.search(r"listening on 127\.0\.0\.1:%d( \(TLS\))? with 1 thread," % port, e),
              "pinned to one CPU, the start-up line does not say 1 thread: %r" % e[-400:])
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---------------------------------------------------------------- signals, drain, durability

@test(server=None)
def sigterm_drains_in_flight_request(ctx):
    srv = ctx.new_server(env={"BRISK_THREADS": "2", "BRISK_DRAIN_SECONDS": "8"}, name="drain").start()
    try:
        body = json.dumps({"name": "Drain", "email": "%s@example.com" % uniq("d")}).encode()
        slow = Conn(srv.port, timeout=10)
        slow.send(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        idle = Conn(srv.port, timeout=10)  # an idle keep-alive connection must not hold up the exit
        idle.send(build_request("GET", "/health"))
        eq(idle.read_response().status, 200, "idle connection's request")
        time.sleep(0.3)
        t0 = time.time()
        srv.send_sig(signal.SIGTERM)
        time.sleep(0.5)
        # new connections are refused (or closed without any response)
        try:
            c = Conn(srv.port, timeout=3)
            try:
                c.send(build_request("GET", "/health"))
            except OSError:
                pass
            data, state = c.read_rest(3)
            c.close()
            check(not data.startswith(b"HTTP/1.1 200"), "a new connection was served after SIGTERM")
            eq(state, "eof", "new connection after SIGTERM neither refused nor closed")
        except ConnectionRefusedError:
            pass
        check(srv.proc.poll() is None, "server exited before the in-flight request finished")
        slow.send(body[10:])
        try:
            r = slow.read_response(timeout=8)
        except (socket.timeout, EOFError) as e:
            srv.wait_exit(5)
            fail("in-flight request got no response after SIGTERM: %s%s" % (
                type(e).__name__, "" if srv.alive() else "; server exited with %s: %s" % (
                    srv.proc.returncode, srv.exit_details())))
        common_checks(r)
        eq(r.status, 201, "in-flight request status (%r)" % r.body[:200])
        check(r.has_close(), "response during drain lacks Connection: close")
        rest, state = slow.read_rest(3)
        check(rest == b"" and state == "eof", "after drained response: %r %s" % (rest[:100], state))
        rc = srv.wait_exit(10)
        check(rc is not None, "server did not exit after the drain")
        check(rc == 0, "exit status %s after SIGTERM drain: %s" % (rc, srv.exit_details()))
        check(time.time() - t0 < 9, "exit took %.1f s" % (time.time() - t0))
        rep = srv.sanitizer_report()
        check(rep is None, rep or "")
        slow.close()
        idle.close()
    finally:
        srv.kill()


@test(server=None)
def sigterm_drain_deadline(ctx):
    srv = ctx.new_server(env={"BRISK_THREADS": "1", "BRISK_DRAIN_SECONDS": "1"}, name="deadline").start()
    try:
        stuck = Conn(srv.port, timeout=10)
        stuck.send(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 100\r\n\r\n{")
        time.sleep(0.3)
        t0 = time.time()
        srv.send_sig(signal.SIGTERM)
        rc = srv.wait_exit(8)
        check(rc is not None, "server still running 8 s after SIGTERM with a 1 s drain deadline")
        check(rc == 0, "exit status %s: %s" % (rc, srv.exit_details()))
        elapsed = time.time() - t0
        check(elapsed >= 0.5, "exited after %.2f s, before the drain deadline with a request in flight" % elapsed)
        rep = srv.sanitizer_report()
        check(rep is None, rep or "")
        stuck.close()
    finally:
        srv.kill()


@test(server=None)
def sigint_exits_0(ctx):
    srv = ctx.new_server(env={"BRISK_THREADS": "1"}, name="sigint").start()
    try:
        eq(request(srv.port, "GET", "/ready").status, 200, "ready")
        reason = srv.stop(signal.SIGINT, timeout=15)
        check(reason is None, reason or "")
    finally:
        srv.kill()


@test(server=None)
def sigterm_idle_server_exits_fast(ctx):
    srv = ctx.new_server(env={"BRISK_THREADS": "2", "BRISK_DRAIN_SECONDS": "10"}, name="fast").start()
    try:
        c = Conn(srv.port)
        c.send(build_request("GET", "/health"))
        c.read_response()
        t0 = time.time()
        reason = srv.stop(signal.SIGTERM, timeout=15)
        check(reason is None, reason or "")
        check(time.time() - t0 < 5, "idle server took %.1f s to exit (idle keep-alive held the drain?)"
              % (time.time() - t0))
        c.close()
    finally:
        srv.kill()


@test(server=None)
def durability_across_kill_9(ctx):
    d = ctx.tmpdir()
    db = os.path.join(d, "durable.db")
    a = ctx.new_server(env={"BRISK_THREADS": "2"}, name="durable-a", db_path=db).start()
    try:
        made = []
        for i in range(3):
            r = request(a.port, "POST", "/users", {"name": "Durable %d" % i,
                                                   "email": "%s@example.com" % uniq("k")})
            eq(r.status, 201, "create")
            made.append(r.json())
        r = request(a.port, "PATCH", "/users/%d" % made[0]["id"], {"name": "Patched"})
        eq(r.status, 200, "patch")
        made[0] = r.json()
        eq(request(a.port, "DELETE", "/users/%d" % made[2]["id"]).status, 204, "delete")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
    finally:
        a.kill()
    b = ctx.new_server(env={"BRISK_THREADS": "2"}, name="durable-b", db_path=db).start()
    try:
        for u in made[:2]:
            r = request(b.port, "GET", "/users/%d" % u["id"])
            eq(r.status, 200, "user %d after kill -9 and restart" % u["id"])
            eq(r.json(), u, "user after restart")
        expect_error(request(b.port, "GET", "/users/%d" % made[2]["id"]), 404, "user not found")
        r = request(b.port, "POST", "/users", {"name": "Dup", "email": made[1]["email"]})
        expect_error(r, 409, "email already exists")
        r = request(b.port, "POST", "/users", {"name": "New", "email": "%s@example.com" % uniq("k")})
        eq(r.status, 201, "create after restart")
        check(r.json()["id"] > made[2]["id"], "id reused after restart")
        reason = b.stop()
        check(reason is None, reason or "")
    finally:
        b.kill()


@test(server=None)
def migrate_command(ctx):
    db = os.path.join(ctx.tmpdir(), "mig.db")
    rc, out, err = run_binary(ctx, ["migrate"], {"BRISK_DATABASE_URL": "sqlite:" + db})
    no_sanitizer(err)
    eq(rc, 0, "migrate exit status (%r)" % err[-300:])
    check(os.path.exists(db), "migrate did not create the database file")
    rc, out, err = run_binary(ctx, ["migrate"], {"BRISK_DATABASE_URL": "sqlite:" + db})
    eq(rc, 0, "second migrate exit status")


@test(server=None)
def port_in_use_fails_cleanly(ctx):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        rc, out, err = run_binary(ctx, ["serve"], {"BRISK_ADDR": "127.0.0.1:%d" % port})
        no_sanitizer(err)
        check(rc != 0, "server started on a port in use")
    finally:
        s.close()
