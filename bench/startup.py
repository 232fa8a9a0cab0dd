#!/usr/bin/env python3
"""Start a server and measure the time from exec to its first 200 on GET /health.

  startup.py --port P [--keep] [--log FILE] [--timeout S] -- CMD ARGS...

Polls 127.0.0.1:P every 0.2 ms (connect, "GET /health", read the status line)
until a 200 arrives. Prints one JSON object {"ms": ..., "pid": ...}. Without
--keep the server is stopped (SIGTERM, then SIGKILL after 5 s) before exiting;
with --keep it is left running (its pid is in the output). Exit 1 when no 200
came within the timeout (the server is killed).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time


def probe(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return False
            data += chunk
        return data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
    except OSError:
        return False
    finally:
        s.close()


def main():
    args = sys.argv[1:]
    port, keep, log, timeout = None, False, None, 30.0
    while args and args[0] != "--":
        a = args.pop(0)
        if a == "--port":
            port = int(args.pop(0))
        elif a == "--keep":
            keep = True
        elif a == "--log":
            log = args.pop(0)
        elif a == "--timeout":
            timeout = float(args.pop(0))
        else:
            sys.exit("startup.py: unknown option " + a)
    cmd = args[1:]
    if port is None or not cmd:
        sys.exit(__doc__)
    if probe(port):
        sys.exit("startup.py: something already answers on port %d" % port)
    out = open(log, "ab") if log else subprocess.DEVNULL
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    ok = False
    while time.monotonic() - t0 < timeout:
        if probe(port):
            ok = True
            break
        if p.poll() is not None:
            break
        time.sleep(0.0002)
    ms = (time.monotonic() - t0) * 1000.0
    if not ok or not keep:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    print(json.dumps({"ms": round(ms, 2), "pid": p.pid, "ok": ok, "exit": p.returncode}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
