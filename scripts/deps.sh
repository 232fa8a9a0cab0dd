#!/usr/bin/env bash
# Install the Debian packages brisk needs, idempotently.
#   scripts/deps.sh run   - to build and run
#   scripts/deps.sh test  - to build, test (gcc + clang, sanitizers, fuzz smoke)
#   scripts/deps.sh cross - to build for arm64 (make CROSS=aarch64-linux-gnu) and run
#                           it under qemu-user (adds dpkg's arm64 architecture first)
# As root it runs apt-get; otherwise it prints one line naming what is missing.
set -euo pipefail

run_pkgs=(gcc make libc6-dev libsqlite3-dev libssl-dev libseccomp-dev)
run_pkgs+=(libpq-dev) # PostgreSQL client library (src/db/pg.c)
run_pkgs+=(libdeflate-dev) # gzip of responses (src/http/compress.c)
run_pkgs+=(libnghttp2-dev) # HTTP/2 framing and HPACK (src/http/h2.c)
# postgresql: the server binaries (initdb, pg_ctl) scripts/pg_cluster.sh runs for the tests
test_pkgs=("${run_pkgs[@]}" clang libclang-rt-14-dev python3 procps postgresql postgresql-client)
test_pkgs+=(clang-format clang-tidy cppcheck pkg-config binutils) # lint and the readelf check
test_pkgs+=(wrk) # load generator of the soak test (tests/blackbox/test_soak.py)
test_pkgs+=(strace) # slows fsync/fdatasync for the loop-never-waits test (tests/blackbox/test_slow_fsync.py)
test_pkgs+=(haproxy) # balancer of the rolling-restart test (tests/blackbox/test_rolling_restart.py)
test_pkgs+=(buildah podman runc systemd groff-base man-db ca-certificates libpq5) # deploy suite: image, unit, man page (tests/deploy/)
test_pkgs+=(python3-jsonschema) # every black-box response checked against api/openapi.json (tests/blackbox/test_openapi.py)
test_pkgs+=(prometheus) # promtool check metrics on /metrics (tests/blackbox/test_metrics_format.py)
test_pkgs+=(openssl curl) # TLS clients and test certificates (tests/blackbox/test_tls.py; make tls-dev-cert)
test_pkgs+=(nghttp2-client python3-h2) # HTTP/2 clients: h2load, nghttp, crafted frames (tests/blackbox/test_h2.py)

# arm64 cross build (tests/deploy/test_arm64.py): the cross compiler, qemu-user to run
# the result, and the target's libraries and headers (libpq5: the loader's dlopen target)
cross_pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static binutils file make pkg-config)
cross_pkgs+=(libpq-dev) # libpq's headers (arch-independent; the arm64 libpq-dev cannot be co-installed)
cross_pkgs+=(libsqlite3-dev:arm64 libssl-dev:arm64 libseccomp-dev:arm64 libdeflate-dev:arm64 libnghttp2-dev:arm64 libpq5:arm64)

case "${1:-run}" in
run) want=("${run_pkgs[@]}") ;;
test) want=("${test_pkgs[@]}") ;;
cross) want=("${cross_pkgs[@]}") ;;
*) echo "usage: $0 run|test|cross" >&2; exit 2 ;;
esac

# the :arm64 packages exist for apt only once dpkg knows the architecture
add_arch=0
if [ "${1:-run}" = cross ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    add_arch=1
fi

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && [ "$add_arch" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    [ "$add_arch" -eq 1 ] && echo "brisk: dpkg has no arm64 architecture (run: sudo dpkg --add-architecture arm64 && sudo apt-get update)" >&2
    echo "brisk: missing packages: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
fi
[ "$add_arch" -eq 1 ] && dpkg --add-architecture arm64
[ ${#missing[@]} -eq 0 ] && { apt-get update -qq >/dev/null; exit 0; }
echo "brisk: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
