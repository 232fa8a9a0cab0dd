"""/metrics hygiene: every scrape passes `promtool check metrics` (syntax and
lint), and the process_* families and brisk_build_info carry sane values.

Each test starts its own server (sandbox on, as by default): the shared
"default" server's exact counter deltas belong to test_ops.py, and the
descriptor counts here must not move with other tests' connections. A system
call the /metrics handler needs but the seccomp filter lacks kills the
process, which every test here notices (the scrape fails, the stop is not a
clean exit)."""

import os
import re
import shutil
import subprocess
import time

from harness import Conn, build_request, check, eq, fail, metric, metric_sum, parse_metrics, request, test

PROCESS_FAMILIES = (
    ("process_cpu_seconds_total", "counter"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_start_time_seconds", "gauge"),
)


def promtool():
    exe = shutil.which("promtool") or ("/usr/bin/promtool" if os.access("/usr/bin/promtool", os.X_OK) else None)
    if not exe:
        fail("promtool not found: it comes with the Debian package prometheus; "
             "install the test dependencies with `bash scripts/deps.sh test` (as root)")
    return exe


def promtool_problems(text):
    """What `promtool check metrics` says about `text` (exposition on stdin): ""
    when it exits 0 and prints nothing, else its exit status and output."""
    p = subprocess.run([promtool(), "check", "metrics"], input=text.encode("utf-8"),
                       capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode("utf-8", "replace").strip()
    if p.returncode == 0 and not out:
        return ""
    return "exit status %d: %s" % (p.returncode, out[-3000:])


def scrape(port, conn=None):
    r = request(port, "GET", "/metrics", conn=conn)
    eq(r.status, 200, "/metrics status")
    text = r.text()
    return text, parse_metrics(text)


def start(ctx, name, threads="2"):
    srv = ctx.new_server(env={"BRISK_THREADS": threads}, name=name)
    t0 = time.time()
    srv.start()
    srv.spawned_at = t0
    check("syscall filter on" in srv.stderr(), "%s: the sandbox is not on: %s" % (name, srv.stderr()[-500:]))
    return srv


def stop(srv):
    err = srv.stop()
    if err:
        fail("%s: %s" % (srv.name, err))


def traffic(port):
    """A bit of everything, so that most families and label sets have samples."""
    eq(request(port, "GET", "/health").status, 200, "/health")
    eq(request(port, "GET", "/ready").status, 200, "/ready")
    eq(request(port, "GET", "/nope").status, 404, "unmatched path")
    eq(request(port, "DELETE", "/health").status, 405, "wrong method")
    u = request(port, "POST", "/users", {"name": "Prom Tool", "email": "prom-%d@example.com" % port})
    eq(u.status, 201, "POST /users")
    uid = u.json()["id"]
    eq(request(port, "POST", "/users", {"name": ""}).status, 400, "invalid user")
    eq(request(port, "GET", "/users/%d" % uid).status, 200, "GET /users/{id}")
    items = [{"sku": "A-1", "quantity": 2, "unit_price_cents": 250}]
    eq(request(port, "POST", "/orders", {"user_id": uid, "items": items}).status, 201, "POST /orders")
    eq(request(port, "POST", "/orders/process", {"orders": []}).status, 400, "empty batch")


def check_families(text, m):
    for fam, typ in PROCESS_FAMILIES + (("brisk_build_info", "gauge"),):
        check(re.search(r"^# HELP %s \S" % fam, text, re.M), "no HELP line for %s" % fam)
        check(re.search(r"^# TYPE %s %s$" % (fam, typ), text, re.M), "no '# TYPE %s %s'" % (fam, typ))
        samples = [k for k in m if k[0] == fam]
        eq(len(samples), 1, "%s samples" % fam)


@test(server=None)
def promtool_accepts_every_scrape(ctx):
    promtool()
    srv = start(ctx, "promtool")
    try:
        # the first scrape (families with no samples yet), then after traffic
        text, m = scrape(srv.port)
        eq(promtool_problems(text), "", "promtool check metrics, first scrape")
        check_families(text, m)
        traffic(srv.port)
        text, m = scrape(srv.port)
        eq(promtool_problems(text), "", "promtool check metrics after traffic")
        check_families(text, m)
        check(metric_sum(m, "http_requests_total", method="POST", route="/users", status="201") is not None,
              "the traffic is in the scrape")
    finally:
        stop(srv)


@test(server=None)
def promtool_catches_problems(ctx):
    # the checker itself: a lint problem and a syntax error both count as failures
    check(promtool_problems("# HELP ok_total x\n# TYPE ok_total counter\nok_total 1\n") == "",
          "promtool rejects a clean exposition")
    check(promtool_problems("# HELP foo x\n# TYPE foo counter\nfoo 1\n") != "",
          "promtool does not flag a counter without _total")
    check(promtool_problems("# HELP foo_total x\n# TYPE foo_total counter\nfoo_total{ 1\n") != "",
          "promtool does not flag a syntax error")


def proc_limits_soft_nofile(pid):
    with open("/proc/%d/limits" % pid) as f:
        for ln in f:
            if ln.startswith("Max open files"):
                return int(ln.split()[3])
    fail("no Max open files line in /proc/%d/limits" % pid)


def wait_fds(port, conn, pred, timeout=5.0):
    """Scrape on `conn` until pred(process_open_fds) holds; returns the last value."""
    deadline = time.time() + timeout
    while True:
        v = metric(scrape(port, conn)[1], "process_open_fds")
        if v is not None and pred(v) or time.time() > deadline:
            return v
        time.sleep(0.05)


def settled_fds(port, conn, timeout=3.0):
    """process_open_fds once two scrapes 50 ms apart agree (the connection of
    the start-up health check may still be closing); returns it."""
    deadline = time.time() + timeout
    last = None
    while True:
        v = metric(scrape(port, conn)[1], "process_open_fds")
        if v is not None and v == last or time.time() > deadline:
            return v
        last = v
        time.sleep(0.05)


@test(server=None)
def process_metrics_sane(ctx):
    srv = start(ctx, "procm")
    held = []
    try:
        pid = srv.proc.pid
        keep = Conn(srv.port, timeout=10)  # one connection for the scrapes below
        held.append(keep)
        _, m = scrape(srv.port, keep)
        now = time.time()

        rss = metric(m, "process_resident_memory_bytes")
        vms = metric(m, "process_virtual_memory_bytes")
        check(rss is not None and 1 << 20 < rss < 1 << 30, "process_resident_memory_bytes %r" % rss)
        check(vms is not None and vms >= rss, "process_virtual_memory_bytes %r below RSS %r" % (vms, rss))

        st = metric(m, "process_start_time_seconds")
        check(st is not None and abs(now - st) < 60, "process_start_time_seconds %r, now %.2f" % (st, now))
        check(srv.spawned_at - 1 <= st <= now + 1,
              "process_start_time_seconds %.2f outside spawn %.2f .. now %.2f" % (st, srv.spawned_at, now))

        eq(metric(m, "process_max_fds"), float(proc_limits_soft_nofile(pid)),
           "process_max_fds against /proc/PID/limits")

        fds0 = settled_fds(srv.port, keep)
        check(fds0 is not None and fds0 >= 3, "process_open_fds %r" % fds0)
        outside = len(os.listdir("/proc/%d/fd" % pid))
        check(abs(outside - fds0) <= 2, "process_open_fds %r, /proc/%d/fd lists %d" % (fds0, pid, outside))

        # 20 more keep-alive connections, each with a request answered: 20 more descriptors
        for _ in range(20):
            c = Conn(srv.port, timeout=10)
            held.append(c)
            c.send(build_request("GET", "/health"))
            eq(c.read_response().status, 200, "request on a held connection")
        fds1 = wait_fds(srv.port, keep, lambda v: v >= fds0 + 20)
        check(fds1 is not None and fds1 >= fds0 + 20,
              "process_open_fds %r with 20 more connections held (was %r)" % (fds1, fds0))
        for c in held[1:]:
            c.close()
        del held[1:]
        fds2 = wait_fds(srv.port, keep, lambda v: v <= fds0 + 1)
        check(fds2 is not None and fds2 <= fds0 + 1,
              "process_open_fds %r after closing them (was %r)" % (fds2, fds0))

        # CPU time grows with load, and stays below what the wall clock allows
        cpu0 = metric(scrape(srv.port, keep)[1], "process_cpu_seconds_total")
        check(cpu0 is not None and cpu0 >= 0, "process_cpu_seconds_total %r" % cpu0)
        body = {"name": "Load", "email": "load@example.com"}
        for i in range(600):
            keep.send(build_request("GET", "/health"))
            eq(keep.read_response().status, 200, "load request")
            if i % 20 == 0:
                request(srv.port, "POST", "/users", dict(body, email="load-%d-%d@example.com" % (srv.port, i)))
        _, m = scrape(srv.port, keep)
        cpu1 = metric(m, "process_cpu_seconds_total")
        check(cpu1 is not None and cpu1 - cpu0 > 0.001,
              "process_cpu_seconds_total %r after 630 requests, before %r" % (cpu1, cpu0))
        wall = time.time() - srv.spawned_at
        check(cpu1 < wall * (os.cpu_count() or 1) + 1,
              "process_cpu_seconds_total %r more than %d CPUs x %.1f s" % (cpu1, os.cpu_count() or 1, wall))
        check(srv.alive(), "server died during the scrapes: %s" % srv.stderr()[-1000:])
    finally:
        for c in held:
            c.close()
        stop(srv)


@test(server=None)
def build_info_matches_version(ctx):
    p = subprocess.run([ctx.binary, "--version"], capture_output=True, timeout=10)
    eq(p.returncode, 0, "brisk --version exit status")
    out = p.stdout.decode().strip()
    mv = re.match(r"^brisk (\S+)$", out)
    check(mv, "brisk --version prints %r" % out)
    srv = start(ctx, "buildinfo", threads="1")
    try:
        text, m = scrape(srv.port)
        series = [k for k in m if k[0] == "brisk_build_info"]
        eq(len(series), 1, "brisk_build_info series")
        eq(dict(series[0][1]), {"version": mv.group(1)}, "brisk_build_info labels")
        eq(m[series[0]], 1.0, "brisk_build_info value")
    finally:
        stop(srv)
