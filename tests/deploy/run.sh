#!/usr/bin/env bash
# The deploy suite: man page, make install, systemd unit, container image, and the
# arm64 cross build run under qemu-user (test_arm64: its own tree, build/aarch64-linux-gnu).
#   tests/deploy/run.sh [--build DIR]     (DIR: a built tree, default build)
# Each test_*.py prints "ok - ...", "FAIL - ...: why" or "skip - ...: why" lines;
# the last line here is "N passed, N failed" (tests/run_all.sh adds it up).
set -uo pipefail
cd "$(dirname "$0")/../.."
build=build
while [ $# -gt 0 ]; do
    case "$1" in
    --build) build="$2"; shift ;;
    *) echo "usage: $0 [--build DIR]" >&2; exit 2 ;;
    esac
    shift
done
if [ ! -x "$build/brisk" ]; then
    echo "FAIL - $build/brisk is not built"
    echo "0 passed, 1 failed"
    exit 1
fi

pass=0 fail=0 skip=0
for t in test_man test_install test_systemd test_container test_arm64; do
    start=$EPOCHREALTIME
    out=$(python3 "tests/deploy/$t.py" --build "$build" 2>&1); rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | grep -c '^ok - ')
    f=$(printf '%s\n' "$out" | grep -c '^FAIL - ')
    s=$(printf '%s\n' "$out" | grep -c '^skip - ')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL - $t exited $rc"
        f=1
    fi
    pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
    awk -v t="$t" -v p="$p" -v f="$f" -v s="$s" -v a="$start" -v b="$EPOCHREALTIME" \
        'BEGIN { printf "# %s: %d passed, %d failed, %d skipped in %.1f s\n", t, p, f, s, b - a }'
done
[ "$skip" -gt 0 ] && echo "# $skip skipped"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
