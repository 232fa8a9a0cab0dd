/*
 * url.c - percent-decoding and query-string iteration (see url.h).
 *
 * Both work on raw slices of the request-target; url_decode may decode in
 * place (out == in) because it never writes ahead of what it has read.
 */
#include "http/url.h"

#include <string.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool url_decode(const char *in, size_t n, char *out, size_t *out_len, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c == '%') {
            if (n - i < 3)
                return false; /* "%" or "%4" at the end */
            int hi = hexval((unsigned char)in[i + 1]);
            int lo = hexval((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            c = (char)(hi << 4 | lo);
            if (c == '\0')
                return false; /* %00 would truncate at C string boundaries */
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        out[o++] = c;
    }
    *out_len = o;
    return true;
}

bool url_query_next(struct str *q, struct str *key, struct str *value)
{
    while (q->len > 0) {
        const char *p = q->ptr;
        const char *amp = memchr(p, '&', q->len);
        size_t plen = amp ? (size_t)(amp - p) : q->len;

        /* advance past this pair and its '&' before looking at it */
        q->ptr += plen + (amp ? 1 : 0);
        q->len -= plen + (amp ? 1 : 0);
        if (plen == 0)
            continue; /* "&&" or a leading/trailing '&' */

        const char *eq = memchr(p, '=', plen);
        if (eq) {
            *key = (struct str){p, (size_t)(eq - p)};
            *value = (struct str){eq + 1, plen - (size_t)(eq - p) - 1};
        } else {
            *key = (struct str){p, plen};
            *value = (struct str){p + plen, 0};
        }
        return true;
    }
    return false;
}
