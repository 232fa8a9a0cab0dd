/*
 * loop.c - epoll event loop with FIFO timer queues (see loop.h).
 */
#include "net/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "base/compiler.h"
#include "base/log.h"

#define MAX_EVENTS 256

struct timer_list {
    struct timer_node head; /* sentinel */
};

struct posted {
    struct posted *next;
    void (*fn)(void *arg);
    void *arg;
};

struct loop {
    int epfd;
    pthread_mutex_t post_lock; /* guards posted_head/tail: written by other threads */
    struct posted *posted_head, *posted_tail;
    int index;
    struct loop_io wake; /* eventfd */
    atomic_bool stop_requested;
    bool stopping; /* stop seen by this thread */
    uint64_t now_ms;
    time_t date_sec;
    char date[32];
    struct timer_list timers[LOOP_TIMER_CLASSES];
    struct timer_list alarms; /* struct loop_alarm, sorted by deadline */
    void *data;
};

static uint64_t g_timeout_ms[LOOP_TIMER_CLASSES];
static timer_fn g_timer_fn[LOOP_TIMER_CLASSES];

void loop_set_timeout(int cls, uint64_t ms, timer_fn fn)
{
    if (cls < 0 || cls >= LOOP_TIMER_CLASSES)
        return;
    g_timeout_ms[cls] = ms;
    g_timer_fn[cls] = fn;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void refresh_date(struct loop *l)
{
    static const char days[][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec == l->date_sec)
        return;
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    l->date_sec = ts.tv_sec;
    /* IMF-fixdate, RFC 9110 5.6.7 */
    char *d = l->date;
    memcpy(d, days[tm.tm_wday], 3);
    d[3] = ',';
    d[4] = ' ';
    d[5] = (char)('0' + tm.tm_mday / 10);
    d[6] = (char)('0' + tm.tm_mday % 10);
    d[7] = ' ';
    memcpy(d + 8, months[tm.tm_mon], 3);
    d[11] = ' ';
    int y = tm.tm_year + 1900;
    d[12] = (char)('0' + y / 1000 % 10);
    d[13] = (char)('0' + y / 100 % 10);
    d[14] = (char)('0' + y / 10 % 10);
    d[15] = (char)('0' + y % 10);
    d[16] = ' ';
    d[17] = (char)('0' + tm.tm_hour / 10);
    d[18] = (char)('0' + tm.tm_hour % 10);
    d[19] = ':';
    d[20] = (char)('0' + tm.tm_min / 10);
    d[21] = (char)('0' + tm.tm_min % 10);
    d[22] = ':';
    d[23] = (char)('0' + tm.tm_sec / 10);
    d[24] = (char)('0' + tm.tm_sec % 10);
    memcpy(d + 25, " GMT", 5); /* includes the NUL */
}

static void on_wake(struct loop_io *io, uint32_t events)
{
    (void)events;
    struct loop *l = container_of(io, struct loop, wake);
    uint64_t v;
    /* drain the eventfd; the stop flag itself is read by loop_run */
    while (read(io->fd, &v, sizeof v) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&l->post_lock);
    struct posted *p = l->posted_head;
    l->posted_head = l->posted_tail = NULL;
    pthread_mutex_unlock(&l->post_lock);
    while (p) {
        struct posted *next = p->next;
        p->fn(p->arg);
        free(p);
        p = next;
    }
}

int loop_post(struct loop *l, void (*fn)(void *arg), void *arg)
{
    struct posted *p = malloc(sizeof *p);
    if (!p)
        return -1;
    p->next = NULL;
    p->fn = fn;
    p->arg = arg;
    pthread_mutex_lock(&l->post_lock);
    if (l->posted_tail)
        l->posted_tail->next = p;
    else
        l->posted_head = p;
    l->posted_tail = p;
    pthread_mutex_unlock(&l->post_lock);
    uint64_t one = 1;
    ssize_t w = write(l->wake.fd, &one, sizeof one);
    (void)w; /* fails only when the counter is saturated: the loop is awake then */
    return 0;
}

struct loop *loop_create(int index)
{
    struct loop *l = calloc(1, sizeof *l);
    if (!l)
        log_fatal("out of memory creating a loop");
    l->index = index;
    l->wake.fd = -1;
    pthread_mutex_init(&l->post_lock, NULL);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        log_error("epoll_create1 failed: %s", strerror(errno));
        goto fail;
    }
    l->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->wake.fd < 0) {
        log_error("eventfd failed: %s", strerror(errno));
        goto fail;
    }
    l->wake.on_event = on_wake;
    if (loop_add(l, &l->wake, EPOLLIN) != 0) {
        log_error("epoll_ctl(eventfd) failed: %s", strerror(errno));
        goto fail;
    }
    for (int i = 0; i < LOOP_TIMER_CLASSES; i++) {
        l->timers[i].head.next = &l->timers[i].head;
        l->timers[i].head.prev = &l->timers[i].head;
    }
    l->alarms.head.next = l->alarms.head.prev = &l->alarms.head;
    l->now_ms = mono_ms();
    refresh_date(l);
    return l;
