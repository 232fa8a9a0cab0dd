#!/usr/bin/env bash
# bench/run.sh - brisk beside idiomatic Go and Rust peers, measured in one run.
#
#   bash bench/run.sh            full run (make bench, ~15 minutes)
#   bash bench/run.sh --quick    short run (make bench-quick, < 3 minutes once the
#                                peers are built: no clean builds, short windows)
#
# Options: --quick, --no-install (do not apt-get), --servers a,b,c (subset of
# brisk-sqlite,brisk-pg,go-gin,go-nethttp,rust-hyper), --scenarios a,b (subset of
# health,get_user,post_user,orders_process and of the TLS / HTTP/2 rows tls_health,
# tls_get_user,tls_handshake,h2c_health,h2c_get_user,h2_health,h2_get_user),
# --keep-work (leave bench/.work).
# Environment: BENCH_PORT_BASE (default 18180), BENCH_WORK (default bench/.work),
# BENCH_BRISK_ENV (extra brisk settings), BENCH_SCALEOUT=0|1 (the scale-out row: on
# in the full run, off in the quick one), BENCH_TLS=0 (leave out the TLS and HTTP/2
# rows: brisk-sqlite, go-nethttp and rust-hyper over TLS with wrk, TLS handshakes
# per second, HTTP/2 with h2load; nginx and h2o as their limit servers),
# BENCH_BRISK_BASELINE=/path/to/brisk: adds
# the server brisk-sqlite-base, brisk-sqlite's configuration with that binary (its
# own port and SQLite file), to compare two builds side by side in one run, e.g.
#   BENCH_BRISK_BASELINE=/tmp/brisk-before bash bench/run.sh --quick \
#       --servers brisk-sqlite,brisk-sqlite-base --scenarios health,get_user
#
# What it does (README "Benchmarks" and bench/README.md say more):
#  1. installs what it needs with apt-get (as root; idempotent)
#  2. builds brisk, the limit server, the load generator, the Go peers (gin and
#     net/http) and the Rust peer (tokio + hyper + tokio-postgres), timing clean
#     builds and measuring stripped binary sizes (full run only)
#  3. starts a throwaway PostgreSQL (scripts/pg_cluster.sh, fsync turned back on
#     so that a 201 is as durable as brisk's SQLite with synchronous=FULL)
#  4. measures exec -> first 200 on /health, starts every server, seeds users,
#     and checks the peers answer like brisk (bench/check_peers.py)
#  5. per scenario, servers alternating: max throughput + latency with wrk, then
#     latency at one fixed rate for all with bench/loadgen (open loop); in the full
#     run also GET /users/{id} from 3 brisk processes behind HAProxy, with and
#     without a read replica (bench/scaleout.sh); then the TLS and HTTP/2 rows
#     (HTTPS with wrk against https://localhost:PORT, handshakes with wrk and
#     Connection: close, HTTP/2 with bench/h2load.py, h2c and h2 over TLS)
#  6. peak RSS (VmHWM), the JSON microbenchmark (C, Go, Rust)
#  7. bench/report.py: bench/results/<date>-<host>.{json,md}, PNG plots, summary
#
# Servers and load generator are pinned to separate cores (taskset): the first
# half of the cores for the servers (and PostgreSQL), the rest for the load.
# With 2 cores: servers on core 0, load on core 1.
set -euo pipefail
# The whole script is one compound command: bash parses it before running it, so
# editing this file during a run cannot derail that run.
{

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B="$ROOT/bench"
W="${BENCH_WORK:-$B/.work}"
PORT_BASE="${BENCH_PORT_BASE:-18180}"

QUICK=0
INSTALL=1
KEEP_WORK=0
SERVERS_ARG=""
SCENARIOS_ARG=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --no-install) INSTALL=0 ;;
    --keep-work) KEEP_WORK=1 ;;
    --servers) SERVERS_ARG="$2"; shift ;;
    --scenarios) SCENARIOS_ARG="$2"; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
    *) echo "bench: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    MODE=quick
    WRK_SECONDS=1      # one window per server and scenario
    WRK_WARMUP=0       # no separate warm-up
    ROUNDS=1
    RATE_SECONDS=1.5   # loadgen window at the fixed rate
    RATE_WARMUP=0.3
    RATE_ROUNDS=1
    STARTUP_RUNS=1
    JSON_ITERS=300000
    JSON_RUNS=3
    SEED_USERS=300
else
    MODE=full
    WRK_SECONDS=4
    WRK_WARMUP=1
    ROUNDS=3           # each server is measured ROUNDS times per scenario, alternating
    RATE_SECONDS=4
    RATE_WARMUP=0.5
    RATE_ROUNDS=2      # the round with the lower p99 is kept (interference only adds latency)
    STARTUP_RUNS=3
    JSON_ITERS=2000000
    JSON_RUNS=7
    SEED_USERS=1000
fi

T_START=$(date +%s)
step() { printf '[bench %4ss] %s\n' "$(($(date +%s) - T_START))" "$*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

# Servers: brisk-sqlite-base only with BENCH_BRISK_BASELINE (a brisk binary built
# elsewhere, e.g. from an older commit). --servers is checked before anything is built.
ALL_SERVERS=(brisk-sqlite brisk-pg go-gin go-nethttp rust-hyper)
BASELINE_BIN="${BENCH_BRISK_BASELINE:-}"
if [ -n "$BASELINE_BIN" ]; then
    if [ ! -f "$BASELINE_BIN" ] || [ ! -x "$BASELINE_BIN" ]; then
        die "BENCH_BRISK_BASELINE=$BASELINE_BIN is not an executable file"
    fi
    ALL_SERVERS+=(brisk-sqlite-base)
fi
for s in ${SERVERS_ARG//,/ }; do
    case " ${ALL_SERVERS[*]} " in
    *" $s "*) ;;
    *)
        [ "$s" = brisk-sqlite-base ] &&
            die "server brisk-sqlite-base needs BENCH_BRISK_BASELINE=/path/to/brisk (the binary to measure beside brisk-sqlite)"
        die "unknown server $s (known: $(IFS=,; echo "${ALL_SERVERS[*]}"))"
        ;;
    esac
done

mkdir -p "$W" "$B/results"
RAW="$W/raw.jsonl"
: >"$RAW"
LOGS="$W/logs"
rm -rf "$LOGS"
mkdir -p "$LOGS" "$W/bin"

