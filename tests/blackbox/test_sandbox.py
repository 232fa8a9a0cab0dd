"""Least privilege after start-up (docs/security.md): the seccomp filter is on in
every thread, BRISK_SANDBOX=0 turns it off, and a root start with BRISK_USER
serves as that account, with the SQLite files handed over to it."""

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

import harness
from harness import check, eq, fail, free_port, request, sanitizer_summary, test, uniq, wait_health


def proc_status(pid):
    """/proc/PID/status as {field: value}."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            k, _, v = ln.partition(":")
            out[k] = v.strip()
    return out


def thread_statuses(pid):
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            out.append((int(tid), proc_status_path("/proc/%d/task/%s/status" % (pid, tid))))
        except OSError:
            pass  # a thread that just exited
    return out


def proc_status_path(path):
    out = {}
    with open(path) as f:
        for ln in f:
            k, _, v = ln.partition(":")
            out[k] = v.strip()
    return out


def own_filters():
    """Seccomp filters this test process already runs under (a container may add some)."""
    return int(proc_status(os.getpid()).get("Seccomp_filters", "0"))


def check_filtered(pid, what):
    mine = own_filters()
    threads = thread_statuses(pid)
    check(len(threads) >= 2, "%s: expected several threads, got %d" % (what, len(threads)))
    for tid, st in threads:
        eq(st.get("Seccomp"), "2", "%s: thread %d Seccomp mode (2 = filter)" % (what, tid))
        if "Seccomp_filters" in st:
            check(int(st["Seccomp_filters"]) > mine,
                  "%s: thread %d has %s filters, no more than the test process (%d)"
                  % (what, tid, st["Seccomp_filters"], mine))
        eq(st.get("NoNewPrivs"), "1", "%s: thread %d NoNewPrivs" % (what, tid))


def exercise(port):
    """Requests that touch every subsystem: parsing, SQLite writes and reads, metrics."""
    email = "%s@example.com" % uniq("sb")
    r = request(port, "POST", "/users", {"name": "Sandboxed", "email": email})
    eq(r.status, 201, "create under the sandbox (%r)" % r.body[:200])
    uid = r.json()["id"]
    eq(request(port, "GET", "/users/%d" % uid).status, 200, "read back")
    eq(request(port, "PATCH", "/users/%d" % uid, {"name": "Still"}).status, 200, "patch")
    eq(request(port, "GET", "/users?limit=5").status, 200, "list")
    eq(request(port, "GET", "/metrics").status, 200, "metrics")
    eq(request(port, "GET", "/ready").status, 200, "ready")
    eq(request(port, "DELETE", "/users/%d" % uid).status, 204, "delete")


def stop_clean(srv, what):
    reason = srv.stop(signal.SIGTERM, timeout=20)
    if reason and "exit status -31" in reason:
        fail("%s: killed by SIGSYS (a system call outside the allowlist): %s" % (what, reason))
    check(reason is None, "%s: %s" % (what, reason))


@test(server=None)
def sandbox_on_in_every_thread(ctx):
    srv = ctx.new_server(env={"BRISK_THREADS": "2"}, name="sandboxed").start()
    try:
        check_filtered(srv.proc.pid, "default start")
        exercise(srv.port)
        check(re.search(r"sandbox: syscall filter on", srv.stderr()), "no 'syscall filter on' log line")
        check_filtered(srv.proc.pid, "after requests")
        stop_clean(srv, "sandboxed server")
    finally:
        srv.kill()


@test(server=None)
def sandbox_off_with_0(ctx):
    srv = ctx.new_server(env={"BRISK_THREADS": "1", "BRISK_SANDBOX": "0"}, name="unsandboxed").start()
    try:
        st = proc_status(srv.proc.pid)
        eq(int(st.get("Seccomp_filters", "0")), own_filters(), "filters with BRISK_SANDBOX=0")
        check("filter disabled" in srv.stderr(), "BRISK_SANDBOX=0 is not logged as a warning")
        exercise(srv.port)
        stop_clean(srv, "BRISK_SANDBOX=0")
    finally:
        srv.kill()


@test(server=None)
def sandbox_log_mode_serves(ctx):
    srv = ctx.new_server(env={"BRISK_THREADS": "1", "BRISK_SANDBOX": "log"}, name="logmode").start()
    try:
        eq(proc_status(srv.proc.pid).get("Seccomp"), "2", "log mode installs a filter")
        exercise(srv.port)
        stop_clean(srv, "BRISK_SANDBOX=log")
    finally:
        srv.kill()


def run_once(ctx, env_extra, preexec=None, cwd=None, timeout=15):
    env = harness.base_env()
    d = cwd or ctx.tmpdir()
    env["BRISK_ADDR"] = "127.0.0.1:%d" % free_port()
    env["BRISK_DATABASE_URL"] = "sqlite:%s" % os.path.join(d, "once.db")
    env.update(env_extra)
    try:
        p = subprocess.run([ctx.binary, "serve"], env=env, stdin=subprocess.DEVNULL, cwd=d, capture_output=True,
                           timeout=timeout, preexec_fn=preexec)
    except subprocess.TimeoutExpired:
        fail("%r did not exit within %d s (started anyway?)" % (env_extra, timeout))
    return p.returncode, p.stderr.decode("utf-8", "replace")


def one_error_line(rc, err, setting, what):
    rep = sanitizer_summary(err)
    check(rep is None, rep or "")
    eq(rc, 2, "%s: exit status (stderr %r)" % (what, err[-300:]))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    eq(len(lines), 1, "%s: stderr lines %r" % (what, lines))
    check(setting in lines[0], "%s: error line does not name %s: %r" % (what, setting, lines[0]))


@test(server=None)
def sandbox_settings_errors_exit_2(ctx):
    rc, err = run_once(ctx, {"BRISK_SANDBOX": "maybe"})
    one_error_line(rc, err, "BRISK_SANDBOX", "BRISK_SANDBOX=maybe")
    rc, err = run_once(ctx, {"BRISK_SANDBOX": ""})
    one_error_line(rc, err, "BRISK_SANDBOX", "BRISK_SANDBOX empty")
    rc, err = run_once(ctx, {"BRISK_USER": "no-such-user-%d" % os.getpid()})
    one_error_line(rc, err, "BRISK_USER", "unknown BRISK_USER")


def world_dir(prefix):
    """A fresh directory every account can reach (for a server that drops to nobody)."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o711)
    return d


