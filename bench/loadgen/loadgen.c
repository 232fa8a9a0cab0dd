/*
 * loadgen.c - open-loop HTTP/1.1 load generator for latency at a fixed rate.
 *
 * wrk keeps every connection busy (closed loop): when the server stalls, wrk
 * stops sending, so the stall is measured once instead of for every request
 * that should have been sent meanwhile ("coordinated omission"). Here every
 * request has an intended send time fixed in advance: connection i of C sends
 * its k-th request at t0 + (i + k*C) / rate, so the whole run is one evenly
 * spaced schedule at the requested rate. Latency is measured from the intended
 * send time to the last byte of the response, so a request that had to wait
 * for a slow earlier response on its connection is charged the wait (as wrk2
 * does). Every latency is kept and sorted: percentiles are exact.
 *
 * Keep-alive, no pipelining, Content-Length and chunked responses. A closed
 * connection is reopened and counted as an error.
 *
 *   loadgen --host 127.0.0.1 --port 8080 --rate 5000 --duration 10
 *           [--connections 32] [--threads 1] [--warmup 1]
 *           [--method GET] [--path /users/{id}] [--ids LO:HI]
 *           [--body-file FILE] [--content-type application/json]
 *
 * In the path and the body, "{id}" becomes a random integer in LO..HI and
 * "{n}" a number unique to the request within the run (prefix it with
 * something unique per run, e.g. an email "u{n}-RUN@x.io"; see --tag, "{tag}").
 * Prints one JSON object on stdout: requested and achieved rate, counts,
 * p50/p90/p99/p99.9/max in ms and a percentile curve for plots.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* ---- options ---- */
static const char *o_host = "127.0.0.1";
static int o_port = 8080;
static double o_rate = 1000, o_duration = 10, o_warmup = 1;
static int o_conns = 32, o_threads = 1;
static const char *o_method = "GET", *o_path = "/health", *o_ctype = "application/json";
static const char *o_tag = "run";
static char *o_body; /* template, NULL for no body */
static size_t o_body_len;
static long long o_id_lo = 1, o_id_hi = 1;

static struct sockaddr_in g_addr;
static int64_t g_t0;           /* ns, CLOCK_MONOTONIC: start of the schedule */
static int64_t g_interval;     /* ns between two sends of one connection */
static atomic_llong g_counter; /* for {n} */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *m)
{
    perror(m);
    exit(1);
}

/* ---- growable byte buffer ---- */
struct bytes {
    char *p;
    size_t len, cap;
};

static void b_reserve(struct bytes *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p)
        die("realloc");
    b->cap = cap;
}

static void b_add(struct bytes *b, const char *s, size_t n)
{
    b_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* Append template t[0..n) with {id}, {n} and {tag} substituted. */
static void b_template(struct bytes *b, const char *t, size_t n, uint64_t *rng)
{
    char num[32];
    size_t i = 0;
    while (i < n) {
        if (t[i] == '{') {
            if (n - i >= 4 && !memcmp(t + i, "{id}", 4)) {
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                long long span = o_id_hi - o_id_lo + 1;
                long long v = o_id_lo + (long long)(*rng % (uint64_t)span);
                b_add(b, num, (size_t)snprintf(num, sizeof num, "%lld", v));
                i += 4;
                continue;
            }
            if (n - i >= 3 && !memcmp(t + i, "{n}", 3)) {
                long long v = atomic_fetch_add(&g_counter, 1);
                b_add(b, num, (size_t)snprintf(num, sizeof num, "%lld", v));
                i += 3;
                continue;
            }
            if (n - i >= 5 && !memcmp(t + i, "{tag}", 5)) {
                b_add(b, o_tag, strlen(o_tag));
                i += 5;
                continue;
            }
        }
        b_add(b, t + i, 1);
        i++;
    }
}

/* ---- connections ---- */
enum rstate { R_HEAD, R_BODY_CL, R_CHUNK_SIZE, R_CHUNK_DATA, R_CHUNK_CRLF, R_TRAILER };

struct conn {
    int fd;
    int idx;
    int64_t intended; /* intended send time of the next (or in-flight) request */
    int inflight;
    int want_out;
    struct bytes out;
    size_t out_off;
    struct bytes in;
    size_t in_off; /* parse position */
    enum rstate rs;
    size_t remain; /* body or chunk bytes still to come */
    int status;
};

struct worker {
    int id;
    int nconns;
    struct conn *conns;
    int ep, tfd;
    uint64_t rng;
    /* results */
    int64_t *lat; /* ns */
    size_t nlat, caplat;
    long long sent, completed, errors, non2xx, reconnects;
    int64_t stop_at;      /* no sends scheduled at or after this */
    int64_t record_from;  /* only requests intended at or after this are recorded */
};

static void conn_open(struct worker *w, struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&g_addr, sizeof g_addr) != 0 && errno != EINPROGRESS)
        die("connect");
    c->in.len = c->in_off = 0;
    c->out.len = c->out_off = 0;
    c->rs = R_HEAD;
    c->inflight = 0;
    c->want_out = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
}

