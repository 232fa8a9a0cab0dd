/*
 * metrics.h - HTTP request counters and latency histograms, Prometheus text
 * output.
 *
 * Each loop thread writes only its own block (plain stores through relaxed
 * atomics: no lock, no contended cache line on the request path); a scrape
 * sums the blocks of all threads.
 */
#ifndef BRISK_METRICS_H
#define BRISK_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "http/parser.h"

/*
 * Allocate blocks for nthreads threads and nroutes routes (labels come from the
 * router's table) and note the process start time. Call once before the loops
 * start. Returns 0 or -1.
 */
int metrics_init(int nthreads, size_t nroutes);

/* Free what metrics_init allocated. */
void metrics_free(void);

/* Count one response. route: router index, or -1 when no path matched; h2: it went
 * over HTTP/2 (label proto="h2", else "http/1.1"). */
void metrics_record(int thread, int route, enum http_method method, int status, bool h2,
                    uint64_t duration_ns);

/*
 * A request was handed to its handler (+1) or answered (-1): the
 * http_requests_in_flight gauge. Only the thread's own loop calls it.
 */
void metrics_in_flight(int thread, int delta);

/*
 * Append the server's exposition (text format 0.0.4) to b: the HTTP metrics
 * for all threads, then the process_* families (http/procmetrics.h). The
 * application appends its own families (storage, background work, build
 * info) after it.
 */
void metrics_render(struct buf *b);

/*
 * Append v as the inside of a label value: backslash, double quote and line
 * feed escaped as the text format requires.
 */
void metrics_append_label_value(struct buf *b, const char *v);

#endif
