/*
 * compress.h - response compression for every protocol of the HTTP layer:
 * Accept-Encoding negotiation (RFC 9110 12.5.3) and gzip of JSON bodies with
 * one libdeflate compressor per event loop. h1.c calls
 * http_compress_response where it queues a response; another protocol calls
 * it at the same point. The rules (which responses, the threshold, q-values,
 * identity;q=0) are in docs/http.md.
 */
#ifndef BRISK_HTTP_COMPRESS_H
#define BRISK_HTTP_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>

struct http_ctx;
struct http_compressor;

/* What the client's Accept-Encoding fields say: q-values in thousandths, -1 when absent. */
struct http_accept_enc {
    bool present; /* at least one Accept-Encoding field (an empty one counts) */
    int gzip;     /* "gzip" or "x-gzip" */
    int identity;
    int star; /* "*": every coding not named */
};

enum http_coding { HTTP_CODING_IDENTITY, HTTP_CODING_GZIP };

/* Nothing sent yet: no Accept-Encoding field. */
void http_accept_enc_init(struct http_accept_enc *a);

/*
 * Add one Accept-Encoding field value (several fields are one list). Elements
 * that are not `coding [OWS ";" OWS "q=" qvalue]` are ignored; a coding named
 * twice keeps its lowest q-value.
 */
void http_accept_enc_parse(struct http_accept_enc *a, const char *s, size_t n);

/*
 * The coding for a body of len bytes: gzip when it is acceptable, not less
 * preferred than identity, and len >= min_bytes (whatever len when identity is
 * refused); identity otherwise (also when nothing is acceptable: the server
 * then sends identity anyway). min_bytes 0: compression is off, always identity.
 */
enum http_coding http_accept_enc_choose(const struct http_accept_enc *a, size_t len,
                                        size_t min_bytes);

enum http_body_coding {
    HTTP_BODY_PLAIN,      /* not negotiable (compression off, no body, not JSON): no Vary */
    HTTP_BODY_NEGOTIATED, /* sent as it is, but it could vary: Vary: Accept-Encoding */
    HTTP_BODY_GZIP,       /* c->body now holds the gzip stream: Content-Encoding + Vary */
};

/*
 * Decide the response coding of c (status, content type NULL = JSON) from its
 * request's Accept-Encoding fields (only read when head_parsed: a request
 * refused mid-head has none) and, for gzip, compress c->body in place with the
 * loop's compressor (its buffer trades places with c->body, so nothing is
 * copied or allocated per request once warm). A body that would not shrink is
 * sent as it is unless identity was refused; one over 1 MiB is always sent as
 * it is (compression runs on the loop thread).
 */
enum http_body_coding http_compress_response(struct http_ctx *c, int status, const char *ctype,
                                             bool head_parsed);

/* Free a loop's compressor and its buffer (NULL is fine). */
void http_compressor_free(struct http_compressor *z);

#endif
