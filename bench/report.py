#!/usr/bin/env python3
"""Turn bench/run.sh's raw records into the results of one run.

  report.py --raw bench/.work/raw.jsonl --out bench/results/<date>-<host> [--elapsed S]

Writes OUT.json (aggregates and every raw record), OUT.md (the essay's comparison
table with measured columns, then every measurement and the goals), OUT-throughput.png,
OUT-latency.png (gnuplot, when installed) and prints a summary.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys

# brisk-sqlite-base: brisk-sqlite's configuration with another binary (run.sh's
# BENCH_BRISK_BASELINE), only in runs that compare two builds of brisk
SERVERS = ["brisk-sqlite", "brisk-sqlite-base", "brisk-pg", "go-gin", "go-nethttp", "rust-hyper"]
SQLITE_SERVERS = ("brisk-sqlite", "brisk-sqlite-base", "limit")
PEERS = ["go-gin", "go-nethttp", "rust-hyper"]
BRISKS = ["brisk-sqlite", "brisk-pg"]
SCENARIOS = ["health", "health_pipelined", "get_user", "post_user", "orders_process"]
SCENARIO_TITLE = {
    "health": "GET /health",
    "health_pipelined": "GET /health, pipelined ×16",
    "get_user": "GET /users/{id}",
    "post_user": "POST /users",
    "orders_process": "POST /orders/process (1000 orders)",
}


def load(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    meta = next((r for r in recs if r["kind"] == "meta"), {})
    return recs, meta


def build_key(server):
    """the build record of a server: both brisk configurations share one binary"""
    if server == "brisk-sqlite-base":
        return "brisk-base"
    return "brisk" if server.startswith("brisk") else server


def med(v):
    return statistics.median(v) if v else None


def aggregate(recs):
    out = {"wrk": {}, "rate": {}, "startup_ms": {}, "build": {}, "rss_kb": {}, "rss_start_kb": {},
           "json": {}, "notes": [], "check": None, "pg": None,
           "rss_scenario_kb": {}, "rss_end": {}}
    wrk = {}
    scale = {}  # (via, reads) -> records (bench/scaleout.sh)
    for r in recs:
        k = r["kind"]
        if k == "wrk":
            wrk.setdefault((r["scenario"], r["server"]), []).append(r["data"])
        elif k == "rate":
            # several rounds: keep the one with the lowest p99 (interference only adds latency)
            d = out["rate"].setdefault(r["scenario"], {})
            prev = d.get(r["server"])
            runs = (prev or {}).get("p99_each", []) + [r["data"]["p99_ms"]]
            if prev is None or r["data"]["p99_ms"] < prev["p99_ms"]:
                d[r["server"]] = dict(r["data"])
            d[r["server"]]["p99_each"] = runs
        elif k == "startup":
            out["startup_ms"].setdefault(r["server"], []).append(r["data"]["ms"])
        elif k == "build":
            out["build"][r["server"]] = {x: r[x] for x in r if x not in ("kind", "server")}
        elif k == "rss_scenario":
            d = out["rss_scenario_kb"].setdefault(r["scenario"], {})
            d[r["server"]] = max(d.get(r["server"], 0), r["vmhwm_kb"])
        elif k == "rss":
            out["rss_end"][r["server"]] = {x: r[x] for x in r if x not in ("kind", "server")}
        elif k == "rss_start":
            out["rss_start_kb"][r["server"]] = r["vmrss_kb"]
        elif k == "rss_pg":
            out["pg_vmhwm_sum_kb"] = r["sum_vmhwm_kb"]
        elif k == "json":
            d = r["data"]
            out["json"].setdefault(d["op"], {})[d["lang"]] = {"lib": d["lib"], "ns_per_op": d["ns_per_op"]}
        elif k == "json_ir":
            out.setdefault("json_ir", {}).setdefault(r["op"], {})[r["lang"]] = r["ir_per_op"]
        elif k == "note":
            out["notes"].append(r["text"])
        elif k == "check":
            out["check"] = {"ok": r["ok"], "summary": r["summary"]}
        elif k == "meta_pg":
            out["pg"] = {x: r[x] for x in r if x != "kind"}
        elif k == "scaleout_meta":
            out["scaleout_meta"] = {x: r[x] for x in r if x != "kind"}
        elif k == "scaleout":
            scale.setdefault((r["via"], r["reads"]), []).append(r)
    for (sc, srv), runs in wrk.items():
        # Best of the rounds: interference from other work on the machine only
        # ever lowers throughput, so the best round is the closest to the truth;
        # its latencies are reported with it. Every round's req/s is kept.
        best = max(runs, key=lambda x: x["rps"])
        agg = {"rounds": len(runs), "rps_each": [x["rps"] for x in runs]}
        for f in ("rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"):
            agg[f] = best[f]
        # CPU per request: the server process, and PostgreSQL (for the servers using it)
        agg["cpu_us_each"] = [x.get("server_cpu_s", 0) * 1e6 / x["requests"] for x in runs if x["requests"]]
        agg["cpu_us_per_req"] = med(agg["cpu_us_each"])
        # (a negative delta came from a PostgreSQL process exiting mid-window in
        # runs before per-process accounting: unknown, not negative)
        pg = [x.get("pg_cpu_s", 0) * 1e6 / x["requests"] for x in runs if x["requests"]]
        agg["pg_cpu_us_per_req"] = None if any(v < 0 for v in pg) else med(pg)
        agg["errors"] = sum(x["errors_connect"] + x["errors_read"] + x["errors_write"] +
                            x["errors_timeout"] for x in runs)
        agg["non2xx"] = sum(x["errors_status"] for x in runs)
        agg["curve"] = best["curve"]
        out["wrk"].setdefault(sc, {})[srv] = agg
    out["scaleout"] = scaleout_aggregate(scale)
    out["startup_ms"] = {k: med(v) for k, v in out["startup_ms"].items()}
    # peak RSS of the whole run: the highest per-scenario peak (VmHWM is reset per scenario)
    for sc, d in out["rss_scenario_kb"].items():
        for srv, kb in d.items():
            if kb > out["rss_kb"].get(srv, 0):
                out["rss_kb"][srv] = kb
                out.setdefault("rss_peak_scenario", {})[srv] = sc
    return out


def scaleout_aggregate(scale):
    """bench/scaleout.sh's rounds per (via, reads): the best round's req/s and latencies,
    the median CPU per request (brisk processes, HAProxy, both PostgreSQL clusters)"""
    out = {}
    for (via, reads), runs in scale.items():
        best = max(runs, key=lambda x: x["data"]["rps"])
        ok = [x for x in runs if x["data"]["requests"]]
        per = lambda f: med([x[f] * 1e6 / x["data"]["requests"] for x in ok])
        total = [(x["brisk_cpu_s"] + x["haproxy_cpu_s"] + x["pg_cpu_s"]) * 1e6 / x["data"]["requests"]
                 for x in ok]
        d = best["data"]
        out["%s/%s" % (via, reads)] = {
            "via": via, "reads": reads, "rounds": len(runs), "rps": d["rps"],
            "rps_each": [x["data"]["rps"] for x in runs],
            "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"],
            "cpu_us_per_req": med(total), "cpu_us_each": total,
            "brisk_us_per_req": per("brisk_cpu_s"), "haproxy_us_per_req": per("haproxy_cpu_s"),
            "pg_us_per_req": per("pg_cpu_s"),
            # how evenly HAProxy spread the work: each process's share of the brisk CPU
            "brisk_share": [round(v / sum(best["brisk_cpu_each_s"]), 2) if sum(best["brisk_cpu_each_s"]) else None
                            for v in best["brisk_cpu_each_s"]],
            "errors": sum(x["data"]["errors_connect"] + x["data"]["errors_read"] + x["data"]["errors_write"] +
                          x["data"]["errors_timeout"] for x in runs),
            "non2xx": sum(x["data"]["errors_status"] for x in runs),
        }
    return out


SCALEOUT_ROWS = [("haproxy", "primary", "3 processes behind HAProxy on {cores} cores"),
                 ("haproxy", "replica", "3 processes behind HAProxy on {cores} cores, reads on the replica"),
                 ("direct", "primary", "one of the 3 processes directly (no HAProxy)"),
                 ("direct", "replica", "one of the 3 processes directly, reads on the replica")]


def scaleout_section(a, meta):
    """Markdown lines of "Scale-out (3 processes behind HAProxy)", [] without its records"""
    so, sm = a.get("scaleout") or {}, a.get("scaleout_meta") or {}
    if not so:
        return []
    cores = sm.get("cores", meta.get("cores", "?"))
    L = ["## Scale-out (3 processes behind HAProxy)", ""]
    L.append("GET /users/{id} (random existing ids, %s connections, wrk as above) against 3 brisk processes "
             "(`%s`, each with its own port) behind HAProxy %s running packaging/haproxy.cfg (only its "
             "addresses rewritten), on a throwaway PostgreSQL primary and, in the second configuration, its "
             "streaming replica for reads (`BRISK_DATABASE_READ_URL`); for reference one of the same processes "
             "reached directly. %s. This is one machine: it shows what the balancer costs, not what "
             "scaling out gains. CPU µs per request is the user + system time over the window of the 3 brisk "
             "processes, HAProxy and every process of both PostgreSQL clusters (backends included), divided by "
             "the requests (median of the rounds; in the direct rows HAProxy only runs its health checks); req/s and latencies are the best round's (%s × %ss, "
             "bench/scaleout.sh)."
             % (sm.get("connections", "?"), sm.get("brisk_env", "?"), sm.get("haproxy", "?"),
                (sm.get("pinning") or "?")[0].upper() + (sm.get("pinning") or "?")[1:],
                sm.get("rounds", "?"), sm.get("seconds", "?")))
    L.append("")
    rows = []
    one = a["wrk"].get("get_user", {}).get("brisk-pg")
    if one:
        cpu = one["cpu_us_per_req"] + (one["pg_cpu_us_per_req"] or 0) if one.get("cpu_us_per_req") is not None else None
        rows.append(["brisk-pg: one process (the main table's row)", f_rps(one["rps"]),
                     " / ".join(f_rps(v) for v in one["rps_each"]), f_ms(one["p50_ms"]), f_ms(one["p99_ms"]),
                     "—" if cpu is None else "%.1f" % cpu, "%.1f" % one["cpu_us_per_req"], "—",
                     "—" if one["pg_cpu_us_per_req"] is None else "%.1f" % one["pg_cpu_us_per_req"],
                     "—", "%d / %d" % (one["errors"], one["non2xx"])])
    for via, reads, title in SCALEOUT_ROWS:
        x = so.get("%s/%s" % (via, reads))
        if not x:
            continue
        rows.append([title.format(cores=cores), f_rps(x["rps"]), " / ".join(f_rps(v) for v in x["rps_each"]),
                     f_ms(x["p50_ms"]), f_ms(x["p99_ms"]), "%.1f" % x["cpu_us_per_req"],
                     "%.1f" % x["brisk_us_per_req"], "%.1f" % x["haproxy_us_per_req"],
                     "%.1f" % x["pg_us_per_req"],
                     " / ".join("—" if v is None else "%.2f" % v for v in x["brisk_share"]) if via == "haproxy" else "—",
                     "%d / %d" % (x["errors"], x["non2xx"])])
    L.append(table(["setup", "req/s (best)", "each round", "p50 ms", "p99 ms", "CPU µs/req (all)", "brisk",
                    "HAProxy", "PostgreSQL", "brisk CPU share per process", "errors / non-2xx"], rows))
    L.append("")
    notes = []
    for reads in ("primary", "replica"):
        h, d = so.get("haproxy/" + reads), so.get("direct/" + reads)
        if h and d and d["cpu_us_per_req"] and d["rps"]:
            notes.append("reads on the %s: through HAProxy %.1f µs per request more CPU (%+.0f%%), %+.0f%% req/s"
                         % (reads, h["cpu_us_per_req"] - d["cpu_us_per_req"],
                            (h["cpu_us_per_req"] / d["cpu_us_per_req"] - 1) * 100, (h["rps"] / d["rps"] - 1) * 100))
    if notes:
        L.append("The balancer's cost, against the same process reached directly: " + "; ".join(notes) + ".")
        L.append("")
    return L


XSCENARIOS = ["tls_health", "tls_get_user", "tls_handshake", "h2c_health", "h2c_get_user", "h2_health", "h2_get_user"]
XSCENARIO_TITLE = {
    "tls_health": "HTTPS GET /health (wrk, keep-alive)",
    "tls_get_user": "HTTPS GET /users/{id} (wrk, keep-alive)",
    "tls_handshake": "TLS handshakes: GET /health, a new connection per request (wrk, Connection: close)",
    "h2c_health": "HTTP/2 cleartext (h2c) GET /health (h2load -c 64 -m 10)",
    "h2c_get_user": "HTTP/2 cleartext (h2c) GET /users/{id} (h2load -c 64 -m 10)",
    "h2_health": "HTTP/2 over TLS (h2) GET /health (h2load -c 64 -m 10)",
    "h2_get_user": "HTTP/2 over TLS (h2) GET /users/{id} (h2load -c 64 -m 10)",
}
XSERVERS = ["brisk-sqlite", "go-nethttp", "rust-hyper", "nginx", "h2o"]


def xcpu(x, s):
    """server CPU per request, PostgreSQL's added for the servers using it"""
    c = x.get("cpu_us_per_req")
    if c is None:
        return None
    return c + ((x.get("pg_cpu_us_per_req") or 0) if s not in SQLITE_SERVERS + ("nginx", "h2o") else 0)


