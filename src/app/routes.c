/*
 * routes.c - every endpoint of brisk, in one table.
 *
 * Literal routes come before parameter routes with the same shape, because the
 * first match wins. See docs/adding-an-endpoint.md.
 */
#include "app/app.h"

static const struct route k_routes[] = {
    {HTTP_GET, "/health", handle_health, ROUTE_PUBLIC},
    {HTTP_GET, "/ready", handle_ready, ROUTE_PUBLIC},
    {HTTP_GET, "/metrics", handle_metrics, ROUTE_PUBLIC},
    {HTTP_POST, "/users", handle_user_create, 0},
    {HTTP_GET, "/users", handle_user_list, 0},
    {HTTP_GET, "/users/{id}", handle_user_get, 0},
    {HTTP_PATCH, "/users/{id}", handle_user_update, 0},
    {HTTP_DELETE, "/users/{id}", handle_user_delete, 0},
    {HTTP_GET, "/users/{id}/orders", handle_user_orders, 0},
    {HTTP_POST, "/orders", handle_order_create, 0},
    {HTTP_POST, "/orders/process", handle_orders_process, ROUTE_BATCH_BODY},
    {HTTP_GET, "/orders/{id}", handle_order_get, 0},
};

const struct route *app_routes(size_t *out_n)
{
    *out_n = sizeof k_routes / sizeof k_routes[0];
    return k_routes;
}
