/*
 * bgworker.h - background order processing.
 *
 * Worker threads, each with its own event loop and database handle, claim
 * pending orders in batches (db_orders_process: exactly once, also across
 * processes and crashes), re-price and sign them from the stored lines
 * (pricing_sign_stored) and mark them processed. A full batch is
 * followed at once by the next; otherwise the worker looks again each second.
 */
#ifndef BRISK_BGWORKER_H
#define BRISK_BGWORKER_H

#include "base/buf.h"
#include "db/db.h"

struct bgworker_config {
    int threads; /* 0 disables background processing in this process */
    int batch;   /* orders claimed per transaction */
    const struct db_config *db;
};

/*
 * Start the workers (after signals are blocked, before serving). Returns 0,
 * or -1 after logging. cfg must outlive the workers.
 */
int bgworker_start(const struct bgworker_config *cfg);

/* Stop after the batch in progress commits (or fails) and join the workers. */
void bgworker_stop(void);

/*
 * Append the background metric families (orders processed by this process,
 * orders pending in the database) to b; any thread.
 */
void bgworker_render_metrics(struct buf *b);

#endif
