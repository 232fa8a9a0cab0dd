#!/usr/bin/env bash
# Install the Debian packages brisk needs, idempotently.
#   scripts/deps.sh run   - to build and run
#   scripts/deps.sh test  - to build, test (gcc + clang, sanitizers, fuzz smoke)
# As root it runs apt-get; otherwise it prints one line naming what is missing.
set -euo pipefail

run_pkgs=(gcc make libc6-dev libsqlite3-dev libssl-dev libseccomp-dev)
run_pkgs+=(libpq-dev) # PostgreSQL client library (src/db/pg.c)
run_pkgs+=(libdeflate-dev) # gzip of responses (src/http/compress.c)
# postgresql: the server binaries (initdb, pg_ctl) scripts/pg_cluster.sh runs for the tests
test_pkgs=("${run_pkgs[@]}" clang libclang-rt-14-dev python3 procps postgresql postgresql-client)
test_pkgs+=(clang-format clang-tidy cppcheck pkg-config binutils) # lint and the readelf check
test_pkgs+=(wrk) # load generator of the soak test (tests/blackbox/test_soak.py)
test_pkgs+=(strace) # slows fsync/fdatasync for the loop-never-waits test (tests/blackbox/test_slow_fsync.py)
test_pkgs+=(haproxy) # balancer of the rolling-restart test (tests/blackbox/test_rolling_restart.py)
test_pkgs+=(buildah podman runc systemd groff-base man-db ca-certificates libpq5) # deploy suite: image, unit, man page (tests/deploy/)
test_pkgs+=(python3-jsonschema) # every black-box response checked against api/openapi.json (tests/blackbox/test_openapi.py)

case "${1:-run}" in
run) want=("${run_pkgs[@]}") ;;
test) want=("${test_pkgs[@]}") ;;
*) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "brisk: missing packages: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
fi
echo "brisk: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
