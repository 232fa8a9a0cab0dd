#!/usr/bin/env python3
"""Run h2load (nghttp2-client) once and print its figures as the one JSON line that
bench/run.sh records for a wrk window (the same fields as wrk/common.lua's BENCHJSON).

  h2load.py --url URL [--connect-to HOST:PORT] [--ids LO:HI] [--conns 64] [--streams 10]
            [--threads 1] [--seconds 4] [--warmup 0] [--h1] [--log FILE] [--pin CPUS]

URL is http://... (HTTP/2 with prior knowledge, h2c) or https://... (h2 by ALPN;
https://localhost:PORT so that the SNI is a host name, with --connect-to 127.0.0.1:PORT).
With --ids, the path's "{id}" is replaced by 1000 ids drawn at random (seeded) from
LO..HI, given to h2load as an input file (it cycles through them).

h2load prints throughput ("finished in 1.00s, 50000.00 req/s, ...") and, per request,
min / max / mean / sd latency ("time for request:"), no percentiles: p50/p90/p99 are
null in the output, mean_ms and max_ms are h2load's.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def dur_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    return float(m.group(1)) * UNIT[m.group(2)] if m else None


def parse(out):
    """h2load's text -> dict of the fields bench/run.sh records"""
    r = {}
    m = re.search(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s, ", out, re.M)
    if not m:
        raise ValueError("no 'finished in ..., req/s' line")
    r["duration_s"] = float(m.group(1)) * UNIT[m.group(2)] / 1e3
    r["rps"] = float(m.group(3))
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out, re.M)
    if not m:
        raise ValueError("no 'requests:' line")
    total, started, done, ok, failed, errored, timeout = map(int, m.groups())
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    non2xx = sum(map(int, m.groups()[1:])) if m else 0
    r["requests"] = done
    r["succeeded"] = ok
    # h2load's "failed" counts requests that got no answer and those with a non-2xx
    # status; errored = stream/connection errors
    r["errors_connect"] = 0
    r["errors_read"] = errored
    r["errors_write"] = 0
    r["errors_timeout"] = timeout
    r["errors_status"] = non2xx
    r["errors_failed"] = failed
    m = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m:
        mn, mx, mean, sd = (dur_ms(x) for x in m.groups())
        r.update(min_ms=mn, max_ms=mx, mean_ms=mean, sd_ms=sd)
    else:
        r.update(min_ms=None, max_ms=None, mean_ms=None, sd_ms=None)
    m = re.search(r"^traffic: .*?\((\d+)\) total", out, re.M)
    r["bytes"] = int(m.group(1)) if m else 0
    r.update(p50_ms=None, p90_ms=None, p99_ms=None, p999_ms=None, curve=[])
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--connect-to")
    ap.add_argument("--ids")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--warmup", type=float, default=0)
    ap.add_argument("--h1", action="store_true")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--log")
    ap.add_argument("--pin", help="taskset -c CPUS for h2load")
    a = ap.parse_args()
    cmd = ([ "taskset", "-c", a.pin] if a.pin else []) + [
        "h2load", "-c", str(a.conns), "-m", str(a.streams), "-t", str(a.threads),
        "-D", "%g" % a.seconds]
    if a.warmup:
        cmd += ["--warm-up-time", "%g" % a.warmup]
    if a.connect_to:
        cmd += ["--connect-to", a.connect_to]
    if a.h1:
        cmd.append("--h1")
    tmp = None
    if a.ids and "{id}" in a.url:
        lo, hi = (int(x) for x in a.ids.split(":"))
        rnd = random.Random(a.seed)
        tmp = tempfile.NamedTemporaryFile("w", suffix=".uris", delete=False)
        for _ in range(1000):
            tmp.write(a.url.replace("{id}", str(rnd.randint(lo, hi))) + "\n")
        tmp.close()
        cmd += ["-i", tmp.name]
    else:
        cmd.append(a.url)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.seconds + a.warmup + 60)
    finally:
        if tmp:
            os.unlink(tmp.name)
    out = p.stdout + p.stderr
    if a.log:
        with open(a.log, "a") as f:
            f.write("$ %s\n%s\n" % (" ".join(cmd), out))
    try:
        r = parse(out)
    except ValueError as e:
        sys.stderr.write(out[-3000:])
        sys.exit("h2load.py: %s (exit %d)" % (e, p.returncode))
    r["loadgen"] = "h2load"
    print(json.dumps(r))


if __name__ == "__main__":
    main()
