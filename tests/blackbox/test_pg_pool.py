"""BRISK_DB_POOL: PostgreSQL connections per event-loop thread (registered only
with --database-url). Bad values are refused at start-up by test_ops'
config_bad_values_exit_2; here the setting is shown to be obeyed, from the
server's own gauge and from PostgreSQL's view of who is connected."""

import time

import harness
from harness import eq, fail, parse_metrics, request, test


def _backends(url, dbname):
    """Client backends PostgreSQL has open on database `dbname`."""
    out = harness.psql(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' "
                            "AND backend_type = 'client backend'" % dbname)
    return int(out.strip())


if harness.pg_mode():

    @test(server=None)
    def pool_size_is_obeyed(ctx):
        # 2 loops x 5 connections, no background workers (they would add their own).
        srv = ctx.new_server(env={"BRISK_THREADS": "2", "BRISK_DB_POOL": "5",
                                  "BRISK_BG_WORKERS": "0"}, name="pool").start()
        try:
            dbname = srv.db_url.rsplit("/", 1)[1].split("?")[0]
            deadline = time.time() + 15
            conns = None
            while time.time() < deadline:
                m = parse_metrics(request(srv.port, "GET", "/metrics").text())
                conns = [v for k, v in m.items() if k[0] == "db_pool_connections"]
                if conns and conns[0] == 10:
                    break
                time.sleep(0.1)
            eq(conns, [10.0], "db_pool_connections with 2 threads x BRISK_DB_POOL=5")
            eq(_backends(harness.DATABASE_URL, dbname), 10, "client backends on the server's database")
            # The pool serves: concurrent reads on every connection still answer.
            r = request(srv.port, "POST", "/users", {"name": "Pool", "email": "pool@example.com"})
            eq(r.status, 201, "create on a pool of 5")
            uid = r.json()["id"]
            for _ in range(20):
                eq(request(srv.port, "GET", "/users/%d" % uid).status, 200, "read on a pool of 5")
        finally:
            why = srv.stop()
            if why:
                fail(why)
