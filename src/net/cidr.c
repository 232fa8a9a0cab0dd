/*
 * cidr.c - address ranges (see cidr.h). inet_pton does the address syntax;
 * this file only splits the list and compares prefixes.
 */
#include "net/cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Numeric address text (len bytes) into family/addr. Returns 0 or -1. */
static int parse_addr(const char *text, size_t len, int *family, unsigned char addr[16])
{
    char tmp[64];
    if (len == 0 || len >= sizeof tmp)
        return -1;
    memcpy(tmp, text, len);
    tmp[len] = 0;
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, tmp, addr) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, tmp, addr) == 1) {
        *family = AF_INET6;
        return 0;
    }
    return -1;
}

int cidr_parse_list(const char *s, struct cidr *out, int max, char *err, size_t cap)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *end = e;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        size_t len = (size_t)(end - p);
        const char *slash = memchr(p, '/', len);
        struct cidr c = {.family = AF_INET};
        int bad = parse_addr(p, slash ? (size_t)(slash - p) : len, &c.family, c.addr);
        int maxbits = c.family == AF_INET ? 32 : 128;
        c.prefix = maxbits;
        if (!bad && slash) {
            const char *d = slash + 1;
            if (d == end || end - d > 3)
                bad = -1;
            int v = 0;
            for (; !bad && d < end; d++) {
                if (*d < '0' || *d > '9')
                    bad = -1;
                else
                    v = v * 10 + (*d - '0');
            }
            if (!bad && v > maxbits)
                bad = -1;
            c.prefix = v;
        }
        if (bad) {
            snprintf(err, cap, "\"%.*s\" is not an IPv4/IPv6 address or range (e.g. 10.0.0.0/8)",
                     (int)(len > 60 ? 60 : len), p);
            return -1;
        }
        if (n == max) {
            snprintf(err, cap, "has more than %d ranges", max);
            return -1;
        }
        out[n++] = c;
        p = *e ? e + 1 : e;
        if (*e && !*p) {
            snprintf(err, cap, "ends with a comma");
            return -1;
        }
    }
    return n;
}

bool cidr_is_addr(const char *text, size_t len)
{
    int family;
    unsigned char a[16];
    return parse_addr(text, len, &family, a) == 0;
}

bool cidr_match(const struct cidr *list, int n, const char *text, size_t len)
{
    int family;
    unsigned char a[16];
    if (n == 0 || parse_addr(text, len, &family, a) != 0)
        return false;
    for (int i = 0; i < n; i++) {
        const struct cidr *c = &list[i];
        if (c->family != family)
            continue;
        int full = c->prefix / 8, rest = c->prefix % 8;
        if (memcmp(a, c->addr, (size_t)full) != 0)
            continue;
        if (rest && ((a[full] ^ c->addr[full]) & (0xff << (8 - rest)) & 0xff))
            continue;
        return true;
    }
    return false;
}
