/*
 * user_json.h - the contract's user object, written into a response buffer.
 *
 * A header so the JSON microbenchmark (bench/json/json_bench.c) measures this
 * very code: it links only src/json and src/base objects.
 */
#ifndef BRISK_USER_JSON_H
#define BRISK_USER_JSON_H

#include <string.h>

#include "base/buf.h"
#include "base/compiler.h"
#include "base/timefmt.h"
#include "db/db.h"
#include "json/json.h"

/* Longest name or email written with the one-reservation path (longer ones, which
 * validation does not let in, take the checked appends). */
#define USER_JSON_FAST_STR 4096

/* Copy a string literal's bytes (no NUL) to p and advance p. */
#define USER_JSON_PUT(p, lit)                                                                      \
    do {                                                                                           \
        memcpy((p), (lit), sizeof(lit) - 1);                                                       \
        (p) += sizeof(lit) - 1;                                                                    \
    } while (0)

/*
 * Append {"id":N,"name":"...","email":"...","created_at":"RFC 3339"} for u.
 * Reserves the worst case once and writes unchecked; a buffer that already failed
 * or cannot grow that far gets the same bytes through the checked appends (and
 * b->failed where they stop), exactly as before the fast path existed.
 */
static inline void user_write_json(struct buf *b, const struct db_user *u)
{
    /* {"id": ,"name": ,"email": ,"created_at":" "} = 40, 20 for the id, 20 for the
     * time, 4 quotes */
    size_t worst = 84 + JSON_STR_BODY_MAX(u->name.len) + JSON_STR_BODY_MAX(u->email.len);
    if (unlikely(b->failed || u->name.len > USER_JSON_FAST_STR ||
                 u->email.len > USER_JSON_FAST_STR || buf_reserve(b, worst) != 0)) {
        char ts[RFC3339_LEN];
        BUF_LIT(b, "{\"id\":");
        buf_append_i64(b, u->id);
        BUF_LIT(b, ",\"name\":");
        json_write_str(b, u->name.ptr, u->name.len);
        BUF_LIT(b, ",\"email\":");
        json_write_str(b, u->email.ptr, u->email.len);
        BUF_LIT(b, ",\"created_at\":\"");
        fmt_rfc3339(ts, u->created_at);
        buf_append(b, ts, sizeof ts);
        BUF_LIT(b, "\"}");
        return;
    }
    char *p = b->data + b->len;
    USER_JSON_PUT(p, "{\"id\":");
    if (u->id < 0) {
        *p++ = '-';
        p += fmt_u64(p, (uint64_t)0 - (uint64_t)u->id);
    } else {
        p += fmt_u64(p, (uint64_t)u->id);
    }
    USER_JSON_PUT(p, ",\"name\":\"");
    p = json_put_str_body(p, u->name.ptr, u->name.len);
    USER_JSON_PUT(p, "\",\"email\":\"");
    p = json_put_str_body(p, u->email.ptr, u->email.len);
    USER_JSON_PUT(p, "\",\"created_at\":\"");
    fmt_rfc3339(p, u->created_at);
    p += RFC3339_LEN;
    USER_JSON_PUT(p, "\"}");
    b->len = (size_t)(p - b->data);
}

#endif
