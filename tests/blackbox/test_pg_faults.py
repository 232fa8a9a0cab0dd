"""PostgreSQL faults (registered only when run.py has --database-url).

- PostgreSQL crashes under load and comes back: requests get 503 "database
  unavailable" within a bounded time, /health stays 200, /ready says 503, and
  brisk recovers by itself (no restart): /ready 200, writes succeed, and no
  write that was acknowledged (201) is lost.
- Two brisk processes on one database, one SIGKILLed while the background
  workers process orders: afterwards every order is processed exactly once,
  with the receipt the API defines.
- Several processes migrating one fresh database at once.
- Passwords in the URL never reach the log.
- PostgreSQL hangs (SIGSTOP): /ready answers 503 within BRISK_READY_TIMEOUT_MS,
  not the busy timeout; once a query went unanswered, requests fail fast with
  503 instead of each waiting the timeout; after SIGCONT, and after a restart
  that followed a long outage, brisk is back within about a second. The
  in-flight gauge, db_errors_total and db_reconnects_total show it.

The outage test runs its own throwaway cluster (scripts/pg_cluster.sh in a
private directory) so that stopping it disturbs no other test."""

import json
import os
import signal
import subprocess
import threading
import time

import harness
import oracle
from harness import (check, eq, expect_error, fail, metric, parse_metrics, pg_cluster, request, test, uniq,
                     wait_for)
from test_hostile import slowdown

RECEIPT_KEY = "pg-faults-receipt-key"


def _status(port, method, path, body=None, timeout=15):
    try:
        return request(port, method, path, body, timeout=timeout, check_common=False).status
    except Exception:  # noqa: BLE001
        return None


def _signal_cluster(d, sig):
    """Send sig to the cluster's postmaster and every process it started."""
    with open(os.path.join(d, "data", "postmaster.pid")) as f:
        root = int(f.readline())
    pids = [root]
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == root:
            pids.append(int(name))
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _timed(port, method, path, timeout=30):
    t0 = time.time()
    r = request(port, method, path, timeout=timeout, check_common=False)
    return r, time.time() - t0


def _metrics(port):
    r = request(port, "GET", "/metrics")
    eq(r.status, 200, "/metrics")
    return parse_metrics(r.text())


