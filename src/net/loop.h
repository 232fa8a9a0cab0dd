/*
 * loop.h - one epoll event loop per thread, with cheap timers.
 *
 * Each loop owns an epoll instance (its user registers sockets there: the HTTP
 * server one SO_REUSEPORT listener per loop, PostgreSQL its connections), an
 * eventfd to be woken from other threads, a cached Date header refreshed once per second, and timer
 * queues. Every timer class has one fixed duration, so a FIFO list per class is
 * already sorted by deadline: arming is O(1) (unlink + append at the tail) and
 * expiry only looks at list heads.
 */
#ifndef BRISK_LOOP_H
#define BRISK_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;

/* Something registered with the loop's epoll: the first member of its owner. */
struct loop_io {
    void (*on_event)(struct loop_io *io, uint32_t events);
    int fd;
};

struct timer_node {
    struct timer_node *prev, *next;
    uint64_t deadline_ms;
    int cls; /* -1 when not armed */
};

/*
 * Timer classes are small numbers 0..LOOP_TIMER_CLASSES-1 that the loop's user
 * assigns (the HTTP server has header, body, idle, write and accept-pause
 * classes); each has one duration and one expiry callback, set with
 * loop_set_timeout before any loop is created.
 */
#define LOOP_TIMER_CLASSES 8

typedef void (*timer_fn)(struct loop *l, struct timer_node *t);

/*
 * Configure class cls (0..LOOP_TIMER_CLASSES-1): its duration in milliseconds
 * and expiry callback. Process-wide; call before loop_create. A class must be
 * configured before a timer is armed in it.
 */
void loop_set_timeout(int cls, uint64_t ms, timer_fn fn);

/*
 * Create a loop. `index` is the thread's number (0..n-1), used for metrics.
 * Returns NULL after logging on failure.
 */
struct loop *loop_create(int index);

/* Destroy a loop created by loop_create (after loop_run returned). */
void loop_destroy(struct loop *l);

/* Register io->fd for the given epoll events (EPOLLET etc.). Returns 0 or -1 (errno set). */
int loop_add(struct loop *l, struct loop_io *io, uint32_t events);

/* Change the events of a registered fd. Returns 0 or -1. */
int loop_mod(struct loop *l, struct loop_io *io, uint32_t events);

/* Remove io->fd from epoll (closing the fd also does). */
void loop_del(struct loop *l, struct loop_io *io);

/* Arm t in class cls from now; re-arming moves it to the tail. */
void loop_timer_arm(struct loop *l, struct timer_node *t, int cls);

/* Disarm t (no-op if not armed). */
void loop_timer_disarm(struct loop *l, struct timer_node *t);

/*
 * A one-shot timer of any duration, for rare deadlines whose length is not a
 * class's (a readiness probe's): armed ones are kept sorted, so arming costs
 * O(armed alarms). fn runs on the loop's thread, once per arming, after the
 * alarm was disarmed (it may re-arm it). Initialise with loop_alarm_init.
 */
struct loop_alarm {
    struct timer_node node;
    void (*fn)(struct loop *l, struct loop_alarm *a);
};

/* Set up a (disarmed) alarm calling fn. */
void loop_alarm_init(struct loop_alarm *a, void (*fn)(struct loop *l, struct loop_alarm *a));

/* Arm a for ms milliseconds from now; an armed alarm moves to the new deadline. */
void loop_alarm_arm(struct loop *l, struct loop_alarm *a, uint64_t ms);

/* Disarm a (no-op if not armed). */
void loop_alarm_disarm(struct loop *l, struct loop_alarm *a);

/* Run until loop_stop_requested() and on_idle says there is nothing left; see loop_run. */
struct loop_hooks {
    /* Called after each batch of events; the place to flush deferred work. */
    void (*after_events)(struct loop *l, void *arg);
    /* Called when the loop is asked to stop (drain); return true when it may exit. */
    bool (*drained)(struct loop *l, void *arg);
    /* Called once when stop is first seen (close listeners, close idle conns). */
    void (*on_stop)(struct loop *l, void *arg);
    /* Called about once per second (gauges, housekeeping). */
    void (*on_tick)(struct loop *l, void *arg);
    /* May be NULL. True when deferred work is queued: poll for events without sleeping. */
    bool (*has_work)(struct loop *l, void *arg);
    void *arg;
};

/*
 * Run the loop on the calling thread until it is stopped and drained, or the
 * drain deadline (ms after the stop) passes. Returns 0, or -1 on a fatal
 * epoll error (logged).
 */
int loop_run(struct loop *l, const struct loop_hooks *hooks, uint64_t drain_ms);

/* Ask a loop (from any thread, async-signal-safe) to stop accepting and drain. */
void loop_request_stop(struct loop *l);

/*
 * Run fn(arg) on the loop's thread soon (from any thread). Returns 0, or -1
 * when out of memory. Used by worker threads to hand results back.
 */
int loop_post(struct loop *l, void (*fn)(void *arg), void *arg);

/* Monotonic milliseconds, cached once per loop iteration. */
uint64_t loop_now_ms(const struct loop *l);

/* The current IMF-fixdate ("Fri, 27 Nov 2026 06:05:53 GMT", 29 bytes), cached per second. */
const char *loop_date(const struct loop *l);

/* Thread index given to loop_create. */
int loop_index(const struct loop *l);

/* True once a stop was requested. */
bool loop_stopping(const struct loop *l);

/* Per-loop user data (whatever runs the loop: the HTTP server's per-thread state). */
void loop_set_data(struct loop *l, void *data);
void *loop_data(const struct loop *l);

#endif
