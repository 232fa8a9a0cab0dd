#!/usr/bin/env bash
# Run every libFuzzer harness in build/fuzz/.
#   tests/fuzz_run.sh --seconds N   fuzz each harness N seconds (corpus grows in build/fuzz/corpus/)
#   tests/fuzz_run.sh --smoke       replay seeds + fuzz/regression/, then fuzz each 10 s
# Prints "N passed, N failed" (one per harness).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=10
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds="$2"; shift ;;
    --smoke) seconds=10 ;;
    esac
    shift
done
pass=0
fail=0
for bin in build/fuzz/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin"); name=${name#fuzz_}
    work=build/fuzz/corpus/$name
    mkdir -p "$work" "fuzz/corpus/$name"
    dict=()
    [ -f "fuzz/$name.dict" ] && dict=(-dict="fuzz/$name.dict")
    ok=1
    # 1. replay saved crashers and seeds: each must pass
    if [ -d "fuzz/regression/$name" ] && [ -n "$(ls -A "fuzz/regression/$name" 2>/dev/null)" ]; then
        "$bin" -runs=0 "fuzz/regression/$name" >/dev/null 2>build/fuzz/$name.replay.log || ok=0
    fi
    # 2. fuzz for a while, starting from the seeds
    log=build/fuzz/$name.log
    "$bin" "${dict[@]}" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix=build/fuzz/"$name"- \
        "$work" "fuzz/corpus/$name" >"$log" 2>&1 || ok=0
    execs=$(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    if [ "$ok" = 1 ]; then
        pass=$((pass + 1)); echo "fuzz $name: ok (${execs:-?} executions in ${seconds}s)"
    else
        fail=$((fail + 1)); echo "fuzz $name: FAILED (see $log; crasher saved as build/fuzz/$name-*)"
        tail -n 30 "$log"
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
