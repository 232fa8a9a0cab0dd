"""The drain grace (BRISK_DRAIN_GRACE_MS): after SIGTERM a process keeps its
listeners and its idle keep-alive connections for the grace, answers what
arrives on them with Connection: close, and only then stops accepting and
closes the idle connections. Without it a balancer that sends on a pooled idle
connection at the moment of the signal loses that request (issue 13)."""

import signal
import socket
import time

from harness import Conn, build_request, check, eq, fail, request, test


def _served_keepalive(port):
    """A connection that has served one request and is idle now."""
    c = Conn(port, timeout=5)
    c.send(build_request("GET", "/health"))
    r = c.read_response()
    eq(r.status, 200, "/health before the signal")
    check(not r.has_close(), "keep-alive before the signal")
    return c


def _refused(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except ConnectionRefusedError:
        return True
    s.close()
    return False


def _finish(srv):
    """Stop srv if it still runs; either way: exit status 0, sanitizer-clean."""
    if srv.alive():
        why = srv.stop()
    else:
        srv._close_files()
        rc = srv.proc.returncode
        why = srv.sanitizer_report() or (None if rc == 0 else "exit status %s; %s"
                                         % (rc, srv.exit_details()))
    if why:
        fail(why)


@test(server=None, transports=("h1", "tls"),
      reason="checks Connection: close on answers in the grace, which HTTP/2 forbids; HTTP/2 connections get a GOAWAY shutdown notice at SIGTERM and the final GOAWAY at the grace end instead")
def idle_connections_and_listener_kept_for_the_grace(ctx):
    # unset: the default grace (1500 ms) is what an operator gets
    srv = ctx.new_server(env={"BRISK_DRAIN_GRACE_MS": None}, name="grace").start()
    try:
        idle = [_served_keepalive(srv.port) for _ in range(3)]
        # a connection opened but not used yet (a balancer's pre-connect)
        fresh = Conn(srv.port, timeout=5)
        time.sleep(0.1)
        t0 = time.monotonic()
        srv.send_sig(signal.SIGTERM)
        time.sleep(0.4)  # well into the grace
        for i, c in enumerate(idle):
            body = '{"name":"Grace %d","email":"grace%d@example.com"}' % (i, i)
            c.send(build_request("POST", "/users", body.encode()))
            r = c.read_response("POST")
            eq(r.status, 201, "POST /users on an idle connection during the grace")
            check(r.has_close(), "a response during the drain says Connection: close")
            rest, state = c.read_rest(timeout=2)
            eq((rest, state), (b"", "eof"), "connection closed after its Connection: close answer")
        # new connections are still accepted and answered
        r = request(srv.port, "GET", "/users/1", timeout=3)
        eq(r.status, 200, "a new connection during the grace")
        check(r.has_close(), "new connection answered with Connection: close")
        fresh.send(build_request("GET", "/health"))
        r = fresh.read_response()
        eq(r.status, 200, "a connection opened before the signal, first used in the grace")
        check(r.has_close(), "its answer says Connection: close")
        # after the grace: refused, and the process exits 0 on its own
        deadline = t0 + 10
        while time.monotonic() < deadline and srv.alive():
            time.sleep(0.02)
        took = time.monotonic() - t0
        check(not srv.alive(), "still running 10 s after SIGTERM")
        check(took >= 1.4, "exited %.2f s after SIGTERM, before the 1.5 s grace ended" % took)
        eq(srv.proc.returncode, 0, "exit status")
        check(_refused(srv.port), "the port still accepts after the drain")
    finally:
        _finish(srv)


@test(server=None)
def idle_connection_closed_when_the_grace_ends(ctx):
    srv = ctx.new_server(env={"BRISK_DRAIN_GRACE_MS": "600"}, name="grace600").start()
    try:
        c = _served_keepalive(srv.port)
        t0 = time.monotonic()
        srv.send_sig(signal.SIGTERM)
        check(c.quiet_for(0.4), "idle connection closed during the grace")
        rest, state = c.read_rest(timeout=3)
        took = time.monotonic() - t0
        eq((rest, state), (b"", "eof"), "idle connection after the grace")
        check(0.5 <= took < 2.5, "idle connection closed %.2f s after SIGTERM (grace 0.6 s)" % took)
        check(srv.wait_exit(5) == 0, "exit 0 after the grace")
    finally:
        _finish(srv)


@test(server=None)
def no_grace_closes_idle_connections_at_once(ctx):
    """BRISK_DRAIN_GRACE_MS=0 is the old drain: listeners and idle connections go
    at the signal, which is the race the grace exists for (the request below is
    sent on a connection the server has already closed)."""
    srv = ctx.new_server(env={"BRISK_DRAIN_GRACE_MS": "0"}, name="nograce").start()
    try:
        c = _served_keepalive(srv.port)
        srv.send_sig(signal.SIGTERM)
        rest, state = c.read_rest(timeout=3)
        eq((rest, state), (b"", "eof"), "idle connection at SIGTERM without a grace")
        check(srv.wait_exit(5) == 0, "exit 0")
    finally:
        _finish(srv)
