"""A loop never waits for the disk (SQLite; PostgreSQL's loops only ever wait
on sockets).

brisk runs under `strace --seccomp-bpf -e inject=fsync,fdatasync:delay_enter=200000`:
every fsync/fdatasync of the process takes 200 ms more, nothing else is traced
(no hook in the product). One event-loop thread serves everything. Writers
create users and orders, rename and delete users as fast as they are answered,
while readers on the same loop time GET /health and GET /users/{id}: the
reads' p99 must stay under 20 ms although every commit takes 200 ms. Then the
process is killed with SIGKILL while writes are in flight, and the file must
hold every write that was acknowledged."""

import os
import signal
import shutil
import sqlite3
import subprocess
import threading
import time

import harness
from harness import Conn, build_request, check, eq, fail, test, uniq
from test_hostile import slowdown

DELAY_US = 200000
WINDOW_S = 4.0
P99_MAX_S = 0.020


def _wrapper(ctx):
    """A script that runs brisk under strace with slowed fsync/fdatasync."""
    strace = shutil.which("strace")
    if not strace:
        fail("strace is not installed (scripts/deps.sh installs it for this test)")
    path = os.path.join(ctx.tmpdir(), "brisk-slow-fsync")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec %s -f -qq --seccomp-bpf -o /dev/null -e trace=fsync,fdatasync "
                "-e inject=fsync,fdatasync:delay_enter=%d %s \"$@\"\n"
                % (strace, DELAY_US, os.path.abspath(ctx.binary)))
    os.chmod(path, 0o755)
    return path


