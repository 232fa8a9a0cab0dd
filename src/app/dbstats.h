/*
 * dbstats.h - process-wide counters of storage trouble for /metrics:
 * failed operations (db_errors_total) and re-established connections
 * (db_reconnects_total), fed by the loops' handlers and the background
 * workers alike. Rare events, so one shared atomic counter each is cheap.
 */
#ifndef BRISK_DBSTATS_H
#define BRISK_DBSTATS_H

#include <stdint.h>

#include "base/buf.h"
#include "db/db.h"

/*
 * Count one failed storage operation: st is DB_UNAVAILABLE
 * (kind="unavailable") or another failure (kind="error"). Any thread.
 */
void dbstats_failed(enum db_status st);

/* Add n connections re-established after a loss or a failed connect. Any thread. */
void dbstats_reconnected(uint64_t n);

/* Append db_errors_total and db_reconnects_total, labelled with backend, to b. */
void dbstats_render(struct buf *b, const char *backend);

#endif