def drop_to(uid, gid):
    def fn():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return fn


@test(server=None)
def not_root_user_must_be_self(ctx):
    if os.geteuid() != 0:
        # the suite itself runs unprivileged: BRISK_USER naming root must be refused
        rc, err = run_once(ctx, {"BRISK_USER": "root"})
        one_error_line(rc, err, "BRISK_USER", "non-root with BRISK_USER=root")
        return
    nobody = pwd.getpwnam("nobody")
    d = world_dir("brisk-nonroot-")
    os.chmod(d, 0o777)
    try:
        pre = drop_to(nobody.pw_uid, nobody.pw_gid)
        rc, err = run_once(ctx, {"BRISK_USER": "root"}, preexec=pre, cwd=d)
        one_error_line(rc, err, "BRISK_USER", "non-root with BRISK_USER=root")
        # naming the current account is fine: it starts and serves
        port = free_port()
        env = harness.base_env()
        env.update({"BRISK_ADDR": "127.0.0.1:%d" % port, "BRISK_USER": "nobody", "BRISK_THREADS": "1",
                    "BRISK_DATABASE_URL": "sqlite:%s" % os.path.join(d, "self.db")})
        errf = open(os.path.join(d, "self.stderr"), "wb")
        p = subprocess.Popen([ctx.binary, "serve"], env=env, cwd=d, stdin=subprocess.DEVNULL, stdout=errf,
                             stderr=errf, preexec_fn=pre)
        try:
            wait_health(port, p)
            check(p.poll() is None, "BRISK_USER naming the current account: exited %s: %s"
                  % (p.returncode, open(errf.name).read()[-500:]))
            exercise(port)
            check("running as root" not in open(errf.name).read(), "root warning while not root")
            p.send_signal(signal.SIGTERM)
            rc = p.wait(20)
            out = open(errf.name).read()
            eq(rc, 0, "exit status (%s)" % out[-500:])
            rep = sanitizer_summary(out)
            check(rep is None, rep or "")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            errf.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test(server=None)
