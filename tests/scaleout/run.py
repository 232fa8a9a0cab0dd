#!/usr/bin/env python3
"""Scale-out, the way operators run it (README, "Scaling out"; issue 15).

    python3 tests/scaleout/run.py --binary build/brisk [--keep]

A throwaway PostgreSQL 15 primary and a streaming replica of it
(scripts/pg_cluster.sh start / replica: pg_basebackup -R), three brisk
processes on their own ports (BRISK_BG_WORKERS=1, the replica as
BRISK_DATABASE_READ_URL) and HAProxy 2.6 in front, running
packaging/haproxy.cfg itself with only its addresses rewritten.

Phase 1 - faults under a fixed load: CLIENTS keep-alive clients each run
ROUNDS rounds of POST /users, GET /users/{id}, POST /orders with an
Idempotency-Key (every third one sent twice), GET /orders/{id} through
HAProxy. At set points of their progress one process is SIGKILLed and started
again, and the replica is stopped and started again. Afterwards, on the
primary: every user a client saw 201 for is there exactly once; every order
is processed exactly once (a trigger the test installs logs each update to
'processed'), with a receipt recomputed here (tests/blackbox/oracle.py); none
is pending once the workers are idle; each Idempotency-Key has one order, the
one every answer for it named. The only errors clients may see are requests
that were in flight at the moment of the SIGKILL (HAProxy retries the others;
a POST without an Idempotency-Key it must not retry, packaging/haproxy.cfg);
they are counted and printed. A 503 while the replica is down is a failure:
reads fall back to the primary.

Phase 2 - rolling restart: the same clients (without a round limit) while each
process in turn gets SIGTERM, exits 0 and is started again: no request may
fail at all.

Prints "ok - ...", "FAIL - ...: why" or "skip - ...: why" lines and, last,
"N passed, N failed". Without PostgreSQL (BRISK_TEST_NO_PG=1, or initdb
missing) it is skipped: the embedded SQLite database is one file on one
machine, so none of this applies to it."""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "blackbox"))

import harness  # noqa: E402
import oracle  # noqa: E402
from harness import Conn, Server, build_request, free_port, pg_cluster, psql, request, wait_for  # noqa: E402

CLIENTS = 8
ROUNDS = 400  # per client in phase 1: about 5 requests each
RECEIPT_KEY = "scaleout-receipt-key"
HAPROXY_CFG = os.path.join(REPO, "packaging", "haproxy.cfg")

results = []  # (ok, line)


def report(ok, name, why=""):
    line = ("ok - %s" % name) if ok else ("FAIL - %s: %s" % (name, why))
    print(line, flush=True)
    results.append(ok)


class Failure(Exception):
    pass


def need(cond, why):
    if not cond:
        raise Failure(why)