# record KIND JSON-FIELDS: append one line {"kind":KIND, FIELDS} to the raw results
# record, jstr and bench_pin (the core split)
. "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- packages
APT_PKGS=(gcc make libc6-dev libsqlite3-dev libssl-dev libseccomp-dev libpq-dev
    python3 procps util-linux binutils time wrk gnuplot-nox postgresql haproxy
    golang-go golang-github-gin-gonic-gin-dev golang-github-jackc-pgx-v4-dev
    cargo rustc librust-tokio-dev librust-hyper-dev librust-tokio-postgres-dev
    librust-serde-dev librust-serde-derive-dev librust-serde-json-dev librust-hmac-dev
    librust-sha2-dev librust-hex-dev librust-rayon-dev librust-num-cpus-dev
    librust-futures-dev
    golang-golang-x-net-dev librust-tokio-rustls-dev librust-rustls-pemfile-dev
    nginx-light h2o nghttp2-client openssl)

install_deps() {
    local missing=() p
    for p in "${APT_PKGS[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        die "missing packages (run as root, or install them): ${missing[*]}"
    fi
    step "apt-get install ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$LOGS/apt.log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$LOGS/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$LOGS/apt.log" 2>&1 ||
            { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get install failed (log: $LOGS/apt.log)"; }
    fi
}

if [ "$INSTALL" = 1 ]; then
    step "packages: checking ${#APT_PKGS[@]} Debian packages"
    install_deps
fi

# ---------------------------------------------------------------- machine and pinning
bench_pin
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
if [ "$BENCH_PINNED" = 1 ]; then
    PINNING="servers (and PostgreSQL) on cores $SRV_CPUS, load generator on cores $LOAD_CPUS"
else
    PINNING="one core: servers and load generator share it (not pinned)"
fi
step "machine: $CPU_MODEL, $NCPU cores; $PINNING"
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
record meta "$(printf '"mode":"%s","date":"%s","host":%s,"cpu_model":%s,"cores":%d,"server_cpus":"%s","load_cpus":"%s","pinning":%s,"loadavg_at_start":"%s","kernel":%s,"wrk_seconds":%s,"rounds":%s,"rate_seconds":%s,"rate_rounds":%s' \
    "$MODE" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(jstr "$(hostname)")" "$(jstr "$CPU_MODEL")" \
    "$NCPU" "$SRV_CPUS" "$LOAD_CPUS" "$(jstr "$PINNING")" "$LOADAVG" "$(jstr "$(uname -r)")" \
    "$WRK_SECONDS" "$ROUNDS" "$RATE_SECONDS" "$RATE_ROUNDS")"

# ---------------------------------------------------------------- builds
# time_cmd LOG CMD...: run CMD, print its wall time and CPU time (user + system,
# children included) in seconds: "WALL CPU". CPU time hardly depends on what else
# the machine runs; wall time does.
time_cmd() {
    local log="$1"
    shift
    /usr/bin/time -f "%e %U %S" -o "$W/time.tmp" "$@" >>"$log" 2>&1 ||
        { tail -n 30 "$log" >&2; die "failed: $* (log: $log)"; }
    awk '{printf "%.2f %.2f\n", $1, $2 + $3}' "$W/time.tmp"
}

stripped_size() { # FILE: size in bytes of a stripped copy
    strip -o "$W/stripped.tmp" "$1" && stat -c %s "$W/stripped.tmp" && rm -f "$W/stripped.tmp"
}

# dynamic libraries a binary needs beyond libc (sizes not included in the binary size)
dyn_libs() {
    ldd "$1" 2>/dev/null | awk '$1 !~ /^(linux-vdso|libc\.|libm\.|libpthread|libdl|librt|libgcc_s|\/lib64\/ld-linux)/ && $3 ~ /^\// {print $1}' | tr '\n' ' '
}

record_build() { # NAME "WALL CPU"(or null) BINARY TOOLCHAIN
    local size libs wall=null cpu=null
    size=$(stripped_size "$3")
    libs=$(dyn_libs "$3")
    [ "$2" != null ] && read -r wall cpu <<<"$2"
    record build "$(printf '"server":"%s","clean_build_s":%s,"clean_build_cpu_s":%s,"stripped_bytes":%s,"dyn_libs":%s,"toolchain":%s' \
        "$1" "$wall" "$cpu" "$size" "$(jstr "$libs")" "$(jstr "$4")")"
}

BRISK_BUILD="$W/build-brisk"
step "build: brisk ($([ "$QUICK" = 1 ] && echo incremental || echo "clean, make -j$NCPU"))"
[ "$QUICK" = 1 ] || rm -rf "$BRISK_BUILD"
bash "$ROOT/scripts/deps.sh" run >"$LOGS/brisk-deps.log" 2>&1 || true
BRISK_BUILD_S=$(time_cmd "$LOGS/build-brisk.log" make -C "$ROOT" -j"$NCPU" BUILD="$BRISK_BUILD" all)
[ "$QUICK" = 1 ] && BRISK_BUILD_S=null
cp "$BRISK_BUILD/brisk" "$W/bin/brisk"
record_build brisk "$BRISK_BUILD_S" "$W/bin/brisk" "$(gcc --version | head -1), make -j$NCPU, -O2"
if [ -n "$BASELINE_BIN" ]; then
    cp "$BASELINE_BIN" "$W/bin/brisk-base"
    record_build brisk-base null "$W/bin/brisk-base" "prebuilt: $BASELINE_BIN"
    record note "$(printf '"text":%s' "$(jstr "brisk-sqlite-base: $BASELINE_BIN (sha256 $(sha256sum "$BASELINE_BIN" | cut -c1-16), $("$W/bin/brisk-base" --version 2>&1 | head -n 1)), brisk-sqlite's configuration")")"
fi

step "build: limit server, load generator, JSON microbenchmark (C)"
CFLAGS_B=(-O2 -g -Wall -Wextra -std=gnu11)
gcc "${CFLAGS_B[@]}" -o "$W/bin/limit" "$B/limit/limit.c" -lpthread
gcc "${CFLAGS_B[@]}" -o "$W/bin/loadgen" "$B/loadgen/loadgen.c" -lpthread
gcc "${CFLAGS_B[@]}" -I"$ROOT/src" -o "$W/bin/pg_schema" "$B/tools/pg_schema.c"
gcc "${CFLAGS_B[@]}" -I"$ROOT/src" -o "$W/bin/json_bench_c" "$B/json/json_bench.c" \
    "$BRISK_BUILD/src/json/json.o" "$BRISK_BUILD"/src/base/{buf,arena,timefmt,str,log}.o
