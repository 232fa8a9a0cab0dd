/*
 * routes.c - every endpoint of brisk, in one table.
 *
 * Literal routes come before parameter routes with the same shape, because the
 * first match wins. See docs/adding-an-endpoint.md.
 */
#include "app/app.h"

static struct route k_routes[] = {
    {HTTP_GET, "/health", handle_health, ROUTE_PUBLIC, 0},
    {HTTP_GET, "/ready", handle_ready, ROUTE_PUBLIC, 0},
    {HTTP_GET, "/metrics", handle_metrics, ROUTE_PUBLIC, 0},
    {HTTP_GET, "/openapi.json", handle_openapi, ROUTE_PUBLIC, 0},
    {HTTP_POST, "/users", handle_user_create, 0, 0},
    {HTTP_GET, "/users", handle_user_list, 0, 0},
    {HTTP_GET, "/users/{id}", handle_user_get, 0, 0},
    {HTTP_PATCH, "/users/{id}", handle_user_update, 0, 0},
    {HTTP_DELETE, "/users/{id}", handle_user_delete, 0, 0},
    {HTTP_GET, "/users/{id}/orders", handle_user_orders, 0, 0},
    {HTTP_GET, "/users/{id}/orders/count", handle_user_order_count, 0, 0},
    {HTTP_POST, "/orders", handle_order_create, 0, 0},
    {HTTP_POST, "/orders/process", handle_orders_process, 0, 0 /* batch limit, below */},
    {HTTP_GET, "/orders/{id}", handle_order_get, 0, 0},
};

const struct route *app_routes(const struct app_config *cfg, size_t *out_n)
{
    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++)
        if (k_routes[i].handler == handle_orders_process)
            k_routes[i].max_body = cfg->max_batch_body;
    *out_n = sizeof k_routes / sizeof k_routes[0];
    return k_routes;
}