def root_without_user_warns(ctx):
    if os.geteuid() != 0:
        return  # only meaningful when the suite runs as root
    srv = ctx.new_server(env={"BRISK_THREADS": "1"}, name="rootwarn").start()
    try:
        check(re.search(r"warn.*running as root.*BRISK_USER", srv.stderr()),
              "no warning about serving as root: %r" % srv.stderr()[-500:])
        eq(proc_status(srv.proc.pid)["Uid"].split()[0], "0", "still root (no BRISK_USER)")
        stop_clean(srv, "root without BRISK_USER")
    finally:
        srv.kill()


@test(server=None)
def root_drops_to_brisk_user(ctx):
    if os.geteuid() != 0:
        return  # needs root to start; the suite runs unprivileged
    nobody = pwd.getpwnam("nobody")
    d = world_dir("brisk-drop-")
    db = os.path.join(d, "data", "brisk.db")
    env = {"BRISK_THREADS": "2", "BRISK_USER": "nobody", "BRISK_DATABASE_URL": "sqlite:" + db}
    try:
        for round_ in (1, 2):  # the second start finds the files already handed over
            srv = ctx.new_server(env=env, name="drop%d" % round_).start()
            try:
                st = proc_status(srv.proc.pid)
                want = str(nobody.pw_uid)
                eq(st["Uid"].split(), [want] * 4, "Uid (real, effective, saved, fs)")
                eq(st["Gid"].split(), [str(nobody.pw_gid)] * 4, "Gid (real, effective, saved, fs)")
                check("0" not in st.get("Groups", "").split(), "still in group 0: %r" % st.get("Groups"))
                eq(st.get("CapEff"), "0000000000000000", "effective capabilities")
                eq(st.get("CapPrm"), "0000000000000000", "permitted capabilities")
                for tid, tst in thread_statuses(srv.proc.pid):
                    eq(tst["Uid"].split(), [want] * 4, "thread %d Uid" % tid)
                check_filtered(srv.proc.pid, "after the drop")
                check(re.search(r"running as user nobody", srv.stderr()), "no log line naming the account")
                check("running as root" not in srv.stderr(), "root warning despite BRISK_USER")
                exercise(srv.port)  # writes as nobody: the WAL and database stay writable
                for path in (db, db + "-wal", db + "-shm", os.path.dirname(db)):
                    if os.path.exists(path):
                        eq(os.stat(path).st_uid, nobody.pw_uid, "owner of %s" % os.path.basename(path))
                stop_clean(srv, "server as nobody (round %d)" % round_)
            finally:
                srv.kill()
        check(not os.path.exists(db + "-wal"), "the WAL was not cleaned up at exit (directory not writable?)")
        # files brisk did not create are left alone: a shared directory is not handed over
        shared = world_dir("brisk-shared-")
        try:
            with open(os.path.join(shared, "other-file"), "w") as f:
                f.write("not brisk's")
            env2 = dict(env, BRISK_DATABASE_URL="sqlite:" + os.path.join(shared, "b.db"))
            srv = ctx.new_server(env=env2, name="dropshared").start()
            try:
                eq(os.stat(shared).st_uid, 0, "a directory holding other files was chowned")
                eq(os.stat(os.path.join(shared, "other-file")).st_uid, 0, "another file was chowned")
                eq(os.stat(os.path.join(shared, "b.db")).st_uid, nobody.pw_uid, "database file owner")
                check("not handed to nobody" in srv.stderr(), "no warning about the directory kept")
                exercise(srv.port)
                stop_clean(srv, "server as nobody in a shared directory")
            finally:
                srv.kill()
        finally:
            shutil.rmtree(shared, ignore_errors=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
