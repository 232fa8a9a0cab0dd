/*
 * metrics.c - per-thread counters, summed at scrape time (see metrics.h).
 */
#include "http/metrics.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "base/log.h"
#include "http/procmetrics.h"
#include "http/router.h"

/* Statuses the server can send; anything else is counted under "other". */
static const int k_statuses[] = {100, 200, 201, 204, 400, 401, 404, 405, 408, 409,
                                 413, 415, 417, 422, 431, 500, 501, 503, 505};
#define NSTATUS (ARRAY_LEN(k_statuses) + 1)

/* Latency bucket upper bounds in seconds (Prometheus default-like, finer at the low end). */
static const double k_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                  0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
#define NBUCKET (ARRAY_LEN(k_bounds) + 1)

static const char *const k_protos[] = {"http/1.1", "h2"}; /* the ALPN names */
#define NPROTO ARRAY_LEN(k_protos)
static uint64_t k_bounds_ns[ARRAY_LEN(k_bounds)];

struct route_hist {
    _Atomic uint64_t buckets[NBUCKET]; /* not cumulative; summed at render */
    _Atomic uint64_t sum_ns;
    _Atomic uint64_t count;
};

struct thread_block {
    _Atomic uint64_t *counts; /* [route+1][method][status][proto] */
    struct route_hist *hist;  /* [route+1] */
    _Atomic int64_t in_flight;
};

static struct thread_block *g_blocks;
static int g_nthreads;
static size_t g_nroutes; /* including the "unmatched" slot 0 */

int metrics_init(int nthreads, size_t nroutes)
{
    g_nthreads = nthreads;
    g_nroutes = nroutes + 1;
    g_blocks = calloc((size_t)nthreads, sizeof *g_blocks);
    if (!g_blocks)
        return -1;
    for (int t = 0; t < nthreads; t++) {
        g_blocks[t].counts =
            calloc(g_nroutes * HTTP_METHOD_COUNT * NSTATUS * NPROTO, sizeof *g_blocks[t].counts);
        g_blocks[t].hist = calloc(g_nroutes, sizeof(struct route_hist));
        if (!g_blocks[t].counts || !g_blocks[t].hist)
            return -1;
    }
    for (size_t i = 0; i < ARRAY_LEN(k_bounds); i++)
        k_bounds_ns[i] = (uint64_t)(k_bounds[i] * 1e9);
    procmetrics_init();
    return 0;
}

void metrics_free(void)
{
    for (int t = 0; t < g_nthreads && g_blocks; t++) {
        free(g_blocks[t].counts);
        free(g_blocks[t].hist);
    }
    free(g_blocks);
    g_blocks = NULL;
}

static size_t status_index(int status)
{
    for (size_t i = 0; i < ARRAY_LEN(k_statuses); i++)
        if (k_statuses[i] == status)
            return i;
    return ARRAY_LEN(k_statuses);
}

/* Single writer per block: a relaxed load + store is enough and compiles to a plain add. */
static inline void bump(_Atomic uint64_t *p, uint64_t v)
{
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

void metrics_record(int thread, int route, enum http_method method, int status, bool h2,
                    uint64_t duration_ns)
{
    struct thread_block *b = &g_blocks[thread];
    size_t r = route < 0 ? 0 : (size_t)route + 1;
    size_t i = (r * HTTP_METHOD_COUNT + (size_t)method) * NSTATUS + status_index(status);
    bump(&b->counts[i * NPROTO + (h2 ? 1 : 0)], 1);
    struct route_hist *h = &b->hist[r];
    size_t k = 0;
    while (k < ARRAY_LEN(k_bounds) && duration_ns > k_bounds_ns[k])
        k++;
    bump(&h->buckets[k], 1);
    bump(&h->sum_ns, duration_ns);
    bump(&h->count, 1);
}

void metrics_in_flight(int thread, int delta)
{
    _Atomic int64_t *p = &g_blocks[thread].in_flight;
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}

static const char *route_label(size_t r)
{
    if (r == 0)
        return "unmatched";
    size_t n;
    const struct route *t = router_table(&n);
    return r - 1 < n ? t[r - 1].pattern : "unknown";
}

static uint64_t load(_Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

void metrics_render(struct buf *b)
{
    int64_t in_flight = 0;
    for (int t = 0; t < g_nthreads; t++)
        in_flight += atomic_load_explicit(&g_blocks[t].in_flight, memory_order_relaxed);
    buf_append_cstr(b, "# HELP http_requests_in_flight Requests handed to a handler and not "
                       "answered yet (this scrape included).\n"
                       "# TYPE http_requests_in_flight gauge\nhttp_requests_in_flight ");
    buf_append_i64(b, in_flight);
    buf_append_char(b, '\n');
    buf_append_cstr(b, "# HELP http_requests_total HTTP responses sent, by method, route "
                       "pattern and status.\n# TYPE http_requests_total counter\n");
    for (size_t r = 0; r < g_nroutes; r++) {
        for (int m = 0; m < HTTP_METHOD_COUNT; m++) {
            for (size_t s = 0; s < NSTATUS * NPROTO; s++) {
                uint64_t v = 0;
                size_t i = (r * HTTP_METHOD_COUNT + (size_t)m) * NSTATUS * NPROTO + s;
                for (int t = 0; t < g_nthreads; t++)
                    v += load(&g_blocks[t].counts[i]);
                if (!v)
                    continue;
                buf_printf(b, "http_requests_total{method=\"%s\",route=\"%s\",status=\"",
                           http_method_name((enum http_method)m), route_label(r));
                if (s / NPROTO < ARRAY_LEN(k_statuses))
                    buf_append_u64(b, (uint64_t)k_statuses[s / NPROTO]);
                else
                    buf_append_cstr(b, "other");
                buf_append_cstr(b, "\",proto=\"");
                buf_append_cstr(b, k_protos[s % NPROTO]);
                buf_append_cstr(b, "\"} ");
                buf_append_u64(b, v);
                buf_append_char(b, '\n');
            }
        }
    }
    buf_append_cstr(b, "# HELP http_request_duration_seconds Time from the first byte of the "
                       "request head to the response being queued.\n"
                       "# TYPE http_request_duration_seconds histogram\n");
    for (size_t r = 0; r < g_nroutes; r++) {
        uint64_t buckets[NBUCKET] = {0}, sum = 0, count = 0;
        for (int t = 0; t < g_nthreads; t++) {
            struct route_hist *h = &g_blocks[t].hist[r];
            for (size_t k = 0; k < NBUCKET; k++)
                buckets[k] += load(&h->buckets[k]);
            sum += load(&h->sum_ns);
            count += load(&h->count);
        }
        if (!count)
            continue;
        const char *label = route_label(r);
        uint64_t cum = 0;
        for (size_t k = 0; k < NBUCKET; k++) {
            cum += buckets[k];
            if (k < ARRAY_LEN(k_bounds))
                buf_printf(b, "http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} ",
                           label, k_bounds[k]);
            else
                buf_printf(b, "http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} ",
                           label);
            buf_append_u64(b, cum);
            buf_append_char(b, '\n');
        }
        buf_printf(b, "http_request_duration_seconds_sum{route=\"%s\"} %.9f\n", label,
                   (double)sum / 1e9);
        buf_printf(b, "http_request_duration_seconds_count{route=\"%s\"} ", label);
        buf_append_u64(b, count);
        buf_append_char(b, '\n');
    }
    procmetrics_render(b);
}

void metrics_append_label_value(struct buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_append_char(b, '\\');
        if (*v == '\n')
            buf_append_cstr(b, "\\n");
        else
            buf_append_char(b, *v);
    }
}
