# bench/lib.sh - what bench/run.sh and bench/scaleout.sh share (sourced, not run).
#
# record KIND JSON-FIELDS: append one line {"kind":KIND, FIELDS} to the raw results ($RAW)
# jstr TEXT: TEXT as a JSON string
# seed_users PORT N PREFIX: create N users through POST /users on 127.0.0.1:PORT
#   (names "Prefix User i", emails prefix-i@bench.example); print "min:max" of their ids
# bench_pin: the core split, into NCPU, SRV_N, SRV_CPUS, LOAD_N, LOAD_CPUS and the
#   command prefixes PIN_SRV / PIN_LOAD (arrays): the first half of the cores for the
#   servers (and PostgreSQL, HAProxy), the rest for the load generator; with one core
#   nothing is pinned and BENCH_PINNED=0.

record() { printf '{"kind":"%s",%s}\n' "$1" "$2" >>"$RAW"; }
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

bench_pin() {
    NCPU=$(nproc)
    if [ "$NCPU" -ge 2 ]; then
        SRV_N=$((NCPU / 2))
        SRV_CPUS=$([ "$SRV_N" = 1 ] && echo 0 || echo "0-$((SRV_N - 1))")
        LOAD_CPUS=$([ $((NCPU - SRV_N)) = 1 ] && echo "$SRV_N" || echo "$SRV_N-$((NCPU - 1))")
        LOAD_N=$((NCPU - SRV_N))
        PIN_SRV=(taskset -c "$SRV_CPUS")
        PIN_LOAD=(taskset -c "$LOAD_CPUS")
        BENCH_PINNED=1
    else
        SRV_N=1 LOAD_N=1 SRV_CPUS=0 LOAD_CPUS=0
        PIN_SRV=() PIN_LOAD=()
        BENCH_PINNED=0
    fi
}

seed_users() {
    python3 - "$1" "$2" "$3" <<'EOF'
import http.client, json, sys
port, n, prefix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
ids = []
for i in range(n):
    body = json.dumps({"name": "%s User %d" % (prefix.capitalize(), i),
                       "email": "%s-%d@bench.example" % (prefix, i)})
    c.request("POST", "/users", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status != 201:
        sys.exit("seed: POST /users answered %d %r" % (r.status, data[:200]))
    ids.append(json.loads(data)["id"])
print("%d:%d" % (min(ids), max(ids)))
EOF
}
