# bench/lib.sh - what bench/run.sh and bench/scaleout.sh share (sourced, not run).
#
# record KIND JSON-FIELDS: append one line {"kind":KIND, FIELDS} to the raw results ($RAW)
# jstr TEXT: TEXT as a JSON string
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
