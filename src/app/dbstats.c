/*
 * dbstats.c - the storage trouble counters (see dbstats.h).
 */
#include "app/dbstats.h"

#include <inttypes.h>
#include <stdatomic.h>

static _Atomic uint64_t g_unavailable, g_failed, g_reconnects;

void dbstats_failed(enum db_status st)
{
    atomic_fetch_add_explicit(st == DB_UNAVAILABLE ? &g_unavailable : &g_failed, 1,
                              memory_order_relaxed);
}

void dbstats_reconnected(uint64_t n)
{
    if (n)
        atomic_fetch_add_explicit(&g_reconnects, n, memory_order_relaxed);
}

void dbstats_render(struct buf *b, const char *backend)
{
    buf_printf(b,
               "# HELP db_errors_total Database operations that failed: unavailable (down, "
               "hung or busy past the timeout: 503) or error (anything else: 500).\n"
               "# TYPE db_errors_total counter\n"
               "db_errors_total{backend=\"%s\",kind=\"unavailable\"} %" PRIu64 "\n"
               "db_errors_total{backend=\"%s\",kind=\"error\"} %" PRIu64 "\n"
               "# HELP db_reconnects_total Database connections re-established after one was "
               "lost or could not connect.\n"
               "# TYPE db_reconnects_total counter\n"
               "db_reconnects_total{backend=\"%s\"} %" PRIu64 "\n",
               backend, atomic_load_explicit(&g_unavailable, memory_order_relaxed), backend,
               atomic_load_explicit(&g_failed, memory_order_relaxed), backend,
               atomic_load_explicit(&g_reconnects, memory_order_relaxed));
}
