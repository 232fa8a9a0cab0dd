"""Rolling restarts behind HAProxy lose nothing (issue 13, item 1).

Two brisk processes share one database (the SQLite file, or in PostgreSQL mode
one database) behind HAProxy 2.6 with a plain configuration (keep-alive both
sides, health checks on /health, `retries` + `option redispatch` for refused
connects - HAProxy's defaults otherwise). Keep-alive clients create users and
read them back through HAProxy while each process in turn gets SIGTERM (alone,
no balancer API call first), exits 0 and is started again: RESTARTS restarts.
Every request must get its answer (201 / 200), every acknowledged user must be
readable afterwards. Without the drain grace, an idle pooled connection closed
at the signal loses the request HAProxy sends on it at that moment."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import harness
from harness import Conn, build_request, check, eq, fail, free_port, request, test
from test_hostile import slowdown

RESTARTS = 10
CLIENTS = 6

HAPROXY_CFG = """global
    maxconn 2000
    log stdout format raw local0 info
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
    option http-keep-alive
    retries 3
    option redispatch
frontend fe
    bind 127.0.0.1:%(front)d%(bind)s
    default_backend brisk
backend brisk
    balance roundrobin
    option httpchk GET /health
    default-server check inter 200ms fall 2 rise 1
    server a 127.0.0.1:%(a)d%(server)s
    server b 127.0.0.1:%(b)d%(server)s
"""


def haproxy_transport(d):
    """HAProxy's bind and server options for run.py's transport: tls terminates TLS at
    the front and speaks TLS to both processes; h2c speaks HTTP/2 (prior knowledge) to
    them (the clients' HTTP/1.1 and h2c both work at the front)."""
    if harness.TRANSPORT == "tls":
        pem = os.path.join(d, "front.pem")  # HAProxy wants the certificate and key in one file
        with open(pem, "w") as f:
            f.write(open(harness.TLS_CERT).read() + open(harness.TLS_KEY).read())
        return {"bind": " ssl crt %s alpn http/1.1" % pem, "server": " ssl verify none"}
    if harness.TRANSPORT == "h2c":
        # its HTTP/2 health check fails against brisk ("Socket error", untriaged): check over h1
        return {"bind": "", "server": " proto h2 check-proto h1"}
    return {"bind": "", "server": ""}


class Client(threading.Thread):
    """Keep-alive client: POST /users then GET it, until stopped."""

    def __init__(self, port, tag):
        super().__init__(daemon=True)
        self.port, self.tag = port, tag
        self.stop = threading.Event()
        self.sent = 0
        self.failures = []
        self.created = {}  # id -> email

    def _one(self, conn, method, path, body=None):
        conn.send(build_request(method, path, body))
        return conn.read_response(method)

    def run(self):
        conn = None
        n = 0
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = Conn(self.port, timeout=15)
                email = "rr-%s-%d@example.com" % (self.tag, n)
                n += 1
                body = json.dumps({"name": "Rolling %d" % n, "email": email}).encode()
                self.sent += 1
                r = self._one(conn, "POST", "/users", body)
                if r.status != 201:
                    self.failures.append("POST /users: %d %r" % (r.status, r.body[:200]))
                    continue
                uid = r.json()["id"]
                self.created[uid] = email
                self.sent += 1
                r = self._one(conn, "GET", "/users/%d" % uid)
                if r.status != 200 or r.json().get("email") != email:
                    self.failures.append("GET /users/%d: %d %r" % (uid, r.status, r.body[:200]))
                if r.has_close():
                    conn.close()
                    conn = None
            except Exception as ex:  # no answer at all: the case this test is about
                self.failures.append("request %d: %r" % (self.sent, ex))
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()


@test(server=None, transports=("h1", "tls"),
      reason="over h2c (HAProxy speaking h2 to brisk) a few requests in 160k are lost across restarts: HAProxy does not retry the streams a GOAWAY left out; open")
def rolling_restarts_behind_haproxy_lose_nothing(ctx):
    if slowdown(ctx.binary) > 1:
        # Not a memory-safety test, and its property is about timing between two
        # processes and HAProxy: the normal-build cells (SQLite and PostgreSQL)
        # carry it. Seen once in CI under ASan + PostgreSQL: 3 of 38,264 requests
        # unanswered, not reproduced since (docs/operations.md, "Rolling restart").
        print("  (skipped: sanitizer build)")
        return
    haproxy = shutil.which("haproxy")
    if not haproxy:
        fail("haproxy not installed (scripts/deps.sh test installs it)")
    d = ctx.tmpdir()
    ports = [free_port(), free_port()]
    db = os.path.join(d, "shared.db")
    env = {"BRISK_THREADS": "2", "BRISK_LOG_LEVEL": "warn", "BRISK_DRAIN_GRACE_MS": None}
    srvs = [ctx.new_server(env=env, name="rr%d" % i, port=ports[i], db_path=db) for i in range(2)]
    for s in srvs:  # the same db_path: in PostgreSQL mode the same database too
        s.start()
    front = free_port()
    cfg = os.path.join(d, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(HAPROXY_CFG % dict(haproxy_transport(d), front=front, a=ports[0], b=ports[1]))
    hlog = open(os.path.join(d, "haproxy.log"), "wb")
    hp = subprocess.Popen([haproxy, "-db", "-f", cfg], stdout=hlog, stderr=subprocess.STDOUT)
    clients = []
    try:
        deadline = time.time() + 10
        while True:
            try:
                if request(front, "GET", "/health", timeout=2, check_common=False).status == 200:
                    break
            except Exception:  # not up yet
                pass
            if time.time() > deadline or hp.poll() is not None:
                fail("haproxy did not come up")
            time.sleep(0.05)
        clients = [Client(front, "c%d" % i) for i in range(CLIENTS)]
        for c in clients:
            c.start()
        time.sleep(0.5)
        for i in range(RESTARTS):
            k = i % 2
            old = srvs[k]
            why = old.stop(signal.SIGTERM, timeout=20)
            if why:
                fail("restart %d, process %d: %s" % (i, k, why))
            new = ctx.new_server(env=env, name="rr%d-%d" % (k, i), port=ports[k], db_path=db)
            srvs[k] = new.start()
            time.sleep(0.6)  # HAProxy's check (200 ms, rise 1) sees it up
        time.sleep(0.3)
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.join(30)
        hp.terminate()
        try:
            hp.wait(10)
        except subprocess.TimeoutExpired:
            hp.kill()
        hlog.close()
    sent = sum(c.sent for c in clients)
    failures = [f for c in clients for f in c.failures]
    created = {}
    for c in clients:
        created.update(c.created)
    print("  (%d requests, %d users, %d restarts, %d failures)"
          % (sent, len(created), RESTARTS, len(failures)))
    check(sent > 200, "only %d requests sent during %d restarts" % (sent, RESTARTS))
    eq(failures[:5], [], "requests without their answer (%d of %d)" % (len(failures), sent))
    try:
        for uid, email in created.items():
            r = request(srvs[0].port, "GET", "/users/%d" % uid, timeout=5)
            eq((r.status, r.json().get("email")), (200, email), "acknowledged user %d" % uid)
    finally:
        for s in srvs:
            why = s.stop()
            if why:
                fail(why)
