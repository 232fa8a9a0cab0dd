/*
 * system.c - liveness, readiness and metrics endpoints.
 */
#include "app/app.h"
#include "app/dbstats.h"
#include "db/db.h"
#include "http/metrics.h"

void handle_health(struct http_ctx *c)
{
    /* liveness never touches the database: a slow database must not get us restarted */
    buf_append(http_body(c), "ok", 2);
    http_respond(c, 200, "text/plain; charset=utf-8");
}

static void ready_done(void *ctx, enum db_status st)
{
    struct http_ctx *c = ctx;
    if (st == DB_OK) {
        buf_append_cstr(http_body(c), "{\"status\":\"ready\"}");
        http_respond(c, 200, NULL);
    } else {
        dbstats_failed(st);
        http_respond_error(c, 503, "database unavailable");
    }
}

void handle_ready(struct http_ctx *c)
{
    db_ping(app_db(c), app_ready_timeout_ms(), ready_done, c);
}

/* brisk_build_info: the usual constant-1 info gauge; BRISK_VERSION is the Makefile's VERSION. */
static void render_build_info(struct buf *b)
{
    buf_append_cstr(b, "# HELP brisk_build_info A metric with a constant '1' value labeled by the "
                       "version brisk was built from.\n"
                       "# TYPE brisk_build_info gauge\nbrisk_build_info{version=\"");
    metrics_append_label_value(b, BRISK_VERSION);
    buf_append_cstr(b, "\"} 1\n");
}

void handle_metrics(struct http_ctx *c)
{
    metrics_render(http_body(c));
    app_metrics_render(http_body(c), c);
    render_build_info(http_body(c));
    http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8");
}
