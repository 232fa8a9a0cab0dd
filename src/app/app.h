/*
 * app.h - the application: brisk's endpoints (users, orders, health, metrics).
 *
 * The route table lives in routes.c; each handler follows the contract of
 * server.h (exactly one http_respond* per request).
 */
#ifndef BRISK_APP_H
#define BRISK_APP_H

#include <stddef.h>

#include "http/router.h"
#include "http/server.h"

/* The route table, for router_init. */
const struct route *app_routes(size_t *out_n);

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
void handle_orders_process(struct http_ctx *c);

#endif
