#!/usr/bin/env python3
"""brisk black-box suite.

    python3 tests/blackbox/run.py --binary build/brisk [-k substring ...] [-v] [-j N]
                                  [--database-url postgres://...] [--transport h1|tls|h2c]

Starts the real binary (one process per server configuration, plus the ones
the process-level tests start themselves), drives it over raw sockets, stops it
with SIGTERM and checks exit status 0 and a sanitizer-clean stderr. Each server
uses its own SQLite file or, with --database-url (a PostgreSQL superuser URL,
e.g. from scripts/pg_cluster.sh), its own fresh PostgreSQL database; the
PostgreSQL-only tests (test_pg_faults.py) run in that mode only.

--transport runs the same cases over another transport (harness.py's docstring):
h1 (default, cleartext HTTP/1.1), tls (every server gets a throwaway certificate
on its main port, every client speaks TLS) or h2c (requests over HTTP/2 by prior
knowledge; raw-socket HTTP/1.1 tests stay HTTP/1.1). A test declared for some
transports only (@test(transports=..., reason=...)) is reported "SKIP name: reason".
-k may be given several times (a test runs if its name contains any of them).

Prints one line per failure and, as the last line, "N passed, N failed" (plus
", N skipped" when some were)."""

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))


def import_tests():
    """Every tests/blackbox/test_*.py module registers its tests with @harness.test
    (after the options are known: some register only in PostgreSQL mode)."""
    for mod in sorted(f[:-3] for f in os.listdir(_HERE) if f.startswith("test_") and f.endswith(".py")):
        __import__(mod)

print_lock = threading.Lock()
results = []  # (name, ok, reason, seconds)


def one_line(s, limit=600):
    s = " ".join(str(s).split())
    return s if len(s) <= limit else s[:limit] + "..."


def record(name, ok, reason, secs, verbose):
    with print_lock:
        results.append((name, ok, reason, secs))
        if not ok:
            print("FAIL %s: %s" % (name, one_line(reason)), flush=True)
        elif verbose:
            print("ok %s (%.2fs)" % (name, secs), flush=True)


def run_test(name, fn, ctx):
    """Run one test; returns (ok, reason, seconds)."""
    t0 = time.time()
    try:
        fn(ctx)
        return True, None, time.time() - t0
    except harness.TestFailure as e:
        return False, str(e), time.time() - t0
    except AssertionError as e:  # plain `assert` in docs-style tests
        tb = traceback.extract_tb(e.__traceback__)
        where = "%s:%d" % (os.path.basename(tb[-1].filename), tb[-1].lineno) if tb else "?"
        return False, "assertion failed at %s: %s %s" % (where, tb[-1].line if tb else "", e), time.time() - t0
    except Exception as e:  # noqa: BLE001 - any crash of a test is a failure
        tb = traceback.extract_tb(e.__traceback__)
        where = "%s:%d" % (os.path.basename(tb[-1].filename), tb[-1].lineno) if tb else "?"
        return False, "%s: %s (at %s)" % (type(e).__name__, e, where), time.time() - t0


def healthy(srv):
    try:
        return harness.request(srv.port, "GET", "/health", timeout=3, check_common=False).status == 200
    except Exception:  # noqa: BLE001
        return False


