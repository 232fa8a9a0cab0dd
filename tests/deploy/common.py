"""What the deploy tests share: the repository root, the ok/FAIL line format
tests/deploy/run.sh counts, and a plain HTTP client for a server on loopback."""

import json
import os
import socket
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
failures = 0


def report(name, ok, why=""):
    """Print one result line; a failure is counted in `failures`."""
    global failures
    if ok:
        print("ok - %s" % name)
    else:
        failures += 1
        print("FAIL - %s: %s" % (name, why))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, body=None):
    """(status, body bytes) of one request to 127.0.0.1:port; body is sent as JSON."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data,
                                 method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_health(port, proc, seconds=10):
    """True once GET /health on port answers 200; False when proc (a Popen) exits first
    or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if http(port, "GET", "/health")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False