fail:
    loop_destroy(l);
    return NULL;
}

void loop_destroy(struct loop *l)
{
    if (!l)
        return;
    if (l->wake.fd >= 0)
        close(l->wake.fd);
    if (l->epfd >= 0)
        close(l->epfd);
    for (struct posted *p = l->posted_head, *next; p; p = next) {
        next = p->next;
        free(p); /* work posted after the loop stopped: its owner is gone too */
    }
    pthread_mutex_destroy(&l->post_lock);
    free(l);
}

int loop_add(struct loop *l, struct loop_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev);
}

int loop_mod(struct loop *l, struct loop_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev);
}

void loop_del(struct loop *l, struct loop_io *io)
{
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
}

static void timer_unlink(struct timer_node *t)
{
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->cls = -1;
}

void loop_timer_arm(struct loop *l, struct timer_node *t, int cls)
{
    if (t->prev)
        timer_unlink(t);
    struct timer_node *head = &l->timers[cls].head;
    t->deadline_ms = l->now_ms + g_timeout_ms[cls];
    t->cls = cls;
    t->prev = head->prev;
    t->next = head;
    head->prev->next = t;
    head->prev = t;
}

void loop_timer_disarm(struct loop *l, struct timer_node *t)
{
    (void)l;
    if (t->prev)
        timer_unlink(t);
}

void loop_alarm_init(struct loop_alarm *a, void (*fn)(struct loop *l, struct loop_alarm *a))
{
    a->node.prev = a->node.next = NULL;
    a->node.cls = -1;
    a->fn = fn;
}

void loop_alarm_arm(struct loop *l, struct loop_alarm *a, uint64_t ms)
{
    struct timer_node *t = &a->node;
    struct timer_node *head = &l->alarms.head;
    if (t->prev)
        timer_unlink(t);
    t->deadline_ms = l->now_ms + ms;
    t->cls = LOOP_TIMER_CLASSES; /* not a class: only "armed" for timer_unlink's callers */
    /* from the tail: alarms armed later usually expire later */
    struct timer_node *after = head->prev;
    while (after != head && after->deadline_ms > t->deadline_ms)
        after = after->prev;
    t->prev = after;
    t->next = after->next;
    after->next->prev = t;
    after->next = t;
}

void loop_alarm_disarm(struct loop *l, struct loop_alarm *a)
{
    (void)l;
    if (a->node.prev)
        timer_unlink(&a->node);
}

