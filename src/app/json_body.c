/*
 * json_body.c - a request body read as JSON (see app_json_body in app.h):
 * the glue between the HTTP layer, which knows no JSON, and the JSON reader.
 */
#include "app/app.h"

const struct json_value *app_json_body(struct http_ctx *c)
{
    struct str body = http_body_raw(c);
    if (!http_require_json(c))
        return NULL;
    const struct json_value *v;
    struct json_error err;
    if (json_parse(body.ptr, body.len, http_arena(c), &v, &err) != 0) {
        if (err.too_large)
            http_respond_error(c, 413, "request body too large to parse");
        else
            http_respond_error(c, 400, err.msg);
        return NULL;
    }
    return v;
}
