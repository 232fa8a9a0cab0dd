/*
 * respond.h - answers the endpoints share: a storage failure, a path id, a
 * page of a list. One place, so every endpoint says them the same way.
 */
#ifndef BRISK_RESPOND_H
#define BRISK_RESPOND_H

#include <stdbool.h>
#include <stdint.h>

#include "db/db.h"

struct http_ctx;

/*
 * Answer a storage failure that has no endpoint-specific meaning: DB_UNAVAILABLE
 * is 503 "database unavailable", anything else 500 "internal error". Counts it
 * (dbstats_failed).
 */
void app_respond_db_error(struct http_ctx *c, enum db_status st);

/*
 * The request's first path parameter as an id (parse_id): true and *id, or
 * false after answering 400 "invalid id".
 */
bool app_id_param(struct http_ctx *c, int64_t *id);

/*
 * Cursor pagination shared by the list endpoints: the storage is asked for
 * limit + 1 rows; the extra row only tells that a next page exists.
 */
struct page {
    struct http_ctx *c;
    int limit;
    int count;
    int64_t last_id;
};

/* For each row: true when it belongs on the page (the separator is written). */
bool page_row(struct page *p, int64_t id);

/* Close the array and write "next_after" (the last id, or null) and the final '}'. */
void page_finish(struct page *p);

#endif
