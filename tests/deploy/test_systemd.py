#!/usr/bin/env python3
"""packaging/brisk.service: `systemd-analyze verify` and `security` (exposure <= 2.0),
and the unit's limits against what the binary really does: every system call of a
traced run (as an unprivileged user, like DynamicUser=) is allowed by its
SystemCallFilter=, every socket family by RestrictAddressFamilies=, no mapping is
writable and executable (MemoryDenyWriteExecute=), and ExecReload= is there only if
brisk survives SIGHUP. Runs without systemd running.

    tests/deploy/test_systemd.py --build DIR"""
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

UNIT = os.path.join(ROOT, "packaging", "brisk.service")
MAX_EXPOSURE = 2.0



def unit_values(text, key):
    return [line.split("=", 1)[1].strip() for line in text.splitlines()
            if line.startswith(key + "=")]




def syscall_groups():
    """{"@group": [names and @subgroups]} from `systemd-analyze syscall-filter`."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                         check=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = line.strip()
            groups[cur] = []
        elif cur and line.strip() and not line.strip().startswith("#"):
            groups[cur].append(line.strip())
    return groups


def expand(groups, names):
    out = set()
    for n in names:
        if n.startswith("@"):
            out |= expand(groups, groups[n])
        else:
            out.add(n)
    return out


def allowed_syscalls(text):
    """The set SystemCallFilter= lines allow: the first allow list, minus ~ lists."""
    groups = syscall_groups()
    allowed = None
    for v in unit_values(text, "SystemCallFilter"):
        if v.startswith("~"):
            allowed -= expand(groups, v[1:].split())
        else:
            allowed = expand(groups, v.split()) | (allowed or set())
    return allowed


def traced_run(binary, tmp, pg_url):
    """Trace `brisk serve` as nobody through start-up, requests of every kind and the drain.
    Returns (strace lines, problems)."""
    os.chmod(tmp, 0o777)
    trace = os.path.join(tmp, "trace")
    port = free_port()
    # host names, so the lookups (and their netlink sockets) are in the trace
    db = pg_url.replace("@127.0.0.1:", "@localhost:") if pg_url else "sqlite:%s/brisk.db" % tmp
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
            "strace", "-f", "-qq", "-o", trace, binary, "serve", "--addr=localhost:%d" % port,
            "--database-url=" + db, "--drain-grace-ms=0", "--log-level=warn"]
    proc = subprocess.Popen(argv, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    problems = []
    try:
        if not wait_health(port, proc, 20):
            return [], ["brisk did not answer /health under strace: %s" %
                        proc.stderr.read().decode()[-300:]]
        email = "unit-%d-%d@example.com" % (os.getpid(), port)
        st, body = http(port, "POST", "/users", {"name": "Unit Test", "email": email})
        if st != 201:
            problems.append("POST /users: %d %r" % (st, body[:100]))
        else:
            uid = json.loads(body)["id"]
            for method, path, want in (("GET", "/users/%d" % uid, 200), ("GET", "/ready", 200),
                                       ("GET", "/metrics", 200), ("GET", "/users?limit=5", 200)):
                if http(port, method, path)[0] != want:
                    problems.append("%s %s not %d" % (method, path, want))
            st, _ = http(port, "POST", "/orders", {"user_id": uid, "lines": [
                {"sku": "A-1", "quantity": 2, "unit_price": "3.50"}]})
            if st not in (201, 400):  # the syscalls are the point, not the body's schema
                problems.append("POST /orders: %d" % st)
        time.sleep(0.3)  # a background worker pass
    finally:
        # SIGTERM to brisk itself (strace's child): strace would only detach
        kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
        for pid in kids:
            os.kill(int(pid), signal.SIGTERM)
        try:
            rc = proc.wait(30)  # strace exits with its tracee's status
        except subprocess.TimeoutExpired:
            for pid in kids:
                os.kill(int(pid), signal.SIGKILL)
            proc.kill()
            rc = proc.wait()
        if not kids:
            rc = -1
    if rc != 0:
        problems.append("exit status %d after SIGTERM: %s" % (rc, proc.stderr.read().decode()[-300:]))
    with open(trace, encoding="utf-8", errors="replace") as f:
        return f.read().splitlines(), problems


CALL = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_][a-z0-9_]*)[( ]")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    build = ap.parse_args().build
    binary = os.path.abspath(os.path.join(ROOT, build, "brisk"))
    if not shutil.which("systemd-analyze"):
        report("systemd-analyze is installed", False, "apt-get install systemd")
        return
    with open(UNIT, encoding="utf-8") as f:
        text = f.read()

    tmp = tempfile.mkdtemp(prefix="brisk-unit-")
    try:
        # verify needs ExecStart to exist, and man:brisk(1) to be found
        unit = os.path.join(tmp, "brisk.service")
        with open(unit, "w", encoding="utf-8") as f:
            f.write(text.replace("/usr/local/bin/brisk", binary))
        mandir = os.path.join(tmp, "man", "man1")
        os.makedirs(mandir)
        with open(os.path.join(mandir, "brisk.1"), "w", encoding="utf-8") as f:
            f.write(subprocess.run([binary, "help-man"], capture_output=True, text=True,
                                   check=True).stdout)
        env = dict(os.environ, MANPATH=os.path.join(tmp, "man"))
        r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True,
                           env=env)
        report("systemd-analyze verify (ExecStart, man:brisk(1)): no complaints",
               r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(),
               (r.stderr + r.stdout).strip()[:400])

        r = subprocess.run(["systemd-analyze", "security", "--offline=true", unit],
                           capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        score = float(m.group(1)) if m else 99.0
        report("systemd-analyze security --offline=true: exposure %s <= %.1f" %
               (m.group(1) if m else "?", MAX_EXPOSURE), score <= MAX_EXPOSURE,
               (r.stderr.strip() or "\n".join(l for l in r.stdout.splitlines()
                                              if l.startswith("\u2717")))[:600])

        need = {"DynamicUser": "yes", "StateDirectory": "brisk", "ProtectSystem": "strict",
                "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
                "CapabilityBoundingSet": "", "Restart": "on-failure", "Type": "exec"}
        bad = ["%s=%s" % (k, v) for k, v in need.items() if v not in unit_values(text, k)]
        bad += [k for k in ("RestrictAddressFamilies", "SystemCallFilter")
                if not unit_values(text, k)]
        if "@system-service" not in " ".join(unit_values(text, "SystemCallFilter")):
            bad.append("SystemCallFilter=@system-service")
        report("unit sets the required hardening", not bad, "missing: " + ", ".join(bad))

        # ExecReload only if SIGHUP reloads rather than kills
        port = free_port()
        proc = subprocess.Popen([binary, "serve", "--addr=127.0.0.1:%d" % port,
                                 "--database-url=sqlite:%s/hup.db" % tmp, "--log-level=warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        survived = None
        if wait_health(port, proc):
            proc.send_signal(signal.SIGHUP)
            try:
                proc.wait(2)
                survived = False
            except subprocess.TimeoutExpired:
                survived = True
        proc.kill()
        proc.wait()
        has_reload = bool(unit_values(text, "ExecReload"))
        report("ExecReload= present only if brisk survives SIGHUP (survives: %s, ExecReload: %s)" %
               (survived, has_reload), survived is not None and survived == has_reload,
               "brisk did not start" if survived is None else "mismatch")

        # the unit's system call, socket and W^X limits against a traced run
        if not shutil.which("strace") or not shutil.which("setpriv"):
            report("traced run", False, "strace or setpriv missing (apt-get install strace)")
            return
        allowed = allowed_syscalls(text)
        families = set(" ".join(unit_values(text, "RestrictAddressFamilies")).split())
        pg_url = os.environ.get("BRISK_TEST_PG_URL", "")
        for label, url in (("SQLite", ""), ("PostgreSQL", pg_url)):
            if label == "PostgreSQL" and not url:
                print("skip - traced run on PostgreSQL: BRISK_TEST_PG_URL is not set")
                continue
            os.chmod(tmp, 0o711)  # nobody reaches its own directory below
            rundir = tempfile.mkdtemp(prefix="trace-", dir=tmp)
            lines, problems = traced_run(binary, rundir, url)
            report("traced run on %s as nobody: requests answered, exit 0 after SIGTERM" % label,
                   not problems and lines, "; ".join(problems))
            if not lines:
                continue
            # from brisk's own execve on (strace's child does the exec)
            start = next(i for i, l in enumerate(lines) if " execve(" in l) + 1
            used = set()
            for line in lines[start:]:
                m = CALL.match(line)
                if m and not line.split(None, 1)[1].startswith(("+++", "---")):
                    used.add(m.group(1))
            denied = sorted(used - allowed)
            report("SystemCallFilter= allows all %d system calls of the %s run" % (len(used), label),
                   not denied, "not allowed: " + ", ".join(denied))
            fams = set(re.findall(r"\bsocket\((AF_[A-Z0-9]+)", "\n".join(lines[start:])))
            report("RestrictAddressFamilies= has every socket family used (%s)" %
                   ", ".join(sorted(fams)), fams <= families,
                   "not allowed: " + ", ".join(sorted(fams - families)))
            wx = [l for l in lines[start:] if re.search(r"\bmmap\(.*PROT_WRITE\|PROT_EXEC|"
                                                        r"\bmmap\(.*PROT_EXEC\|PROT_WRITE|"
                                                        r"\bmprotect\(.*PROT_EXEC", l)]
            report("MemoryDenyWriteExecute=: no writable+executable mapping, no mprotect(EXEC)",
                   not wx, wx[0][:200] if wx else "")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(1 if common.failures else 0)
