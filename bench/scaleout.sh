#!/usr/bin/env bash
# bench/scaleout.sh - GET /users/{id} from 3 brisk processes behind HAProxy, with and
# without the read replica, beside one of the same processes reached directly.
#
#   bash bench/scaleout.sh                  standalone: 3 rounds of 4 s, prints a table
#   bash bench/scaleout.sh --seconds 5 --rounds 1
#
# bench/run.sh calls it in the full run (after the main scenarios) with --raw, so
# that its records land in the run's raw results and bench/report.py renders them
# (section "Scale-out (3 processes behind HAProxy)").
#
# Options: --seconds S (wrk window, default 4), --rounds N (default 3), --warmup S
# (default 1; 0: none), --seed N (users created through POST /users, default 1000),
# --brisk PATH (default build/brisk), --raw FILE (append the records there instead
# of to WORK/raw.jsonl; no table printed), --work DIR (default $BENCH_WORK/scaleout,
# BENCH_WORK defaulting to bench/.work).
# Environment: BENCH_PORT_BASE (default 18180; this script uses BASE+20..BASE+27,
# run.sh BASE+0..BASE+10), BENCH_BRISK_ENV (extra brisk settings, as in run.sh).
#
# What it starts, all pinned like run.sh's servers (the first half of the cores;
# wrk on the rest): a throwaway PostgreSQL primary and a streaming replica of it
# (scripts/pg_cluster.sh start / replica), two sets of 3 brisk processes
# (BRISK_THREADS=1, BRISK_BG_WORKERS=0, BRISK_DATABASE_URL=primary; the second set
# also BRISK_DATABASE_READ_URL=replica), one HAProxy per set running
# packaging/haproxy.cfg with only its addresses rewritten. Four targets, measured
# alternating in every round: each HAProxy, and the first process of each set
# directly. CPU per request: user + system time over the wrk window of the set's
# 3 brisk processes, its HAProxy, and every process of both PostgreSQL clusters
# (postmaster and its children, backends included), from /proc/PID/stat.
# Everything is stopped on exit, also on failure.
set -euo pipefail
{

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B="$ROOT/bench"
PORT_BASE="${BENCH_PORT_BASE:-18180}"

SECONDS_W=4
ROUNDS=3
WARMUP=1
SEED_USERS=1000
BRISK_BIN="$ROOT/build/brisk"
RAW=""
WORK="${BENCH_WORK:-$B/.work}/scaleout"
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) SECONDS_W="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --warmup) WARMUP="$2"; shift ;;
    --seed) SEED_USERS="$2"; shift ;;
    --brisk) BRISK_BIN="$2"; shift ;;
    --raw) RAW="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
    *) echo "scaleout: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

T_START=$(date +%s)
step() { printf '[scaleout %4ss] %s\n' "$(($(date +%s) - T_START))" "$*" >&2; }
die() { echo "scaleout: $*" >&2; exit 1; }

[ -x "$BRISK_BIN" ] || die "no brisk binary at $BRISK_BIN (make, or --brisk PATH)"
HAPROXY=$(command -v haproxy) || die "haproxy is not installed (apt-get install haproxy)"
command -v wrk >/dev/null || die "wrk is not installed"

STANDALONE=0
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
if [ -z "$RAW" ]; then
    STANDALONE=1
    RAW="$WORK/raw.jsonl"
    : >"$RAW"
fi
LOGS="$WORK/logs"
rm -rf "$LOGS"
mkdir -p "$LOGS"

# record, jstr and bench_pin (the core split, as run.sh's)
. "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- pinning (as run.sh)
bench_pin
if [ "$BENCH_PINNED" = 1 ]; then
    PINNING="brisk, HAProxy and PostgreSQL on cores $SRV_CPUS, wrk on cores $LOAD_CPUS"
else
    PINNING="one core: everything shares it (not pinned)"
fi
CONNS=64 # run.sh's get_user connections

