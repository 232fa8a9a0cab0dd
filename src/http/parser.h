/*
 * parser.h - strict, zero-copy HTTP/1.1 request parser and chunked decoder.
 *
 * The parser is stateless: it is handed the bytes received so far and either
 * reports "incomplete", rejects the request with the status to answer, or
 * fills a struct http_request whose slices point into the caller's buffer.
 * It follows RFC 9112 with no leniency (see ../shared/spec/API.md, wire rules):
 * CRLF only, no obs-fold, no whitespace before ':', no control bytes, strict
 * Content-Length, Transfer-Encoding only "chunked", exactly one Host in 1.1.
 */
#ifndef BRISK_HTTP_PARSER_H
#define BRISK_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/str.h"

enum http_method {
    HTTP_GET,
    HTTP_HEAD,
    HTTP_POST,
    HTTP_PUT,
    HTTP_PATCH,
    HTTP_DELETE,
    HTTP_OPTIONS,
    HTTP_OTHER, /* a valid token we do not implement (TRACE, CONNECT, FOO...) */
    HTTP_METHOD_COUNT
};

enum http_body_kind { HTTP_BODY_NONE, HTTP_BODY_LENGTH, HTTP_BODY_CHUNKED };

struct http_limits {
    size_t max_header_bytes; /* request line + headers incl. final CRLF; default 16384 */
    size_t max_headers;      /* header fields; default 100 */
    uint64_t max_body;       /* decoded body bytes; default 8 MiB */
};

struct http_header {
    struct str name;  /* as sent (case preserved) */
    struct str value; /* leading/trailing SP/HTAB trimmed */
};

struct http_request {
    enum http_method method;
    struct str method_str;
    struct str target; /* request-target as sent */
    /*
     * path: raw (still percent-encoded), without query. Starts with '/' except
     * for "OPTIONS *" where it is "*". For an absolute-form target
     * ("http://host/p?q") it is the part from the first '/' after the
     * authority; when there is none it is "/" pointing to a static string
     * (the only slice that may lie outside the caller's buffer).
     */
    struct str path;
    struct str query;  /* bytes after '?', raw; len 0 when absent or empty (ptr NULL when absent) */
    int minor_version; /* 0 for HTTP/1.0, 1 for HTTP/1.1 */

    /* caller provides the array; capacity is limits.max_headers */
    struct http_header *headers;
    size_t num_headers;

    /* interpretation of the framing headers */
    enum http_body_kind body_kind;
    uint64_t content_length; /* valid when body_kind == HTTP_BODY_LENGTH */
    bool keep_alive; /* 1.1 default true unless "Connection: close"; 1.0 only with keep-alive */
    bool expect_continue; /* "Expect: 100-continue" present */

    /*
     * frequently used fields, found while parsing; len 0 when absent.
     * host: the Host value, or for an absolute-form target its authority
     * (RFC 9112 3.3); Host is still required (exactly one in 1.1) and checked.
     * content_type / authorization: a duplicate field is a 400.
     * request_id: the first X-Request-Id.
     */
    struct str host;
    struct str content_type;
    struct str authorization;
    struct str request_id; /* X-Request-Id as sent (not validated here) */
};

/*
 * Parse the request head in buf[0..len).
 *
 * req->headers must point to an array of lim->max_headers entries.
 * Returns:
 *   > 0  number of bytes of the head (request line .. the empty line's CRLF);
 *        *req is filled and body framing was validated.
 *   -2   incomplete: more bytes needed (only while len < lim->max_header_bytes).
 *   -1   invalid: *out_status holds the status to answer, and the connection
 *        must be closed afterwards:
 *        400 malformed / ambiguous framing / Host rule broken,
 *        431 head larger than max_header_bytes or more than max_headers fields,
 *        413 Content-Length above max_body,
 *        417 an Expect other than 100-continue,
 *        501 a Transfer-Encoding other than exactly "chunked",
 *        505 an HTTP version other than 1.0 / 1.1.
 *        Precisely: a syntactically malformed Transfer-Encoding list (empty
 *        element, bad token) is 400, a well-formed one other than exactly one
 *        "chunked" is 501; every duplicate Content-Length is 400 (even equal);
 *        TE in an HTTP/1.0 request is 400; "HTTP/" DIGIT "." DIGIT other than
 *        1.0/1.1 is 505, any other version text 400. One CRLF before the
 *        request line is skipped (RFC 9112 2.2) and counted in the head.
 *        See the top of parser.c for every choice.
 * On -1 the method/path fields that were parsed before the error stay valid
 * (used for logging) and the rest of *req is unspecified.
 */
int http_parse_request(const char *buf, size_t len, const struct http_limits *lim,
                       struct http_request *req, int *out_status);

/* Look up a header by name (ASCII case-insensitive); returns false if absent. */
bool http_header_get(const struct http_request *req, const char *name, struct str *out_value);

/*
 * Incremental chunked-body decoder (RFC 9112 section 7.1), in place.
 *
 * Zero-initialise before the first call (memset or = {0}).
 * Each call decodes buf[0..*len): the decoded data is moved to the front of
 * buf and *len is set to the number of decoded bytes now at buf[0..*len).
 * The caller keeps those bytes and next time passes only the bytes that
 * follow them (the undecoded remainder, which this function leaves directly
 * after the decoded data, plus newly received bytes).
 * Returns:
 *   >= 0 the body is complete (last chunk and trailers consumed); the value is the
 *        number of bytes after the body that belong to the next request; they
 *        sit at buf[*len .. *len + value).
 *   -2   more bytes needed; every byte passed was consumed (decoded, or a
 *        piece of a chunk-size line / trailer absorbed into the decoder's
 *        state byte by byte), so the caller passes only new bytes next time.
 *   -1   malformed (*out_status = 400), body larger than max_body (413), or
 *        trailer section larger than max_header_bytes (431). *len still
 *        counts the data decoded before the error. Further calls return -1
 *        with the same status.
 * Trailer fields are parsed strictly like header fields and discarded; the
 * chunk-size line (with extensions, including its CRLF) is limited to 4096
 * bytes (400) and the trailer section (field lines plus the final CRLF) to
 * max_header_bytes (431). No whitespace is allowed between the chunk-size and
 * ';'; the chunk-ext after ';' must start with a token character and may then
 * hold any field-value bytes (no CTL, no DEL). The 413 is raised as soon as a
 * chunk-size line announces more than max_body in total, before its data.
 * After completion, further calls return all bytes passed as leftover.
 */
struct http_chunked {
    int state;
    uint64_t chunk_left;  /* data bytes left in the current chunk */
    uint64_t total;       /* decoded bytes so far, checked against max_body */
    size_t line_len;      /* bytes of the current size/trailer line seen so far */
    size_t trailer_bytes; /* bytes of the trailer section so far */
};
ssize_t http_chunked_decode(struct http_chunked *d, char *buf, size_t *len, uint64_t max_body,
                            size_t max_header_bytes, int *out_status);

/* Method name to enum; HTTP_OTHER for a token we do not implement. */
enum http_method http_method_from_str(struct str m);

/* Canonical method name ("GET" ...), "OTHER" for HTTP_OTHER. */
const char *http_method_name(enum http_method m);

#endif
