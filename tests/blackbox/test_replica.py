"""Read replicas (BRISK_DATABASE_READ_URL; registered only with --database-url).

A throwaway primary and a streaming replica of it (scripts/pg_cluster.sh
replica): reads reach the replica; a user created and fetched at once is
found even while the replica does not replay (the by-id read falls back to
the primary); a list lags while the replica is paused, until its lag passes
BRISK_REPLICA_MAX_LAG_MS and reads move to the primary; a stopped replica
costs no 503 and /ready stays 200; db_replica_lag_seconds shows the delay."""

import os
import subprocess
import time

import harness
from harness import check, eq, fail, metric, parse_metrics, pg_cluster, request, test, uniq, wait_for


def _psql(url, sql):
    p = subprocess.run(["psql", "-X", "-At", url, "-c", sql], capture_output=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        fail("psql %r: %s" % (sql, p.stderr.decode("utf-8", "replace")[-400:]))
    return p.stdout.decode().strip()


def _lag(port):
    r = request(port, "GET", "/metrics")
    return metric(parse_metrics(r.text()), "db_replica_lag_seconds")


def _list_ids(port):
    r = request(port, "GET", "/users?limit=100")
    eq(r.status, 200, "GET /users")
    return [u["id"] for u in r.json()["users"]]


if harness.pg_mode():

    @test(server=None)
    def read_replica_routing_and_fallback(ctx):
        base = "/tmp/brisk-rep-%d-%s" % (os.getpid(), uniq("c"))
        primary_dir, replica_dir = base + "-p", base + "-r"
        srv = None
        try:
            primary = pg_cluster("start", primary_dir)
            replica = pg_cluster("replica", replica_dir, primary_dir)
            eq(_psql(replica, "SELECT pg_is_in_recovery()"), "t", "the replica is a standby")
            srv = ctx.new_server(env={"BRISK_THREADS": "1", "BRISK_DATABASE_URL": primary,
                                      "BRISK_DATABASE_READ_URL": replica, "BRISK_BG_WORKERS": "0",
                                      "BRISK_REPLICA_MAX_LAG_MS": "1500"}, name="replica").start()
            # the migration reaches the replica by streaming; reads use it once measured
            check(wait_for(lambda: _lag(srv.port) is not None, 10), "no db_replica_lag_seconds")
            r = request(srv.port, "POST", "/users", {"name": "Rep", "email": "%s@example.com" % uniq("r")})
            eq(r.status, 201, "create")
            u = r.json()
            before = int(_psql(replica, "SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database "
                                        "WHERE datname = 'brisk'"))
            for _ in range(20):
                g = request(srv.port, "GET", "/users/%d" % u["id"])
                eq((g.status, g.json()), (200, u), "get")
            # the replica's backends publish their counts once idle for a moment
            def commits():
                return int(_psql(replica, "SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database "
                                          "WHERE datname = 'brisk'"))
            check(wait_for(lambda: commits() - before >= 20, 8, 0.5),
                  "reads did not reach the replica (%d transactions there)" % (commits() - before))
            eq(_psql(replica, "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'brisk'"),
               "t", "brisk connections on the replica")

            # replay paused: new rows are not on the replica, by-id reads still find them
            _psql(replica, "SELECT pg_wal_replay_pause()")
            created = []
            for i in range(5):
                r = request(srv.port, "POST", "/users", {"name": "P%d" % i, "email": "%s@example.com" % uniq("p")})
                eq(r.status, 201, "create while the replica is paused")
                created.append(r.json())
                g = request(srv.port, "GET", "/users/%d" % r.json()["id"])
                eq((g.status, g.json()), (200, r.json()), "create-then-get while the replica lags")
            eq(_psql(replica, "SELECT count(*) FROM users WHERE id = %d" % created[-1]["id"]), "0",
               "the paused replica has not replayed the new user")
            # the list lags at first (a replica read), then its lag passes 1.5 s: primary reads
            check(wait_for(lambda: created[-1]["id"] in _list_ids(srv.port), 10, 0.2),
                  "the list never showed the new users (lag %r)" % _lag(srv.port))
            # the gauge is copied from the handles once a second: it may trail the skip by a tick
            check(wait_for(lambda: (_lag(srv.port) or 0) >= 1.5, 3, 0.2),
                  "db_replica_lag_seconds %r for a replica skipped for being over 1.5 s behind"
                  % _lag(srv.port))
            _psql(replica, "SELECT pg_wal_replay_resume()")

            # the replica stops: reads go to the primary, no 503; /ready stays 200
            pg_cluster("halt", replica_dir)
            t_end = time.time() + 3
            statuses = []
            while time.time() < t_end:
                statuses.append(request(srv.port, "GET", "/users/%d" % u["id"], timeout=15).status)
                statuses.append(request(srv.port, "GET", "/users?limit=5", timeout=15).status)
            check(set(statuses) == {200}, "reads while the replica is down: %r" %
                  sorted({s: statuses.count(s) for s in set(statuses)}.items()))
            eq(request(srv.port, "GET", "/ready").status, 200, "/ready with the replica down")
            pg_cluster("start", replica_dir)
            reason = srv.stop()
            check(reason is None, reason or "")
        finally:
            if srv:
                srv.kill()
            pg_cluster("stop", replica_dir)
            pg_cluster("stop", primary_dir)

    @test(server=None)
    def read_url_needs_postgres_primary(ctx):
        p = subprocess.run([ctx.binary, "serve"], capture_output=True, timeout=20,
                           env=dict(os.environ, BRISK_DATABASE_URL="sqlite:/tmp/brisk-rep-x.db",
                                    BRISK_DATABASE_READ_URL="postgres://127.0.0.1:1/x"))
        eq(p.returncode, 2, "exit status")
        err = p.stderr.decode()
        check("BRISK_DATABASE_READ_URL" in err and "PostgreSQL" in err, "message: %r" % err[-300:])