record_build limit null "$W/bin/limit" "gcc -O2"

GO_ENV=(env GO111MODULE=off GOFLAGS= GOPATH="/usr/share/gocode:$B/peers/go" GOCACHE="$W/gocache")
GO_VERSION=$(go version | awk '{print $3}')
for peer in gin nethttp; do
    step "build: go-$peer ($([ "$QUICK" = 1 ] && echo "cached" || echo "clean: empty GOCACHE, dependencies from source"))"
    [ "$QUICK" = 1 ] || rm -rf "$W/gocache"
    s=$(cd "$B/peers/go" && time_cmd "$LOGS/build-go-$peer.log" "${GO_ENV[@]}" go build -o "$W/bin/go-$peer" "peer-$peer")
    [ "$QUICK" = 1 ] && s=null
    record_build "go-$peer" "$s" "$W/bin/go-$peer" "$GO_VERSION, go build (GOPATH mode, Debian's packaged gin/pgx)"
done

# Prefer the toolchain on PATH (rustup's, when the machine has one), else Debian's.
CARGO=$(command -v cargo || echo /usr/bin/cargo)
RUSTC_V=$("$(dirname "$CARGO")/rustc" --version 2>/dev/null || rustc --version)
CARGO_TGT="$W/cargo-target"
step "build: rust-hyper ($([ "$QUICK" = 1 ] && echo "incremental" || echo "clean target, cargo build --release"); $RUSTC_V)"
[ "$QUICK" = 1 ] || rm -rf "$CARGO_TGT"
rm -f "$B/peers/rust/Cargo.lock" # resolved again offline: rustup's and Debian's cargo differ in format
s=$(cd "$B/peers/rust" && time_cmd "$LOGS/build-rust.log" env CARGO_TARGET_DIR="$CARGO_TGT" \
    RUSTC="$(dirname "$CARGO")/rustc" "$CARGO" build --release --offline --bin peer-rust)
[ "$QUICK" = 1 ] && s=null
cp "$CARGO_TGT/release/peer-rust" "$W/bin/rust-hyper"
record_build rust-hyper "$s" "$W/bin/rust-hyper" "$RUSTC_V, cargo build --release (Debian's packaged crates)"
(cd "$B/peers/rust" && env CARGO_TARGET_DIR="$CARGO_TGT" RUSTC="$(dirname "$CARGO")/rustc" \
    "$CARGO" build --release --offline --bin json-bench >>"$LOGS/build-rust.log" 2>&1) ||
    die "rust json-bench build failed (log: $LOGS/build-rust.log)"

# ---------------------------------------------------------------- PostgreSQL
PG_DIR="$W/pg"
pg_start() {
    if [ -f "$ROOT/scripts/pg_cluster.sh" ]; then
        BRISK_PG_DIR="$PG_DIR" bash "$ROOT/scripts/pg_cluster.sh" stop "$PG_DIR" >/dev/null 2>&1 || true
        "${PIN_SRV[@]}" bash "$ROOT/scripts/pg_cluster.sh" start "$PG_DIR"
    else
        die "scripts/pg_cluster.sh not found"
    fi
}
pg_stop() { bash "$ROOT/scripts/pg_cluster.sh" stop "$PG_DIR" >/dev/null 2>&1 || true; }

SERVER_PIDS=()
cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]:-}"; do
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    done
    for pid in "${SERVER_PIDS[@]:-}"; do
        if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
    done
    pg_stop
}
trap cleanup EXIT

step "postgres: throwaway cluster ($PG_DIR), pinned with the servers"
PG_URL=$(pg_start) || die "PostgreSQL did not start"
# scripts/pg_cluster.sh turns fsync off for tests; a benchmark of a durable
# POST /users needs it on (brisk's SQLite runs with synchronous=FULL).
psql -X -q "$PG_URL" -c "ALTER SYSTEM SET fsync = on" -c "ALTER SYSTEM SET full_page_writes = on" \
    -c "SELECT pg_reload_conf()" >/dev/null
record meta_pg "$(printf '"version":%s,"fsync":"%s","synchronous_commit":"%s","shared_buffers":"%s"' \
    "$(jstr "$(psql -X -At "$PG_URL" -c 'SHOW server_version')")" \
    "$(psql -X -At "$PG_URL" -c 'SHOW fsync')" "$(psql -X -At "$PG_URL" -c 'SHOW synchronous_commit')" \
    "$(psql -X -At "$PG_URL" -c 'SHOW shared_buffers')")"

# ---------------------------------------------------------------- servers
declare -A PORT
PORT[brisk-sqlite]=$PORT_BASE
PORT[brisk-pg]=$((PORT_BASE + 1))
PORT[go-gin]=$((PORT_BASE + 2))
PORT[go-nethttp]=$((PORT_BASE + 3))
PORT[rust-hyper]=$((PORT_BASE + 4))
PORT[brisk-sqlite-base]=$((PORT_BASE + 5))
PORT[limit]=$((PORT_BASE + 10))
PORT[nginx]=$((PORT_BASE + 36))   # cleartext (start-up probe); TLS on TLS_PORT
PORT[h2o]=$((PORT_BASE + 38))     # cleartext: h2c with prior knowledge; TLS on TLS_PORT
# TLS and h2c listeners of the TLS / HTTP/2 rows (BENCH_TLS=0 leaves them out)
declare -A TLS_PORT H2C_PORT
TLS_PORT[brisk-sqlite]=$((PORT_BASE + 30))
TLS_PORT[go-nethttp]=$((PORT_BASE + 33))
TLS_PORT[rust-hyper]=$((PORT_BASE + 34))
TLS_PORT[nginx]=$((PORT_BASE + 37))
TLS_PORT[h2o]=$((PORT_BASE + 39))
H2C_PORT[brisk-sqlite]=$PORT_BASE # brisk: h2c by prior knowledge on its cleartext port
H2C_PORT[go-nethttp]=$((PORT_BASE + 43))
H2C_PORT[rust-hyper]=$((PORT_BASE + 44))
H2C_PORT[h2o]=${PORT[h2o]}
BENCH_TLS="${BENCH_TLS:-1}"
TLS_DIR="$W/tls"
TLS_ENV=()
if [ "$BENCH_TLS" = 1 ]; then
    # one certificate for every server: ECDSA P-256, CN/SAN localhost (make tls-dev-cert's)
    mkdir -p "$TLS_DIR"
    [ -f "$TLS_DIR/cert.pem" ] || (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -nodes -days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null)
    TLS_ENV=(BRISK_TLS_CERT="$TLS_DIR/cert.pem" BRISK_TLS_KEY="$TLS_DIR/key.pem")
