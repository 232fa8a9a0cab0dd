/*
 * resolver.h - host names resolved off the event loop.
 *
 * getaddrinfo() blocks for as long as DNS takes: up to the resolver's
 * timeout times its attempts times the name servers (30 s and more with a
 * dead server), which on a loop thread stalls every connection of that loop.
 * A request runs getaddrinfo() on a short-lived thread of its own (callers
 * keep at most a few in flight: one per database handle) and hands the
 * numeric addresses back to the loop that asked, through loop_post, so the
 * caller connects to an address and never resolves on the loop.
 */
#ifndef BRISK_RESOLVER_H
#define BRISK_RESOLVER_H

#include <netinet/in.h>

struct loop;
struct resolve_req;

/* Addresses kept per name: libpq tries each in turn, more only slow a failover down. */
#define RESOLVE_MAX_ADDRS 8

struct resolve_answer {
    int error; /* 0, or the EAI_* code of getaddrinfo (gai_strerror names it) */
    int naddrs;
    char addrs[RESOLVE_MAX_ADDRS][INET6_ADDRSTRLEN]; /* numeric, in getaddrinfo's order */
};

/*
 * Called on the requesting loop's thread with one answer per name, in the
 * order the names were given. The request is freed when it returns.
 */
typedef void (*resolve_fn)(void *arg, const struct resolve_answer *answers, int n);

/*
 * Resolve names[0..n-1] (1 <= n <= 64; TCP, IPv4 and IPv6, duplicates
 * removed) on a thread of its own, then call done(arg, ...) on loop `l`'s
 * thread, exactly once unless cancelled first. Returns the request, or NULL
 * with errno set (ENOMEM, EINVAL, or the thread could not be started):
 * done is then never called.
 */
struct resolve_req *resolve_start(struct loop *l, const char *const *names, int n, resolve_fn done,
                                  void *arg);

/*
 * Forget a request whose callback has not run yet (from the loop's thread):
 * done is never called and the request's memory is released once its
 * thread finishes (a lookup cannot be interrupted; it ends at the resolver's
 * timeout at the latest). Safe after the loop stopped running; a request
 * still open must be cancelled before its loop is destroyed.
 */
void resolve_cancel(struct resolve_req *r);

#endif
