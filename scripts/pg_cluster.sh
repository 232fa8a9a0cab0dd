#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests.
#
#   scripts/pg_cluster.sh start [DIR]   create (initdb) and start a cluster in DIR, print its URL
#   scripts/pg_cluster.sh url [DIR]     print the URL of the running cluster in DIR
#   scripts/pg_cluster.sh stop [DIR]    stop it and delete DIR
#   scripts/pg_cluster.sh restart [DIR] stop (fast) and start again on the same port and data
#   scripts/pg_cluster.sh halt [DIR]    stop (fast) but keep the data; `start` brings it back
#   scripts/pg_cluster.sh crash [DIR]   stop (immediate: like a crash) but keep the data
#   scripts/pg_cluster.sh replica DIR PRIMARY_DIR
#                                       a streaming replica of the cluster in PRIMARY_DIR
#                                       (pg_basebackup -R), started in DIR; print its URL.
#                                       halt/crash/start/stop then work on DIR as on any cluster
#
# DIR defaults to $BRISK_PG_DIR, else /tmp/brisk-pg-$UID. Every command is
# idempotent: `start` on a running cluster just prints its URL, `stop` on a
# missing one does nothing. The server listens on 127.0.0.1 on a free port and
# on a unix socket in DIR/sock; authentication is `trust` (loopback only, a
# test cluster) with a superuser `brisk` and a database `brisk`. fsync is off
# (a test cluster need not survive an OS crash; a killed server still loses no
# committed transaction, synchronous_commit stays on).
#
# PostgreSQL refuses to run as root: as root the cluster belongs to the
# `postgres` system user (created by the Debian package) or, failing that, to
# a `brisk-pg` user created here.
set -euo pipefail

cmd="${1:-}"
dir="${2:-${BRISK_PG_DIR:-/tmp/brisk-pg-$(id -u)}}"

die() { echo "pg_cluster: $*" >&2; exit 1; }

find_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

bindir=$(find_bindir) || die "PostgreSQL server binaries (initdb, pg_ctl) not found; run scripts/deps.sh test"

# as_owner CMD...: run CMD as the cluster owner (ourselves unless we are root)
owner=""
if [ "$(id -u)" -eq 0 ]; then
    if id postgres >/dev/null 2>&1; then
        owner=postgres
    else
        id brisk-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin brisk-pg
        owner=brisk-pg
    fi
fi
as_owner() {
    if [ -n "$owner" ]; then
        # runuser keeps no tty and needs none; cd to / so the owner may access the cwd
        (cd / && runuser -u "$owner" -- "$@")
    else
        "$@"
    fi
}

url_of() {
    echo "postgres://brisk@127.0.0.1:$(cat "$dir/port")/brisk"
}

running() {
    [ -f "$dir/data/postmaster.pid" ] && as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_server() {
    local tries=0
    while :; do
        if as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
            -o "-p $(cat "$dir/port")" start >/dev/null; then
            return 0
        fi
        tries=$((tries + 1))
        # the port was taken between choosing and binding it: choose another
        if [ "$tries" -ge 3 ] || ! grep -q "could not bind\|Address already in use" "$dir/log" 2>/dev/null; then
            tail -n 20 "$dir/log" >&2 2>/dev/null || true
            die "cannot start PostgreSQL in $dir"
        fi
        free_port >"$dir/port"
    done
}

do_start() {
    if running; then
        url_of
        return 0
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        mkdir -p "$dir/sock"
        [ -n "$owner" ] && chown "$owner" "$dir" "$dir/sock"
        chmod 0755 "$dir"
        free_port >"$dir/port"
        as_owner "$bindir/initdb" -D "$dir/data" -U brisk --auth=trust --encoding=UTF8 \
            --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; die "initdb failed"; }
        cat >>"$dir/data/postgresql.conf" <<EOF
# scripts/pg_cluster.sh: a throwaway test cluster
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
max_connections = 400
shared_buffers = 64MB
fsync = off
full_page_writes = off
synchronous_commit = on
log_min_messages = warning
log_min_error_statement = panic
log_connections = off
EOF
        start_server
        as_owner "$bindir/psql" -X -q -h "$dir/sock" -p "$(cat "$dir/port")" -U brisk -d postgres \
            -c "CREATE DATABASE brisk" >/dev/null
    else
        start_server
    fi
    url_of
}

do_replica() {
    local primary="$1"
    if running; then
        url_of
        return 0
    fi
    [ -f "$primary/port" ] || die "no primary cluster in $primary"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        rm -rf "$dir"
        mkdir -p "$dir/sock"
        [ -n "$owner" ] && chown "$owner" "$dir" "$dir/sock"
        chmod 0755 "$dir"
        free_port >"$dir/port"
        # -c fast: a spread checkpoint would make the copy wait most of checkpoint_timeout
        as_owner "$bindir/pg_basebackup" -h "$primary/sock" -p "$(cat "$primary/port")" -U brisk \
            -D "$dir/data" -R -X stream -c fast --no-sync >"$dir/basebackup.log" 2>&1 ||
            { cat "$dir/basebackup.log" >&2; die "pg_basebackup failed"; }
        # the primary's settings came along: only the socket directory differs (the port is -p)
        echo "unix_socket_directories = '$dir/sock'" >>"$dir/data/postgresql.conf"
        echo "hot_standby_feedback = on" >>"$dir/data/postgresql.conf"
    fi
    start_server
    url_of
}

do_halt() {
    if running; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m "${1:-fast}" -w -t 30 stop >/dev/null
    fi
}

case "$cmd" in
start) do_start ;;
replica)
    [ -n "${3:-}" ] || die "usage: $0 replica DIR PRIMARY_DIR"
    do_replica "$3"
    ;;
url)
    running || die "no cluster running in $dir (run: $0 start)"
    url_of
    ;;
halt) do_halt fast ;;
crash) do_halt immediate ;;
restart)
    do_halt
    do_start
    ;;
stop)
    if [ -d "$dir" ]; then
        if [ -f "$dir/data/postmaster.pid" ]; then
            as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
        fi
        rm -rf "$dir"
    fi
    ;;
*)
    echo "usage: $0 start|url|stop|restart|halt|crash [DIR]" >&2
    exit 2
    ;;
esac
