/*
 * app.h - the application: brisk's endpoints (users, orders, health, metrics)
 * and what it keeps per event loop (its database handle).
 *
 * The route table lives in routes.c; each handler follows the contract of
 * http/request.h (exactly one http_respond* per request).
 */
#ifndef BRISK_APP_H
#define BRISK_APP_H

#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "http/request.h"
#include "http/router.h"
#include "http/server.h"
#include "json/json.h"

struct db;
struct db_config;

struct app_config {
    const struct db_config *db;
    int threads;             /* event-loop threads (the per-loop gauges) */
    uint64_t max_batch_body; /* body limit of POST /orders/process */
    int ready_timeout_ms;    /* GET /ready: longest wait for the database's answer */
    int (*start)(void);      /* process-wide services: background workers */
    void (*stop)(void);
    int (*harden)(void); /* privileges and syscall filter, once everything is open */
};

/*
 * The route table, for router_init, with the body limits of cfg. The table
 * is static: call once at start-up.
 */
const struct route *app_routes(const struct app_config *cfg, size_t *out_n);

/*
 * The server hooks of the application (server.h): per loop, open a database
 * handle, flush its deferred work after each batch of events, tick it each
 * second (gauges for /metrics), close it after the drain. cfg must outlive
 * the server. Returns with .arg set.
 */
struct server_app app_server_hooks(struct app_config *cfg);

/* The database handle of the loop serving c. */
struct db *app_db(const struct http_ctx *c);

/* GET /ready's longest wait for the database (BRISK_READY_TIMEOUT_MS). */
int app_ready_timeout_ms(void);

/* Append the application's metric families (storage pool, background work) to b. */
void app_metrics_render(struct buf *b, const struct http_ctx *c);

/*
 * Parse the request body as JSON. Answers the request itself and returns NULL
 * when the Content-Type is not application/json (415), the body is missing or
 * not valid JSON (400 naming the problem) or too large to parse (413); the
 * handler then just returns.
 */
const struct json_value *app_json_body(struct http_ctx *c);

/* Handlers (one line each in routes.c). */
void handle_health(struct http_ctx *c);
void handle_ready(struct http_ctx *c);
void handle_metrics(struct http_ctx *c);
void handle_user_create(struct http_ctx *c);
void handle_user_get(struct http_ctx *c);
void handle_user_list(struct http_ctx *c);
void handle_user_update(struct http_ctx *c);
void handle_user_delete(struct http_ctx *c);
void handle_order_create(struct http_ctx *c);
void handle_order_get(struct http_ctx *c);
void handle_user_orders(struct http_ctx *c);
void handle_user_order_count(struct http_ctx *c);
void handle_orders_process(struct http_ctx *c);
/* GET /openapi.json: the OpenAPI 3.1 document api/openapi.json, embedded at build time. */
void handle_openapi(struct http_ctx *c);

#endif