fi
tls_env() { # NAME: the TLS / h2c settings of a server (none without BENCH_TLS)
    [ "$BENCH_TLS" = 1 ] || return 0
    case "$1" in
    brisk-sqlite) printf '%s\n' "${TLS_ENV[@]}" BRISK_TLS_ADDR="127.0.0.1:${TLS_PORT[$1]}" ;;
    go-nethttp | rust-hyper) printf '%s\n' "${TLS_ENV[@]}" BRISK_TLS_ADDR="127.0.0.1:${TLS_PORT[$1]}" \
        BRISK_H2C_ADDR="127.0.0.1:${H2C_PORT[$1]}" ;;
    esac
}
SQLITE_DIR="$W/sqlite"
SQLITE_BASE_DIR="$W/sqlite-base"

# brisk: one loop per server core (its default counts all online cores, not
# the affinity mask), no access log (the peers log nothing either), no
# background order worker (not part of the benchmark subset).
# BENCH_BRISK_ENV="VAR=value ..." adds settings (experiments; recorded in the results).
# shellcheck disable=SC2206 # BENCH_BRISK_ENV is split into words on purpose
BRISK_ENV=(BRISK_THREADS="$SRV_N" BRISK_LOG_LEVEL=warn BRISK_BG_WORKERS=0 ${BENCH_BRISK_ENV:-})
[ -n "${BENCH_BRISK_ENV:-}" ] && record note "$(printf '"text":%s' "$(jstr "brisk ran with extra settings: $BENCH_BRISK_ENV")")"
server_cmd() { # NAME: print the env + command line, one word per line
    local n="$1"
    case "$n" in
    brisk-sqlite) printf '%s\n' env "${BRISK_ENV[@]}" BRISK_ADDR="127.0.0.1:${PORT[$n]}" $(tls_env "$n") \
        BRISK_DATABASE_URL="sqlite:$SQLITE_DIR/brisk.db" "${PIN_SRV[@]}" "$W/bin/brisk" serve ;;
    brisk-sqlite-base) printf '%s\n' env "${BRISK_ENV[@]}" BRISK_ADDR="127.0.0.1:${PORT[$n]}" \
        BRISK_DATABASE_URL="sqlite:$SQLITE_BASE_DIR/brisk.db" "${PIN_SRV[@]}" "$W/bin/brisk-base" serve ;;
    brisk-pg) printf '%s\n' env "${BRISK_ENV[@]}" BRISK_ADDR="127.0.0.1:${PORT[$n]}" \
        BRISK_DATABASE_URL="$PG_URL" "${PIN_SRV[@]}" "$W/bin/brisk" serve ;;
    go-gin | go-nethttp | rust-hyper) printf '%s\n' env BRISK_ADDR="127.0.0.1:${PORT[$n]}" $(tls_env "$n") \
        BRISK_DATABASE_URL="$PG_URL" "${PIN_SRV[@]}" "$W/bin/$n" ;;
    limit) printf '%s\n' "${PIN_SRV[@]}" "$W/bin/limit" --addr "127.0.0.1:${PORT[$n]}" ;;
    nginx) printf '%s\n' "${PIN_SRV[@]}" nginx -e stderr -p "$W/nginx" -c "$W/nginx/nginx.conf" ;;
    h2o) printf '%s\n' "${PIN_SRV[@]}" h2o -c "$W/h2o/h2o.conf" ;;
    esac
}

# start_server NAME [--keep]: exec -> first 200 on /health; prints startup.py's JSON
start_server() {
    local n="$1" keep="${2:-}" cmd
    mapfile -t cmd < <(server_cmd "$n")
    python3 "$B/startup.py" --port "${PORT[$n]}" ${keep:+"$keep"} --log "$LOGS/server-$n.log" -- "${cmd[@]}"
}

# brisk creates its schema at start-up: start brisk against PostgreSQL first so
# the peers find brisk's own tables. A brisk without the PostgreSQL backend is
# skipped, and the schema comes from src/db/migrations_pg.h instead.
rm -rf "$SQLITE_DIR" "$SQLITE_BASE_DIR"
mkdir -p "$SQLITE_DIR" "$SQLITE_BASE_DIR"
BRISK_PG_OK=1
step "schema: brisk migrates the PostgreSQL database"
if ! start_server brisk-pg >"$W/startup.tmp" 2>>"$LOGS/server-brisk-pg.log"; then
    BRISK_PG_OK=0
    why="$(cat "$W/startup.tmp") $(grep -v 'running as root' "$LOGS/server-brisk-pg.log" | tail -n 1)"
    step "brisk-pg: brisk did not serve with a postgres:// URL: $why"
    record note "$(printf '"text":%s' "$(jstr "brisk-pg skipped: brisk did not serve with a postgres:// URL: $why")")"
    if [ "$(psql -X -At "$PG_URL" -c "SELECT to_regclass('users') IS NULL")" = t ]; then
        step "schema: applying src/db/migrations_pg.h for the peers"
        "$W/bin/pg_schema" | psql -X -q -v ON_ERROR_STOP=1 "$PG_URL" >/dev/null
    fi
fi

