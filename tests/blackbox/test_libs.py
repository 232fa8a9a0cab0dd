"""Shared libraries (docs/storage.md, "libpq is loaded only for PostgreSQL"): brisk is not
linked with libpq. On SQLite neither libpq nor the ~20 libraries it pulls in (GnuTLS,
Kerberos, LDAP, p11-kit, ...; libssl is brisk's own, for TLS) are mapped; on PostgreSQL libpq is
loaded at start-up, before the sandbox, and serves requests under it. Without a usable
libpq a PostgreSQL URL stops start-up with one line naming the library and the Debian
package, exit status 2."""

import os
import shutil
import subprocess

import harness
from harness import check, eq, free_port, request, test, uniq

# libpq and what only libpq brings in (not libssl: brisk links it itself, for TLS)
PQ_ONLY = ("libpq.so", "libgnutls.so", "libgssapi_krb5.so", "libkrb5.so",
           "libldap", "liblber", "libsasl2.so", "libp11-kit.so", "libnettle.so")


def mapped_libraries(pid):
    """Base names of the shared objects mapped into process pid."""
    out = set()
    with open("/proc/%d/maps" % pid) as f:
        for ln in f:
            parts = ln.split(None, 5)
            if len(parts) == 6 and ".so" in parts[5]:
                out.add(os.path.basename(parts[5].strip()))
    return out


def exercise(port):
    email = "%s@example.com" % uniq("libs")
    r = request(port, "POST", "/users", {"name": "Linked Late", "email": email})
    eq(r.status, 201, "create (%r)" % r.body[:200])
    uid = r.json()["id"]
    eq(request(port, "GET", "/users/%d" % uid).json()["email"], email, "read back")
    eq(request(port, "GET", "/ready").status, 200, "ready")


@test()
def libpq_only_for_postgres(ctx):
    libs = mapped_libraries(ctx.server.proc.pid)
    check(any(n.startswith("libc.so") for n in libs), "no libc in the maps? %s" % sorted(libs))
    if harness.pg_mode():
        check(any(n.startswith("libpq.so.5") for n in libs),
              "PostgreSQL server without libpq mapped: %s" % sorted(libs))
    else:
        found = sorted(n for n in libs if any(n.startswith(p) for p in PQ_ONLY))
        eq(found, [], "libraries of libpq mapped by a SQLite server")
    exercise(ctx.port)


@test(server=None)
def libpq_loads_without_linking(ctx):
    """brisk migrate with a PostgreSQL URL nobody listens on: libpq is loaded and
    reports the refused connection (exit 1), whichever backend the suite runs on."""
    p = subprocess.run([ctx.binary, "migrate", "--database-url",
                        "postgres://brisk:pw@127.0.0.1:%d/none" % free_port()],
                       env=harness.base_env(), stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=30, cwd=ctx.workdir)
    err = p.stderr.decode("utf-8", "replace")
    eq(p.returncode, 1, "exit status (stderr: %s)" % err[-600:])
    check("cannot connect" in err, "no connection error from libpq: %s" % err[-600:])


def ld_path(soname):
    """Where the dynamic loader finds soname (ldconfig's cache), or None."""
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, timeout=20).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return None
    for ln in out.splitlines():
        name, _, path = ln.strip().partition(" => ")
        if name.split(" ")[0] == soname and os.path.exists(path):
            return path
    return None


def start_without_libpq(ctx, replacement):
    """Start brisk with a PostgreSQL URL in a private mount namespace where
    libpq.so.5 is `replacement` (bind-mounted over it); returns (status, stderr)."""
    url = "postgres://brisk:hunter2secret@127.0.0.1:%d/none" % free_port()
    env = harness.base_env()
    env.update(BRISK_ADDR="127.0.0.1:%d" % free_port(), BRISK_DATABASE_URL=url)
    script = 'mount --bind "$1" "$2" && exec "$3" serve'
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                        replacement, ld_path("libpq.so.5"), ctx.binary], env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30, cwd=ctx.workdir)
    return p.returncode, p.stderr.decode("utf-8", "replace")


@test(server=None)
def missing_libpq_stops_start_up(ctx):
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        return  # needs root for a private mount namespace
    if ld_path("libpq.so.5") is None:
        return  # no libpq here: nothing to hide
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=20)
    if probe.returncode != 0:
        return  # mount namespaces not permitted (container)

    # an empty file where libpq.so.5 should be: dlopen fails
    rc, err = start_without_libpq(ctx, "/dev/null")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    eq(rc, 2, "exit status without libpq (stderr: %s)" % err[-600:])
    eq(len(lines), 1, "one line on stderr: %r" % err[-600:])
    for want in ("libpq.so.5", "libpq5", "BRISK_DATABASE_URL"):
        check(want in lines[0], "%r not in %r" % (want, lines[0]))
    check("hunter2secret" not in err, "the password reached stderr: %r" % err)

    # a library without libpq's functions (too old a libpq, say): every missing one named
    other = ld_path("libseccomp.so.2")  # brisk links it anyway
    if other is None:
        return
    rc, err = start_without_libpq(ctx, other)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    eq(rc, 2, "exit status with a libpq lacking functions (stderr: %s)" % err[-600:])
    eq(len(lines), 1, "one line on stderr: %r" % err[-600:])
    for want in ("libpq.so.5 lacks", "PQconnectPoll", "libpq5"):
        check(want in lines[0], "%r not in %r" % (want, lines[0]))
