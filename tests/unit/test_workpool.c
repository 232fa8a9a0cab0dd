/*
 * test_workpool.c - the CPU pool runs every item exactly once, completions
 * arrive on the loop's thread, continuations (workpool_run_next) run ahead of
 * new work, and loop_post works from other threads.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "net/loop.h"
#include "net/workpool.h"
#include "test.h"

struct job {
    size_t n;
    unsigned char *hits; /* each item's fn call count */
    atomic_int calls;
    int done_calls;
    pthread_t done_thread;
    struct loop *loop;
    int *jobs_left;
};

static void job_fn(void *arg, size_t begin, size_t end)
{
    struct job *j = arg;
    atomic_fetch_add(&j->calls, 1);
    for (size_t i = begin; i < end; i++)
        j->hits[i]++;
}

static void job_done(void *arg)
{
    struct job *j = arg;
    j->done_calls++;
    j->done_thread = pthread_self();
    if (--*j->jobs_left == 0)
        loop_request_stop(j->loop);
}

static bool drained(struct loop *l, void *arg)
{
    (void)l;
    (void)arg;
    return true;
}

static void test_batches(void)
{
    ok(workpool_start(3) == 0 && workpool_threads() == 3, "pool starts");
    struct loop *l = loop_create(0);
    ok(l != NULL, "loop");
    static const size_t sizes[] = {0, 1, 255, 256, 257, 100000};
    struct job jobs[6];
    int left = 6;
    memset(jobs, 0, sizeof jobs);
    for (size_t k = 0; k < 6; k++) {
        jobs[k].n = sizes[k];
        jobs[k].hits = calloc(sizes[k] + 1, 1);
        jobs[k].loop = l;
        jobs[k].jobs_left = &left;
        ok(workpool_run(l, sizes[k], 256, job_fn, job_done, &jobs[k]) == 0, "run %zu", sizes[k]);
    }
    struct loop_hooks hooks = {.drained = drained};
    ok(loop_run(l, &hooks, 1000) == 0, "loop ran until every completion arrived");
    for (size_t k = 0; k < 6; k++) {
        size_t bad = 0;
        for (size_t i = 0; i < sizes[k]; i++)
            bad += jobs[k].hits[i] != 1;
        ok(bad == 0, "batch %zu: every item exactly once (%zu wrong)", sizes[k], bad);
        ok(jobs[k].done_calls == 1, "batch %zu: done once", sizes[k]);
        ok(pthread_equal(jobs[k].done_thread, pthread_self()), "batch %zu: done on the loop",
           sizes[k]);
        ok(atomic_load(&jobs[k].calls) == (int)((sizes[k] + 255) / 256), "batch %zu: chunks",
           sizes[k]);
        free(jobs[k].hits);
    }
    loop_destroy(l);
    workpool_stop();
}

/* ---- ordering: one worker, held by a gate while work is queued behind it ---- */

static atomic_int g_gate_started, g_gate_open, g_seq;
static int g_order[4], g_ordered_left;
static struct loop *g_order_loop;

static void gate_fn(void *arg, size_t begin, size_t end)
{
    (void)arg;
    (void)begin;
    (void)end;
    atomic_store(&g_gate_started, 1);
    while (!atomic_load(&g_gate_open))
        sched_yield();
}

static void ordered_fn(void *arg, size_t begin, size_t end)
{
    (void)begin;
    (void)end;
    g_order[atomic_fetch_add(&g_seq, 1)] = (int)(intptr_t)arg;
}

static void ordered_done(void *arg)
{
    (void)arg;
    if (--g_ordered_left == 0)
        loop_request_stop(g_order_loop);
}

static void test_next_first(void)
{
    ok(workpool_start(1) == 0, "pool of one starts");
    g_order_loop = loop_create(0);
    g_ordered_left = 5;
    ok(workpool_run(g_order_loop, 1, 1, gate_fn, ordered_done, NULL) == 0, "gate queued");
    while (!atomic_load(&g_gate_started))
        sched_yield();
    /* the worker is held: queue new work (1, 2) and continuations (3, 4) behind it */
    ok(workpool_run(g_order_loop, 1, 1, ordered_fn, ordered_done, (void *)1) == 0, "new 1");
    ok(workpool_run(g_order_loop, 1, 1, ordered_fn, ordered_done, (void *)2) == 0, "new 2");
    ok(workpool_run_next(g_order_loop, 1, 1, ordered_fn, ordered_done, (void *)3) == 0, "next 3");
    ok(workpool_run_next(g_order_loop, 1, 1, ordered_fn, ordered_done, (void *)4) == 0, "next 4");
    atomic_store(&g_gate_open, 1);
    struct loop_hooks hooks = {.drained = drained};
    ok(loop_run(g_order_loop, &hooks, 1000) == 0, "every completion arrived");
    ok(g_order[0] == 3 && g_order[1] == 4 && g_order[2] == 1 && g_order[3] == 2,
       "continuations first, each queue in order: %d %d %d %d", g_order[0], g_order[1], g_order[2],
       g_order[3]);
    loop_destroy(g_order_loop);
    workpool_stop();
}

struct poster {
    struct loop *loop;
    int count;
};

static int g_posted;

static void count_post(void *arg)
{
    struct poster *p = arg;
    if (++g_posted == 4 * p->count)
        loop_request_stop(p->loop);
}

static void *post_many(void *arg)
{
    struct poster *p = arg;
    for (int i = 0; i < p->count; i++)
        if (loop_post(p->loop, count_post, p) != 0)
            abort();
    return NULL;
}

static void test_post(void)
{
    struct loop *l = loop_create(0);
    struct poster p = {l, 5000};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, post_many, &p);
    struct loop_hooks hooks = {.drained = drained};
    loop_run(l, &hooks, 1000);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    ok(g_posted == 20000, "all 20000 posts ran on the loop (%d)", g_posted);
    loop_destroy(l);
}

int main(void)
{
    test_batches();
    test_next_first();
    test_post();
    return test_done();
}