static void conn_reset(struct worker *w, struct conn *c)
{
    epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->inflight) {
        w->errors++;
        c->intended += g_interval; /* the lost request is an error, not a latency */
    }
    w->reconnects++;
    conn_open(w, c);
}

static void set_out_interest(struct worker *w, struct conn *c, int want)
{
    if (c->want_out == want)
        return;
    c->want_out = want;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0),
                             .data.ptr = c};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void flush_out(struct worker *w, struct conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == ENOTCONN) {
                set_out_interest(w, c, 1);
                return;
            }
            conn_reset(w, c);
            return;
        }
        c->out_off += (size_t)n;
    }
    set_out_interest(w, c, 0);
}

static void send_request(struct worker *w, struct conn *c)
{
    char head[512];
    struct bytes path = {0}, body = {0};
    b_template(&path, o_path, strlen(o_path), &w->rng);
    if (o_body)
        b_template(&body, o_body, o_body_len, &w->rng);
    int hn;
    if (o_body)
        hn = snprintf(head, sizeof head,
                      "%s %.*s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      o_method, (int)path.len, path.p, o_host, o_port, o_ctype, body.len);
    else
        hn = snprintf(head, sizeof head, "%s %.*s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", o_method,
                      (int)path.len, path.p, o_host, o_port);
    c->out.len = c->out_off = 0;
    b_add(&c->out, head, (size_t)hn);
    if (o_body)
        b_add(&c->out, body.p, body.len);
    free(path.p);
    free(body.p);
    c->inflight = 1;
    c->rs = R_HEAD;
    c->in.len = c->in_off = 0;
    w->sent++;
    flush_out(w, c);
}

static void record(struct worker *w, struct conn *c, int64_t t)
{
    w->completed++;
    if (c->status < 200 || c->status > 299)
        w->non2xx++;
    if (c->intended >= w->record_from) {
        if (w->nlat == w->caplat) {
            w->caplat = w->caplat ? w->caplat * 2 : 65536;
            w->lat = realloc(w->lat, w->caplat * sizeof *w->lat);
            if (!w->lat)
                die("realloc");
        }
        w->lat[w->nlat++] = t - c->intended;
    }
    c->inflight = 0;
    c->intended += g_interval;
}

/* Find "\r\n" from position p; returns index of '\r' or -1. */
static long find_crlf(const struct bytes *b, size_t p)
{
    for (size_t i = p; i + 1 < b->len; i++)
        if (b->p[i] == '\r' && b->p[i + 1] == '\n')
            return (long)i;
    return -1;
}

/* Parse what arrived; returns 1 when the response is complete. */
static int parse_response(struct conn *c)
{
    struct bytes *b = &c->in;
    for (;;) {
        switch (c->rs) {
        case R_HEAD: {
            char *end = memmem(b->p, b->len, "\r\n\r\n", 4);
            if (!end)
                return 0;
            size_t hlen = (size_t)(end - b->p) + 4;
            c->status = (b->len > 12) ? atoi(b->p + 9) : 0;
            long long cl = -1;
            int chunked = 0;
            char *line = memchr(b->p, '\n', hlen);
            while (line && line + 1 < b->p + hlen) {
                line++;
                if (!strncasecmp(line, "content-length:", 15))
                    cl = atoll(line + 15);
                else if (!strncasecmp(line, "transfer-encoding:", 18)) {
                    char *eol = memchr(line, '\n', (size_t)(b->p + hlen - line));
                    if (eol && memmem(line, (size_t)(eol - line), "chunked", 7))
                        chunked = 1;
                }
                line = memchr(line, '\n', (size_t)(b->p + hlen - line));
            }
            c->in_off = hlen;
            if (chunked)
                c->rs = R_CHUNK_SIZE;
            else if (c->status == 204 || c->status == 304 || cl <= 0)
                return 1;
            else {
                c->rs = R_BODY_CL;
                c->remain = (size_t)cl;
            }
            break;
        }
        case R_BODY_CL:
            return b->len - c->in_off >= c->remain;
        case R_CHUNK_SIZE: {
            long e = find_crlf(b, c->in_off);
            if (e < 0)
                return 0;
            size_t sz = strtoul(b->p + c->in_off, NULL, 16);
            c->in_off = (size_t)e + 2;
            if (sz == 0)
                c->rs = R_TRAILER;
            else {
                c->remain = sz;
                c->rs = R_CHUNK_DATA;
            }
            break;
        }
        case R_CHUNK_DATA: {
            size_t avail = b->len - c->in_off;
            if (avail < c->remain + 2)
                return 0;
            c->in_off += c->remain + 2;
            c->rs = R_CHUNK_SIZE;
            break;
        }
        case R_CHUNK_CRLF:
            break;
        case R_TRAILER: {
            long e = find_crlf(b, c->in_off);
            if (e < 0)
                return 0;
            if ((size_t)e == c->in_off)
                return 1;
            c->in_off = (size_t)e + 2;
            break;
        }
        }
    }
}

static void on_readable(struct worker *w, struct conn *c)
{
    for (;;) {
        b_reserve(&c->in, 65536);
        ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_reset(w, c);
            return;
        }
        if (n < 0)
            return;
        c->in.len += (size_t)n;
        if (c->inflight && parse_response(c)) {
            record(w, c, now_ns());
            c->in.len = c->in_off = 0;
            return;
        }
        if ((size_t)n < 65536)
            return;
    }
}

