#!/usr/bin/env python3
"""arm64: `make CROSS=aarch64-linux-gnu` builds an AArch64 binary, hardened as the
native one (PIE, full RELRO, BIND_NOW, no executable stack), in build/aarch64-linux-gnu;
its unit tests, the JSON differential and a black-box smoke (health, create and get a
user on SQLite, SIGTERM -> exit 0) run under qemu-aarch64-static -L / (there is no
binfmt_misc here: every target binary is started through qemu explicitly).

qemu-user cannot load a seccomp filter for its guest (it refuses prctl/seccomp so the
guest cannot filter qemu's own calls), so the sandbox cannot be enforced here:
  - test_sandbox runs with BRISK_TEST_EMULATED=qemu-user: it builds the aarch64 filter
    with the server's code, checks it is for SCMP_ARCH_NATIVE = aarch64 with every
    listed call aarch64 has, and exports it (the kernel-enforced cases are skipped);
  - the smoke first starts the server with BRISK_SANDBOX=1: it must refuse to start,
    naming the filter (it may not serve unfiltered); then it serves with BRISK_SANDBOX=0
    under `qemu -strace`, and every system call it makes after the point where the
    filter is installed must be on that exported aarch64 filter.

As root the cross toolchain and the :arm64 libraries come from `scripts/deps.sh cross`;
when they cannot be installed the test prints "skip - ..." with apt's error.

    tests/deploy/test_arm64.py [--build DIR]   (DIR: the native tree, unused: the
                                                cross tree is build/aarch64-linux-gnu)"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import common
from common import ROOT, free_port, http, report, wait_health

TRIPLET = "aarch64-linux-gnu"
BUILD = "build/" + TRIPLET
QEMU = ["qemu-aarch64-static", "-L", "/"]
TARGET_LIBS = ["libsqlite3.so", "libcrypto.so", "libseccomp.so", "libdeflate.so"]


def run(cmd, timeout=600, **kw):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def tail(text, n=400):
    return " ".join(text.strip().split())[-n:]


def missing_tools():
    miss = [t for t in (TRIPLET + "-gcc", "qemu-aarch64-static", "readelf")
            if not shutil.which(t)]
    miss += ["/usr/lib/%s/%s" % (TRIPLET, l) for l in TARGET_LIBS
             if not os.path.exists("/usr/lib/%s/%s" % (TRIPLET, l))]
    return miss


def install_deps():
    """None when the toolchain is there, else the reason to skip."""
    if os.geteuid() == 0:
        r = run(["bash", "scripts/deps.sh", "cross"], timeout=900)
        if r.returncode != 0:
            errs = [l for l in r.stderr.splitlines() if l.startswith(("E:", "W:", "Err:"))]
            return "scripts/deps.sh cross exited %d: %s" % (
                r.returncode, " | ".join(errs) if errs else tail(r.stderr))
    miss = missing_tools()
    if miss:
        r = run(["bash", "scripts/deps.sh", "cross"])
        return "not installed (%s): %s" % (" ".join(miss), tail(r.stderr) or "not root")
    return None


def check_elf(path):
    """Problems with one target binary: machine, PIE, RELRO, BIND_NOW, stack."""
    p = []
    h = run(["readelf", "-h", path]).stdout
    if not re.search(r"Machine:\s+AArch64", h):
        p.append("machine is not AArch64")
    if not re.search(r"Type:\s+DYN", h):
        p.append("not a PIE (ELF type is not DYN)")
    d = run(["readelf", "-d", path]).stdout
    if not re.search(r"\(FLAGS\)\s+.*BIND_NOW", d):
        p.append("no FLAGS BIND_NOW")
    if not re.search(r"\(FLAGS_1\)\s+.*\bNOW\b.*\bPIE\b", d):
        p.append("no FLAGS_1 NOW PIE")
    l = run(["readelf", "-lW", path]).stdout
    if "GNU_RELRO" not in l:
        p.append("no GNU_RELRO segment")
    stack = [x for x in l.splitlines() if "GNU_STACK" in x]
    if not stack or "RWE" in stack[0]:
        p.append("executable or missing GNU_STACK")
    if "ld-linux-aarch64.so.1" not in l:
        p.append("interpreter is not ld-linux-aarch64.so.1")
    return p


def unit_tests(tmp):
    tests = sorted(t for t in os.listdir(os.path.join(ROOT, BUILD, "tests"))
                   if t.startswith("test_") and not t.endswith(".d")
                   and os.access(os.path.join(ROOT, BUILD, "tests", t), os.X_OK))
    pfc = os.path.join(tmp, "filter.pfc")
    env = dict(os.environ, BRISK_TEST_EMULATED="qemu-user", BRISK_TEST_SANDBOX_PFC=pfc)
    for t in tests:
        start = time.monotonic()
        try:
            r = run(QEMU + [os.path.join(BUILD, "tests", t)], timeout=300, env=env)
            out, rc = r.stdout + r.stderr, r.returncode
        except subprocess.TimeoutExpired:
            out, rc = "timed out after 300 s", -1
        last = [l for l in out.splitlines() if re.match(r"^\d+ passed, \d+ failed", l)]
        summary = "%s in %.1f s" % (last[-1] if last else "no summary line",
                                    time.monotonic() - start)
        bad = [l for l in out.splitlines() if l.startswith("not ok")]
        why = "exit %d: %s" % (rc, tail("\n".join(bad) or out, 600))
        report("unit %s under qemu-aarch64 (%s)" % (t, summary), rc == 0 and bool(last), why)
    return pfc


def json_differential(tmp):
    checker = os.path.join(ROOT, BUILD, "tests", "json_check")
    script = os.path.join(ROOT, "tests", "json_diff", "gen_and_compare.py")
    if not (os.path.exists(checker) and os.path.exists(script)):
        print("skip - JSON differential under qemu: no json_check or gen_and_compare.py")
        return
    wrapper = os.path.join(tmp, "json_check")
    with open(wrapper, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (" ".join(QEMU), checker))
    os.chmod(wrapper, 0o755)
    r = run([sys.executable, script, wrapper])
    last = (r.stdout.strip().splitlines() or [""])[-1]
    report("JSON differential (reader vs Python json) under qemu-aarch64: %s" % last,
           r.returncode == 0, tail(r.stdout + r.stderr))


def start(tmp, port, sandbox, strace_log=None, db_url=None):
    env = dict(os.environ, BRISK_ADDR="127.0.0.1:%d" % port, BRISK_SANDBOX=sandbox,
               BRISK_DATABASE_URL=db_url or "sqlite:" + os.path.join(tmp, "brisk.db"),
               BRISK_DRAIN_GRACE_MS="0", BRISK_LOG_FORMAT="text")
    env.pop("BRISK_USER", None)
    cmd = QEMU + (["-strace"] if strace_log else []) + [os.path.join(ROOT, BUILD, "brisk"),
                                                        "serve"]
    log = open(strace_log or os.path.join(tmp, "server.log"), "w", encoding="utf-8")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    log.close()
    return proc, strace_log or os.path.join(tmp, "server.log")


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def stop(proc, seconds=20):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "still running %d s after SIGTERM" % seconds


def smoke(tmp, pfc):
    """(BRISK_SANDBOX value, whether to trace) for the smoke runs."""
    # 1. with the sandbox on: qemu-user refuses the filter, and brisk must then not serve
    port = free_port()
    proc, log = start(tmp, port, "1")
    up = wait_health(port, proc, 30)
    code = stop(proc) if up else proc.wait()
    text = read(log)
    if up:
        # an emulator that passes seccomp through: the smoke below runs filtered
        print("# qemu-aarch64 loaded the filter: the smoke runs with BRISK_SANDBOX=1")
        return "1", False
    report("BRISK_SANDBOX=1 under qemu-user (no seccomp for its guest): start-up stops "
           "with status 1, naming the filter", code == 1 and
           "cannot install the syscall filter" in text, "exit %r: %s" % (code, tail(text)))
    for f in ("brisk.db", "brisk.db-wal", "brisk.db-shm"):
        if os.path.exists(os.path.join(tmp, f)):
            os.unlink(os.path.join(tmp, f))
    return "0", True


def serve(tmp, pfc, sandbox, traced, db, db_url=None):
    """The smoke on one database: health, create and get a user, SIGTERM -> exit 0."""
    trace = os.path.join(tmp, "strace-%s.log" % db) if traced else None
    port = free_port()
    proc, log = start(tmp, port, sandbox, trace, db_url)
    up = wait_health(port, proc, 60)
    report("aarch64 brisk serve on %s (BRISK_SANDBOX=%s): /health answers" % (db, sandbox), up,
           "exit %r: %s" % (proc.poll(), tail(read(log)[-3000:])))
    if not up:
        stop(proc)
        return
    email = "ada-%d@example.com" % os.getpid()
    s1, b1 = http(port, "POST", "/users", {"name": "Ada Lovelace", "email": email})
    try:
        user = json.loads(b1)
    except ValueError:
        user = {}
    s2, b2 = http(port, "GET", "/users/%s" % user.get("id"))
    got = json.loads(b2) if s2 == 200 else {}
    report("POST /users 201, GET /users/{id} 200 with the same user (%s)" % db,
           s1 == 201 and s2 == 200 and got.get("email") == email and
           got.get("name") == "Ada Lovelace",
           "POST %d %r, GET %d %r" % (s1, b1[:200], s2, b2[:200]))
    # more of the server's paths for the system-call check: metrics, the embedded
    # document, a refused body, an unknown route
    s3, b3 = http(port, "GET", "/openapi.json")
    s4, _ = http(port, "GET", "/metrics")
    s5, _ = http(port, "POST", "/users", {"name": ""})
    s6, _ = http(port, "GET", "/no/such/route")
    try:
        doc_ok = s3 == 200 and json.loads(b3).get("openapi", "").startswith("3.")
    except ValueError:
        doc_ok = False
    report("GET /openapi.json (.incbin) 200 and parses, /metrics 200, bad body 4xx, 404",
           doc_ok and s4 == 200 and 400 <= s5 < 500 and s6 == 404,
           "openapi %d, metrics %d, bad body %d, unknown %d" % (s3, s4, s5, s6))
    code = stop(proc)
    text = read(log)
    report("SIGTERM: drained, exit status 0 (%s)" % db, code == 0 and
           "SIGTERM received" in text and "shutdown complete" in text,
           "exit %r: %s" % (code, tail(text[-2000:])))
    if trace:
        check_trace(trace, proc.pid, pfc, db)


def check_trace(trace, pid, pfc, db):
    """Every call after the filter point is on the aarch64 filter (by name or number)."""
    if not os.path.exists(pfc):
        report("calls after start-up are on the aarch64 filter (%s)" % db, False,
               "test_sandbox exported no filter to %s" % pfc)
        return
    rules = dict(re.findall(r'# filter for syscall "([a-z0-9_]+)" \((\d+)\)', read(pfc)))
    numbers = set(rules.values())
    text = read(trace)
    mark = text.find("sandbox: syscall filter disabled")
    if mark < 0:
        report("calls after start-up are on the aarch64 filter (%s)" % db, False,
               "no 'syscall filter disabled' line in the qemu -strace log")
        return
    after = text[mark:]
    # qemu -strace prints "PID name(args) = ret", PID the process's (not the thread's);
    # threads interleave, so a call may start mid-line
    names = set(re.findall(r"(?<![0-9])%d ([a-z][a-z0-9_]*)\(" % pid, after))
    unknown = set(re.findall(r"(?<![0-9])%d Unknown syscall (\d+)" % pid, after))
    off = sorted(n for n in names if n not in rules) + \
        sorted("#" + n for n in unknown if n not in numbers)
    report("%s: all %d kinds of system call the aarch64 server made after start-up "
           "(qemu -strace) are on its filter (%d calls)" % (db, len(names) + len(unknown),
                                                            len(rules)), not off,
           "not on the filter: %s" % " ".join(off))


def man_page():
    r = run(["make", "-s", "CROSS=" + TRIPLET, BUILD + "/brisk.1"])
    page = os.path.join(ROOT, BUILD, "brisk.1")
    ok = r.returncode == 0 and os.path.exists(page) and read(page).startswith(".TH")
    report("make CROSS=%s man: the page from the aarch64 binary, run through qemu" % TRIPLET,
           ok, tail(r.stderr) or "no .TH page")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.parse_args()
    why = install_deps()
    if why:
        print("skip - arm64 cross build and qemu run: %s" % why)
        return
    start_t = time.monotonic()
    r = run(["make", "-s", "-j2", "CROSS=" + TRIPLET, "all", "unit-bins"], timeout=900)
    report("make CROSS=%s all unit-bins (%.0f s)" % (TRIPLET, time.monotonic() - start_t),
           r.returncode == 0, tail(r.stderr or r.stdout, 800))
    if r.returncode != 0:
        return
    exe = os.path.join(ROOT, BUILD, "brisk")
    p = check_elf(exe)
    f = run(["file", "-b", exe]).stdout if shutil.which("file") else "ARM aarch64 (no file(1))"
    if "ARM aarch64" not in f:
        p.append("file(1) says %r" % f.strip())
    report("%s/brisk: AArch64 PIE, full RELRO (GNU_RELRO, BIND_NOW), no executable stack" %
           BUILD, not p, "; ".join(p))
    tdir = os.path.join(ROOT, BUILD, "tests")
    bad = ["%s: %s" % (t, "; ".join(q)) for t in sorted(os.listdir(tdir))
           if not t.endswith(".d") for q in [check_elf(os.path.join(tdir, t))] if q]
    report("the unit test binaries are AArch64 PIE with full RELRO too", not bad, " | ".join(bad))
    v = run(QEMU + [exe, "--version"])
    report("qemu-aarch64 brisk --version", v.returncode == 0 and v.stdout.startswith("brisk "),
           "exit %d: %s" % (v.returncode, tail(v.stdout + v.stderr)))
    tmp = tempfile.mkdtemp(prefix="brisk-arm64-")
    try:
        pfc = unit_tests(tmp)
        json_differential(tmp)
        sandbox, traced = smoke(tmp, pfc)
        serve(tmp, pfc, sandbox, traced, "SQLite")
        pg_url = os.environ.get("BRISK_TEST_PG_URL", "")
        if pg_url:
            # libpq5:arm64, dlopen()ed by the aarch64 binary, against the test cluster
            serve(tmp, pfc, sandbox, traced, "PostgreSQL", pg_url)
        else:
            print("skip - aarch64 brisk on PostgreSQL: BRISK_TEST_PG_URL is not set")
        man_page()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(1 if common.failures else 0)