# ---------------------------------------------------------------- clean-up
PRIMARY_DIR="$WORK/pg-primary"
REPLICA_DIR="$WORK/pg-replica"
# Every process started here (brisk, HAProxy) carries MARK in its environment:
# clean-up finds them all by it, also one whose pid was not known yet when a
# failure or a signal came.
MARK="BENCH_SCALEOUT_RUN=$$-$(date +%s%N)"
marked() { # the pids of the live processes started here
    grep -lzx -- "$MARK" /proc/[0-9]*/environ 2>/dev/null | sed 's|^/proc/||; s|/environ$||' || true
}
cleanup() {
    local pids
    pids=$(marked)
    # shellcheck disable=SC2086 # a list of pids
    [ -z "$pids" ] || kill $pids 2>/dev/null || true
    # brisk answers for BRISK_DRAIN_GRACE_MS (1.5 s) after SIGTERM, then exits; at most 10 s
    # (a zombie - HAProxy is our child until reaped - has no environment: it counts as gone)
    for _ in $(seq 1 100); do
        [ -z "$(marked)" ] && break
        sleep 0.1
    done
    pids=$(marked)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    wait 2>/dev/null || true # reap HAProxy
    bash "$ROOT/scripts/pg_cluster.sh" stop "$REPLICA_DIR" >/dev/null 2>&1 || true
    bash "$ROOT/scripts/pg_cluster.sh" stop "$PRIMARY_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- PostgreSQL
step "postgres: primary ($PRIMARY_DIR) and streaming replica ($REPLICA_DIR), pinned with the servers"
cleanup # leftovers of an interrupted run
PRIMARY_URL=$("${PIN_SRV[@]}" bash "$ROOT/scripts/pg_cluster.sh" start "$PRIMARY_DIR") ||
    die "the primary did not start"
# as run.sh: fsync back on (the replica copies these settings with the base backup)
psql -X -q "$PRIMARY_URL" -c "ALTER SYSTEM SET fsync = on" -c "ALTER SYSTEM SET full_page_writes = on" \
    -c "SELECT pg_reload_conf()" >/dev/null
REPLICA_URL=$("${PIN_SRV[@]}" bash "$ROOT/scripts/pg_cluster.sh" replica "$REPLICA_DIR" "$PRIMARY_DIR") ||
    die "the replica did not start"
[ "$(psql -X -At "$REPLICA_URL" -c 'SELECT pg_is_in_recovery()')" = t ] || die "the replica is not a standby"

# ---------------------------------------------------------------- brisk and HAProxy
# Set A: the primary only. Set R: reads on the replica.
declare -A FRONT BPORTS READ_URL HAPID BPIDS
FRONT[A]=$((PORT_BASE + 20)) BPORTS[A]="$((PORT_BASE + 21)) $((PORT_BASE + 22)) $((PORT_BASE + 23))"
FRONT[R]=$((PORT_BASE + 24)) BPORTS[R]="$((PORT_BASE + 25)) $((PORT_BASE + 26)) $((PORT_BASE + 27))"
READ_URL[A]="" READ_URL[R]="$REPLICA_URL"
for p in "${FRONT[A]}" "${FRONT[R]}"; do
    python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$p" 2>/dev/null ||
        die "port $p is taken (set BENCH_PORT_BASE)"
done

# shellcheck disable=SC2206 # BENCH_BRISK_ENV is split into words on purpose
BRISK_ENV=(BRISK_THREADS=1 BRISK_LOG_LEVEL=warn BRISK_BG_WORKERS=0 ${BENCH_BRISK_ENV:-})
start_brisk() { # SET PORT: start one process, print its pid
    local set="$1" port="$2" out
    out=$(python3 "$B/startup.py" --port "$port" --keep --log "$LOGS/brisk-$set-$port.log" -- \
        env "$MARK" "${BRISK_ENV[@]}" BRISK_ADDR="127.0.0.1:$port" BRISK_DATABASE_URL="$PRIMARY_URL" \
        ${READ_URL[$set]:+BRISK_DATABASE_READ_URL="${READ_URL[$set]}"} \
        "${PIN_SRV[@]}" "$BRISK_BIN" serve) ||
        { tail -n 5 "$LOGS/brisk-$set-$port.log" >&2; die "brisk on $port did not answer /health: $out"; }
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$out"
}

haproxy_cfg() { # SET: packaging/haproxy.cfg with its addresses rewritten, in WORK/haproxy-SET/
    local set="$1" d="$WORK/haproxy-$1" cfg i=0 p
    mkdir -p "$d"
    cp "$ROOT"/packaging/haproxy-50*.http "$d/" # default-path config: errorfiles beside the config
    cfg=$(cat "$ROOT/packaging/haproxy.cfg")
    [ "$(grep -c '127\.0\.0\.1:8080' <<<"$cfg")" = 1 ] || die "packaging/haproxy.cfg does not bind 127.0.0.1:8080 once"
    cfg=${cfg//127.0.0.1:8080/127.0.0.1:${FRONT[$set]}}
    for p in ${BPORTS[$set]}; do
        [ "$(grep -c "127\.0\.0\.1:$((8081 + i))" <<<"$cfg")" = 1 ] ||
            die "packaging/haproxy.cfg does not name 127.0.0.1:$((8081 + i)) once"
        cfg=${cfg//127.0.0.1:$((8081 + i))/127.0.0.1:$p}
        i=$((i + 1))
    done
    [ "$(grep -cE '^\s*server\s' <<<"$cfg")" = 3 ] || die "packaging/haproxy.cfg has other than 3 server lines"
    printf '%s\n' "$cfg" >"$d/haproxy.cfg"
    echo "$d/haproxy.cfg"
}

probe_200() { # PORT PATH: 0 when GET PATH answers 200
    python3 - "$1" "$2" <<'EOF'
import http.client, sys
try:
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=2)
    c.request("GET", sys.argv[2])
    sys.exit(0 if c.getresponse().status == 200 else 1)
except OSError:
    sys.exit(1)
EOF
}

for set in A R; do
    pids=""
    for port in ${BPORTS[$set]}; do pids+="$(start_brisk "$set" "$port") "; done
    BPIDS[$set]="$pids"
    step "brisk: set $set, 3 processes on ports ${BPORTS[$set]}$([ "$set" = R ] && echo ", reads on the replica")"
done

step "seed: $SEED_USERS users through POST /users"
IDS=$(seed_users "${BPORTS[A]%% *}" "$SEED_USERS" scale) || die "seeding failed"
psql -X -q "$PRIMARY_URL" -c "ANALYZE users" >/dev/null
# the replica must have every seeded user before it is read
LSN=$(psql -X -At "$PRIMARY_URL" -c "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 300); do
    [ "$(psql -X -At "$REPLICA_URL" -c "SELECT pg_last_wal_replay_lsn() >= '$LSN'::pg_lsn")" = t ] && break
    sleep 0.1
done
[ "$(psql -X -At "$REPLICA_URL" -c "SELECT pg_last_wal_replay_lsn() >= '$LSN'::pg_lsn")" = t ] ||
    die "the replica did not catch up with the seed"

for set in A R; do
    cfg=$(haproxy_cfg "$set")
    env "$MARK" "${PIN_SRV[@]}" "$HAPROXY" -db -f "$cfg" </dev/null >"$LOGS/haproxy-$set.log" 2>&1 &
    HAPID[$set]=$!
done
for set in A R; do
    ok=0
    for _ in $(seq 1 100); do
        kill -0 "${HAPID[$set]}" 2>/dev/null || { cat "$LOGS/haproxy-$set.log" >&2; die "haproxy ($set) exited"; }
        if probe_200 "${FRONT[$set]}" /health; then ok=1; break; fi
        sleep 0.1
    done
    [ "$ok" = 1 ] || { cat "$LOGS/haproxy-$set.log" >&2; die "haproxy ($set) does not answer on ${FRONT[$set]}"; }
done
sleep 1.5 # a few health checks (inter 500ms, rise 2): every server in rotation
for set in A R; do
    if grep -q "is DOWN" "$LOGS/haproxy-$set.log"; then
        cat "$LOGS/haproxy-$set.log" >&2
        die "haproxy ($set) took a brisk process out of rotation"
    fi
done
step "haproxy: $("$HAPROXY" -v | head -n 1 | awk '{print $1, $3}') in front of each set (ports ${FRONT[A]}, ${FRONT[R]})"

# ---------------------------------------------------------------- measuring
CLK_TCK=$(getconf CLK_TCK)
pg_pids() {
    local d pm
    for d in "$PRIMARY_DIR" "$REPLICA_DIR"; do
        pm=$(head -n 1 "$d/data/postmaster.pid" 2>/dev/null) || continue
        echo "$pm"
        pgrep -P "$pm" || true
    done
}
# snap PIDS...: "pid ticks" per process (a process that exits or starts in the window
# does not make the sum jump: deltas are taken per pid)
snap() {
    local files=() p
    for p in "$@"; do files+=("/proc/$p/stat"); done
    awk '{print $1, $14 + $15}' "${files[@]}" 2>/dev/null || true
}
delta() { # SNAP0 SNAP1 [PID]: CPU seconds in between, of PID or of all
    printf '%s\n---\n%s\n' "$1" "$2" | awk -v t="$CLK_TCK" -v only="${3:-}" '
        /^---$/ {second = 1; next}
        NF < 2 || (only != "" && $1 != only) {next}
        !second {a[$1] = $2; next}
        {d = $2 - (($1 in a) ? a[$1] : 0); if (d > 0) s += d}
        END {printf "%.3f", s / t}'
}

# measure TARGET SECONDS TAG: one wrk window; prints the record's fields
measure() {
    local target="$1" secs="$2" tag="$3" set port out b0 b1 h0 h1 p0 p1 each="" pid
    set=${target#*-}
    case "$target" in
    haproxy-*) port=${FRONT[$set]} ;;
    direct-*) port=${BPORTS[$set]%% *} ;;
    esac
    # shellcheck disable=SC2086,SC2046 # the pid lists are words
    b0=$(snap ${BPIDS[$set]}) h0=$(snap "${HAPID[$set]}") p0=$(snap $(pg_pids))
    out=$(env BENCH_LUA_DIR="$B/wrk" BENCH_IDS="$IDS" BENCH_TAG="$tag" \
        "${PIN_LOAD[@]}" wrk -t"$LOAD_N" -c"$CONNS" -d"${secs}s" --timeout 10s --latency \
        -s "$B/wrk/get_user.lua" "http://127.0.0.1:$port/users/1" 2>&1) ||
        { echo "$out" >&2; die "wrk failed against $target"; }
    # shellcheck disable=SC2086,SC2046
    b1=$(snap ${BPIDS[$set]}) h1=$(snap "${HAPID[$set]}") p1=$(snap $(pg_pids))
    echo "$out" >>"$LOGS/wrk-$target.log"
    for pid in ${BPIDS[$set]}; do each+="${each:+,}$(delta "$b0" "$b1" "$pid")"; done
    printf '"brisk_cpu_s":%s,"brisk_cpu_each_s":[%s],"haproxy_cpu_s":%s,"pg_cpu_s":%s,"data":%s' \
        "$(delta "$b0" "$b1")" "$each" "$(delta "$h0" "$h1")" "$(delta "$p0" "$p1")" \
        "$(grep '^BENCHJSON ' <<<"$out" | tail -n 1 | cut -d' ' -f2-)"
}

record scaleout_meta "$(printf '"cores":%d,"pinning":%s,"seconds":%s,"rounds":%s,"connections":%d,"seed_users":%d,"haproxy":%s,"brisk_env":%s' \
    "$NCPU" "$(jstr "$PINNING")" "$SECONDS_W" "$ROUNDS" "$CONNS" "$SEED_USERS" \
    "$(jstr "$("$HAPROXY" -v | head -n 1 | awk '{print $3}')")" "$(jstr "${BRISK_ENV[*]}")")"

TARGETS=(haproxy-A direct-A haproxy-R direct-R)
RUN_ID=$(date +%s)
if [ "$WARMUP" != 0 ]; then
    step "warm-up: ${WARMUP}s per target"
    for t in "${TARGETS[@]}"; do measure "$t" "$WARMUP" "w$RUN_ID-$t" >/dev/null; done
fi
for ((r = 1; r <= ROUNDS; r++)); do
    for ((i = 0; i < ${#TARGETS[@]}; i++)); do
        t=${TARGETS[$(((i + r - 1) % ${#TARGETS[@]}))]}
        step "round $r/$ROUNDS: $t (${SECONDS_W}s, $CONNS connections)"
        fields=$(measure "$t" "$SECONDS_W" "r$RUN_ID-$r-$t")
        record scaleout "$(printf '"via":"%s","reads":"%s","round":%d,%s' \
            "${t%-*}" "$([ "${t#*-}" = R ] && echo replica || echo primary)" "$r" "$fields")"
    done
done
for set in A R; do
    if grep -q "is DOWN" "$LOGS/haproxy-$set.log"; then
        record note "$(printf '"text":%s' "$(jstr "scale-out: HAProxy ($set) took a process out of rotation during the run: $(grep "is DOWN" "$LOGS/haproxy-$set.log" | head -n 1)")")"
    fi
done

step "stopping"
cleanup
trap - EXIT

if [ "$STANDALONE" = 1 ]; then
    python3 - "$B" "$RAW" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import report
recs, meta = report.load(sys.argv[2])
print("\n".join(report.scaleout_section(report.aggregate(recs), meta)))
EOF
    step "raw records: $RAW"
fi
exit 0
}