static void arm_timer(struct worker *w, int64_t at)
{
    struct itimerspec its = {0};
    if (at <= 0)
        at = 1;
    its.it_value.tv_sec = at / 1000000000LL;
    its.it_value.tv_nsec = at % 1000000000LL;
    timerfd_settime(w->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, w->tfd, &tev);
    for (int i = 0; i < w->nconns; i++)
        conn_open(w, &w->conns[i]);
    int64_t drain_until = w->stop_at + 2000000000LL;
    struct epoll_event evs[256];
    for (;;) {
        int64_t t = now_ns();
        /* send everything that is due; find the next due time */
        int64_t next = INT64_MAX;
        int busy = 0;
        for (int i = 0; i < w->nconns; i++) {
            struct conn *c = &w->conns[i];
            if (c->inflight) {
                busy++;
                continue;
            }
            if (c->intended >= w->stop_at)
                continue;
            if (c->intended <= t) {
                send_request(w, c);
                busy++;
            } else if (c->intended < next)
                next = c->intended;
        }
        if (t >= w->stop_at && (busy == 0 || t >= drain_until))
            break;
        if (next == INT64_MAX)
            next = t + 50000000LL; /* only waiting for responses */
        arm_timer(w, next);
        int n = epoll_wait(w->ep, evs, 256, 1000);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                uint64_t x;
                if (read(w->tfd, &x, sizeof x) < 0) {
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                flush_out(w, c);
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                on_readable(w, c);
        }
    }
    for (int i = 0; i < w->nconns; i++)
        if (w->conns[i].inflight)
            w->errors++; /* no answer within 2 s after the end: a timeout */
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(const int64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)n);
    if (i >= n)
        i = n - 1;
    return (double)v[i] / 1e6;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path);
    struct bytes b = {0};
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        b_add(&b, tmp, n);
    fclose(f);
    *len = b.len;
    return b.p ? b.p : calloc(1, 1);
}

