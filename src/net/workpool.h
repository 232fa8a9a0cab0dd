/*
 * workpool.h - CPU worker threads for work that must not run on an event loop.
 *
 * POST /orders/process prices and signs up to 100000 orders: done on the loop
 * it would stall every connection of that loop for tens of milliseconds. The
 * handler splits the work into ranges, the pool runs them on all cores, and
 * the completion is posted back to the handler's loop (loop_post), so the
 * response is written on the thread that owns the connection.
 */
#ifndef BRISK_WORKPOOL_H
#define BRISK_WORKPOOL_H

#include <stddef.h>
#include <stdint.h>

struct loop;

/* Start `threads` workers (>= 1). Returns 0, or -1 after logging. Once, before loops run. */
int workpool_start(int threads);

/* Stop and join the workers (after every loop has stopped). */
void workpool_stop(void);

/* Number of worker threads. */
int workpool_threads(void);

/* Work items scheduled so far (workpool_run and workpool_run_next calls): a
 * caller that samples it twice learns whether the pool had work in between. */
uint64_t workpool_scheduled(void);

/*
 * Run fn(arg, begin, end) over [0, n) in ranges of about `grain` items on the
 * workers, then call done(arg) on loop `l`'s thread. fn must only touch items
 * in its range (and read-only shared data). Returns 0, or -1 when out of
 * memory (nothing was scheduled; the caller answers 503). n == 0 still calls
 * done (through the loop).
 */
int workpool_run(struct loop *l, size_t n, size_t grain,
                 void (*fn)(void *arg, size_t begin, size_t end), void (*done)(void *arg),
                 void *arg);

/*
 * workpool_run for a continuation (the next step of work already started):
 * queued behind other continuations but ahead of everything workpool_run
 * queued, so started work finishes (and frees what it holds) before new work
 * begins. Same contract otherwise.
 */
int workpool_run_next(struct loop *l, size_t n, size_t grain,
                      void (*fn)(void *arg, size_t begin, size_t end), void (*done)(void *arg),
                      void *arg);

#endif