def xgoals(a):
    res = []
    w = a["wrk"]
    b = "brisk-sqlite"
    for sc in ("tls_health", "tls_get_user"):
        d = w.get(sc, {})
        if b not in d:
            continue
        if "nginx" in d:
            res.append(("TLS CPU per request ≤ nginx's, %s" % XSCENARIO_TITLE[sc],
                        "%.1f vs %.1f µs" % (xcpu(d[b], b), xcpu(d["nginx"], "nginx")),
                        xcpu(d[b], b) <= xcpu(d["nginx"], "nginx")))
        if "rust-hyper" in d:
            res.append(("TLS CPU per request ≤ 0.7× rust-hyper's, %s" % XSCENARIO_TITLE[sc],
                        "%.1f vs %.1f µs (%.2f×; server + PostgreSQL)" % (xcpu(d[b], b), xcpu(d["rust-hyper"], "rust-hyper"),
                                                       xcpu(d[b], b) / xcpu(d["rust-hyper"], "rust-hyper")),
                        xcpu(d[b], b) <= 0.7 * xcpu(d["rust-hyper"], "rust-hyper")))
    d = w.get("tls_handshake", {})
    if b in d and "nginx" in d:
        res.append(("TLS handshakes/s ≥ nginx's", "%s vs %s (%.2f×)" % (f_rps(d[b]["rps"]), f_rps(d["nginx"]["rps"]),
                                                                     d[b]["rps"] / d["nginx"]["rps"]),
                    d[b]["rps"] >= d["nginx"]["rps"]))
    for sc in ("h2c_health", "h2_health"):
        d = w.get(sc, {})
        if b in d and "h2o" in d:
            res.append(("h2 throughput ≥ h2o's, %s" % XSCENARIO_TITLE[sc],
                        "%s vs %s (%.2f×)" % (f_rps(d[b]["rps"]), f_rps(d["h2o"]["rps"]), d[b]["rps"] / d["h2o"]["rps"]),
                        d[b]["rps"] >= d["h2o"]["rps"]))
    for sc in ("h2c_get_user", "h2_get_user"):
        d = w.get(sc, {})
        if b in d and "rust-hyper" in d:
            res.append(("h2 throughput ≥ 2× rust-hyper's, %s" % XSCENARIO_TITLE[sc],
                        "%s vs %s (%.2f×)" % (f_rps(d[b]["rps"]), f_rps(d["rust-hyper"]["rps"]),
                                              d[b]["rps"] / d["rust-hyper"]["rps"]),
                        d[b]["rps"] >= 2 * d["rust-hyper"]["rps"]))
    return res


