/*
 * validate.c - field rules of the contract (see validate.h).
 */
#include "app/validate.h"

#include <stdio.h>

#include "http/url.h"

const char *validate_name(struct str s)
{
    size_t chars = 0;
    const unsigned char *p = (const unsigned char *)s.ptr;
    if (!json_utf8_valid(s.ptr, s.len))
        return "name must be valid utf-8";
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = p[i];
        if ((c & 0xC0) != 0x80)
            chars++; /* count code points: every byte that is not a continuation */
        if (c < 0x20 || c == 0x7f)
            return "name must not contain control characters";
        /* C1 controls U+0080..U+009F are encoded as C2 80..C2 9F */
        if (c == 0xC2 && i + 1 < s.len && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F)
            return "name must not contain control characters";
    }
    if (chars < 1 || chars > 200)
        return "name must be 1 to 200 characters";
    return NULL;
}

const char *validate_email(struct str s)
{
    if (s.len < 3 || s.len > 254)
        return "email must be 3 to 254 bytes";
    if (!json_utf8_valid(s.ptr, s.len))
        return "email must be valid utf-8";
    size_t at = 0, ats = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c <= 0x20 || c == 0x7f)
            return "email must not contain spaces or control characters";
        if (c == '@') {
            ats++;
            at = i;
        }
    }
    if (ats != 1 || at == 0 || at == s.len - 1)
        return "email must contain one @ with text on both sides";
    return NULL;
}

bool parse_id(struct str s, int64_t *out)
{
    int64_t v;
    if (!str_to_i64(s, &v) || v <= 0)
        return false;
    *out = v;
    return true;
}

int json_opt_string(const struct json_value *obj, const char *key, bool *present, struct str *out,
                    const char **err)
{
    static _Thread_local char msg[96];
    const struct json_value *v = json_get(obj, key);
    *present = false;
    if (!v || v->type == JSON_NULL)
        return 0;
    if (v->type != JSON_STRING) {
        snprintf(msg, sizeof msg, "%s must be a string", key);
        *err = msg;
        return -1;
    }
    *present = true;
    *out = v->u.str;
    return 0;
}

const char *validate_list_query(struct str q, char *scratch, int *limit, int64_t *after)
{
    struct str key, val;
    bool seen_limit = false, seen_after = false;
    *limit = LIST_DEFAULT;
    *after = 0;
    while (url_query_next(&q, &key, &val)) {
        size_t klen, vlen;
        char *k = scratch, *v;
        if (!url_decode(key.ptr, key.len, k, &klen, true))
            return "invalid query string";
        v = k + klen;
        if (!url_decode(val.ptr, val.len, v, &vlen, true))
            return "invalid query string";
        struct str ks = {k, klen}, vs = {v, vlen};
        int64_t n;
        if (str_eq(ks, STR_LIT("limit"))) {
            if (seen_limit)
                return "limit given more than once";
            seen_limit = true;
            if (!str_to_i64(vs, &n) || n < 1 || n > LIST_MAX)
                return "limit must be an integer from 1 to 1000";
            *limit = (int)n;
        } else if (str_eq(ks, STR_LIT("after"))) {
            if (seen_after)
                return "after given more than once";
            seen_after = true;
            if (!str_to_i64(vs, &n))
                return "after must be a non-negative integer";
            *after = n;
        }
    }
    return NULL;
}
