/*
 * respond.c - answers the endpoints share (see respond.h).
 */
#include "app/respond.h"

#include "app/dbstats.h"
#include "app/validate.h"
#include "base/buf.h"
#include "http/request.h"

void app_respond_db_error(struct http_ctx *c, enum db_status st)
{
    dbstats_failed(st);
    if (st == DB_UNAVAILABLE)
        http_respond_error(c, 503, "database unavailable");
    else
        http_respond_error(c, 500, "internal error");
}

bool app_id_param(struct http_ctx *c, int64_t *id)
{
    if (parse_id(http_param(c, 0), id))
        return true;
    http_respond_error(c, 400, "invalid id");
    return false;
}

bool page_row(struct page *p, int64_t id)
{
    bool on_page = p->count < p->limit;
    if (on_page) {
        if (p->count)
            buf_append_char(http_body(p->c), ',');
        p->last_id = id;
    }
    p->count++;
    return on_page;
}

void page_finish(struct page *p)
{
    struct buf *b = http_body(p->c);
    BUF_LIT(b, "],\"next_after\":");
    if (p->count > p->limit)
        buf_append_i64(b, p->last_id);
    else
        BUF_LIT(b, "null");
    buf_append_char(b, '}');
}
