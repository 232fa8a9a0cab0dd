"""Start-up as an operator meets it (issue 13, items 2-4): the command line,
host names in BRISK_ADDR, insecure settings that are refused or warned about,
the port bound before the database is touched, libpq option names in errors,
and --help agreeing with README."""

import os
import re
import time
import socket
import subprocess

import harness
from harness import REPO, check, eq, fail, free_port, request, sanitizer_summary, test


def run(ctx, args, env_extra, timeout=15, db=None):
    """Run the binary to completion; returns (rc, stdout, stderr)."""
    env = harness.base_env()
    env["BRISK_ADDR"] = "127.0.0.1:%d" % free_port()
    env["BRISK_DATABASE_URL"] = "sqlite:%s" % (db or os.path.join(ctx.tmpdir(), "s.db"))
    env.update(env_extra)
    try:
        p = subprocess.run([ctx.binary] + args, env=env, stdin=subprocess.DEVNULL,
                           cwd=ctx.tmpdir(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail("%r %r did not exit within %d s (started anyway?)" % (args, env_extra, timeout))
    err = p.stderr.decode("utf-8", "replace")
    rep = sanitizer_summary(err)
    check(rep is None, rep or "")
    return p.returncode, p.stdout.decode("utf-8", "replace"), err


def one_line(err, what):
    # run.py --transport tls: the certificate is loaded (and logged) before the address fails
    lines = [ln for ln in err.splitlines() if ln.strip() and " info TLS " not in ln]
    eq(len(lines), 1, "stderr lines for %s: %r" % (what, lines))
    return lines[0]


@test(server=None)
def no_command_prints_usage_exit_2(ctx):
    rc, out, err = run(ctx, [], {})
    eq(rc, 2, "brisk with no command")
    check("brisk serve" in err and "BRISK_ADDR" in err, "usage on stderr: %r" % err[:300])
    eq(out, "", "nothing on stdout")
    rc, out, err = run(ctx, ["--threads=2"], {})
    eq(rc, 2, "flags without a command")
    check("brisk serve --threads=2" in one_line(err, "flags without a command"),
          "the line shows the fix: %r" % err)


@test(server=None)
def serve_help(ctx):
    for args in (["serve", "--help"], ["serve", "--threads=2", "-h"], ["migrate", "--help"]):
        rc, out, err = run(ctx, args, {"BRISK_THREADS": "nonsense"})
        eq(rc, 0, "%r exit status (stderr %r)" % (args, err[-200:]))
        check("BRISK_DRAIN_GRACE_MS" in out and "--db-pool" in out, "%r prints the settings" % args)


def _help_defaults(ctx):
    rc, out, err = run(ctx, ["--help"], {})
    eq(rc, 0, "--help")
    rows = {}
    for m in re.finditer(r"^  --(\S+)\s+(BRISK_\w+)\s+(\S+)\n((?:      .*\n)+)", out, re.M):
        rows[m.group(2)] = (m.group(1), m.group(3), " ".join(m.group(4).split()))
    check(len(rows) >= 20, "settings parsed from --help: %d" % len(rows))
    return rows


@test(server=None)
def help_agrees_with_readme(ctx):
    helps = _help_defaults(ctx)
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    table = {}
    for m in re.finditer(r"^\| `(BRISK_\w+)` \| `--([\w-]+)` \| ([^|]+) \|", readme, re.M):
        table[m.group(1)] = (m.group(2), m.group(3).strip())
    eq(sorted(table), sorted(helps), "settings in README's table vs --help")
    for var, (flag, default) in table.items():
        hflag, hdef, htext = helps[var]
        eq(flag, hflag, "%s flag" % var)
        if hdef == "-":  # no literal default: README says what it is in words
            check(not default.startswith("`"), "%s: README gives %s, --help none" % (var, default))
        else:
            eq(default, "`%s`" % hdef, "%s default in README" % var)
    check("affinity" in helps["BRISK_THREADS"][2], "--help threads: %r" % (helps["BRISK_THREADS"],))
    check("PostgreSQL" in helps["BRISK_DB_BUSY_TIMEOUT_MS"][2],
          "--help busy timeout covers PostgreSQL: %r" % (helps["BRISK_DB_BUSY_TIMEOUT_MS"],))


@test(server=None)
def readme_install_list_matches_deps(ctx):
    with open(os.path.join(REPO, "scripts", "deps.sh")) as f:
        deps = f.read()
    pkgs = set()
    for m in re.finditer(r"^(?:run|test)_pkgs\+?=\(([^)]*)\)", deps, re.M):
        pkgs.update(w for w in m.group(1).split() if not w.startswith('"$'))
    check(len(pkgs) > 10, "packages parsed from deps.sh: %r" % pkgs)
    with open(os.path.join(REPO, "README.md")) as f:
        head = f.read().split("## Configuration")[0]
    missing = sorted(p for p in pkgs if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(p), head))
    eq(missing, [], "packages scripts/deps.sh installs that README's install list omits")


@test(server=None)
def addr_host_name_binds_every_address(ctx):
    port = free_port()
    srv = ctx.new_server(env={"BRISK_ADDR": "localhost:%d" % port, "BRISK_THREADS": "1"},
                         name="lh", port=port).start()
    try:
        eq(request(port, "GET", "/health").status, 200, "/health on 127.0.0.1")
        # logged once the loops run: a first request can be answered before it is written
        deadline = time.time() + 5
        while True:
            line = [ln for ln in srv.stderr().splitlines() if "listening on" in ln]
            if line or time.time() > deadline:
                break
            time.sleep(0.05)
        eq(len(line), 1, "start-up line: %r" % srv.stderr()[-500:])
        addrs = re.search(r"listening on (.*) with ", line[0]).group(1).split(", ")
        if srv.tls:  # run.py --transport tls: each address is marked
            addrs = [a[:-len(" (TLS)")] if a.endswith(" (TLS)") else a + " (not marked TLS)" for a in addrs]
        want = set()
        for ai in socket.getaddrinfo("localhost", port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE):
            h = ai[4][0]
            want.add("[%s]:%d" % (h, port) if ai[0] == socket.AF_INET6 else "%s:%d" % (h, port))
        eq(sorted(addrs), sorted(want), "addresses logged (numeric) for localhost")
        if "[::1]:%d" % port in addrs:
            s = harness.connect(port, timeout=3, host="::1")
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            check(s.recv(100).startswith(b"HTTP/1.1 200"), "/health on [::1]")
            s.close()
    finally:
        why = srv.stop()
        if why:
            fail(why)


@test(server=None)
def addr_name_that_does_not_resolve_exit_2(ctx):
    d = ctx.tmpdir()
    db = os.path.join(d, "never.db")
    rc, out, err = run(ctx, ["serve"], {"BRISK_ADDR": "no-such-host.invalid:8080"}, db=db)
    eq(rc, 2, "exit status")
    line = one_line(err, "unresolvable BRISK_ADDR")
    check(line.startswith("brisk: BRISK_ADDR (--addr): ") and "no-such-host.invalid" in line,
          "line %r" % line)
    check(not os.path.exists(db), "a database was created before the address failed")


@test(server=None)
def port_in_use_leaves_no_database(ctx):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    db = os.path.join(ctx.tmpdir(), "never.db")
    try:
        rc, out, err = run(ctx, ["serve"], {"BRISK_ADDR": "127.0.0.1:%d" % port}, db=db)
    finally:
        s.close()
    eq(rc, 1, "exit status for a port in use")
    line = one_line(err, "port in use")
    check("127.0.0.1:%d" % port in line and "in use" in line, "line %r" % line)
    check(not os.path.exists(db), "the database was created although the port was taken")


@test(server=None)
def empty_api_token_refused(ctx):
    for args, env in ((["serve"], {"BRISK_API_TOKEN": ""}), (["serve", "--api-token="], {})):
        rc, out, err = run(ctx, args, env)
        eq(rc, 2, "exit status for %r %r" % (args, env))
        line = one_line(err, "empty token")
        check(line.startswith("brisk: BRISK_API_TOKEN (--api-token): ") and "empty" in line,
              "line %r" % line)


def _warns(ctx, env, port=None):
    srv = ctx.new_server(env=dict(env, BRISK_THREADS="1"), name="warn", port=port).start()
    err = srv.stderr()
    why = srv.stop()
    if why:
        fail(why)
    return [ln for ln in err.splitlines() if "WARN" in ln.upper()]


@test(server=None)
def insecure_settings_warn_once(ctx):
    port = free_port()
    w = _warns(ctx, {"BRISK_ADDR": "0.0.0.0:%d" % port}, port)
    tok = [ln for ln in w if "BRISK_API_TOKEN" in ln]
    key = [ln for ln in w if "BRISK_RECEIPT_KEY" in ln]
    eq((len(tok), len(key)), (1, 1), "warn lines naming the token and the key: %r" % w)
    port = free_port()
    w = _warns(ctx, {"BRISK_ADDR": "0.0.0.0:%d" % port, "BRISK_API_TOKEN": "t0ken-x",
                     "BRISK_RECEIPT_KEY": "a-real-secret-key"}, port)
    eq([ln for ln in w if "BRISK_API_TOKEN" in ln or "BRISK_RECEIPT_KEY" in ln], [],
       "no warning with a token and a key")
    w = _warns(ctx, {})  # the harness's 127.0.0.1 address
    eq([ln for ln in w if "BRISK_API_TOKEN" in ln or "BRISK_RECEIPT_KEY" in ln], [],
       "no warning on loopback")


@test(server=None)
def libpq_unknown_option_named_not_valued(ctx):
    secret = "s3cr3t-%d" % os.getpid()
    cases = [("host=127.0.0.1 password=%s no_such_option=%s" % (secret, secret), "no_such_option"),
             ("postgres://u:%s@127.0.0.1/db?bogus_param=%s" % (secret, secret), "bogus_param")]
    for url, key in cases:
        rc, out, err = run(ctx, ["serve"], {"BRISK_DATABASE_URL": url})
        eq(rc, 2, "exit status for an unknown option")
        line = one_line(err, key)
        check(key in line and "BRISK_DATABASE_URL" in line, "line names the option: %r" % line)
        check(secret not in out + err, "the value was printed: %r" % line)
