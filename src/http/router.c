/*
 * router.c - method + path dispatch (see router.h).
 */
#include "http/router.h"

#include <string.h>

#include "base/log.h"
#include "http/url.h"

struct seg {
    struct str lit; /* literal text; ptr NULL for a parameter */
};

struct compiled {
    size_t nseg;
    struct seg seg[ROUTER_MAX_SEGMENTS];
};

static const struct route *g_table;
static size_t g_n;
static struct compiled g_routes[ROUTER_MAX_ROUTES];

int router_init(const struct route *table, size_t n)
{
    if (n > ROUTER_MAX_ROUTES) {
        log_error("router: %zu routes, at most %d supported", n, ROUTER_MAX_ROUTES);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *p = table[i].pattern;
        struct compiled *c = &g_routes[i];
        c->nseg = 0;
        if (p[0] != '/') {
            log_error("router: pattern %s must start with /", p);
            return -1;
        }
        p++;
        while (*p) {
            const char *e = strchr(p, '/');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            if (c->nseg == ROUTER_MAX_SEGMENTS) {
                log_error("router: pattern %s has too many segments", table[i].pattern);
                return -1;
            }
            if (len >= 2 && p[0] == '{' && p[len - 1] == '}')
                c->seg[c->nseg].lit = STR_NULL;
            else
                c->seg[c->nseg].lit = (struct str){p, len};
            c->nseg++;
            p += len;
            if (*p == '/')
                p++;
        }
    }
    g_table = table;
    g_n = n;
    return 0;
}

const struct route *router_table(size_t *out_n)
{
    *out_n = g_n;
    return g_table;
}

/* Split the raw path into segments (decoded into scratch when needed). Returns count or -1. */
static int split_path(struct str path, char *scratch, struct str *segs)
{
    int n = 0;
    size_t i = 1; /* skip the leading '/' */
    size_t out = 0;
    if (path.len == 0 || path.ptr[0] != '/')
        return -1;
    if (path.len == 1)
        return 0; /* "/" has no segments */
    while (i <= path.len) {
        size_t start = i;
        while (i < path.len && path.ptr[i] != '/')
            i++;
        if (n == ROUTER_MAX_SEGMENTS)
            return -1;
        struct str raw = {path.ptr + start, i - start};
        if (memchr(raw.ptr, '%', raw.len)) {
            size_t dlen;
            if (!url_decode(raw.ptr, raw.len, scratch + out, &dlen, false))
                return -1;
            if (memchr(scratch + out, '/', dlen))
                return -1; /* %2F must not create or hide a segment boundary */
            segs[n] = (struct str){scratch + out, dlen};
            out += dlen;
        } else {
            segs[n] = raw;
        }
        n++;
        i++; /* skip '/' (or step past the end) */
    }
    return n;
}

bool router_match(enum http_method method, struct str path, char *scratch, struct router_match *out)
{
    struct str segs[ROUTER_MAX_SEGMENTS];
    out->route = -1;
    out->path_route = -1;
    out->allow = 0;
    out->nparams = 0;
    int nseg = split_path(path, scratch, segs);
    if (nseg < 0)
        return false;
    for (size_t r = 0; r < g_n; r++) {
        const struct compiled *c = &g_routes[r];
        if (c->nseg != (size_t)nseg)
            continue;
        size_t np = 0;
        struct str params[ROUTER_MAX_PARAMS];
        bool ok = true;
        for (size_t s = 0; s < c->nseg && ok; s++) {
            if (c->seg[s].lit.ptr) {
                ok = str_eq(c->seg[s].lit, segs[s]);
            } else if (np < ROUTER_MAX_PARAMS && segs[s].len > 0) {
                params[np++] = segs[s];
            } else {
                ok = false;
            }
        }
        if (!ok)
            continue;
        if (out->path_route < 0)
            out->path_route = (int)r;
        out->allow |= 1u << g_table[r].method;
        if (out->route < 0 && g_table[r].method == method) {
            out->route = (int)r;
            out->nparams = np;
            memcpy(out->params, params, np * sizeof params[0]);
        }
    }
    return out->route >= 0;
}