def run_group(group, tests, binary, workdir, verbose):
    gdir = tempfile.mkdtemp(prefix="%s-" % (group or "proc"), dir=workdir)
    if group is None:
        ctx = harness.Ctx(binary, gdir)
        for name, fn in tests:
            record(name, *run_test(name, fn, ctx), verbose=verbose)
        return
    def start(k):
        srv = harness.Server(binary, gdir, env=harness.SERVER_CONFIGS[group],
                             name="%s%s" % (group, "-%d" % k if k else ""))
        try:
            srv.start()
        except Exception as e:  # noqa: BLE001
            srv.kill()
            return None, str(e)
        return srv, None

    restarts = 0
    t0 = time.time()
    srv, err = start(0)
    for name, fn in tests:
        if srv is None:
            record(name, False, "server %r did not start: %s" % (group, err), 0, verbose)
            continue
        ctx = harness.Ctx(binary, gdir, server=srv, group=group)
        ok, reason, secs = run_test(name, fn, ctx)
        if srv.alive() and not ok and not healthy(srv):
            # a sanitizer report takes a while to be written: give the process time to die
            srv.wait_exit(10)
        if not srv.alive() or (not ok and not healthy(srv)):
            # the server died (or hangs) after this test: blame the test, start a fresh one
            if srv.alive():
                why = "server stopped answering /health during this test"
            else:
                why = "server crashed (exit status %s) during this test: %s" % (
                    srv.proc.returncode, srv.sanitizer_report() or srv.stderr()[-800:])
            ok, reason = False, why + ("" if reason is None else " [test said: %s]" % reason)
            srv.kill()
            restarts += 1
            srv, err = start(restarts)
        record(name, ok, reason, secs, verbose)
    if srv is not None:
        reason = srv.stop()
        record("%s.server_sigterm_clean_exit" % group, reason is None, reason, time.time() - t0, verbose)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("-k", action="append", default=[],
                    help="run only tests whose name contains this (repeatable: any of them)")
    ap.add_argument("-v", action="store_true", help="print passing tests too")
    ap.add_argument("-j", type=int, default=6, help="server groups run in parallel")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    ap.add_argument("--database-url", default=None,
                    help="PostgreSQL server URL: every server gets a fresh database there")
    ap.add_argument("--transport", choices=harness.TRANSPORTS, default="h1",
                    help="h1 (cleartext HTTP/1.1), tls (HTTP/1.1 over TLS) or h2c (HTTP/2, prior knowledge)")
    args = ap.parse_args()
    if args.database_url:
        harness.DATABASE_URL = args.database_url
        try:
            harness.psql(args.database_url, "SELECT 1")
        except harness.TestFailure as e:
            print("FAIL setup: --database-url does not answer: %s" % e)
            print("0 passed, 1 failed")
            return 1
    import_tests()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        print("FAIL setup: %s is not an executable" % binary)
        print("0 passed, 1 failed")
        return 1

    try:
        certdir = harness.setup_transport(args.transport)
    except Exception as e:  # noqa: BLE001 - openssl missing or failing
        print("FAIL setup: transport %s: %s" % (args.transport, e))
        print("0 passed, 1 failed")
        return 1

    groups = {}
    order = []
    skipped = []
    for name, group, fn in harness.TESTS:
        if args.k and not any(k in name for k in args.k):
            continue
        if name in harness.SKIPS and args.transport not in harness.SKIPS[name][0]:
            skipped.append(name)
            print("SKIP %s: not over %s: %s" % (name, args.transport, harness.SKIPS[name][1]), flush=True)
            continue
        if group not in groups:
            groups[group] = []
            order.append(group)
        groups[group].append((name, fn))
    # process-level tests are independent of each other: give each its own worker
    jobs = []
    for g in order:
        if g is None:
            for t in groups[g]:
                jobs.append((None, [t]))
        else:
            jobs.append((g, groups[g]))
    # long groups first
    weight = {"timers": 0, "default": 1, None: 2}
    jobs.sort(key=lambda j: weight.get(j[0], 3))

    workdir = tempfile.mkdtemp(prefix="brisk-blackbox-")
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, args.j)) as ex:
        futs = [ex.submit(run_group, g, ts, binary, workdir, args.v) for g, ts in jobs]
        for f in futs:
            f.result()
    # checks over what the whole run saw (harness.final_check), e.g. every
    # response against the OpenAPI document; each counts as one test (also
    # under -k, over the responses of the tests it ran)
    # (a transport's skips do not count: the rest must still see every documented success)
    harness.FILTERED = bool(args.k)
    for name, fn in (harness.FINAL_CHECKS if results else []):
        record(name, *run_test(name, lambda _ctx, fn=fn: fn(), None), verbose=args.v)
    if harness.pg_mode() and not args.keep:
        harness.pg_drop_all()
    if args.keep:
        print("logs kept in %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if certdir:
        shutil.rmtree(certdir, ignore_errors=True)
    passed = sum(1 for r in results if r[1])
    failed = len(results) - passed
    if args.v:
        print("elapsed %.1f s" % (time.time() - t0))
    if args.transport == "h2c":
        print("h2c: %(h2)d requests over HTTP/2, %(h1)d kept on HTTP/1.1 (only it can express them)"
              % harness.H2_COUNTS)
    print("%d passed, %d failed%s" % (passed, failed, ", %d skipped" % len(skipped) if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