SERVERS=()
for s in ${SERVERS_ARG//,/ }; do SERVERS+=("$s"); done
[ ${#SERVERS[@]} -eq 0 ] && SERVERS=("${ALL_SERVERS[@]}")
if [ "$BRISK_PG_OK" = 0 ]; then
    keep=()
    for s in "${SERVERS[@]}"; do [ "$s" = brisk-pg ] || keep+=("$s"); done
    SERVERS=("${keep[@]}")
fi
SCENARIOS=(health health_pipelined get_user post_user orders_process)
[ -n "$SCENARIOS_ARG" ] && read -r -a SCENARIOS <<<"${SCENARIOS_ARG//,/ }"
# the TLS / HTTP/2 rows run after the others, on their own loop
XSCENARIOS=(tls_health tls_get_user tls_handshake h2c_health h2c_get_user h2_health h2_get_user)
if [ -n "$SCENARIOS_ARG" ]; then
    keep=() xkeep=()
    for sc in "${SCENARIOS[@]}"; do
        case "$sc" in tls_* | h2_* | h2c_*) xkeep+=("$sc") ;; *) keep+=("$sc") ;; esac
    done
    SCENARIOS=("${keep[@]}")
    XSCENARIOS=("${xkeep[@]}")
fi
[ "$BENCH_TLS" = 1 ] || XSCENARIOS=()

step "startup: exec -> first 200 on /health, $STARTUP_RUNS run(s) per server"
for n in limit "${SERVERS[@]}"; do
    for ((i = 1; i <= STARTUP_RUNS; i++)); do
        out=$(start_server "$n") || die "$n did not answer /health: $out (exit -31 is SIGSYS: brisk's seccomp sandbox; log: $LOGS/server-$n.log)"
        record startup "$(printf '"server":"%s","run":%d,"data":%s' "$n" "$i" "$out")"
    done
done

step "servers: starting ${SERVERS[*]} and limit"
declare -A PID
for n in limit "${SERVERS[@]}"; do
    out=$(start_server "$n" --keep) || die "$n did not start (log: $LOGS/server-$n.log)"
    PID[$n]=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$out")
    SERVER_PIDS+=("${PID[$n]}")
    record rss_start "$(printf '"server":"%s","vmrss_kb":%s' "$n" \
        "$(awk '/^VmRSS/ {print $2}' "/proc/${PID[$n]}/status")")"
done

# Seed users: SQLite through brisk (its schema, its durability; each SQLite server
# has its own file), PostgreSQL with one INSERT (every PostgreSQL server reads the
# same rows).
step "seed: $SEED_USERS users in SQLite (through brisk) and in PostgreSQL"
declare -A IDS
for n in brisk-sqlite brisk-sqlite-base; do
    case " ${SERVERS[*]} " in *" $n "*) IDS[$n]=$(seed_users "${PORT[$n]}" "$SEED_USERS" seed) ;; esac
done
IDS_PG=$(psql -X -At -v ON_ERROR_STOP=1 "$PG_URL" -c "WITH s AS (INSERT INTO users (name, email)
    SELECT 'Seed User ' || g, 'seed-' || g || '@bench.example' FROM generate_series(1, $SEED_USERS) g
    RETURNING id) SELECT min(id) || ':' || max(id) FROM s")
psql -X -q "$PG_URL" -c "ANALYZE users" >/dev/null
ids_of() { echo "${IDS[$1]:-$IDS_PG}"; }

step "check: every peer answers the benchmark subset like brisk"
CHECK_ARGS=()
for n in "${SERVERS[@]}"; do CHECK_ARGS+=("$n=http://127.0.0.1:${PORT[$n]}"); done
if python3 "$B/check_peers.py" "${CHECK_ARGS[@]}" >"$LOGS/check_peers.log" 2>&1; then
    CHECK_OK=true
else
    CHECK_OK=false
    grep FAIL "$LOGS/check_peers.log" >&2 || true
    step "check: FAILED (see $LOGS/check_peers.log); measuring anyway, the report says so"
fi
record check "$(printf '"ok":%s,"summary":%s' "$CHECK_OK" "$(jstr "$(tail -n 1 "$LOGS/check_peers.log")")")"

# ---------------------------------------------------------------- scenarios
BODY="$W/orders1000.json"
python3 "$B/gen_orders.py" 1000 "$BODY"

scenario_conns() {
    case "$1" in
    health | get_user) echo 64 ;;
    health_pipelined | post_user) echo 32 ;;
    orders_process) echo 8 ;;
    esac
}
scenario_lua() {
    case "$1" in
    health) echo health.lua ;;
    health_pipelined) echo health_pipelined.lua ;;
    get_user) echo get_user.lua ;;
    post_user) echo post_user.lua ;;
    orders_process) echo orders.lua ;;
    esac
}
scenario_path() {
    case "$1" in
    health | health_pipelined) echo /health ;;
    get_user) echo /users/1 ;;
    post_user) echo /users ;;
    orders_process) echo /orders/process ;;
    esac
}

# CPU seconds (user + system, all threads) used so far by PID, and by PostgreSQL
CLK_TCK=$(getconf CLK_TCK)
cpu_of() { awk -v t="$CLK_TCK" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# pg_snap: "pid ticks" for every PostgreSQL process; pg_delta SNAP0 SNAP1: CPU
# seconds used in between (per process, so a backend that exits or starts
# meanwhile does not make the sum jump).
pg_snap() {
    local pm files=()
    pm=$(head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null) || return 0
    for p in "$pm" $(pgrep -P "$pm"); do files+=("/proc/$p/stat"); done
    awk '{print $1, $14 + $15}' "${files[@]}" 2>/dev/null || true
}
pg_delta() {
    printf '%s\n---\n%s\n' "$1" "$2" | awk -v t="$CLK_TCK" '
        /^---$/ {second = 1; next}
        NF < 2 {next}
        !second {a[$1] = $2; next}
        {d = $2 - (($1 in a) ? a[$1] : 0); if (d > 0) s += d}
        END {printf "%.3f", s / t}'
}

# Writes of one server must not pay for another's: before every POST /users window,
# flush dirty pages (SQLite and PostgreSQL share the disk) and checkpoint PostgreSQL.
settle_disk() {
    [ "$1" = post_user ] || return 0
    sync
    psql -X -q "$PG_URL" -c CHECKPOINT >/dev/null 2>&1 || true
}

# run_wrk SCENARIO SERVER SECONDS TAG: prints the BENCHJSON object, with the CPU
# time the server (and PostgreSQL) used during the window added
run_wrk() {
    local sc="$1" n="$2" secs="$3" tag="$4" out c0 p0 c1 p1
    settle_disk "$sc"
    c0=$(cpu_of "${PID[$n]}")
    p0=$(pg_snap)
    out=$(env BENCH_LUA_DIR="$B/wrk" BENCH_IDS="$(ids_of "$n")" BENCH_TAG="$tag" BENCH_BODY="$BODY" \
        "${PIN_LOAD[@]}" wrk -t"$LOAD_N" -c"$(scenario_conns "$sc")" -d"${secs}s" --timeout 10s --latency \
        -s "$B/wrk/$(scenario_lua "$sc")" "http://127.0.0.1:${PORT[$n]}$(scenario_path "$sc")" 2>&1) ||
        { echo "$out" >&2; die "wrk failed against $n"; }
    c1=$(cpu_of "${PID[$n]}")
    p1=$(pg_snap)
    echo "$out" >>"$LOGS/wrk-$sc-$n.log"
    grep '^BENCHJSON ' <<<"$out" | tail -n 1 | cut -d' ' -f2- |
        sed "s/^{/{\"server_cpu_s\":$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.3f", b - a}'),\"pg_cpu_s\":$(pg_delta "$p0" "$p1"),/"
}

