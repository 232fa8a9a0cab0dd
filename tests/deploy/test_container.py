#!/usr/bin/env python3
"""`make image`: build the OCI image with buildah, check its configuration and size,
that a second build gives the same image, then run it with podman: serve on
127.0.0.1, create and read a user, keep it on the /data volume across containers,
load libpq for a PostgreSQL URL (and serve from $BRISK_TEST_PG_URL when set), stop
with SIGTERM and exit 0.

    tests/deploy/test_container.py --build DIR

Skips (one line) only when this machine cannot run containers at all."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import common
from common import ROOT, free_port, http, report

MAX_GZIP_BYTES = 10_000_000  # the goal: at most 10 MB to pull
UID = "10001"
# crun refuses this machine's hybrid cgroups; runc with cgroupfs works, and the
# default rlimits of a container may exceed what an unprivileged CI box grants
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
RUN = ["run", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network=host"]
tag = "localhost/brisk-deploytest:%d" % os.getpid()
tag2 = tag + "-again"
names = []  # containers and volumes to remove



def podman(*args, timeout=60):
    return subprocess.run(PODMAN + list(args), capture_output=True, text=True, timeout=timeout)




def wait_health(port, name, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if http(port, "GET", "/health")[0] == 200:
                return True
        except OSError:
            pass
        st = podman("inspect", "--format", "{{.State.Running}}", name)
        if st.stdout.strip() == "false":
            return False
        time.sleep(0.1)
    return False


def cannot_run_containers():
    """Why this machine cannot run containers, or None."""
    for tool in ("buildah", "podman", "runc"):
        if not shutil.which(tool):
            return "%s is not installed (scripts/deps.sh test installs it)" % tool
    if os.geteuid() != 0:
        try:
            with open("/etc/subuid", encoding="utf-8") as f:
                if not any(l.startswith(os.environ.get("USER", "") + ":") for l in f):
                    return "not root and no /etc/subuid range for rootless podman"
        except OSError:
            return "not root and no /etc/subuid for rootless podman"
    r = subprocess.run(["unshare", "--mount", "--pid", "--net", "--fork", "true"],
                       capture_output=True, text=True)
    if r.returncode != 0 and os.geteuid() == 0:
        return "cannot create namespaces here: %s" % r.stderr.strip()[:120]
    return None


def start(name, port, *extra, image=None):
    names.append(("container", name))
    return podman(*RUN, "-d", "--name", name, "-e", "BRISK_ADDR=127.0.0.1:%d" % port, *extra,
                  image or tag)


def stop_with_sigterm(name):
    """kill -s TERM, then the exit status and the logs."""
    podman("kill", "--signal", "TERM", name)
    w = podman("wait", name, timeout=40)
    logs = podman("logs", name)
    try:
        code = int(w.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        code = None
    return code, logs.stdout + logs.stderr


def build_image(build, image):
    t0 = time.time()
    r = subprocess.run(["make", "-s", "BUILD=" + build, "IMAGE=" + image, "image"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    return r, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    build = ap.parse_args().build
    why = cannot_run_containers()
    if why:
        print("skip - container image: %s" % why)
        return

    r, secs = build_image(build, tag)
    m = re.search(r"image \S+ \(([0-9a-f]+)\): (\d+) bytes of files .* (\d+) bytes as gzip", r.stdout)
    report("make image builds %s (%.1f s)" % (tag, secs), r.returncode == 0 and m,
           (r.stderr + r.stdout).strip()[-400:])
    if r.returncode != 0 or not m:
        return
    print("# " + r.stdout.strip())
    files, gz = int(m.group(2)), int(m.group(3))
    report("image size: %.1f MB as gzip layers <= %.0f MB (%.1f MB of files)" %
           (gz / 1e6, MAX_GZIP_BYTES / 1e6, files / 1e6), gz <= MAX_GZIP_BYTES, "too big")

    insp = podman("image", "inspect", tag)
    cfg = json.loads(insp.stdout)[0] if insp.returncode == 0 else {}
    c = cfg.get("Config", {})
    env = dict(e.split("=", 1) for e in c.get("Env", []))
    problems = []
    if c.get("User", "").split(":")[0] in ("", "0", "root"):
        problems.append("User %r is root" % c.get("User"))
    if "8080/tcp" not in c.get("ExposedPorts", {}):
        problems.append("no EXPOSE 8080")
    if "/data" not in c.get("Volumes", {}):
        problems.append("no /data volume")
    if env.get("BRISK_ADDR") != "0.0.0.0:8080":
        problems.append("BRISK_ADDR=%r" % env.get("BRISK_ADDR"))
    if env.get("BRISK_DATABASE_URL") != "sqlite:/data/brisk.db":
        problems.append("BRISK_DATABASE_URL=%r" % env.get("BRISK_DATABASE_URL"))
    if c.get("Entrypoint") != ["/usr/bin/brisk"] or c.get("Cmd") != ["serve"]:
        problems.append("entrypoint %r cmd %r" % (c.get("Entrypoint"), c.get("Cmd")))
    if not cfg.get("Created", "").startswith("1970-01-01"):
        problems.append("created %r, not the fixed timestamp 0" % cfg.get("Created"))
    if len(cfg.get("RootFS", {}).get("Layers", [])) != 1:
        problems.append("layers: %r (FROM scratch: one)" % cfg.get("RootFS", {}).get("Layers"))
    report("image config: user %s, EXPOSE 8080, VOLUME /data, BRISK_ADDR, BRISK_DATABASE_URL, "
           "timestamp 0, one layer" % c.get("User"), not problems, "; ".join(problems))

    r2, _ = build_image(build, tag2)
    m2 = re.search(r"image \S+ \(([0-9a-f]+)\)", r2.stdout)
    report("a second build gives the same image id (%s)" % m.group(1),
           m2 is not None and m2.group(1) == m.group(1),
           "second build: %s" % (m2.group(1) if m2 else r2.stderr.strip()[-200:]))

    # serve from the image, SQLite on a named volume
    vol = "brisk-deploytest-%d" % os.getpid()
    names.append(("volume", vol))
    name = "brisk-deploytest-%d-a" % os.getpid()
    port = free_port()
    st = start(name, port, "-v", "%s:/data" % vol)
    up = st.returncode == 0 and wait_health(port, name)
    report("podman run: /health answers on 127.0.0.1:%d" % port, up,
           (st.stderr.strip() or podman("logs", name).stderr.strip())[-400:])
    if not up:
        return
    email = "container-%d@example.com" % os.getpid()
    s1, b1 = http(port, "POST", "/users", {"name": "Grace Hopper", "email": email})
    user = json.loads(b1) if s1 == 201 else {}
    s2, b2 = http(port, "GET", "/users/%s" % user.get("id"))
    report("POST /users 201, GET /users/{id} 200 with the same user",
           s1 == 201 and s2 == 200 and json.loads(b2).get("email") == email, "%d %r / %d %r" %
           (s1, b1[:120], s2, b2[:120]))
    report("GET /ready 200 (SQLite on /data)", http(port, "GET", "/ready")[0] == 200, "")
    code, logs = stop_with_sigterm(name)
    report("kill -s TERM: drained, exit status 0", code == 0 and "SIGTERM received" in logs and
           "shutdown complete" in logs, "exit %r; logs: %s" % (code, logs[-400:]))
    report("logs as a non-root user: seccomp filter on, no root warning, no error",
           "sandbox: syscall filter on" in logs and "running as root" not in logs and
           " error " not in logs, logs[-600:])

    # the same volume in a new container: the user is still there
    name = "brisk-deploytest-%d-b" % os.getpid()
    port = free_port()
    # read-only root and no tmpfs, as Kubernetes' readOnlyRootFilesystem: only /data is written
    st = start(name, port, "-v", "%s:/data" % vol, "-e", "BRISK_DRAIN_GRACE_MS=0", "--read-only",
               "--read-only-tmpfs=false")
    ok = st.returncode == 0 and wait_health(port, name)
    s3, b3 = http(port, "GET", "/users/%s" % user.get("id")) if ok else (0, b"")
    report("a new container, read-only root, on the same /data volume reads the user back",
           s3 == 200 and json.loads(b3).get("email") == email, "%d %r" % (s3, b3[:120]))
    code, logs = stop_with_sigterm(name)
    report("second container: exit status 0 after SIGTERM", code == 0, "exit %r" % code)

    # libpq and its libraries are in the image: a PostgreSQL URL gets as far as connecting
    r = podman(*RUN, "--rm", tag, "migrate", "--database-url=postgres://brisk@127.0.0.1:1/brisk")
    report("libpq.so.5 loads in the image (a refused connect, not a missing library)",
           r.returncode == 1 and "cannot connect" in r.stderr and "libpq.so.5" not in r.stderr,
           "exit %d: %s" % (r.returncode, r.stderr.strip()[-300:]))
    pg_url = os.environ.get("BRISK_TEST_PG_URL", "")
    if not pg_url:
        print("skip - container on PostgreSQL: BRISK_TEST_PG_URL is not set")
    else:
        name = "brisk-deploytest-%d-pg" % os.getpid()
        port = free_port()
        st = start(name, port, "-e", "BRISK_DATABASE_URL=" + pg_url, "-e",
                   "BRISK_DRAIN_GRACE_MS=0")
        ok = st.returncode == 0 and wait_health(port, name)
        email = "container-pg-%d-%d@example.com" % (os.getpid(), int(time.time()))
        s1, b1 = http(port, "POST", "/users", {"name": "Edsger", "email": email}) if ok else (0, b"")
        uid = json.loads(b1).get("id") if s1 == 201 else None
        s2, b2 = http(port, "GET", "/users/%s" % uid) if uid else (0, b"")
        code, logs = stop_with_sigterm(name)
        report("container on PostgreSQL: create and read a user, exit 0 after SIGTERM",
               s2 == 200 and json.loads(b2).get("email") == email and code == 0,
               "%d %r / %d / exit %r: %s" % (s1, b1[:100], s2, code, logs[-300:]))


def cleanup():
    for kind, name in reversed(names):
        if kind == "container":
            podman("rm", "-f", "-v", name)
        else:
            podman("volume", "rm", "-f", name)
    podman("rmi", "-f", tag, tag2)


if __name__ == "__main__":
    try:
        main()
    finally:
        if shutil.which("podman"):
            cleanup()
    sys.exit(1 if common.failures else 0)