def _brisk_pid(strace_pid, timeout=10):
    """The traced brisk process: strace's only child."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open("/proc/%d/task/%d/children" % (strace_pid, strace_pid)) as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.02)
    fail("strace started no brisk process")


def _p(vals, q):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(q * len(vals)))] if vals else float("nan")


if not harness.pg_mode():

    @test(server=None)
    def reads_stay_fast_while_fsync_takes_200ms(ctx):
        srv = harness.Server(_wrapper(ctx), ctx.workdir, name="slowfsync",
                             env={"BRISK_THREADS": "1", "BRISK_BG_WORKERS": "0",
                                  "BRISK_LOG_LEVEL": "warn"})
        srv.start(timeout=60)
        pid = _brisk_pid(srv.proc.pid)
        try:
            c = Conn(srv.port, timeout=10)
            t0 = time.time()
            c.send(build_request("POST", "/users", {"name": "Reader", "email": uniq("rd") + "@x.io"}))
            r = c.read_response(timeout=10)
            first_write = time.time() - t0
            eq(r.status, 201, "first user")
            uid = r.json()["id"]
            # Without this the test would prove nothing: the delay must be in effect.
            check(first_write >= DELAY_US / 1e6 * 0.9,
                  "a committed write took %.3f s: the injected fsync delay is not in effect"
                  % first_write)
            c.close()

            stop = threading.Event()
            lock = threading.Lock()
            acked_users = {}   # id -> (name, email) as last acknowledged
            deleted = set()
            in_flight = {}     # id -> the rename or delete ("DELETE") sent but not answered
            acked_orders = {}  # id -> (user_id, total_cents)
            write_times = []
            reads = {"/health": [], "/users/%d" % uid: []}
            errors = []

            def writer(k):
                try:
                    w = Conn(srv.port, timeout=30)
                    i = 0
                    while not stop.is_set():
                        i += 1
                        email = "%s@x.io" % uniq("w%d-" % k)
                        t = time.time()
                        w.send(build_request("POST", "/users", {"name": "W%d" % k, "email": email}))
                        r = w.read_response(timeout=30)
                        if r.status != 201:
                            raise AssertionError("POST /users: %d %r" % (r.status, r.body[:200]))
                        u = r.json()
                        with lock:
                            write_times.append(time.time() - t)
                            acked_users[u["id"]] = (u["name"], u["email"])
                        if i % 3 == 0:
                            with lock:
                                in_flight[u["id"]] = "R%d" % i
                            w.send(build_request("PATCH", "/users/%d" % u["id"], {"name": "R%d" % i}))
                            r = w.read_response(timeout=30)
                            if r.status != 200:
                                raise AssertionError("PATCH: %d %r" % (r.status, r.body[:200]))
                            with lock:
                                acked_users[u["id"]] = (r.json()["name"], r.json()["email"])
                                in_flight.pop(u["id"], None)
                        if i % 4 == 0:
                            w.send(build_request("POST", "/orders", {
                                "user_id": u["id"],
                                "items": [{"sku": "S", "quantity": 2, "unit_price_cents": 150}]}))
                            r = w.read_response(timeout=30)
                            if r.status != 201:
                                raise AssertionError("POST /orders: %d %r" % (r.status, r.body[:200]))
                            o = r.json()
                            with lock:
                                acked_orders[o["id"]] = (o["user_id"], o["total_cents"])
                        elif i % 5 == 0:
                            with lock:
                                in_flight[u["id"]] = "DELETE"
                            w.send(build_request("DELETE", "/users/%d" % u["id"]))
                            r = w.read_response(timeout=30)
                            if r.status != 204:
                                raise AssertionError("DELETE: %d %r" % (r.status, r.body[:200]))
                            with lock:
                                deleted.add(u["id"])
                                acked_users.pop(u["id"], None)
                                in_flight.pop(u["id"], None)
                except Exception as e:  # noqa: BLE001
                    if not stop.is_set():
                        errors.append("writer %d: %s" % (k, e))

            def reader(path):
                try:
                    rc = Conn(srv.port, timeout=10)
                    while not stop.is_set():
                        t = time.time()
                        rc.send(build_request("GET", path))
                        r = rc.read_response(timeout=10)
                        dt = time.time() - t
                        if r.status != 200:
                            raise AssertionError("GET %s: %d" % (path, r.status))
                        reads[path].append(dt)
                        time.sleep(0.002)
                except Exception as e:  # noqa: BLE001
                    if not stop.is_set():
                        errors.append("reader %s: %s" % (path, e))

            threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
            threads += [threading.Thread(target=reader, args=(p,)) for p in reads]
            for t in threads:
                t.start()
            time.sleep(WINDOW_S)
            # SIGKILL with writes in flight: the acknowledged ones must all be in the file.
            os.kill(pid, signal.SIGKILL)
            stop.set()
            for t in threads:
                t.join(40)
            srv.proc.wait(20)
            check(not errors, "; ".join(errors[:3]))

            nw = len(write_times)
            check(nw >= 10, "only %d writes acknowledged in %.0f s" % (nw, WINDOW_S))
            check(_p(write_times, 0.5) >= DELAY_US / 1e6 * 0.9,
                  "median write took %.3f s: fsync was not slowed" % _p(write_times, 0.5))
            summary = []
            for path, lat in reads.items():
                check(len(lat) >= 100, "only %d GET %s in %.0f s" % (len(lat), path, WINDOW_S))
                p99 = _p(lat, 0.99)
                summary.append("%s n=%d p50=%.1fms p99=%.1fms max=%.1fms" % (
                    path, len(lat), _p(lat, 0.5) * 1e3, p99 * 1e3, max(lat) * 1e3))
                # a sanitizer build runs everything ~3x slower (measured 20.7 ms under
                # ASan on a loaded CI machine); a loop that waited on the disk would
                # show the whole 200 ms either way
                limit = P99_MAX_S * slowdown(ctx.binary)
                check(p99 < limit, "GET %s p99 %.1f ms while fsync takes 200 ms (limit %.0f ms): %s"
                      % (path, p99 * 1e3, limit * 1e3, "; ".join(summary)))
            print("  note slow_fsync: %d writes acknowledged (median %.0f ms), %s"
                  % (nw, _p(write_times, 0.5) * 1e3, "; ".join(summary)))

            db = sqlite3.connect(srv.db_path, timeout=10)
            try:
                users = {row[0]: (row[1], row[2]) for row in
                         db.execute("SELECT id, name, email FROM users")}
                orders = {row[0]: (row[1], row[2]) for row in
                          db.execute("SELECT id, user_id, total_cents FROM orders")}
                ok = db.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                db.close()
            eq(ok, "ok", "integrity_check after SIGKILL")
            def stored_ok(i, v):
                """The acknowledged state, or the one the write in flight at the kill made."""
                if users.get(i) == v:
                    return True
                pend = in_flight.get(i)
                if pend == "DELETE":
                    return i not in users
                return pend is not None and users.get(i) == (pend, v[1])

            missing = [i for i, v in acked_users.items() if not stored_ok(i, v)]
            check(not missing, "%d acknowledged users missing or stale after SIGKILL, e.g. %r vs %r"
                  % (len(missing), missing[:1] and acked_users[missing[0]],
                     missing[:1] and users.get(missing[0])))
            back = [i for i in deleted if i in users]
            check(not back, "%d acknowledged deletes undone after SIGKILL" % len(back))
            lost = [i for i, v in acked_orders.items() if orders.get(i) != v]
            check(not lost, "%d acknowledged orders missing after SIGKILL" % len(lost))
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            srv.kill()