# rotate ARRAY by K: the order servers are measured in changes every round
rotated() {
    local k="$1"
    shift
    local a=("$@") i
    for ((i = 0; i < ${#a[@]}; i++)); do echo "${a[$(((i + k) % ${#a[@]}))]}"; done
}

RUN_ID=$(date +%s)
for sc in "${SCENARIOS[@]}"; do
    targets=("${SERVERS[@]}")
    [ "$sc" = health ] || [ "$sc" = health_pipelined ] && targets+=(limit)
    # peak RSS per scenario: clear_refs "5" resets VmHWM to the current RSS
    for n in "${targets[@]}"; do echo 5 >"/proc/${PID[$n]}/clear_refs" 2>/dev/null || true; done
    if [ "$WRK_WARMUP" != 0 ]; then
        step "scenario $sc: warm-up ${WRK_WARMUP}s per server"
        for n in "${targets[@]}"; do
            run_wrk "$sc" "$n" "$WRK_WARMUP" "w$RUN_ID-$n" >/dev/null
        done
    fi
    for ((r = 1; r <= ROUNDS; r++)); do
        mapfile -t order < <(rotated $((r - 1)) "${targets[@]}")
        for n in "${order[@]}"; do
            step "scenario $sc: wrk round $r/$ROUNDS, $n (${WRK_SECONDS}s, $(scenario_conns "$sc") connections)"
            out=$(run_wrk "$sc" "$n" "$WRK_SECONDS" "r$RUN_ID-$r-$n")
            record wrk "$(printf '"scenario":"%s","server":"%s","round":%d,"connections":%d,"data":%s' \
                "$sc" "$n" "$r" "$(scenario_conns "$sc")" "$out")"
        done
    done

    for n in "${targets[@]}"; do
        record rss_scenario "$(printf '"scenario":"%s","server":"%s","vmhwm_kb":%s' "$sc" "$n" \
            "$(awk '/^VmHWM/ {print $2}' "/proc/${PID[$n]}/status")")"
    done
    [ "$sc" = health_pipelined ] && continue # no fixed-rate run: pipelining is about the ceiling

    # One fixed rate for every server: half the throughput of the slowest one
    # (limit excluded), so every server can sustain it.
    rate=$(python3 - "$RAW" "$sc" "${SERVERS[@]}" <<'EOF'
import json, sys, statistics
raw, sc, servers = sys.argv[1], sys.argv[2], sys.argv[3:]
by = {}
for line in open(raw):
    r = json.loads(line)
    if r["kind"] == "wrk" and r["scenario"] == sc and r["server"] in servers:
        by.setdefault(r["server"], []).append(r["data"]["rps"])
slowest = min(statistics.median(v) for v in by.values())
rate = slowest / 2
# two significant digits
from math import floor, log10
mag = 10 ** max(0, floor(log10(rate)) - 1) if rate >= 1 else 1
print(max(1, int(rate // mag * mag)))
EOF
)
    for ((r = 1; r <= RATE_ROUNDS; r++)); do
        mapfile -t order < <(rotated "$r" "${targets[@]}")
        for n in "${order[@]}"; do
            [ "$n" = limit ] && continue
            step "scenario $sc: fixed rate $rate req/s, round $r/$RATE_ROUNDS, $n (${RATE_SECONDS}s, open loop)"
            lg=(--host 127.0.0.1 --port "${PORT[$n]}" --rate "$rate" --duration "$RATE_SECONDS"
                --warmup "$RATE_WARMUP" --connections "$(scenario_conns "$sc")" --threads "$LOAD_N"
                --tag "f$RUN_ID-$r-$n")
            case "$sc" in
            health) lg+=(--path /health) ;;
            get_user) lg+=(--path '/users/{id}' --ids "$(ids_of "$n")") ;;
            post_user)
                printf '{"name":"Bench User {n}","email":"f-{tag}-{n}@bench.example"}' >"$W/post_user.tmpl"
                lg+=(--method POST --path /users --body-file "$W/post_user.tmpl") ;;
            orders_process) lg+=(--method POST --path /orders/process --body-file "$BODY") ;;
            esac
            settle_disk "$sc"
            out=$("${PIN_LOAD[@]}" "$W/bin/loadgen" "${lg[@]}") || die "loadgen failed against $n"
            record rate "$(printf '"scenario":"%s","server":"%s","round":%d,"data":%s' "$sc" "$n" "$r" "$out")"
            record rss_scenario "$(printf '"scenario":"%s","server":"%s","vmhwm_kb":%s' "$sc" "$n" \
                "$(awk '/^VmHWM/ {print $2}' "/proc/${PID[$n]}/status")")"
        done
    done
done

# ---------------------------------------------------------------- TLS and HTTP/2
# HTTPS (wrk against https://localhost:PORT: the SNI is a host name, rustls rejects an
# IP), TLS handshakes per second (wrk with Connection: close: a new connection and a
# full handshake per request), HTTP/2 with h2load (-c 64 -m 10; h2c by prior knowledge
# and h2 over TLS by ALPN). nginx (return 200 on /health over TLS) is the TLS limit
# server, h2o (/health as a static file) the HTTP/2 one. CPU per request as above.
xs_targets() { # SCENARIO: the servers of a TLS / HTTP/2 row that run in this bench
    local c n
    case "$1" in
    tls_health | tls_handshake) c="brisk-sqlite go-nethttp rust-hyper nginx" ;;
    h2c_health | h2_health) c="brisk-sqlite go-nethttp rust-hyper h2o" ;;
    *) c="brisk-sqlite go-nethttp rust-hyper" ;;
    esac
    for n in $c; do [ -n "${PID[$n]:-}" ] && echo "$n"; done
    return 0
}
# cpu_tree PID: CPU seconds of PID and its children (nginx's workers)
cpu_tree() {
    local p t=0
    for p in "$1" $(pgrep -P "$1" || true); do t=$(awk -v a="$t" -v b="$(cpu_of "$p")" 'BEGIN {printf "%.3f", a + b}'); done
    echo "$t"
}
run_x() { # SCENARIO SERVER SECONDS TAG: the BENCHJSON object of one window
    local sc="$1" n="$2" secs="$3" tag="$4" out c0 p0 c1 p1 path=/health lua=health.lua
    case "$sc" in *get_user) path='/users/{id}' lua=get_user.lua ;; esac
    c0=$(cpu_tree "${PID[$n]}")
    p0=$(pg_snap)
    case "$sc" in
    tls_*)
        local hdr=()
        [ "$sc" = tls_handshake ] && hdr=(-H 'Connection: close')
        out=$(env BENCH_LUA_DIR="$B/wrk" BENCH_IDS="$(ids_of "$n")" BENCH_TAG="$tag" \
            "${PIN_LOAD[@]}" wrk -t"$LOAD_N" -c64 -d"${secs}s" --timeout 10s --latency "${hdr[@]}" \
            -s "$B/wrk/$lua" "https://localhost:${TLS_PORT[$n]}${path/\{id\}/1}" 2>&1) ||
            { echo "$out" >&2; die "wrk failed against $n ($sc)"; }
        echo "$out" >>"$LOGS/wrk-$sc-$n.log"
        out=$(grep '^BENCHJSON ' <<<"$out" | tail -n 1 | cut -d' ' -f2-) ;;
    h2c_*)
        out=$(python3 "$B/h2load.py" --url "http://127.0.0.1:${H2C_PORT[$n]}$path" --ids "$(ids_of "$n")" \
            --conns 64 --streams 10 --threads "$LOAD_N" --seconds "$secs" --pin "$LOAD_CPUS" \
            --log "$LOGS/h2load-$sc-$n.log") || die "h2load failed against $n ($sc)" ;;
    h2_*)
        out=$(python3 "$B/h2load.py" --url "https://localhost:${TLS_PORT[$n]}$path" --ids "$(ids_of "$n")" \
            --connect-to "127.0.0.1:${TLS_PORT[$n]}" --conns 64 --streams 10 --threads "$LOAD_N" \
            --seconds "$secs" --pin "$LOAD_CPUS" --log "$LOGS/h2load-$sc-$n.log") ||
            die "h2load failed against $n ($sc)" ;;
    esac
    c1=$(cpu_tree "${PID[$n]}")
    p1=$(pg_snap)
    sed "s/^{/{\"server_cpu_s\":$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.3f", b - a}'),\"pg_cpu_s\":$(pg_delta "$p0" "$p1"),/" <<<"$out"
}
if [ ${#XSCENARIOS[@]} -gt 0 ]; then
    # nginx: `return 200 ok` on /health over TLS (and cleartext, for the start-up probe)
    mkdir -p "$W/nginx/logs" "$W/nginx/tmp" "$W/h2o/root"
    cat >"$W/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes $SRV_N;
pid $W/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $W/nginx/tmp;
    proxy_temp_path $W/nginx/tmp;
    fastcgi_temp_path $W/nginx/tmp;
    uwsgi_temp_path $W/nginx/tmp;
    scgi_temp_path $W/nginx/tmp;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:${PORT[nginx]};
        listen 127.0.0.1:${TLS_PORT[nginx]} ssl;
        ssl_certificate $TLS_DIR/cert.pem;
        ssl_certificate_key $TLS_DIR/key.pem;
        location = /health { default_type text/plain; return 200 ok; }
    }
}
NGINX
    # h2o: /health as a static file, h2c on the cleartext port, h2 by ALPN over TLS
    printf ok >"$W/h2o/root/health"
    cat >"$W/h2o/h2o.conf" <<H2O
