/*
 * resolver.c - getaddrinfo on a thread per request (see resolver.h).
 *
 * Ownership: a request is shared by its thread and its loop. The thread
 * resolves, then, under the request's lock, either posts the completion to
 * the loop (not cancelled) or frees the request (cancelled: nobody is
 * waiting). The posted completion frees it after calling back, or without
 * calling back when it was cancelled meanwhile. A completion posted just as
 * the loop stopped is never run (loop_destroy drops it): such a request stays
 * on g_live, reachable, until the process exits; nothing else keeps it.
 *
 * Threads are created on demand (the sandbox allows clone for threads) and
 * detached; a stack of 256 KiB is plenty for getaddrinfo.
 */
#include "net/resolver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/log.h"
#include "net/loop.h"

#define RESOLVE_MAX_NAMES 64
#define THREAD_STACK ((size_t)256 * 1024)

struct resolve_req {
    struct resolve_req *prev, *next; /* on g_live, guarded by g_live_mu */
    struct loop *loop;
    resolve_fn done;
    void *arg;
    pthread_mutex_t mu;
    bool cancelled; /* guarded by mu */
    bool posted;    /* guarded by mu: the completion is in the loop's queue */
    int n;
    char **names;
    struct resolve_answer *answers;
};

static pthread_mutex_t g_live_mu = PTHREAD_MUTEX_INITIALIZER;
static struct resolve_req *g_live;

static void live_add(struct resolve_req *r)
{
    pthread_mutex_lock(&g_live_mu);
    r->prev = NULL;
    r->next = g_live;
    if (g_live)
        g_live->prev = r;
    g_live = r;
    pthread_mutex_unlock(&g_live_mu);
}

static void req_free(struct resolve_req *r)
{
    pthread_mutex_lock(&g_live_mu);
    if (r->prev)
        r->prev->next = r->next;
    else if (g_live == r)
        g_live = r->next;
    if (r->next)
        r->next->prev = r->prev;
    pthread_mutex_unlock(&g_live_mu);
    if (r->names) {
        for (int i = 0; i < r->n; i++)
            free(r->names[i]);
        free(r->names);
    }
    free(r->answers);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* One name: numeric addresses of its TCP endpoints, duplicates dropped. */
static void resolve_one(const char *name, struct resolve_answer *a)
{
    struct addrinfo hints, *res = NULL;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    a->naddrs = 0;
    a->error = getaddrinfo(name, NULL, &hints, &res);
    if (a->error)
        return;
    for (const struct addrinfo *ai = res; ai && a->naddrs < RESOLVE_MAX_ADDRS; ai = ai->ai_next) {
        char buf[INET6_ADDRSTRLEN];
        const void *src;
        if (ai->ai_family == AF_INET)
            src = &((const struct sockaddr_in *)(const void *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            src = &((const struct sockaddr_in6 *)(const void *)ai->ai_addr)->sin6_addr;
        else
            continue;
        if (!inet_ntop(ai->ai_family, src, buf, sizeof buf))
            continue;
        bool dup = false;
        for (int i = 0; i < a->naddrs && !dup; i++)
            dup = strcmp(a->addrs[i], buf) == 0;
        if (!dup)
            memcpy(a->addrs[a->naddrs++], buf, sizeof buf);
    }
    freeaddrinfo(res);
    if (a->naddrs == 0)
        a->error = EAI_NONAME; /* only addresses of other families */
}

/* On the loop's thread. */
static void on_done(void *arg)
{
    struct resolve_req *r = arg;

    pthread_mutex_lock(&r->mu);
    bool cancelled = r->cancelled;
    r->posted = false;
    pthread_mutex_unlock(&r->mu);
    if (!cancelled)
        r->done(r->arg, r->answers, r->n);
    req_free(r);
}

static void *resolve_main(void *arg)
{
    struct resolve_req *r = arg;

    for (int i = 0; i < r->n; i++) {
        pthread_mutex_lock(&r->mu);
        bool cancelled = r->cancelled;
        pthread_mutex_unlock(&r->mu);
        if (cancelled)
            break;
        resolve_one(r->names[i], &r->answers[i]);
    }
    pthread_mutex_lock(&r->mu);
    if (r->cancelled) {
        pthread_mutex_unlock(&r->mu);
        req_free(r);
        return NULL;
    }
    /* Posted under the lock: a cancel (and the loop's end) waits until it is queued. */
    if (loop_post(r->loop, on_done, r) != 0)
        log_fatal("out of memory posting a host name resolution");
    r->posted = true;
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

struct resolve_req *resolve_start(struct loop *l, const char *const *names, int n, resolve_fn done,
                                  void *arg)
{
    struct resolve_req *r = NULL;
    pthread_attr_t attr;
    bool attr_ok = false;
    int err = ENOMEM;

    if (n < 1 || n > RESOLVE_MAX_NAMES || !done) {
        errno = EINVAL;
        return NULL;
    }
    r = calloc(1, sizeof *r);
    if (!r)
        goto fail;
    r->loop = l;
    r->done = done;
    r->arg = arg;
    r->names = calloc((size_t)n, sizeof *r->names);
    r->answers = calloc((size_t)n, sizeof *r->answers);
    if (pthread_mutex_init(&r->mu, NULL) != 0 || !r->names || !r->answers)
        goto fail;
    for (r->n = 0; r->n < n; r->n++) {
        r->names[r->n] = strdup(names[r->n]);
        if (!r->names[r->n])
            goto fail;
    }
    err = pthread_attr_init(&attr);
    if (err)
        goto fail;
    attr_ok = true;
    err = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (!err)
        err = pthread_attr_setstacksize(&attr, THREAD_STACK);
    if (err)
        goto fail;
    live_add(r);
    pthread_t tid;
    err = pthread_create(&tid, &attr, resolve_main, r);
    if (err)
        goto fail;
    pthread_attr_destroy(&attr);
    return r;

fail:
    if (attr_ok)
        pthread_attr_destroy(&attr);
    if (r)
        req_free(r);
    errno = err;
    return NULL;
}

void resolve_cancel(struct resolve_req *r)
{
    if (!r)
        return;
    /* The thread or the posted completion frees it, whichever comes last. */
    pthread_mutex_lock(&r->mu);
    r->cancelled = true;
    pthread_mutex_unlock(&r->mu);
}
