/*
 * limit.c - the cheapest HTTP/1.1 responder we can write: the ceiling any
 * server can reach on this machine with this load generator.
 *
 * One thread per core (the cores of the affinity mask, or --threads N), each
 * with its own SO_REUSEPORT listener and epoll instance. Requests are not
 * parsed: every "\r\n\r\n" seen on a connection (also across reads) is one
 * request, answered with the same canned "200 ok". Requests must not have
 * bodies (GET /health). Nothing else: no Date, no timers, no limits.
 *
 *   limit [--addr HOST:PORT] [--threads N]      (default 127.0.0.1:8090)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char RESP[] = "HTTP/1.1 200 OK\r\n"
                           "Server: limit\r\n"
                           "Content-Type: text/plain\r\n"
                           "Content-Length: 2\r\n"
                           "\r\n"
                           "ok";
#define RESP_LEN (sizeof RESP - 1)
#define MAX_BATCH 64 /* pipelined requests answered per write */

static struct sockaddr_in g_addr;

struct conn {
    int fd;
    unsigned state; /* how many bytes of "\r\n\r\n" matched at the end of the last read */
};

static int make_listener(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&g_addr, sizeof g_addr) != 0 || listen(fd, 4096) != 0) {
        perror("bind/listen");
        exit(1);
    }
    return fd;
}

/* Count request ends in p[0..n), carrying the partial match in *state. */
static unsigned count_ends(const char *p, size_t n, unsigned *state)
{
    static const char pat[4] = {'\r', '\n', '\r', '\n'};
    unsigned s = *state, count = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == pat[s]) {
            if (++s == 4) {
                count++;
                s = 0;
            }
        } else {
            s = (c == '\r') ? 1 : 0;
        }
    }
    *state = s;
    return count;
}

static void *worker(void *arg)
{
    (void)arg;
    int lfd = make_listener();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static __thread char out[RESP_LEN * MAX_BATCH];
    static __thread char in[65536];
    for (unsigned i = 0; i < MAX_BATCH; i++)
        memcpy(out + i * RESP_LEN, RESP, RESP_LEN);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            ssize_t r = read(c->fd, in, sizeof in);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                close(c->fd);
                free(c);
                continue;
            }
            unsigned reqs = count_ends(in, (size_t)r, &c->state);
            while (reqs > 0) {
                unsigned k = reqs > MAX_BATCH ? MAX_BATCH : reqs;
                /* loopback clients read their responses; a short write is not worth handling */
                if (write(c->fd, out, k * RESP_LEN) < 0)
                    break;
                reqs -= k;
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:8090";
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--addr") && i + 1 < argc)
            addr = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: limit [--addr HOST:PORT] [--threads N]\n");
            return 2;
        }
    }
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) {
        fprintf(stderr, "limit: bad --addr %s\n", addr);
        return 2;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "limit: bad host %s\n", host);
        return 2;
    }
    if (threads <= 0) {
        cpu_set_t set;
        threads = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    }
    signal(SIGPIPE, SIG_IGN);
    pthread_t t;
    for (int i = 1; i < threads; i++)
        pthread_create(&t, NULL, worker, NULL);
    worker(NULL);
    return 0;
}
