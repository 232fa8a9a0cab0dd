#!/usr/bin/env python3
"""Memory per idle keep-alive connection of a running server.

    bench/idle_conns.py --pid PID --port PORT [--host 127.0.0.1] [-n 10000] [--tls] [--json]

Opens N connections to the server (source addresses 127.0.0.2, .3, ... so that one
source's ephemeral ports never run short), sends one `GET /health` on each and reads
its answer, so every connection has been used once and is now idle keep-alive, then
waits for the server's RSS to settle. Prints RSS before, after connecting (not yet
used) and after the request, and the growth per connection in bytes. The kernel's
socket buffers are not in a process's RSS, so the figure is the server's own memory.

With --tls each connection makes a TLS handshake and its request in turn (blocking,
one after the other: well within the server's idle timeout), and only the idle figure
is measured.

Needs `ulimit -n` above N for this process and for the server (the bench raises it
before starting the servers). Exit status 1 when fewer than N connections were served.
"""
import argparse
import json
import resource
import selectors
import socket
import ssl
import sys
import time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def settle(pid, seconds=1.0):
    """RSS once it has stopped moving (at most 2 s: the connections must send their
    request before the server's header timeout), in KiB."""
    last = rss_kib(pid)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        time.sleep(seconds / 4)
        now = rss_kib(pid)
        if now == last:
            return now
        last = now
    return last


def open_all(host, port, n, per_source=20000):
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if host.startswith("127."):
            s.bind(("127.0.0.%d" % (2 + i // per_source), 0))
        s.setblocking(False)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        socks.append(s)
    # wait for every connect
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_WRITE)
    pending = len(socks)
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, "connect: %s" % socket.errno.errorcode.get(err, err))
            sel.unregister(key.fileobj)
            pending -= 1
    sel.close()
    if pending:
        raise RuntimeError("%d connects did not complete" % pending)
    return socks


def one_request_each(socks, host):
    req = ("GET /health HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode()
    sel = selectors.DefaultSelector()
    for s in socks:
        s.send(req)  # 40 bytes into an empty socket buffer: never partial
        sel.register(s, selectors.EVENT_READ, bytearray())
    served = 0
    deadline = time.monotonic() + 60
    while served < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            buf = key.data
            chunk = key.fileobj.recv(4096)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            buf += chunk
            head, sep, body = bytes(buf).partition(b"\r\n\r\n")
            if not sep:
                continue
            cl = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    cl = int(v)
            if len(body) >= cl:
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError("GET /health: %r" % head[:80])
                sel.unregister(key.fileobj)
                served += 1
    sel.close()
    return served


def tls_each(host, port, n, per_source=20000):
    """n TLS connections, each used for one GET /health; returns the open sockets."""
    cctx = ssl.create_default_context()
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.set_alpn_protocols(["http/1.1"])
    req = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    socks = []
    for i in range(n):
        raw = socket.create_connection((host, port), timeout=10,
                                       source_address=("127.0.0.%d" % (2 + i // per_source), 0)
                                       if host.startswith("127.") else None)
        s = cctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(req)
        got = b""
        while b"\r\n\r\n" not in got or not got.endswith(b"ok"):
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("connection %d closed before its answer" % i)
            got += chunk
        if not got.startswith(b"HTTP/1.1 200"):
            raise RuntimeError("GET /health: %r" % got[:80])
        socks.append(s)
    return socks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--tls", action="store_true", help="connect over TLS (HTTP/1.1 by ALPN)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of text")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    base = settle(a.pid)
    if a.tls:
        socks = tls_each(a.host, a.port, a.n)
        served = len(socks)
        used = connected = settle(a.pid)
    else:
        socks = open_all(a.host, a.port, a.n)
        connected = settle(a.pid)
        served = one_request_each(socks, a.host)
        used = settle(a.pid)
    res = {
        "connections": a.n,
        "served": served,
        "rss_base_kib": base,
        "rss_connected_kib": connected,
        "rss_idle_kib": used,
        "bytes_per_conn_connected": round((connected - base) * 1024 / a.n),
        "bytes_per_conn_idle": round((used - base) * 1024 / a.n),
    }
    for s in socks:
        s.close()
    if a.json:
        print(json.dumps(res))
    else:
        print("%d connections (%d served): RSS %d KiB -> %d KiB connected -> %d KiB idle after one "
              "request: %d B per connection connected, %d B idle"
              % (a.n, served, base, connected, used, res["bytes_per_conn_connected"],
                 res["bytes_per_conn_idle"]))
    return 0 if served == a.n else 1


if __name__ == "__main__":
    sys.exit(main())