static void usage(void)
{
    fprintf(stderr, "usage: loadgen --rate R --duration S [--host H] [--port P] [--connections C]\n"
                    "       [--threads T] [--warmup S] [--method M] [--path P] [--ids LO:HI]\n"
                    "       [--body-file F] [--content-type T] [--tag TAG]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--host"))
            o_host = v;
        else if (!strcmp(a, "--port"))
            o_port = atoi(v);
        else if (!strcmp(a, "--rate"))
            o_rate = atof(v);
        else if (!strcmp(a, "--duration"))
            o_duration = atof(v);
        else if (!strcmp(a, "--warmup"))
            o_warmup = atof(v);
        else if (!strcmp(a, "--connections"))
            o_conns = atoi(v);
        else if (!strcmp(a, "--threads"))
            o_threads = atoi(v);
        else if (!strcmp(a, "--method"))
            o_method = v;
        else if (!strcmp(a, "--path"))
            o_path = v;
        else if (!strcmp(a, "--content-type"))
            o_ctype = v;
        else if (!strcmp(a, "--tag"))
            o_tag = v;
        else if (!strcmp(a, "--body-file"))
            o_body = read_file(v, &o_body_len);
        else if (!strcmp(a, "--ids")) {
            if (sscanf(v, "%lld:%lld", &o_id_lo, &o_id_hi) != 2 || o_id_hi < o_id_lo)
                usage();
        } else
            usage();
    }
    if (o_rate <= 0 || o_duration <= 0 || o_conns <= 0 || o_threads <= 0)
        usage();
    if (o_threads > o_conns)
        o_threads = o_conns;
    signal(SIGPIPE, SIG_IGN);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((unsigned short)o_port);
    if (inet_pton(AF_INET, o_host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
        return 2;
    }
    g_interval = (int64_t)(1e9 * o_conns / o_rate);
    g_t0 = now_ns() + 100000000LL; /* 100 ms to connect */
    int64_t record_from = g_t0 + (int64_t)(o_warmup * 1e9);
    int64_t stop_at = record_from + (int64_t)(o_duration * 1e9);
    struct worker *ws = calloc((size_t)o_threads, sizeof *ws);
    pthread_t *tids = calloc((size_t)o_threads, sizeof *tids);
    int ci = 0;
    for (int t = 0; t < o_threads; t++) {
        struct worker *w = &ws[t];
        w->id = t;
        w->nconns = o_conns / o_threads + (t < o_conns % o_threads);
        w->conns = calloc((size_t)w->nconns, sizeof *w->conns);
        w->rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)(t + 1) * 0xD1B54A32D192ED03ULL);
        w->stop_at = stop_at;
        w->record_from = record_from;
        for (int i = 0; i < w->nconns; i++, ci++) {
            w->conns[i].idx = ci;
            /* connection ci starts at t0 + ci/rate: sends interleave evenly */
            w->conns[i].intended = g_t0 + (int64_t)(1e9 * ci / o_rate);
        }
    }
    for (int t = 0; t < o_threads; t++)
        pthread_create(&tids[t], NULL, run_worker, &ws[t]);
    size_t total = 0;
    long long sent = 0, completed = 0, errors = 0, non2xx = 0, reconnects = 0;
    for (int t = 0; t < o_threads; t++) {
        pthread_join(tids[t], NULL);
        total += ws[t].nlat;
        sent += ws[t].sent;
        completed += ws[t].completed;
        errors += ws[t].errors;
        non2xx += ws[t].non2xx;
        reconnects += ws[t].reconnects;
    }
    int64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int t = 0; t < o_threads; t++) {
        memcpy(all + k, ws[t].lat, ws[t].nlat * sizeof *all);
        k += ws[t].nlat;
    }
    qsort(all, total, sizeof *all, cmp_i64);
    printf("{\"rate\":%.1f,\"duration_s\":%.3f,\"connections\":%d,\"recorded\":%zu,"
           "\"achieved_rps\":%.1f,\"sent\":%lld,\"completed\":%lld,\"errors\":%lld,"
           "\"non2xx\":%lld,\"reconnects\":%lld,"
           "\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%.4f,\"max_ms\":%.4f,"
           "\"curve\":[",
           o_rate, o_duration, o_conns, total, (double)total / o_duration, sent, completed,
           errors, non2xx, reconnects, pct(all, total, 50), pct(all, total, 90),
           pct(all, total, 99), pct(all, total, 99.9), total ? (double)all[total - 1] / 1e6 : 0);
    static const double curve[] = {0,  10, 20, 30, 40,   50,    60,     70,   75,  80,
                                   85, 90, 95, 97, 98, 99, 99.5, 99.9, 99.95, 99.99};
    for (size_t i = 0; i < sizeof curve / sizeof *curve; i++)
        printf("%s[%g,%.4f]", i ? "," : "", curve[i], pct(all, total, curve[i]));
    printf(",[100,%.4f]]}\n", total ? (double)all[total - 1] / 1e6 : 0);
    return 0;
}