def xsection(a):
    """Markdown lines of "TLS and HTTP/2", [] without its records"""
    if not any(sc in a["wrk"] for sc in XSCENARIOS):
        return []
    L = ["## TLS and HTTP/2", ""]
    L.append("brisk-sqlite (its TLS port, BRISK_TLS_ADDR; h2c by prior knowledge on its cleartext port), "
             "go-nethttp (ListenAndServeTLS; h2c through golang.org/x/net/http2/h2c), rust-hyper (tokio-rustls; "
             "hyper's h2c), nginx (`return 200 ok` on /health over TLS: the TLS limit server) and h2o "
             "(/health as a static file: the HTTP/2 limit server), one ECDSA P-256 certificate for all. "
             "HTTPS rows: wrk against https://localhost:PORT (64 connections); handshakes: the same with "
             "`Connection: close` (a full handshake per request, req/s = handshakes/s); HTTP/2: bench/h2load.py "
             "(`h2load -c 64 -m 10`, h2 over TLS by ALPN). h2load reports no percentiles: its mean and max "
             "latency are shown. CPU µs per request: the server's user + system time over the window "
             "(nginx: master and workers), plus PostgreSQL's for the Go and Rust peers' /users/{id} (in brackets).")
    L.append("")
    for sc in XSCENARIOS:
        d = a["wrk"].get(sc)
        if not d:
            continue
        L.append("### %s" % XSCENARIO_TITLE[sc])
        L.append("")
        rows = []
        h2 = sc.startswith("h2")
        for s in present(XSERVERS, d):
            x = d[s]
            lat = ([f_ms(x.get("mean_ms")), f_ms(x.get("max_ms"))] if h2 else
                   [f_ms(x["p50_ms"]), f_ms(x["p99_ms"])])
            pg = x.get("pg_cpu_us_per_req")
            cpu = x.get("cpu_us_per_req")
            rows.append([s, f_rps(x["rps"]), " / ".join(f_rps(v) for v in x["rps_each"])] + lat +
                        ["%d / %d" % (x["errors"], x["non2xx"]),
                         "—" if cpu is None else ("%.1f" % xcpu(x, s)) +
                         (" (%.1f + %.1f)" % (cpu, pg) if sc.endswith("get_user") and s not in SQLITE_SERVERS and pg else "")])
        L.append(table(["server", "req/s (best)", "each round"] +
                       (["mean ms", "max ms"] if h2 else ["p50 ms", "p99 ms"]) +
                       ["errors / non-2xx", "CPU µs/req"], rows))
        L.append("")
    return L


