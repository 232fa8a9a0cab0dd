#!/usr/bin/env bash
# bench/compress/run.sh - the measurements behind brisk's choice of gzip library
# (docs/http.md, "Compression"), on their own, against one brisk binary:
#   1. starts BRISK_BIN (default build/brisk) on SQLite in a temporary dir, one
#      loop, pinned to the first core; seeds 1000 users
#   2. saves typical bodies: GET /users?limit=1000, ?limit=50, /users/1 and the
#      answer to a 1000-order POST /orders/process (bench/gen_orders.py)
#   3. compress_bench.c: zlib vs libdeflate at several levels on those bodies
#   4. wire.py: CPU per request and bytes on the wire, plain vs gzip
#   bash bench/compress/run.sh [SECONDS]     (default 3 s per wrk window)
# Needs gcc, zlib1g-dev, libdeflate-dev, wrk, python3. bench/run.sh runs step 4
# alone against its own brisk-sqlite.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN="${BRISK_BIN:-$ROOT/build/brisk}"
SECS="${1:-3}"
W=$(mktemp -d /tmp/brisk-compress.XXXXXX)
PORT="${BENCH_PORT:-18990}"
LOAD_CPU=$(($(nproc) > 1 ? 1 : 0))
gcc -O2 -g -Wall -Wextra -std=gnu11 -o "$W/compress_bench" "$ROOT/bench/compress/compress_bench.c" -lz -ldeflate
python3 "$ROOT/bench/gen_orders.py" 1000 "$W/orders1000.json"
env BRISK_ADDR="127.0.0.1:$PORT" BRISK_DATABASE_URL="sqlite:$W/brisk.db" BRISK_LOG_LEVEL=warn \
    BRISK_BG_WORKERS=0 BRISK_THREADS=1 taskset -c 0 "$BIN" serve 2>"$W/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$W"' EXIT
python3 - "$PORT" "$W" <<'PY'
import http.client, json, sys, time
port, w = int(sys.argv[1]), sys.argv[2]
for _ in range(200):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30); c.request("GET", "/health")
        if c.getresponse().read() == b"ok": break
    except OSError: time.sleep(0.05)
for i in range(1000):
    c.request("POST", "/users", body=json.dumps({"name": "Seed User %d" % i, "email": "seed-%d@bench.example" % i}),
              headers={"Content-Type": "application/json"})
    r = c.getresponse(); r.read(); assert r.status == 201, r.status
def save(method, path, name, body=None):
    c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    r = c.getresponse(); open("%s/%s" % (w, name), "wb").write(r.read()); assert r.status == 200
save("GET", "/users?limit=1000", "users1000.json")
save("GET", "/users?limit=50", "users50.json")
save("GET", "/users/1", "user1.json")
save("POST", "/orders/process", "process1000.json", open(w + "/orders1000.json", "rb").read())
PY
echo "== compress_bench (whole-buffer gzip, reused state, pinned to core 0)"
taskset -c 0 "$W/compress_bench" "$W"/users1000.json "$W"/process1000.json "$W"/users50.json "$W"/user1.json
echo "== wire.py (brisk on core 0, wrk on core $LOAD_CPU)"
python3 "$ROOT/bench/compress/wire.py" --port "$PORT" --pid "$PID" --body "$W/orders1000.json" \
    --seconds "$SECS" --pin "$LOAD_CPU" --md "$W/compress.md" >/dev/null
cat "$W/compress.md"
