#!/usr/bin/env python3
"""Response compression on the wire: CPU per request and bytes per response,
with and without Accept-Encoding: gzip, against a running brisk.

  wire.py --port P --pid PID --body orders1000.json [--seconds S] [--conns N]
          [--pin CPUS] [--raw raw.jsonl] [--md out.md]

Scenarios: GET /users?limit=1000 (the API's largest page) and POST
/orders/process with the batch in --body (bench/gen_orders.py 1000). Each is
run with wrk (bench/wrk/common.lua, orders.lua) for --seconds, once plain and
once with -H 'Accept-Encoding: gzip'; the server's CPU time (user + system,
/proc/PID/stat) over the window divided by the requests answered is the CPU
per request; wrk's bytes read divided by the requests is the bytes on the
wire per response (head included). Prints one JSON object per row, appends
{"kind":"compress",...} records to --raw, and writes a markdown table to --md
(bench/run.sh adds it to the report)."""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WRK_DIR = os.path.join(os.path.dirname(HERE), "wrk")


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args, scenario, path, lua, gzip):
    cmd = []
    if args.pin:
        cmd += ["taskset", "-c", args.pin]
    cmd += ["wrk", "-t1", "-c%d" % args.conns, "-d%gs" % args.seconds, "--timeout", "10s",
            "-s", os.path.join(WRK_DIR, lua)]
    if gzip:
        cmd += ["-H", "Accept-Encoding: gzip"]
    cmd.append("http://127.0.0.1:%d%s" % (args.port, path))
    env = dict(os.environ, BENCH_LUA_DIR=WRK_DIR, BENCH_BODY=args.body)
    c0 = cpu_s(args.pid)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    c1 = cpu_s(args.pid)
    line = [ln for ln in out.splitlines() if ln.startswith("BENCHJSON ")][-1]
    d = json.loads(line.split(" ", 1)[1])
    n = max(1, d["requests"])
    errors = sum(d[k] for k in d if k.startswith("errors_"))
    return {"scenario": scenario, "coding": "gzip" if gzip else "identity", "requests": d["requests"],
            "rps": round(d["rps"], 1), "cpu_us_per_req": round((c1 - c0) * 1e6 / n, 1),
            "wire_bytes_per_resp": d["bytes"] // n, "p50_ms": d["p50_ms"], "errors": errors}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--pin", default="")
    ap.add_argument("--raw")
    ap.add_argument("--md")
    args = ap.parse_args()
    rows = []
    for scenario, path, lua in [("GET /users?limit=1000", "/users?limit=1000", "common.lua"),
                                ("POST /orders/process (1000 orders)", "/orders/process",
                                 "orders.lua")]:
        for gz in (False, True):
            r = run(args, scenario, path, lua, gz)
            rows.append(r)
            print(json.dumps(r), flush=True)
    if args.raw:
        with open(args.raw, "a") as f:
            for r in rows:
                f.write(json.dumps(dict({"kind": "compress"}, **r)) + "\n")
    if args.md:
        with open(args.md, "w") as f:
            f.write("\n## Response compression (brisk-sqlite, gzip: libdeflate level 1)\n\n")
            f.write("| scenario | coding | req/s | CPU µs per request | bytes on the wire per response |\n")
            f.write("|---|---|---|---|---|\n")
            for r in rows:
                f.write("| %s | %s | %s | %.1f | %s |\n" % (r["scenario"], r["coding"],
                        "{:,.0f}".format(r["rps"]), r["cpu_us_per_req"],
                        "{:,}".format(r["wire_bytes_per_resp"])))
    if any(r["errors"] for r in rows):
        sys.exit("wire.py: wrk saw errors: %r" % rows)


if __name__ == "__main__":
    main()