static void run_timers(struct loop *l)
{
    struct timer_node *ahead = &l->alarms.head;
    while (ahead->next != ahead && ahead->next->deadline_ms <= l->now_ms) {
        struct timer_node *t = ahead->next;
        timer_unlink(t);
        struct loop_alarm *a = container_of(t, struct loop_alarm, node);
        a->fn(l, a); /* may re-arm a or free its owner */
    }
    for (int c = 0; c < LOOP_TIMER_CLASSES; c++) {
        struct timer_node *head = &l->timers[c].head;
        while (head->next != head && head->next->deadline_ms <= l->now_ms) {
            struct timer_node *t = head->next;
            timer_unlink(t);
            g_timer_fn[c](l, t); /* may re-arm or free t's owner */
        }
    }
}

/* Milliseconds until the earliest deadline, capped at 1000 so the Date and ticks stay fresh. */
static int next_wait_ms(struct loop *l)
{
    uint64_t wait = 1000;
    if (l->alarms.head.next != &l->alarms.head) {
        uint64_t d = l->alarms.head.next->deadline_ms;
        wait = d > l->now_ms ? (d - l->now_ms < wait ? d - l->now_ms : wait) : 0;
    }
    for (int c = 0; c < LOOP_TIMER_CLASSES; c++) {
        struct timer_node *head = &l->timers[c].head;
        if (head->next != head) {
            uint64_t d = head->next->deadline_ms;
            uint64_t w = d > l->now_ms ? d - l->now_ms : 0;
            if (w < wait)
                wait = w;
        }
    }
    /* the coarse clock ticks every few ms: round up so we do not spin */
    return (int)(wait ? wait + 4 : 0);
}

int loop_run(struct loop *l, const struct loop_hooks *hooks, uint64_t drain_ms)
{
    struct epoll_event events[MAX_EVENTS];
    uint64_t stop_deadline = 0;
    uint64_t last_tick = l->now_ms;
    for (;;) {
        bool busy = hooks->has_work && hooks->has_work(l, hooks->arg);
        int n = epoll_wait(l->epfd, events, MAX_EVENTS, busy ? 0 : next_wait_ms(l));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("epoll_wait failed: %s", strerror(errno));
            return -1;
        }
        l->now_ms = mono_ms();
        refresh_date(l);
        for (int i = 0; i < n; i++) {
            struct loop_io *io = events[i].data.ptr;
            io->on_event(io, events[i].events);
        }
        run_timers(l);
        if (hooks->after_events)
            hooks->after_events(l, hooks->arg);
        if (l->now_ms - last_tick >= 1000) {
            last_tick = l->now_ms;
            if (hooks->on_tick)
                hooks->on_tick(l, hooks->arg);
        }
        if (unlikely(atomic_load_explicit(&l->stop_requested, memory_order_acquire))) {
            if (!l->stopping) {
                l->stopping = true;
                stop_deadline = l->now_ms + drain_ms;
                if (hooks->on_stop)
                    hooks->on_stop(l, hooks->arg);
                if (hooks->after_events)
                    hooks->after_events(l, hooks->arg);
            }
            if (hooks->drained(l, hooks->arg))
                return 0;
            if (l->now_ms >= stop_deadline) {
                log_warn("drain deadline passed on loop %d: closing remaining connections",
                         l->index);
                return 0;
            }
        }
    }
}

void loop_request_stop(struct loop *l)
{
    atomic_store_explicit(&l->stop_requested, true, memory_order_release);
    uint64_t one = 1;
    ssize_t w = write(l->wake.fd, &one, sizeof one);
    (void)w; /* the eventfd can only fail if its counter overflows: the loop is awake then */
}

uint64_t loop_now_ms(const struct loop *l)
{
    return l->now_ms;
}

const char *loop_date(const struct loop *l)
{
    return l->date;
}

int loop_index(const struct loop *l)
{
    return l->index;
}

bool loop_stopping(const struct loop *l)
{
    return l->stopping;
}

void loop_set_data(struct loop *l, void *data)
{
    l->data = data;
}

void *loop_data(const struct loop *l)
{
    return l->data;
}
