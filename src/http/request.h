/*
 * request.h - the API request handlers use, whatever protocol carried the
 * request.
 *
 * A handler receives a struct http_ctx, reads the request (params, query,
 * body), writes a body into http_body(c), and finishes with exactly one
 * http_respond*() call - before it returns or later from a callback on the
 * same loop thread. Everything a handler allocates from http_alloc() dies
 * when the response is done.
 */
#ifndef BRISK_HTTP_REQUEST_H
#define BRISK_HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/str.h"
#include "http/parser.h"

struct arena;
struct http_ctx;
struct loop;

/* The parsed request (headers, method, raw path and query). */
const struct http_request *http_req(const struct http_ctx *c);

/* Path parameter i of the matched route (decoded). */
struct str http_param(const struct http_ctx *c, size_t i);

/* The request body (decoded from chunked if needed); len 0 when none. */
struct str http_body_raw(const struct http_ctx *c);

/*
 * Check that a JSON body was sent: answers 400 (no body) or 415 (another
 * Content-Type) itself and returns false; true when the body may be parsed.
 */
bool http_require_json(struct http_ctx *c);

/*
 * The request arena behind http_alloc. A handler that hands its work to the
 * CPU pool may use it from that one worker at a time while the request waits.
 */
struct arena *http_arena(struct http_ctx *c);

/* The per-loop state the application's loop_init returned (server.h). */
void *http_loop_state(const struct http_ctx *c);

/* The event loop serving this request (for workpool_run completions). */
struct loop *http_loop(const struct http_ctx *c);

/* Request-scoped memory (zeroed), freed when the response is done. NULL if over the cap. */
void *http_alloc(struct http_ctx *c, size_t n);

/* The response body buffer: append JSON with json_write_* / buf_append_*. */
struct buf *http_body(struct http_ctx *c);

/*
 * Add a response header (name and value copied). name must be a token; a
 * value holding CR or LF is refused (logged, the header is not sent).
 */
void http_add_header(struct http_ctx *c, const char *name, struct str value);

/*
 * Finish the request with status and the body written to http_body(c), sent as
 * content_type (NULL: application/json). 204/304 send no body.
 */
void http_respond(struct http_ctx *c, int status, const char *content_type);

/* Finish with {"error":"msg"} (msg is JSON-escaped). */
void http_respond_error(struct http_ctx *c, int status, const char *msg);

#endif