user: root
num-threads: $SRV_N
pid-file: $W/h2o/h2o.pid
error-log: $W/h2o/error.log
listen:
  host: 127.0.0.1
  port: ${PORT[h2o]}
listen:
  host: 127.0.0.1
  port: ${TLS_PORT[h2o]}
  ssl:
    certificate-file: $TLS_DIR/cert.pem
    key-file: $TLS_DIR/key.pem
hosts:
  default:
    paths:
      /:
        file.dir: $W/h2o/root
H2O
    for n in nginx h2o; do
        if ! command -v "$n" >/dev/null; then
            record note "$(printf '"text":%s' "$(jstr "$n not installed: left out of the TLS / HTTP/2 rows")")"
            continue
        fi
        out=$(start_server "$n" --keep) || { step "$n did not start (log: $LOGS/server-$n.log)"; continue; }
        PID[$n]=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$out")
        SERVER_PIDS+=("${PID[$n]}")
    done
    record note "$(printf '"text":%s' "$(jstr "TLS / HTTP/2 rows: $(nginx -v 2>&1 | head -n 1), $(h2o --version 2>/dev/null | head -n 1), $(h2load --version | head -n 1), $(openssl version); one ECDSA P-256 certificate (CN localhost) for every server")")"
    for sc in "${XSCENARIOS[@]}"; do
        mapfile -t targets < <(xs_targets "$sc")
        [ ${#targets[@]} -gt 0 ] || continue
        if [ "$WRK_WARMUP" != 0 ]; then
            step "scenario $sc: warm-up ${WRK_WARMUP}s per server"
            for n in "${targets[@]}"; do run_x "$sc" "$n" "$WRK_WARMUP" "w$RUN_ID-$n" >/dev/null; done
        fi
        for ((r = 1; r <= ROUNDS; r++)); do
            mapfile -t order < <(rotated $((r - 1)) "${targets[@]}")
            for n in "${order[@]}"; do
                step "scenario $sc: round $r/$ROUNDS, $n (${WRK_SECONDS}s, 64 connections)"
                out=$(run_x "$sc" "$n" "$WRK_SECONDS" "r$RUN_ID-$r-$n")
                record wrk "$(printf '"scenario":"%s","server":"%s","round":%d,"connections":64,"data":%s' \
                    "$sc" "$n" "$r" "$out")"
            done
        done
    done
fi

# Response compression: GET /users?limit=1000 and the 1000-order batch, plain and gzip
# (bench/compress/wire.py: CPU per request, bytes on the wire; appended to the report).
case " ${SERVERS[*]} " in *" brisk-sqlite "*)
    step "compression: brisk-sqlite, plain vs Accept-Encoding: gzip (${WRK_SECONDS}s each)"
    python3 "$B/compress/wire.py" --port "${PORT[brisk-sqlite]}" --pid "${PID[brisk-sqlite]}" \
        --body "$BODY" --seconds "$WRK_SECONDS" --pin "$LOAD_CPUS" --raw "$RAW" --md "$W/compress.md" \
        >"$LOGS/compress.log" 2>&1 || step "compression: failed (see $LOGS/compress.log)" ;;
esac

step "memory: RSS of every server after the run (peaks were taken per scenario)"
for n in limit "${SERVERS[@]}"; do
    st="/proc/${PID[$n]}/status"
    record rss "$(printf '"server":"%s","vmrss_kb":%s,"rss_anon_kb":%s,"rss_file_kb":%s' "$n" \
        "$(awk '/^VmRSS/ {print $2}' "$st")" "$(awk '/^RssAnon/ {print $2}' "$st")" \
        "$(awk '/^RssFile/ {print $2}' "$st")")"
done
PG_HWM=0
for p in $(pgrep -f "postgres.*$PG_DIR" || true); do
    h=$(awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    PG_HWM=$((PG_HWM + ${h:-0}))
done
record rss_pg "\"sum_vmhwm_kb\":$PG_HWM"

step "servers: stopping"
cleanup
SERVER_PIDS=()
trap - EXIT

# Scale-out (full run): GET /users/{id} from 3 brisk processes behind HAProxy, with
# and without a read replica, beside one of them reached directly; its own primary,
# replica and ports (BENCH_PORT_BASE + 20..27). Compared with brisk-pg's row above.
SCALEOUT="${BENCH_SCALEOUT:-$([ "$QUICK" = 1 ] && echo 0 || echo 1)}"
if [ "$SCALEOUT" = 1 ] && [ "$BRISK_PG_OK" = 1 ] && [[ " ${SERVERS[*]} " == *" brisk-pg "* ]] &&
    [[ " ${SCENARIOS[*]} " == *" get_user "* ]]; then
    step "scale-out: GET /users/{id}, 3 brisk processes behind HAProxy, with and without the read replica ($ROUNDS x ${WRK_SECONDS}s x 4 targets)"
    BENCH_PORT_BASE="$PORT_BASE" bash "$B/scaleout.sh" --raw "$RAW" --brisk "$W/bin/brisk" --work "$W/scaleout" \
        --seconds "$WRK_SECONDS" --rounds "$ROUNDS" --warmup "$WRK_WARMUP" --seed "$SEED_USERS" \
        >"$LOGS/scaleout.log" 2>&1 || {
        step "scale-out: failed (see $LOGS/scaleout.log)"
        record note "$(printf '"text":%s' "$(jstr "scale-out failed: $(tail -n 1 "$LOGS/scaleout.log")")")"
    }
fi

# ---------------------------------------------------------------- JSON microbenchmark
step "json: brisk's codec in C ($JSON_ITERS iterations x $JSON_RUNS runs)"
"${PIN_SRV[@]}" "$W/bin/json_bench_c" "$JSON_ITERS" "$JSON_RUNS" | grep '^{"lang"' |
    while read -r l; do record json "\"data\":$l"; done
step "json: serde_json (Rust)"
"${PIN_SRV[@]}" "$CARGO_TGT/release/json-bench" "$JSON_ITERS" "$JSON_RUNS" | grep '^{"lang"' |
    while read -r l; do record json "\"data\":$l"; done
step "json: Go encoding/json (go test -bench)"
(cd "$B/json/go" && env GO111MODULE=off GOFLAGS= GOPATH="$B/json/go" GOCACHE="$W/gocache" \
    "${PIN_SRV[@]}" go test -run XXX -bench . -benchtime "${JSON_ITERS}x" -count "$JSON_RUNS" jsonbench) \
    >"$LOGS/json-go.log" 2>&1 || { cat "$LOGS/json-go.log" >&2; die "go json bench failed"; }
python3 - "$LOGS/json-go.log" <<'EOF' | while read -r l; do record json "\"data\":$l"; done
import re, statistics, sys
names = {"EncodeUser": "encode_user", "DecodeCreateUser": "decode_create_user",
         "EncodeUserReusedBuffer": "encode_user_reused_buffer"}
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"Benchmark(\w+?)(-\d+)?\s+\d+\s+([\d.]+) ns/op", line)
    if m and m.group(1) in names:
        runs.setdefault(names[m.group(1)], []).append(float(m.group(3)))
for op, v in runs.items():
    print('{"lang":"go","lib":"encoding/json","op":"%s","ns_per_op":%.1f}' % (op, statistics.median(v)))
EOF

# Instructions per operation (callgrind): repeatable whatever else the machine
# does, unlike ns/op. Go's runtime does not run under valgrind: C and Rust only.
if [ "$QUICK" = 0 ] && command -v valgrind >/dev/null; then
    step "json: instructions per op under callgrind (C and Rust)"
    ir_total() { # BIN ITERS OP
        valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" "$1" "$2" 1 "$3" >/dev/null 2>&1
        awk '/^(summary|totals):/ {print $2; exit}' "$W/cg.out"
    }
    for op in encode decode; do
        for lang in c rust; do
            bin="$W/bin/json_bench_c"
            [ "$lang" = rust ] && bin="$CARGO_TGT/release/json-bench"
            ir_a=$(ir_total "$bin" 20000 "$op")
            ir_z=$(ir_total "$bin" 0 "$op")
            record json_ir "$(printf '"lang":"%s","op":"%s","ir_per_op":%d' "$lang" \
                "$([ "$op" = encode ] && echo encode_user || echo decode_create_user)" $(((ir_a - ir_z) / 20000)))"
        done
    done
    rm -f "$W/cg.out"
fi

# ---------------------------------------------------------------- report
step "report"
QSUFFIX=""
[ "$QUICK" = 1 ] && QSUFFIX=-quick
STAMP="$(date +%Y-%m-%d)-$(hostname -s)$QSUFFIX"
python3 "$B/report.py" --raw "$RAW" --out "$B/results/$STAMP" --elapsed "$(($(date +%s) - T_START))"
[ -f "$W/compress.md" ] && cat "$W/compress.md" >>"$B/results/$STAMP.md" && rm -f "$W/compress.md"
[ "$KEEP_WORK" = 1 ] || rm -rf "$PG_DIR"
step "done in $(($(date +%s) - T_START))s: bench/results/$STAMP.md"
exit 0
}