# ---------------------------------------------------------------- formatting
def f_rps(v):
    return "—" if v is None else "{:,.0f}".format(v)


def f_ms(v):
    if v is None:
        return "—"
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    if v >= 1:
        return "%.2f" % v
    return "%.3f" % v


def f_mb(b):
    return "—" if b is None else "%.1f MB" % (b / 1e6) if b >= 1e6 else "%.0f kB" % (b / 1e3)


def f_s(v):
    return "— (quick run)" if v is None else ("%.1f s" % v if v < 60 else "%dm%02ds" % (v // 60, v % 60))


def f_ns(v):
    return "—" if v is None else ("%.0f ns" % v if v < 1000 else "%.2f µs" % (v / 1000))


def present(servers, data):
    return [s for s in servers if s in data]


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- goals
meta_cores = ["?"]


def goals(a):
    res = []

    def add(goal, measured, ok):
        res.append((goal, measured, ok))

    peers_in = lambda d: [p for p in PEERS if p in d]
    for b in BRISKS:
        for sc in SCENARIOS:
            d = a["wrk"].get(sc, {})
            if b not in d or not peers_in(d):
                continue
            best = max(peers_in(d), key=lambda p: d[p]["rps"])
            ratio = d[b]["rps"] / d[best]["rps"] if d[best]["rps"] else float("inf")
            cpu = lambda s: (d[s].get("cpu_us_per_req") or 0) + (
                (d[s].get("pg_cpu_us_per_req") or 0) if s != "brisk-sqlite" else 0)
            eff = ""
            if cpu(b) > 0 and cpu(best) > 0:
                eff = "; CPU per request (server + PostgreSQL) %.1f vs %.1f µs: %.2f× the requests per core" % (
                    cpu(b), cpu(best), cpu(best) / cpu(b))
            add("%s throughput ≥ 1.3× best peer, %s" % (b, SCENARIO_TITLE[sc]),
                "%.2f× (%s vs %s %s)%s" % (ratio, f_rps(d[b]["rps"]), best, f_rps(d[best]["rps"]), eff),
                ratio >= 1.3)
    for b in BRISKS:
        for sc in SCENARIOS:
            d = a["rate"].get(sc, {})
            if b not in d or not peers_in(d):
                continue
            best = min(peers_in(d), key=lambda p: d[p]["p99_ms"])
            add("%s p99 ≤ best peer's at the fixed rate, %s" % (b, SCENARIO_TITLE[sc]),
                "%s ms vs %s %s ms (at %s req/s)" % (f_ms(d[b]["p99_ms"]), best,
                                                    f_ms(d[best]["p99_ms"]), f_rps(d[b]["rate"])),
                d[b]["p99_ms"] <= d[best]["p99_ms"])
    gos = [g for g in ("go-gin", "go-nethttp") if g in a["rss_kb"]]
    for b in BRISKS:
        if b in a["rss_kb"] and gos:
            g = min(gos, key=lambda x: a["rss_kb"][x])
            add("%s peak RSS ≤ ⅓ of the Go peer's" % b,
                "%.1f MB vs %s %.1f MB (%.2f×)" % (a["rss_kb"][b] / 1024, g, a["rss_kb"][g] / 1024,
                                                 a["rss_kb"][b] / a["rss_kb"][g]),
                a["rss_kb"][b] * 3 <= a["rss_kb"][g])
    enc = a["json"].get("encode_user", {})
    if "c" in enc and "rust" in enc:
        c, r = enc["c"]["ns_per_op"], enc["rust"]["ns_per_op"]
        ir = a.get("json_ir", {}).get("encode_user", {})
        extra = ("; instructions %d vs %d (%.2f×)" % (ir["c"], ir["rust"], ir["c"] / ir["rust"])
                 if "c" in ir and "rust" in ir else "")
        add("JSON encode of a user ≤ ⅓ of serde_json's",
            "%s vs %s (%.2f×)%s" % (f_ns(c), f_ns(r), c / r, extra), c * 3 <= r)
    for sc in ("health", "health_pipelined"):
        h = a["wrk"].get(sc, {})
        for b in BRISKS:
            if b in h and "limit" in h:
                ratio = h[b]["rps"] / h["limit"]["rps"]
                add("%s %s ≥ 85%% of the limit server" % (b, SCENARIO_TITLE[sc]),
                    "%.0f%% (%s vs %s)" % (ratio * 100, f_rps(h[b]["rps"]), f_rps(h["limit"]["rps"])),
                    ratio >= 0.85)
    bb = a["build"].get("brisk", {})
    if bb:
        add("brisk binary < 1 MB (stripped)", f_mb(bb["stripped_bytes"]), bb["stripped_bytes"] < 1e6)
        if bb.get("clean_build_s") is not None:
            cpu = bb.get("clean_build_cpu_s")
            add("brisk clean build ≤ 5 s", "%s wall%s, make -j%s" % (
                f_s(bb["clean_build_s"]), "" if cpu is None else ", %s CPU (user+sys)" % f_s(cpu), meta_cores[0]),
                bb["clean_build_s"] <= 5)
    res.extend(xgoals(a))
    return res


# ---------------------------------------------------------------- markdown
def markdown(a, meta, elapsed):
    L = []
    srv = [s for s in SERVERS if any(s in a["wrk"].get(sc, {}) for sc in SCENARIOS)]
    L.append("# brisk vs Go and Rust peers — %s, %s run" % (meta.get("date", "?"), meta.get("mode", "?")))
    L.append("")
    L.append("- CPU: %s, %s cores; %s" % (meta.get("cpu_model"), meta.get("cores"), meta.get("pinning")))
    L.append("- host `%s`, kernel %s, load average at start %s%s" % (
        meta.get("host"), meta.get("kernel"), meta.get("loadavg_at_start"),
        " (other work was running: numbers are noisy)" if float(str(meta.get("loadavg_at_start", "0")).split()[0]) > 0.5 else ""))
    if a.get("pg"):
        L.append("- PostgreSQL %s (fsync %s, synchronous_commit %s, shared_buffers %s), pinned with the servers"
                 % (a["pg"]["version"], a["pg"]["fsync"], a["pg"]["synchronous_commit"], a["pg"]["shared_buffers"]))
    L.append("- wrk: %ss per window, %s round(s) per server, servers alternating; fixed rate: %s round(s) of %ss "
             "open loop (bench/loadgen), the same rate for every server: half the slowest server's throughput"
             % (meta.get("wrk_seconds"), meta.get("rounds"), meta.get("rate_rounds", 1), meta.get("rate_seconds")))
    if a["check"]:
        L.append("- answers checked (bench/check_peers.py): %s" % a["check"]["summary"])
    for n in a["notes"]:
        L.append("- note: %s" % n)
    if elapsed:
        L.append("- the whole run took %ss" % elapsed)
    L.append("")

    # the essay's table
    L.append("## The essay's comparison, measured")
    L.append("")
    gu = a["rate"].get("get_user", {})
    enc = a["json"].get("encode_user", {})
    cols = ["go-gin", "go-nethttp", "rust-hyper", "brisk-pg", "brisk-sqlite"]
    cols = [c for c in cols if c in srv]
    head = ["", "essay: Go", "essay: Rust"] + cols
    rows = []
    if gu:
        rows.append(["HTTP API latency: GET /users/{id}, p50 (p99) at %s req/s" % f_rps(next(iter(gu.values()))["rate"]),
                     "~1.2 ms", "~0.8 ms"] +
                    ["%s ms (%s)" % (f_ms(gu[c]["p50_ms"]), f_ms(gu[c]["p99_ms"])) if c in gu else "—" for c in cols])
    gw = a["wrk"].get("get_user", {})
    if gw:
        rows.append(["HTTP throughput: GET /users/{id}, req/s", "", ""] +
                    [f_rps(gw[c]["rps"]) if c in gw else "—" for c in cols])
        rows.append(["CPU per GET /users/{id}: server + PostgreSQL", "", ""] +
                    ["%.0f + %.0f µs" % (gw[c]["cpu_us_per_req"], gw[c]["pg_cpu_us_per_req"])
                     if c in gw and c != "brisk-sqlite" and gw[c]["pg_cpu_us_per_req"] is not None else
                     "%.0f + ? µs" % gw[c]["cpu_us_per_req"] if c in gw and c != "brisk-sqlite" else
                     ("%.0f µs" % gw[c]["cpu_us_per_req"] if c in gw else "—") for c in cols])

    def json_cell(c):
        lang = {"go-gin": "go", "go-nethttp": "go", "rust-hyper": "rust"}.get(c, "c")
        return f_ns(enc[lang]["ns_per_op"]) if lang in enc else "—"
    if enc:
        rows.append(["JSON: encode a user, per op", "2.5 µs (encoding/json), 0.8 (jsoniter)",
                     "0.3 µs (serde)"] + [json_cell(c) for c in cols])
    rows.append(["Binary size (stripped)", "~10 MB", "2–5 MB"] +
                [f_mb(a["build"].get(build_key(c), {}).get("stripped_bytes"))
                 for c in cols])
    def build_cell(c):
        b = a["build"].get(build_key(c), {})
        if b.get("clean_build_s") is None:
            return f_s(None)
        return "%s (CPU %s)" % (f_s(b["clean_build_s"]), f_s(b.get("clean_build_cpu_s"))) \
            if b.get("clean_build_cpu_s") is not None else f_s(b["clean_build_s"])
    rows.append(["Build time (clean): wall (CPU user+sys)", "seconds", "minutes"] + [build_cell(c) for c in cols])
    rows.append(["Peak RSS under load (VmHWM)", "", ""] +
                ["%.1f MB" % (a["rss_kb"][c] / 1024) if c in a["rss_kb"] else "—" for c in cols])
    rows.append(["Start-up: exec → first 200 on /health", "", ""] +
                ["%s ms" % f_ms(a["startup_ms"][c]) if c in a["startup_ms"] else "—" for c in cols])
    L.append(table(head, rows))
    L.append("")
    L.append("go-gin and go-nethttp share their JSON codec (encoding/json); the JSON row of both brisk "
             "columns is brisk's own codec in C. brisk's binary links libsqlite3, libcrypto and libseccomp "
             "dynamically (not counted) and loads libpq (with its own dependencies) only for a PostgreSQL URL; "
             "the Go binaries are static; the Rust binary links libc only.")
    L.append("")

    # throughput + latency under max load
    L.append("## Max throughput (wrk, closed loop) and its latency")
    L.append("")
    L.append("req/s and latencies are those of the best round (other work on the machine only ever "
             "lowers throughput); every round's req/s is listed. CPU µs per request comes from the "
             "server's (and PostgreSQL's) user + system time over the window: it is the steadier "
             "figure when the machine is shared, and it counts what each request costs rather than "
             "what the load generator managed to send.")
    L.append("")
    for sc in SCENARIOS:
        d = a["wrk"].get(sc)
        if not d:
            continue
        L.append("### %s" % SCENARIO_TITLE[sc])
        L.append("")
        rows = []
        order = present(SERVERS + ["limit"], d)
        for s in order:
            x = d[s]
            uses_pg = s not in SQLITE_SERVERS
            # wrk times pipelined requests by batch: its latencies mean little there
            lat = ["—"] * 4 if sc == "health_pipelined" else [
                f_ms(x["p50_ms"]), f_ms(x["p90_ms"]), f_ms(x["p99_ms"]), f_ms(x["p999_ms"])]
            rows.append([s, f_rps(x["rps"]), " / ".join(f_rps(v) for v in x["rps_each"])] + lat + [
                         "%d / %d" % (x["errors"], x["non2xx"]),
                         "%.1f" % x["cpu_us_per_req"] if x.get("cpu_us_per_req") is not None else "—",
                         "%.1f" % x["pg_cpu_us_per_req"] if uses_pg and x.get("pg_cpu_us_per_req") is not None else "—"])
        L.append(table(["server", "req/s (median)", "each round", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
                        "errors / non-2xx", "server CPU µs/req", "PostgreSQL CPU µs/req"], rows))
        L.append("")

    base = baseline_rows(a)
    if base:
        L.append("## brisk-sqlite vs brisk-sqlite-base (the baseline binary)")
        L.append("")
        L.append("The same configuration, two binaries, measured alternating in this run. CPU µs per "
                 "request is the median of the rounds (each round listed); req/s the best round; "
                 "p99 at the fixed rate the best round.")
        L.append("")
        L.append(table(["scenario", "CPU µs/req: brisk-sqlite", "brisk-sqlite-base", "after / before",
                        "each round (after; before)", "req/s: after / before", "wrk p99 ms: after / before",
                        "fixed-rate p99 ms: after / before"], base))
        L.append("")

    L.extend(scaleout_section(a, meta))
    L.extend(xsection(a))

    L.append("## Latency at a fixed rate (bench/loadgen, open loop, from the intended send time)")
    L.append("")
    rows = []
    for sc in SCENARIOS:
        d = a["rate"].get(sc, {})
        for s in present(SERVERS, d):
            x = d[s]
            rows.append([SCENARIO_TITLE[sc], s, f_rps(x["rate"]), f_rps(x["achieved_rps"]), f_ms(x["p50_ms"]),
                         f_ms(x["p90_ms"]), f_ms(x["p99_ms"]), f_ms(x["p999_ms"]), f_ms(x["max_ms"]),
                         "%d / %d" % (x["errors"], x["non2xx"]),
                         " / ".join(f_ms(v) for v in x.get("p99_each", [x["p99_ms"]]))])
    L.append("The round with the lowest p99 is shown (interference from other work only adds latency); "
             "every round's p99 is listed.")
    L.append("")
    L.append(table(["scenario", "server", "rate", "achieved", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
                    "max ms", "errors / non-2xx", "p99 of each round"], rows))
    L.append("")

    L.append("## Resources")
    L.append("")
    rows = []
    mb = lambda kb: "—" if kb is None else "%.1f MB" % (kb / 1024)
    for s in present(SERVERS + ["limit"], {**a["rss_kb"], **a["startup_ms"]}):
        b = a["build"].get(build_key(s), {})
        end = a["rss_end"].get(s, {})
        rows.append([s, "%s (%s)" % (mb(a["rss_kb"].get(s)), SCENARIO_TITLE.get(a.get("rss_peak_scenario", {}).get(s), "—")),
                     mb(a["rss_start_kb"].get(s)),
                     "%s / %s" % (mb(end.get("rss_anon_kb")), mb(end.get("rss_file_kb"))),
                     f_ms(a["startup_ms"].get(s)), f_mb(b.get("stripped_bytes")),
                     f_s(b.get("clean_build_s")) + ("" if b.get("clean_build_cpu_s") is None else
                                                    " (CPU %s)" % f_s(b["clean_build_cpu_s"])),
                     b.get("dyn_libs", "").strip() or "—", b.get("toolchain", "—")])
    L.append(table(["server", "peak RSS (VmHWM; during)", "RSS after start", "RSS after the run: anon / file",
                    "start-up ms", "stripped binary",
                    "clean build", "shared libraries (not in size)", "toolchain"], rows))
    if a.get("pg_vmhwm_sum_kb"):
        L.append("")
        L.append("PostgreSQL processes (shared by brisk-pg and the peers): sum of VmHWM %.0f MB."
                 % (a["pg_vmhwm_sum_kb"] / 1024))
    L.append("")

    L.append("Peak RSS (VmHWM, reset with /proc/PID/clear_refs before each scenario) per scenario:")
    L.append("")
    srvs = present(SERVERS + ["limit"], a["rss_kb"])
    rows = [[SCENARIO_TITLE[sc]] + [mb(a["rss_scenario_kb"].get(sc, {}).get(s)) for s in srvs]
            for sc in SCENARIOS if sc in a["rss_scenario_kb"]]
    L.append(table(["scenario"] + srvs, rows))
    L.append("")
    L.append("RSS counts the pages of shared libraries a process touched (\"file\"): brisk's include "
             "libcrypto and libsqlite3, and brisk-pg's also libpq with its Kerberos/LDAP/GnuTLS dependencies "
             "(loaded only for PostgreSQL); the Go and Rust "
             "binaries are (mostly) static, so their code is in their own file pages.")
    L.append("")

    L.append("## JSON microbenchmark (ns/op, median of runs)")
    L.append("")
    rows = []
    for op in ("encode_user", "encode_user_reused_buffer", "decode_create_user"):
        d = a["json"].get(op)
        if not d:
            continue
        rows.append([op] + [("%s (%s)" % (f_ns(d[l]["ns_per_op"]), d[l]["lib"])) if l in d else "—"
                            for l in ("c", "go", "rust")])
    for op, d in sorted(a.get("json_ir", {}).items(), reverse=True):
        rows.append([op + ", instructions/op (callgrind)"] +
                    ["{:,}".format(d[l]) if l in d else "—" for l in ("c", "go", "rust")])
    L.append(table(["operation", "brisk (C)", "Go", "Rust"], rows))
    L.append("")
    L.append("encode_user: brisk writes into the reused response buffer (src/app/users.c write_user, "
             "RFC 3339 formatting included); serde_json::to_writer into a reused Vec; Go json.Marshal "
             "(and json.Encoder into a reused buffer). decode_create_user: the POST /users body into the "
             "request arena / a struct with optional fields.")
    L.append("")

    L.append("## Goals")
    L.append("")
    rows = [[g, m, "met" if ok else "**not met**"] for g, m, ok in goals(a)]
    L.append(table(["goal", "measured", ""], rows))
    L.append("")
    return "\n".join(L)


def baseline_rows(a):
    rows = []
    for sc in SCENARIOS:
        d = a["wrk"].get(sc, {})
        if "brisk-sqlite" not in d or "brisk-sqlite-base" not in d:
            continue
        x, y = d["brisk-sqlite"], d["brisk-sqlite-base"]
        r = a["rate"].get(sc, {})
        ratio = x["cpu_us_per_req"] / y["cpu_us_per_req"] if y.get("cpu_us_per_req") else None
        rows.append([SCENARIO_TITLE[sc], "%.2f" % x["cpu_us_per_req"], "%.2f" % y["cpu_us_per_req"],
                     "—" if ratio is None else "%.3f" % ratio,
                     "%s; %s" % (" / ".join("%.2f" % v for v in x["cpu_us_each"]),
                                 " / ".join("%.2f" % v for v in y["cpu_us_each"])),
                     "%s / %s" % (f_rps(x["rps"]), f_rps(y["rps"])),
                     "%s / %s" % (f_ms(x["p99_ms"]), f_ms(y["p99_ms"])),
                     "%s / %s" % (f_ms(r["brisk-sqlite"]["p99_ms"]) if "brisk-sqlite" in r else "—",
                                  f_ms(r["brisk-sqlite-base"]["p99_ms"]) if "brisk-sqlite-base" in r else "—")])
    return rows


# ---------------------------------------------------------------- plots
def plots(a, out):
    if not shutil.which("gnuplot"):
        return []
    made = []
    work = out + ".plotdata"
    os.makedirs(work, exist_ok=True)
    # throughput: one panel per scenario
    panels = []
    for sc in SCENARIOS:
        d = a["wrk"].get(sc)
        if not d:
            continue
        names = present(SERVERS + ["limit"], d)
        fn = os.path.join(work, "tp-%s.dat" % sc)
        with open(fn, "w") as f:
            for i, s in enumerate(names):
                f.write('%d "%s" %f\n' % (i, s, d[s]["rps"]))
        panels.append((sc, fn, len(names)))
    gp = ['set terminal pngcairo size 1400,900 noenhanced font ",10"' if _has_cairo() else
          'set terminal png size 1400,900 noenhanced',
          'set output "%s-throughput.png"' % out, "set multiplot layout 2,3 title \"max throughput (wrk), req/s\"",
          "set style fill solid 0.7", "set boxwidth 0.6", "set grid ytics", "set yrange [0:*]",
          "set xtics rotate by -25"]
    for sc, fn, n in panels:
        gp += ['set title "%s"' % SCENARIO_TITLE[sc], "set xrange [-0.6:%f]" % (n - 0.4),
               'plot "%s" using 1:3:xtic(2) with boxes lc rgb "#4477aa" notitle, '
               '"" using 1:3:(sprintf("%%.0f",$3)) with labels offset 0,0.7 notitle' % fn]
    gp.append("unset multiplot")
    if _gnuplot(gp):
        made.append(out + "-throughput.png")

    # latency percentile curves at the fixed rate: x = "nines"
    gp = ['set terminal pngcairo size 1400,900 noenhanced font ",10"' if _has_cairo() else
          'set terminal png size 1400,900 noenhanced',
          'set output "%s-latency.png"' % out,
          'set multiplot layout 2,2 title "latency by percentile at a fixed rate (open loop), ms"',
          "set logscale y", "set grid", 'set xtics ("0" 0, "90" 1, "99" 2, "99.9" 3, "99.99" 4)',
          "set xrange [0:4.2]", "set key top left", 'set xlabel "percentile"']
    any_rate = False
    for sc in SCENARIOS:
        d = a["rate"].get(sc)
        if not d:
            continue
        any_rate = True
        plots_ = []
        for s in present(SERVERS, d):
            fn = os.path.join(work, "lat-%s-%s.dat" % (sc, s))
            with open(fn, "w") as f:
                for p, ms in d[s]["curve"]:
                    if p >= 100:
                        continue
                    f.write("%f %f\n" % (-math.log10(1 - p / 100.0), max(ms, 1e-3)))
            plots_.append('"%s" using 1:2 with linespoints title "%s"' % (fn, s))
        gp += ['set title "%s at %s req/s"' % (SCENARIO_TITLE[sc], f_rps(next(iter(d.values()))["rate"])),
               "plot " + ", ".join(plots_)]
    gp.append("unset multiplot")
    if any_rate and _gnuplot(gp):
        made.append(out + "-latency.png")
    shutil.rmtree(work, ignore_errors=True)
    return made


def _has_cairo():
    try:
        r = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
        return "pngcairo" in (r.stdout + r.stderr)
    except OSError:
        return False


def _gnuplot(lines):
    r = subprocess.run(["gnuplot"], input="\n".join(lines) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write("gnuplot: " + r.stderr[-2000:])
        return False
    return True


# ---------------------------------------------------------------- summary
def summary(a, meta, out):
    S = []
    S.append("")
    S.append("brisk benchmark (%s run, %s, %s cores: %s)" % (meta.get("mode"), meta.get("cpu_model"),
                                                           meta.get("cores"), meta.get("pinning")))
    srv = present(SERVERS + ["limit"], {s: 1 for sc in a["wrk"].values() for s in sc})
    S.append("%-26s" % "req/s (wrk)" + "".join("%19s" % s for s in srv))
    for sc in SCENARIOS:
        d = a["wrk"].get(sc, {})
        if d:
            S.append("%-26s" % SCENARIO_TITLE[sc][:26] + "".join("%19s" % (f_rps(d[s]["rps"]) if s in d else "—") for s in srv))
    S.append("%-26s" % "p99 ms at fixed rate" + "".join("%19s" % s for s in srv))
    for sc in SCENARIOS:
        d = a["rate"].get(sc, {})
        if d:
            S.append("%-26s" % SCENARIO_TITLE[sc][:26] + "".join("%19s" % (f_ms(d[s]["p99_ms"]) if s in d else "—") for s in srv))
    S.append("%-26s" % "peak RSS MB (VmHWM)" + "".join("%19s" % ("%.1f" % (a["rss_kb"][s] / 1024) if s in a["rss_kb"] else "—") for s in srv))
    S.append("%-26s" % "start-up ms" + "".join("%19s" % f_ms(a["startup_ms"].get(s)) for s in srv))
    for op, d in a["json"].items():
        S.append("json %-21s" % op[:21] + "".join("%14s" % ("%s %s" % (l, f_ns(d[l]["ns_per_op"]))) for l in ("c", "go", "rust") if l in d))
    base = baseline_rows(a)
    if base:
        S.append("")
        S.append("brisk-sqlite (after) vs brisk-sqlite-base (before): CPU µs/req, after/before, req/s, wrk p99, fixed-rate p99")
        for row in base:
            S.append("  %-18s %7s %7s  %6s  %s  p99 %s  fixed %s" % (row[0][:18], row[1], row[2], row[3], row[5], row[6], row[7]))
    so = a.get("scaleout") or {}
    if so:
        S.append("")
        S.append("scale-out, GET /users/{id}: req/s, CPU µs/req (brisk + HAProxy + PostgreSQL)")
        one = a["wrk"].get("get_user", {}).get("brisk-pg")
        if one and one.get("cpu_us_per_req") is not None:
            S.append("  %-44s %9s  %6.1f" % ("brisk-pg, one process", f_rps(one["rps"]),
                                              one["cpu_us_per_req"] + (one["pg_cpu_us_per_req"] or 0)))
        for via, reads, title in SCALEOUT_ROWS:
            x = so.get("%s/%s" % (via, reads))
            if x:
                S.append("  %-44s %9s  %6.1f  (%.1f + %s + %.1f)" % (
                    ("%s, reads: %s" % ("3 behind HAProxy" if via == "haproxy" else "one of them directly", reads)),
                    f_rps(x["rps"]), x["cpu_us_per_req"], x["brisk_us_per_req"],
                    "%.1f" % x["haproxy_us_per_req"], x["pg_us_per_req"]))
    S.append("")
    S.append("goals:")
    for g, m, ok in goals(a):
        S.append("  %-4s %s: %s" % ("ok" if ok else "MISS", g, m))
    S.append("")
    S.append("results: %s.md, %s.json" % (out, out))
    return "\n".join(S)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--elapsed")
    args = ap.parse_args()
    recs, meta = load(args.raw)
    meta_cores[0] = meta.get("cores", "?")
    a = aggregate(recs)
    md = markdown(a, meta, args.elapsed)
    pngs = plots(a, args.out)
    if pngs:
        md += "\n## Plots\n\n" + "\n".join("![%s](%s)" % (os.path.basename(p), os.path.basename(p)) for p in pngs) + "\n"
    with open(args.out + ".md", "w") as f:
        f.write(md)
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "results": a,
                   "goals": [{"goal": g, "measured": m, "met": ok} for g, m, ok in goals(a)],
                   "raw": recs}, f, indent=1)
    print(summary(a, meta, args.out))


if __name__ == "__main__":
    main()
