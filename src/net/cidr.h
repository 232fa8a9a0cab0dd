/*
 * cidr.h - IPv4/IPv6 address ranges ("10.0.0.0/8", "::1", "fd00::/8"), for
 * BRISK_TRUSTED_PROXIES: parsed once at start-up, matched against peer
 * addresses given as text.
 */
#ifndef BRISK_NET_CIDR_H
#define BRISK_NET_CIDR_H

#include <stdbool.h>
#include <stddef.h>

#define CIDR_MAX 32 /* ranges in one list */

struct cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix; /* leading bits that must match */
};

/*
 * Parse a comma-separated list of addresses and ranges (spaces allowed around
 * the commas) into out[0..max). A bare address is a /32 or /128. Returns the
 * number of ranges (0 for an empty list), or -1 with the problem in err (cap
 * bytes, quoting at most the bad entry).
 */
int cidr_parse_list(const char *s, struct cidr *out, int max, char *err, size_t cap);

/* True if text (len bytes, not NUL-terminated) is a numeric IPv4 or IPv6 address. */
bool cidr_is_addr(const char *text, size_t len);

/* True if the numeric address text (len bytes, not NUL-terminated) lies in one of list[0..n). */
bool cidr_match(const struct cidr *list, int n, const char *text, size_t len);

#endif