def haproxy_config(front, ports, workdir):
    """packaging/haproxy.cfg with its addresses rewritten: 8080 -> front, 8081.. -> ports."""
    with open(HAPROXY_CFG) as f:
        cfg = f.read()
    subs = [("127.0.0.1:8080", front)] + [("127.0.0.1:%d" % (8081 + i), p) for i, p in enumerate(ports)]
    for addr, port in subs:
        need(cfg.count(addr) == 1, "%s does not name %s exactly once" % (HAPROXY_CFG, addr))
        cfg = cfg.replace(addr, "127.0.0.1:%d" % port)
    need(len(re.findall(r"^\s*server\s", cfg, re.M)) == len(ports),
         "%s has other than %d server lines" % (HAPROXY_CFG, len(ports)))
    # default-path config: the errorfiles are found next to the config file
    for name in os.listdir(os.path.dirname(HAPROXY_CFG)):
        if name.startswith("haproxy-") and name.endswith(".http"):
            shutil.copy(os.path.join(os.path.dirname(HAPROXY_CFG), name), workdir)
    path = os.path.join(workdir, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    return path


class Client(threading.Thread):
    """One keep-alive client through HAProxy. Records every answer with the
    time its request was sent and answered, so errors can be matched to the
    SIGKILL."""

    def __init__(self, port, tag, rounds, progress):
        super().__init__(daemon=True)
        self.port, self.tag, self.rounds, self.progress = port, tag, rounds, progress
        self.stop = threading.Event()
        self.conn = None
        self.sent = 0
        self.errors = []  # (t_sent, t_done, "METHOD path", what)
        self.users = {}  # id -> email, from 201s
        self.keys = {}  # Idempotency-Key -> set of order ids its answers named
        self.orders = {}  # id -> the order as created

    def call(self, method, path, body=None, headers=None, want=(200,)):
        data = json.dumps(body).encode() if body is not None else None
        t0 = time.time()
        self.sent += 1
        try:
            if self.conn is None:
                self.conn = Conn(self.port, timeout=20)
            self.conn.send(build_request(method, path, data, headers=headers))
            r = self.conn.read_response(method)
        except Exception as ex:  # noqa: BLE001 - no answer: recorded, the caller goes on
            self.errors.append((t0, time.time(), "%s %s" % (method, path), repr(ex)[:160]))
            self._drop()
            return None
        if r.has_close():
            self._drop()
        if r.status not in want:
            self.errors.append((t0, time.time(), "%s %s" % (method, path),
                                "%d %s" % (r.status, r.body[:160].decode("utf-8", "replace"))))
            return None
        return r

    def _drop(self):
        if self.conn:
            self.conn.close()
        self.conn = None

    def run(self):
        n = 0
        while not self.stop.is_set() and (self.rounds is None or n < self.rounds):
            self.round(n)
            n += 1
            with self.progress[1]:
                self.progress[0] += 1
        self._drop()

    def round(self, n):
        email = "so-%s-%d@example.com" % (self.tag, n)
        r = self.call("POST", "/users", {"name": "Scale %s %d" % (self.tag, n), "email": email}, want=(201,))
        if r is None:
            return
        uid = r.json()["id"]
        self.users[uid] = email
        g = self.call("GET", "/users/%d" % uid)
        if g is not None and g.json().get("email") != email:
            self.errors.append((time.time(), time.time(), "GET /users/%d" % uid, "other user %r" % g.body[:100]))
        key = "so-%s-%d" % (self.tag, n)
        items = [{"sku": "SO-%d" % j, "quantity": 1 + (n + j) % 3, "unit_price_cents": 1999 + 13 * n}
                 for j in range(1 + n % 3)]
        body = {"user_id": uid, "items": items}
        oid = None
        for _ in range(2 if n % 3 == 0 else 1):  # every third order is sent again with its key
            o = self.call("POST", "/orders", body, headers=[("Idempotency-Key", key)], want=(200, 201))
            if o is not None:
                got = o.json()
                self.keys.setdefault(key, set()).add(got["id"])
                oid = got["id"]
                self.orders.setdefault(oid, got)
        if oid is not None:
            g = self.call("GET", "/orders/%d" % oid)
            if g is not None and g.json().get("id") != oid:
                self.errors.append((time.time(), time.time(), "GET /orders/%d" % oid, "other order"))


class Cluster:
    """The primary, the replica, three brisk processes and HAProxy."""

    def __init__(self, binary, workdir):
        self.binary, self.workdir = binary, workdir
        base = os.path.join(workdir, "pg")
        self.primary_dir, self.replica_dir = base + "-primary", base + "-replica"
        self.primary = self.replica = None
        self.ports = [free_port() for _ in range(3)]
        self.front = free_port()
        self.srvs = [None] * 3
        self.generation = 0
        self.hp = None

    def env(self):
        return {"BRISK_DATABASE_URL": self.primary, "BRISK_DATABASE_READ_URL": self.replica,
                "BRISK_THREADS": "1", "BRISK_BG_WORKERS": "1", "BRISK_RECEIPT_KEY": RECEIPT_KEY,
                "BRISK_LOG_LEVEL": "warn", "BRISK_DRAIN_GRACE_MS": None}

    def start_brisk(self, k):
        self.generation += 1
        s = Server(self.binary, self.workdir, env=self.env(), port=self.ports[k],
                   name="brisk%d-%d" % (k + 1, self.generation))
        self.srvs[k] = s.start()
        return s

    def up(self):
        self.primary = pg_cluster("start", self.primary_dir)
        self.replica = pg_cluster("replica", self.replica_dir, self.primary_dir)
        need(psql(self.replica, "SELECT pg_is_in_recovery()").strip() == "t", "the replica is not a standby")
        for k in range(3):
            self.start_brisk(k)
        # exactly-once evidence kept by the database itself: one row per update to 'processed'
        psql(self.primary, """
            CREATE TABLE scaleout_marks (order_id bigint NOT NULL, receipt text,
                                         at timestamptz NOT NULL DEFAULT clock_timestamp());
            CREATE FUNCTION scaleout_mark() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.status = 'processed' THEN
                    INSERT INTO scaleout_marks (order_id, receipt) VALUES (NEW.id, NEW.receipt);
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER scaleout_mark AFTER UPDATE ON orders
                FOR EACH ROW EXECUTE FUNCTION scaleout_mark();""")
        haproxy = shutil.which("haproxy")
        need(haproxy, "haproxy is not installed (scripts/deps.sh test installs it)")
        cfg = haproxy_config(self.front, self.ports, self.workdir)
        self.hlog = open(os.path.join(self.workdir, "haproxy.log"), "wb")
        self.hp = subprocess.Popen([haproxy, "-db", "-f", cfg], stdout=self.hlog, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        need(wait_for(lambda: self.all_up(), 15), "HAProxy did not see three ready processes: %s"
             % self.haproxy_log()[-1500:])

    def all_up(self):
        """True when HAProxy routes to every process: 3 answers in a row name 3 servers."""
        if self.hp.poll() is not None:
            raise Failure("haproxy exited: %s" % self.haproxy_log()[-1500:])
        try:
            return request(self.front, "GET", "/ready", timeout=2, check_common=False).status == 200 and \
                self.servers_up() == 3
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def servers_up(self):
        """How many servers HAProxy's log last reported UP minus DOWN (its state changes)."""
        log = self.haproxy_log()
        up = {}
        for m in re.finditer(r"Server brisk/(\S+) is (UP|DOWN)", log):
            up[m.group(1)] = m.group(2) == "UP"
        # servers start UP in HAProxy until a check fails: count those never reported DOWN
        return sum(1 for k in range(3) if up.get("brisk%d" % (k + 1), True))

    def haproxy_log(self):
        try:
            with open(os.path.join(self.workdir, "haproxy.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_server_up(self, k, timeout=15):
        """Wait until HAProxy reports process k UP again after it went DOWN."""
        name = "brisk%d" % (k + 1)

        def is_up():
            states = re.findall(r"Server brisk/%s is (UP|DOWN)" % name, self.haproxy_log())
            return not states or states[-1] == "UP"
        return wait_for(is_up, timeout)

    def down(self):
        for s in self.srvs:
            if s:
                s.kill()
        if self.hp and self.hp.poll() is None:
            self.hp.terminate()
            try:
                self.hp.wait(10)
            except subprocess.TimeoutExpired:
                self.hp.kill()
        for d in (self.replica_dir, self.primary_dir):
            try:
                pg_cluster("stop", d)
            except Exception as ex:  # noqa: BLE001 - best effort at the end
                print("# stopping %s: %s" % (d, ex))


def run_clients(front, rounds, tag):
    progress = [0, threading.Lock()]
    clients = [Client(front, "%s%d" % (tag, i), rounds, progress) for i in range(CLIENTS)]
    for c in clients:
        c.start()
    return clients, progress


def done(progress):
    with progress[1]:
        return progress[0]


def phase_faults(cl):
    total = CLIENTS * ROUNDS
    t0 = time.time()
    clients, progress = run_clients(cl.front, ROUNDS, "f")
    events = {}
    try:
        need(wait_for(lambda: done(progress) >= total * 0.2, 60), "the load did not get going")
        victim = cl.srvs[1]
        events["kill"] = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        events["dead"] = time.time()
        victim.kill()  # closes its log files
        cl.start_brisk(1)
        events["restarted"] = time.time()
        need(wait_for(lambda: done(progress) >= total * 0.4, 60), "the load stalled after the SIGKILL")
        pg_cluster("halt", cl.replica_dir)
        events["replica_down"] = (time.time(), done(progress))
        need(wait_for(lambda: done(progress) >= total * 0.75, 60), "the load stalled with the replica down")
        events["replica_up"] = (time.time(), done(progress))
        pg_cluster("start", cl.replica_dir)
    finally:
        for c in clients:
            c.join(120)
    secs = time.time() - t0
    stuck = [c.tag for c in clients if c.is_alive()]
    need(not stuck, "clients did not finish: %r" % stuck)
    return clients, events, secs


def check_phase_faults(cl, clients, events, secs):
    total_rounds = CLIENTS * ROUNDS
    sent = sum(c.sent for c in clients)
    errors = sorted(e for c in clients for e in c.errors)
    # in flight at the SIGKILL: sent before the process was gone, answered (by an error) after the signal
    at_kill = [e for e in errors if e[0] <= events["dead"] and e[1] >= events["kill"]]
    other = [e for e in errors if e not in at_kill]
    users = {}
    orders = {}
    keys = {}
    for c in clients:
        users.update(c.users)
        orders.update(c.orders)
        for k, ids in c.keys.items():
            keys.setdefault(k, set()).update(ids)
    print("# phase 1: %d requests by %d clients in %.1f s through HAProxy: 1 SIGKILL + restart, "
          "replica stopped and restarted; %d users and %d orders acknowledged; "
          "%d rounds (%.1f s) with the replica down; "
          "%d errors, %d of them in flight at the SIGKILL: %s" % (
              sent, CLIENTS, secs, len(users), len(orders),
              events["replica_up"][1] - events["replica_down"][1],
              events["replica_up"][0] - events["replica_down"][0], len(errors), len(at_kill),
              "; ".join("%s -> %s" % (e[2], e[3]) for e in at_kill) or "none"), flush=True)
    # the checks below mean something only over real traffic
    report(len(users) >= total_rounds * 0.9 and len(orders) >= total_rounds * 0.9,
           "faults: the load ran (%d rounds)" % total_rounds,
           "only %d users and %d orders acknowledged" % (len(users), len(orders)))
    report(not other, "faults: no client error but the requests in flight at the SIGKILL",
           "%d others, first: %s" % (len(other), "; ".join(
               "%s at +%.2f s: %s" % (e[2], e[0] - events["kill"], e[3]) for e in other[:5])))
    report(len(at_kill) <= CLIENTS, "faults: at most one in-flight request per client lost at the SIGKILL",
           "%d lost" % len(at_kill))
    replica_503 = [e for e in errors if e[3].startswith("503")]
    report(not replica_503, "faults: no 503 (reads fall back to the primary while the replica is down)",
           "%d: %r" % (len(replica_503), replica_503[:3]))

    # every 201 for a user is there exactly once
    rows = psql(cl.primary, "SELECT id, email FROM users").split()
    stored = {}
    for row in rows:
        uid, email = row.split("|", 1)
        stored.setdefault(email, []).append(int(uid))
    wrong = [(uid, email, stored.get(email)) for uid, email in users.items() if stored.get(email) != [uid]]
    report(not wrong, "faults: every user acknowledged with 201 is stored exactly once (%d)" % len(users),
           "%d wrong, e.g. %r" % (len(wrong), wrong[:3]))

    # one order per Idempotency-Key, the one its answers named
    rows = psql(cl.primary, "SELECT idempotency_key, id FROM orders WHERE idempotency_key LIKE 'so-f%'").split()
    by_key = {}
    for row in rows:
        k, oid = row.split("|")
        by_key.setdefault(k, []).append(int(oid))
    wrong = [(k, sorted(ids), by_key.get(k)) for k, ids in keys.items()
             if len(ids) != 1 or by_key.get(k) != sorted(ids)]
    report(not wrong, "faults: each Idempotency-Key made one order, the one every answer named (%d keys)"
           % len(keys), "%d wrong, e.g. %r" % (len(wrong), wrong[:3]))

    # workers idle: nothing pending; each order marked processed exactly once, receipts verify
    def pending():
        return int(psql(cl.primary, "SELECT count(*) FROM orders WHERE status = 'pending'").strip())
    idle = wait_for(lambda: pending() == 0, 60, 0.3)
    report(idle, "faults: no order pending once the workers are idle", "%d still pending after 60 s" % pending())
    rows = psql(cl.primary, """
        SELECT o.id, o.user_id, o.items, o.total_cents, o.status, coalesce(o.receipt, ''),
               (SELECT count(*) FROM scaleout_marks m WHERE m.order_id = o.id),
               (SELECT count(*) FROM scaleout_marks m WHERE m.order_id = o.id AND m.receipt = o.receipt)
        FROM orders o""").splitlines()
    twice, never, bad = [], [], []
    for row in rows:
        oid, uid, items, total, status, rec, marks, same = row.split("|")
        oid, marks = int(oid), int(marks)
        if marks > 1:
            twice.append((oid, marks))
        elif marks == 0 or status != "processed":
            never.append(oid)
        elif rec != oracle.receipt(oid, int(uid), json.loads(items), int(total), RECEIPT_KEY) or int(same) != 1:
            bad.append(oid)
    missing = set(orders) - {int(r.split("|")[0]) for r in rows}
    print("# %d orders stored, %d marked processed twice, %d never, %d bad receipts, %d acknowledged missing"
          % (len(rows), len(twice), len(never), len(bad), len(missing)), flush=True)
    report(not twice and not never, "faults: every order processed exactly once (%d)" % len(rows),
           "%d twice (e.g. %r), %d never (e.g. %r)" % (len(twice), twice[:3], len(never), never[:3]))
    report(not bad, "faults: every receipt is the HMAC of its order", "%d wrong, e.g. %r" % (len(bad), bad[:3]))
    report(not missing, "faults: every acknowledged order is stored", "missing: %r" % sorted(missing)[:5])
    return sent, len(errors), len(twice)


def phase_rolling(cl):
    clients, progress = run_clients(cl.front, None, "r")
    t0 = time.time()
    restarts = 0
    try:
        need(wait_for(lambda: done(progress) >= CLIENTS * 5, 30), "the load did not get going")
        for k in range(3):
            old = cl.srvs[k]
            why = old.stop(signal.SIGTERM, timeout=30)
            need(why is None, "process %d after SIGTERM: %s" % (k + 1, why))
            cl.start_brisk(k)
            need(cl.wait_server_up(k), "HAProxy did not take process %d back" % (k + 1))
            restarts += 1
            at = done(progress)
            need(wait_for(lambda: done(progress) >= at + CLIENTS * 5, 30), "the load stalled after a restart")
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.join(60)
    secs = time.time() - t0
    sent = sum(c.sent for c in clients)
    errors = sorted(e for c in clients for e in c.errors)
    print("# phase 2: %d requests in %.1f s while %d processes were restarted with SIGTERM one by one: "
          "%d errors" % (sent, secs, restarts, len(errors)), flush=True)
    report(not errors, "rolling restart: SIGTERM to each process in turn, no request fails (%d sent)" % sent,
           "%d failed, first: %s" % (len(errors), "; ".join("%s: %s" % (e[2], e[3]) for e in errors[:5])))
    report(sum(len(c.users) for c in clients) > 0, "rolling restart: the load created users", "none")
    return sent, len(errors)


def pg_available():
    if os.environ.get("BRISK_TEST_NO_PG") == "1":
        return "BRISK_TEST_NO_PG=1"
    for d in sorted(os.listdir("/usr/lib/postgresql")) if os.path.isdir("/usr/lib/postgresql") else []:
        if os.path.exists(os.path.join("/usr/lib/postgresql", d, "bin", "initdb")):
            return None
    return "no PostgreSQL server binaries (initdb; scripts/deps.sh test installs postgresql)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, clusters' data)")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    why = pg_available()
    if why:
        print("skip - scaleout: needs a PostgreSQL primary and a streaming replica (%s); "
              "the embedded SQLite database is one file on one machine, not applicable" % why)
        print("0 passed, 0 failed")
        return 0
    if not os.access(binary, os.X_OK):
        print("FAIL - scaleout: %s is not built" % binary)
        print("0 passed, 1 failed")
        return 1
    workdir = tempfile.mkdtemp(prefix="brisk-scaleout-")
    os.chmod(workdir, 0o755)  # pg_cluster.sh runs the clusters as a non-root user
    cl = Cluster(binary, workdir)
    t0 = time.time()
    try:
        cl.up()
        print("# setup: %.1f s" % (time.time() - t0), flush=True)
        report(True, "setup: primary, streaming replica, 3 brisk processes and HAProxy (packaging/haproxy.cfg)")
        check_phase_faults(cl, *phase_faults(cl))
        phase_rolling(cl)
        for k, s in enumerate(cl.srvs):
            why = s.stop()
            report(why is None, "process %d exits 0 on SIGTERM at the end" % (k + 1), why)
    except Failure as ex:
        report(False, "scaleout", str(ex))
    except harness.TestFailure as ex:
        report(False, "scaleout", str(ex))
    finally:
        t1 = time.time()
        cl.down()
        print("# teardown: %.1f s" % (time.time() - t1), flush=True)
        if args.keep:
            print("# logs kept in %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("# scaleout: %.1f s" % (time.time() - t0))
    passed = sum(1 for r in results if r)
    print("%d passed, %d failed" % (passed, len(results) - passed))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
