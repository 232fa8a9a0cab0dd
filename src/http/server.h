/*
 * server.h - the HTTP/1.1 server: connections on the event loops, and the
 * small API request handlers use.
 *
 * A handler receives a struct http_ctx, reads the request (params, query,
 * JSON body), writes a body with the json writer into http_body(c), and
 * finishes with exactly one http_respond*() call - before it returns or later
 * from a database callback on the same loop thread. Everything a handler
 * allocates from http_alloc() dies when the response is done.
 */
#ifndef BRISK_SERVER_H
#define BRISK_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/str.h"
#include "http/parser.h"
#include "http/router.h"
#include "json/json.h"

struct db;
struct loop;

struct server_config {
    const char *addr_host; /* numeric IPv4/IPv6 address to bind ("0.0.0.0", "::") */
    int port;
    int threads;
    struct http_limits limits; /* limits.max_body: bodies of ordinary routes */
    uint64_t max_batch_body;   /* bodies of ROUTE_BATCH_BODY routes (POST /orders/process) */
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t drain_ms;
    const char *api_token; /* NULL or "" = no auth */
    const struct db_config *db;
    /* started after signals are blocked and before the loops; stopped after them */
    int (*start_services)(void);
    void (*stop_services)(void);
    /* called once everything is bound and opened, before the loops serve:
     * the place to drop privileges and install the syscall filter */
    int (*harden)(void);
};

/*
 * Bind the listeners, open the per-thread database handles and run one event
 * loop per thread until SIGTERM/SIGINT, then drain and return. The calling
 * thread waits for the signal. Returns 0 on a clean shutdown, -1 when
 * start-up failed (logged).
 */
int server_run(const struct server_config *cfg);

/* ---- handler API ---- */

struct http_ctx;

/* The parsed request (headers, method, raw path and query). */
const struct http_request *http_req(const struct http_ctx *c);

/* Path parameter i of the matched route (decoded). */
struct str http_param(const struct http_ctx *c, size_t i);

/* The request body (decoded from chunked if needed); len 0 when none. */
struct str http_body_raw(const struct http_ctx *c);

/*
 * Check that a JSON body was sent: answers 400 (no body) or 415 (another
 * Content-Type) itself and returns false; true when the body may be parsed.
 * For handlers that parse off the loop (http_json_body does this check too).
 */
bool http_require_json(struct http_ctx *c);

/*
 * The request arena behind http_alloc. A handler that hands its work to the
 * CPU pool may use it from that one worker at a time while the request waits.
 */
struct arena *http_arena(struct http_ctx *c);

/*
 * Parse the body as JSON. Answers the request itself and returns NULL when the
 * Content-Type is not application/json (415), the body is missing or not valid
 * JSON (400 naming the problem) or too large to parse (413); the handler then
 * just returns.
 */
const struct json_value *http_json_body(struct http_ctx *c);

/* The per-thread database handle. */
struct db *http_db(const struct http_ctx *c);

/* The event loop serving this request (for workpool_run completions). */
struct loop *http_loop(const struct http_ctx *c);

/* Request-scoped memory (zeroed), freed when the response is done. NULL if over the cap. */
void *http_alloc(struct http_ctx *c, size_t n);

/* The response body buffer: append JSON with json_write_* / buf_append_*. */
struct buf *http_body(struct http_ctx *c);

/* Add a response header (name and value copied). */
void http_add_header(struct http_ctx *c, const char *name, struct str value);

/*
 * Finish the request with status and the body written to http_body(c), sent as
 * content_type (NULL: application/json). 204/304 send no body.
 */
void http_respond(struct http_ctx *c, int status, const char *content_type);

/* Finish with {"error":"msg"} (msg is JSON-escaped). */
void http_respond_error(struct http_ctx *c, int status, const char *msg);

#endif
