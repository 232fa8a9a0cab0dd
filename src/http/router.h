/*
 * router.h - method + path dispatch with {param} segments.
 *
 * A route table is a static array of struct route (see src/app/routes.c).
 * Patterns are split into segments once at router_init; matching walks the
 * request path's raw segments, percent-decoding a segment only when it holds
 * a '%'. No allocation: decoded parameters go into caller-provided scratch.
 */
#ifndef BRISK_ROUTER_H
#define BRISK_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/str.h"
#include "http/parser.h"

#define ROUTER_MAX_PARAMS 4
#define ROUTER_MAX_SEGMENTS 8
#define ROUTER_MAX_ROUTES 64

struct http_ctx;
typedef void (*http_handler_fn)(struct http_ctx *c);

enum route_flags {
    ROUTE_PUBLIC = 1, /* no bearer token needed (health, ready, metrics) */
};

struct route {
    enum http_method method;
    const char *pattern; /* "/users/{id}": literal segments and {name} parameters */
    http_handler_fn handler;
    unsigned flags;
    uint64_t max_body; /* largest request body in bytes; 0: the server's default limit */
};

struct router_match {
    int route;      /* index into the table of the matched route, -1 if none */
    int path_route; /* first route whose path matched (any method), -1 if none: metrics label */
    unsigned allow; /* bitmask (1 << method) of methods the path supports, for 405 + Allow */
    size_t nparams;
    struct str params[ROUTER_MAX_PARAMS]; /* decoded, in pattern order */
};

/*
 * Prepare a table of n routes. Returns 0, or -1 (logged) for a bad pattern or
 * a table larger than ROUTER_MAX_ROUTES. The table must outlive the router.
 */
int router_init(const struct route *table, size_t n);

/* The table given to router_init and its size. */
const struct route *router_table(size_t *out_n);

/*
 * Match method + raw path. scratch must hold at least path.len bytes; decoded
 * parameters point into it. Returns true when a route matched (out->route >= 0).
 * A path with a malformed %-escape or a decoded '/' or NUL matches nothing.
 */
bool router_match(enum http_method method, struct str path, char *scratch,
                  struct router_match *out);

#endif