if harness.pg_mode():

    @test(server=None)
    def outage_and_recovery(ctx):
        d = "/tmp/brisk-pgf-%d-%s" % (os.getpid(), uniq("c"))
        url = pg_cluster("start", d)
        srv = None
        try:
            srv = ctx.new_server(env={"BRISK_THREADS": "2", "BRISK_DATABASE_URL": url,
                                      "BRISK_DB_BUSY_TIMEOUT_MS": "2000"}, name="outage").start()
            eq(request(srv.port, "GET", "/ready").status, 200, "ready before the outage")

            acked = []  # users answered 201
            durations = []  # (seconds, status) of every request during the run
            lock = threading.Lock()
            stop = threading.Event()

            def load(k):
                while not stop.is_set():
                    mail = "%s@example.com" % uniq("out%d-" % k)
                    t0 = time.time()
                    try:
                        r = request(srv.port, "POST", "/users", {"name": "Load", "email": mail},
                                    timeout=20)
                    except harness.TestFailure as e:
                        with lock:
                            durations.append((time.time() - t0, str(e)))
                        continue
                    with lock:
                        durations.append((time.time() - t0, r.status))
                        if r.status == 201:
                            acked.append(r.json())
                        elif r.status != 503:
                            durations.append((0, "unexpected %d %r" % (r.status, r.body[:200])))
                        else:
                            j = r.json()
                            if j != {"error": "database unavailable"}:
                                durations.append((0, "503 body %r" % r.body[:200]))
                    if r.status == 503:
                        time.sleep(0.02)

            threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(4)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            with lock:
                before = len(acked)
            check(before > 0, "no write succeeded before the outage")

            # crash PostgreSQL (immediate stop: no checkpoint, like a kill)
            t_down = time.time()
            pg_cluster("crash", d)
            check(wait_for(lambda: _status(srv.port, "GET", "/ready") == 503, 10),
                  "/ready did not turn 503 within 10 s of the crash")
            ready_after = time.time() - t_down
            r = request(srv.port, "GET", "/ready")
            expect_error(r, 503, "database unavailable")
            r = request(srv.port, "GET", "/health")
            eq((r.status, r.body), (200, b"ok"), "/health during the outage")
            r = request(srv.port, "GET", "/users/1", timeout=15)
            expect_error(r, 503, "database unavailable")
            time.sleep(2.0)

            # back up on the same port and data: brisk reconnects by itself
            pg_cluster("start", d)
            t_up = time.time()
            check(wait_for(lambda: _status(srv.port, "GET", "/ready") == 200, 20, 0.2),
                  "/ready not 200 within 20 s of PostgreSQL coming back")
            recovered = time.time() - t_up
            # every loop (new connections spread over them) is back within a few seconds
            check(wait_for(lambda: all(_status(srv.port, "GET", "/ready") == 200 for _ in range(10)), 8, 0.2),
                  "some loops still answer 503 %.1f s after the first /ready 200" % (time.time() - t_up - recovered))
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(30)
            r = request(srv.port, "POST", "/users", {"name": "After", "email": "%s@example.com" % uniq("aft")})
            eq(r.status, 201, "write after recovery (%r)" % r.body[:200])

            with lock:
                bad = [x for x in durations if not isinstance(x[1], int)]
                slow = [x for x in durations if x[0] > 8]
                n503 = sum(1 for x in durations if x[1] == 503)
                users = list(acked)
            check(not bad, "unexpected answers: %r" % bad[:5])
            check(not slow, "%d requests took longer than 8 s: %r" % (len(slow), slow[:5]))
            check(n503 > 0, "no request saw 503 during the outage")
            check(len(users) > before, "no write succeeded after the outage")
            # no acknowledged write lost
            lost = []
            for u in users:
                g = request(srv.port, "GET", "/users/%d" % u["id"])
                if g.status != 200 or g.json() != u:
                    lost.append((u["id"], g.status))
            check(not lost, "%d of %d acknowledged users lost or changed: %r" % (len(lost), len(users), lost[:5]))
            check(ready_after < 10 and recovered < 20, "timings %.1f %.1f" % (ready_after, recovered))
            reason = srv.stop()
            check(reason is None, reason or "")
        finally:
            if srv:
                srv.kill()
            pg_cluster("stop", d)

    def _receipt(order):
        return oracle.receipt(order["id"], order["user_id"], order["items"], order["total_cents"],
                              key=RECEIPT_KEY)

    @test(server=None)
    def two_processes_sigkill_exactly_once(ctx):
        url = harness.pg_database()
        env = {"BRISK_THREADS": "2", "BRISK_DATABASE_URL": url, "BRISK_BG_WORKERS": "2",
               "BRISK_RECEIPT_KEY": RECEIPT_KEY}
        a = ctx.new_server(env=env, name="pk-a").start()
        b = ctx.new_server(env=env, name="pk-b").start()
        c = None
        try:
            users = [request(a.port, "POST", "/users", {"name": "K%d" % i, "email": "%s@example.com" % uniq("pk")}).json()
                     for i in range(5)]
            created = []
            lock = threading.Lock()
            errors = []

            def make(port, n, k):
                for i in range(n):
                    u = users[(i + k) % len(users)]
                    items = [{"sku": "S-%d" % j, "quantity": 1 + (i + j) % 3, "unit_price_cents": 1999 + 7 * i}
                             for j in range(1 + i % 4)]
                    try:
                        r = request(port, "POST", "/orders", {"user_id": u["id"], "items": items}, timeout=20)
                    except harness.TestFailure as e:
                        if port != a.port:
                            with lock:
                                errors.append(str(e))
                        return
                    with lock:
                        if r.status == 201:
                            created.append(r.json())
                        elif port != a.port:
                            errors.append("%d %r" % (r.status, r.body[:200]))

            ts = [threading.Thread(target=make, args=(p, 250, k), daemon=True)
                  for k, p in enumerate([a.port, a.port, b.port, b.port])]
            for t in ts:
                t.start()
            # kill A while it creates and processes
            wait_for(lambda: len(created) >= 300, 30)
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            for t in ts:
                t.join(60)
            check(not errors, "requests to the surviving process failed: %r" % errors[:5])
            # a restarted A shares the work again
            c = ctx.new_server(env=env, name="pk-c").start()

            def pending():
                return int(harness.psql(url, "SELECT count(*) FROM orders WHERE status = 'pending'").strip())

            check(wait_for(lambda: pending() == 0, 60, 0.3), "orders still pending after 60 s: %d" % pending())
            rows = harness.psql(url, "SELECT count(*), count(receipt), count(processed_at) FROM orders "
                                     "WHERE status = 'processed'").strip()
            total = int(harness.psql(url, "SELECT count(*) FROM orders").strip())
            eq(rows, "%d|%d|%d" % (total, total, total), "processed, receipt, processed_at counts")
            check(total >= len(created), "acknowledged orders lost: %d stored, %d acknowledged" % (total, len(created)))
            wrong = []
            for o in created:
                r = request(b.port, "GET", "/orders/%d" % o["id"])
                if r.status != 200:
                    wrong.append((o["id"], r.status))
                    continue
                got = r.json()
                if got["status"] != "processed" or got["receipt"] != _receipt(got) or got["processed_at"] is None:
                    wrong.append((o["id"], got["status"], got["receipt"]))
                for k in ("user_id", "items", "subtotal_cents", "total_cents", "created_at"):
                    if got[k] != o[k]:
                        wrong.append((o["id"], k))
            check(not wrong, "%d orders wrong: %r" % (len(wrong), wrong[:5]))
            # the survivors processed no order twice: their counters add up to at most the total
            n = 0
            for s in (b, c):
                m = harness.parse_metrics(request(s.port, "GET", "/metrics").text())
                n += sum(v for k, v in m.items() if k[0] == "orders_processed_total")
            check(n <= total, "survivors report %d orders processed of %d" % (n, total))
            for s in (b, c):
                reason = s.stop()
                check(reason is None, reason or "")
        finally:
            for s in (a, b, c):
                if s:
                    s.kill()

    @test(server=None)
    def concurrent_migrations(ctx):
        url = harness.pg_database()
        srvs = [ctx.new_server(env={"BRISK_THREADS": "1", "BRISK_DATABASE_URL": url}, name="mig%d" % i)
                for i in range(4)]
        try:
            for s in srvs:
                s.start(wait=False)
            for s in srvs:
                s.wait_ready(30)
            eq(harness.psql(url, "SELECT string_agg(version::text, ',' ORDER BY version) "
                                 "FROM schema_migrations").strip(), "1,2", "migrations recorded once each")
            for s in srvs:
                eq(request(s.port, "GET", "/ready").status, 200, "ready")
            for s in srvs:
                reason = s.stop()
                check(reason is None, reason or "")
        finally:
            for s in srvs:
                s.kill()

    @test(server=None)
    def password_never_logged(ctx):
        url = harness.pg_database()
        secret = "Pw-%s" % uniq("secret")
        u = harness.urllib.parse.urlsplit(url)
        netloc = "%s:%s@%s" % (u.username or "brisk", secret, u.hostname + (":%d" % u.port if u.port else ""))
        with_pw = harness.urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))
        srv = ctx.new_server(env={"BRISK_THREADS": "1", "BRISK_DATABASE_URL": with_pw,
                                  "BRISK_LOG_LEVEL": "debug"}, name="pw").start()
        try:
            eq(request(srv.port, "GET", "/ready").status, 200, "ready (trust auth ignores the password)")
            reason = srv.stop()
            check(reason is None, reason or "")
            check(secret not in srv.stderr(), "the password appears in the log")
        finally:
            srv.kill()
        # a server that is not there: start-up fails, naming the host, not the password
        bad = harness.urllib.parse.urlunsplit((u.scheme, "%s:%s@127.0.0.1:%d" % (
            u.username or "brisk", secret, harness.free_port()), "/nowhere", "", ""))
        env = harness.base_env()
        env.update({"BRISK_DATABASE_URL": bad, "BRISK_ADDR": "127.0.0.1:%d" % harness.free_port()})
        p = subprocess.run([ctx.binary, "serve"], env=env, capture_output=True, timeout=30, cwd=ctx.tmpdir(),
                           stdin=subprocess.DEVNULL)
        err = p.stderr.decode("utf-8", "replace")
        check(p.returncode != 0, "started without a database")
        check(secret not in err, "the password appears in the start-up error: %r" % err[-300:])
        check("127.0.0.1" in err and "cannot connect" in err, "error does not name the host: %r" % err[-300:])
        rep = harness.sanitizer_summary(err)
        check(rep is None, rep or "")
        # a malformed URL is a configuration error: exit 2, one line, no password
        env["BRISK_DATABASE_URL"] = "postgres://brisk:%s@[127.0.0.1/db" % secret
        p = subprocess.run([ctx.binary, "serve"], env=env, capture_output=True, timeout=30, cwd=ctx.tmpdir(),
                           stdin=subprocess.DEVNULL)
        err = p.stderr.decode("utf-8", "replace")
        lines = [ln for ln in err.splitlines() if ln.strip()]
        eq(p.returncode, 2, "exit status for a malformed URL (%r)" % err[-300:])
        check(len(lines) == 1 and "BRISK_DATABASE_URL" in lines[0], "error line: %r" % lines)
        check(secret not in err, "the password appears in the configuration error")

    @test(server=None)
    def orders_and_users_semantics(ctx):
        """The same contract on PostgreSQL: idempotency replay and reuse, 422/404, has-orders."""
        srv = ctx.new_server(env={"BRISK_THREADS": "2", "BRISK_BG_WORKERS": "0"}, name="sem").start()
        try:
            u = request(srv.port, "POST", "/users", {"name": "S", "email": "%s@example.com" % uniq("sem")}).json()
            body = {"user_id": u["id"], "items": [{"sku": "A-1", "quantity": 2, "unit_price_cents": 1999}]}
            key = [("Idempotency-Key", uniq("idem"))]
            r1 = request(srv.port, "POST", "/orders", body, key)
            eq(r1.status, 201, "first keyed create (%r)" % r1.body[:200])
            r2 = request(srv.port, "POST", "/orders", body, key)
            eq(r2.status, 200, "replay")
            eq(r2.json(), r1.json(), "replayed order")
            other = dict(body, items=[{"sku": "B-2", "quantity": 1, "unit_price_cents": 5}])
            eq(request(srv.port, "POST", "/orders", other, key).status, 409, "same key, other body")
            r = request(srv.port, "POST", "/orders", dict(body, user_id=u["id"] + 10 ** 9))
            eq(r.status, 422, "unknown user")
            expect_error(request(srv.port, "DELETE", "/users/%d" % u["id"]), 409, "user has orders")
            r = request(srv.port, "GET", "/users/%d/orders" % u["id"])
            eq(r.status, 200, "list")
            eq([o["id"] for o in r.json()["orders"]], [r1.json()["id"]], "one order listed")
            reason = srv.stop()
            check(reason is None, reason or "")
        finally:
            srv.kill()



    @test(server=None)
    def hung_database_fails_fast(ctx):
        slow = slowdown(ctx.binary)
        d = "/tmp/brisk-pgh-%d-%s" % (os.getpid(), uniq("c"))
        url = pg_cluster("start", d)
        srv = None
        frozen = False
        try:
            # one loop: one handle, so "known down" is one handle's state
            srv = ctx.new_server(env={"BRISK_THREADS": "1", "BRISK_DATABASE_URL": url,
                                      "BRISK_BG_WORKERS": "0", "BRISK_DB_BUSY_TIMEOUT_MS": "4000",
                                      "BRISK_LOG_FORMAT": "json"},
                                 name="hung").start()
            r = request(srv.port, "POST", "/users", {"name": "Hung", "email": "%s@example.com" % uniq("h")})
            eq(r.status, 201, "create before the hang")
            path = "/users/%d" % r.json()["id"]
            eq(request(srv.port, "GET", "/ready").status, 200, "ready before the hang")
            m0 = _metrics(srv.port)
            err0 = metric(m0, "db_errors_total", backend="postgres", kind="unavailable")
            rec0 = metric(m0, "db_reconnects_total", backend="postgres")
            check(err0 is not None and rec0 is not None, "no db_errors_total / db_reconnects_total")

            _signal_cluster(d, signal.SIGSTOP)
            frozen = True
            # /ready gives up after BRISK_READY_TIMEOUT_MS (1 s), long before the 4 s busy timeout
            r, took = _timed(srv.port, "GET", "/ready")
            expect_error(r, 503, "database unavailable")
            check(0.8 <= took < 2.0 * slow, "/ready on a hung database took %.2f s (want about 1 s)" % took)

            # requests that reach the hung server wait for it (the busy timeout): in flight meanwhile
            results = []
            def get():
                results.append(_timed(srv.port, "GET", path))
            threads = [threading.Thread(target=get, daemon=True) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            inflight = metric(_metrics(srv.port), "http_requests_in_flight")
            check(inflight is not None and inflight >= 4,
                  "http_requests_in_flight %r while 3 requests wait on the database (and this scrape)" % inflight)
            for t in threads:
                t.join(20)
            eq(len(results), 3, "answers to the waiting requests")
            for r, took in results:
                expect_error(r, 503, "database unavailable")
                check(took < 8 * slow, "a waiting request took %.1f s" % took)

            # now the database is known down: no request waits for it any more
            time.sleep(0.3)
            for i in range(5):
                r, took = _timed(srv.port, "GET", path)
                expect_error(r, 503, "database unavailable")
                check(took < 0.5 * slow, "request %d while known down took %.2f s" % (i, took))
            r, took = _timed(srv.port, "GET", "/ready")
            expect_error(r, 503, "database unavailable")
            check(took < 0.5 * slow, "/ready while known down took %.2f s" % took)
            r = request(srv.port, "GET", "/health")
            eq((r.status, r.body), (200, b"ok"), "/health while the database hangs")
            m1 = _metrics(srv.port)
            err1 = metric(m1, "db_errors_total", backend="postgres", kind="unavailable")
            check(err1 - err0 >= 10, "db_errors_total{kind=unavailable} rose by %r, want >= 10" % (err1 - err0))

            # the server wakes up: served again within about a second
            _signal_cluster(d, signal.SIGCONT)
            frozen = False
            t_up = time.time()
            check(wait_for(lambda: _status(srv.port, "GET", path) == 200, 10, 0.05),
                  "not serving within 10 s of the database waking up")
            back = time.time() - t_up
            check(back < 2.0 * slow, "serving again %.2f s after the database woke up (want about 1 s)" % back)
            eq(request(srv.port, "GET", "/ready").status, 200, "/ready after the hang")
            check(wait_for(lambda: metric(_metrics(srv.port), "db_reconnects_total", backend="postgres") > rec0, 3),
                  "db_reconnects_total did not rise")

            # a long outage (connection refused), then a restart: back within about a second
            pg_cluster("crash", d)
            check(wait_for(lambda: _status(srv.port, "GET", "/ready") == 503, 10), "/ready not 503 after a crash")
            time.sleep(7)  # long enough for a 5 s backoff to have built up
            pg_cluster("start", d)
            t_up = time.time()
            check(wait_for(lambda: _status(srv.port, "GET", path) == 200, 15, 0.05),
                  "not serving within 15 s of the restart")
            back = time.time() - t_up
            check(back < 2.0 * slow, "serving again %.2f s after the restart (want about 1 s)" % back)

            # the outage's log lines carry structured fields, not free text only
            events = [json.loads(ln) for ln in srv.stderr().splitlines() if ln.startswith("{")]
            lost = [e for e in events if e.get("db") == "postgres" and e.get("level") in ("warn", "error")
                    and e.get("msg") != "access"]
            check(lost, "no warn/error line with \"db\":\"postgres\" in %r" % [e.get("msg") for e in events][-20:])
            e = lost[0]
            check(e.get("target", "").endswith("/brisk") and "127.0.0.1:" in e.get("target", ""),
                  "target %r is not host:port/dbname" % e.get("target"))
            check(e.get("error"), "no error field in %r" % e)
            eq(e.get("loop"), 0, "loop field of %r" % e)
            back_line = [e for e in events if e.get("db") == "postgres" and "connected again" in e.get("msg", "")]
            check(back_line and back_line[0].get("loop") == 0, "no 'connected again' line from loop 0")
            reason = srv.stop()
            check(reason is None, reason or "")
        finally:
            if frozen:
                _signal_cluster(d, signal.SIGCONT)
            if srv:
                srv.kill()
            pg_cluster("stop", d)
