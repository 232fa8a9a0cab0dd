/*
 * workpool.c - CPU worker threads (see workpool.h).
 *
 * Two FIFOs of batches under one mutex: continuations (workpool_run_next)
 * and new work (workpool_run); workers claim fixed-size chunks of the batch at
 * the head of the first non-empty one. The worker finishing a batch's last
 * chunk posts the completion to the batch's loop. Claims are rare (one per
 * `grain` items), so one lock is cheaper than anything cleverer.
 */
#define _GNU_SOURCE /* gettid */
#include "net/workpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/log.h"
#include "net/loop.h"

struct batch {
    struct batch *next;
    struct loop *loop;
    void (*fn)(void *arg, size_t begin, size_t end);
    void (*done)(void *arg);
    void *arg;
    size_t n, grain, nchunks;
    size_t next_chunk;  /* guarded by g_mu */
    atomic_size_t left; /* chunks not finished yet */
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
struct queue {
    struct batch *head, *tail;
};

static struct queue g_next; /* continuations of work already started: served first */
static struct queue g_new;
static bool g_stopping;
static pthread_t *g_threads;
static int g_nthreads;
static int g_ready; /* workers past their set-up, guarded by g_mu */
static atomic_uint_fast64_t g_scheduled;

static void post_done(struct batch *b)
{
    if (loop_post(b->loop, b->done, b->arg) != 0)
        log_fatal("out of memory posting a work completion");
    free(b);
}

/* Workers yield to the event loops: nice 5 gives a loop thread about three
 * times a worker's share of a busy core, so a big batch does not slow down
 * the requests the loops are answering meanwhile. Not 10: at nice 10 any
 * other busy process on the core (PostgreSQL, a build) starved the workers
 * for whole time slices - the p99 of POST /orders/process at 91 req/s was
 * 57-220 ms at nice 10, 9-10 ms at nice 5 and 7-8 ms at nice 0, measured
 * side by side on one shared CPU. */
#define WORKER_NICE 5

static void *worker_main(void *unused)
{
    (void)unused;
    /* on Linux, PRIO_PROCESS with a thread id sets that thread's nice value */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), WORKER_NICE) != 0)
        log_debug("workpool: cannot lower the worker priority");
    pthread_mutex_lock(&g_mu);
    g_ready++; /* workpool_start waits for this: no set-up runs after the sandbox is on */
    pthread_cond_broadcast(&g_cv);
    for (;;) {
        while (!g_next.head && !g_new.head && !g_stopping)
            pthread_cond_wait(&g_cv, &g_mu);
        struct queue *q = g_next.head ? &g_next : &g_new;
        if (!q->head)
            break; /* stopping and nothing queued */
        struct batch *b = q->head;
        size_t ci = b->next_chunk++;
        if (b->next_chunk == b->nchunks) {
            q->head = b->next;
            if (!q->head)
                q->tail = NULL;
        }
        pthread_mutex_unlock(&g_mu);
        size_t begin = ci * b->grain;
        size_t end = begin + b->grain < b->n ? begin + b->grain : b->n;
        b->fn(b->arg, begin, end);
        if (atomic_fetch_sub_explicit(&b->left, 1, memory_order_acq_rel) == 1)
            post_done(b); /* acq_rel: every chunk's writes are visible to done() */
        pthread_mutex_lock(&g_mu);
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

int workpool_start(int threads)
{
    g_threads = calloc((size_t)threads, sizeof *g_threads);
    if (!g_threads) {
        log_error("out of memory starting the worker pool");
        return -1;
    }
    g_stopping = false;
    for (g_nthreads = 0; g_nthreads < threads; g_nthreads++) {
        if (pthread_create(&g_threads[g_nthreads], NULL, worker_main, NULL) != 0) {
            log_error("cannot start worker thread %d", g_nthreads);
            workpool_stop();
            return -1;
        }
    }
    pthread_mutex_lock(&g_mu);
    while (g_ready < g_nthreads)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    return 0;
}

void workpool_stop(void)
{
    pthread_mutex_lock(&g_mu);
    g_stopping = true;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    for (int i = 0; i < g_nthreads; i++)
        pthread_join(g_threads[i], NULL);
    free(g_threads);
    g_threads = NULL;
    g_nthreads = 0;
    g_ready = 0;
}

int workpool_threads(void)
{
    return g_nthreads;
}

uint64_t workpool_scheduled(void)
{
    return atomic_load_explicit(&g_scheduled, memory_order_relaxed);
}

static int run(struct queue *q, struct loop *l, size_t n, size_t grain,
               void (*fn)(void *arg, size_t begin, size_t end), void (*done)(void *arg), void *arg)
{
    atomic_fetch_add_explicit(&g_scheduled, 1, memory_order_relaxed);
    if (n == 0)
        return loop_post(l, done, arg);
    struct batch *b = calloc(1, sizeof *b);
    if (!b)
        return -1;
    b->loop = l;
    b->fn = fn;
    b->done = done;
    b->arg = arg;
    b->n = n;
    b->grain = grain ? grain : 1;
    b->nchunks = (n + b->grain - 1) / b->grain;
    atomic_init(&b->left, b->nchunks);
    pthread_mutex_lock(&g_mu);
    if (q->tail)
        q->tail->next = b;
    else
        q->head = b;
    q->tail = b;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    return 0;
}

int workpool_run(struct loop *l, size_t n, size_t grain,
                 void (*fn)(void *arg, size_t begin, size_t end), void (*done)(void *arg),
                 void *arg)
{
    return run(&g_new, l, n, grain, fn, done, arg);
}

int workpool_run_next(struct loop *l, size_t n, size_t grain,
                      void (*fn)(void *arg, size_t begin, size_t end), void (*done)(void *arg),
                      void *arg)
{
    return run(&g_next, l, n, grain, fn, done, arg);
}
