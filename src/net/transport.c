/*
 * transport.c - the plain socket transport (see transport.h).
 */
#include "net/transport.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t sock_read(struct transport *t, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = recv(t->fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            t->read_want = TRANSPORT_WANT_READ;
        return -1;
    }
}

static ssize_t sock_writev(struct transport *t, const struct iovec *iov, int n)
{
    for (;;) {
        ssize_t w;
        if (n == 1) {
            /* the common case: one buffer, no msghdr to build */
            w = send(t->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
        } else {
            struct msghdr mh;
            memset(&mh, 0, sizeof mh);
            mh.msg_iov = (struct iovec *)iov; /* sendmsg does not write it */
            mh.msg_iovlen = (size_t)n;
            w = sendmsg(t->fd, &mh, MSG_NOSIGNAL);
        }
        if (w >= 0)
            return w;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            t->write_want = TRANSPORT_WANT_WRITE;
        return -1;
    }
}

static int sock_shutdown(struct transport *t)
{
    return shutdown(t->fd, SHUT_WR);
}

static void sock_close(struct transport *t)
{
    close(t->fd);
    t->fd = -1;
}

static const struct transport_ops k_socket_ops = {
    .read = sock_read,
    .writev = sock_writev,
    .pending = NULL,
    .shutdown = sock_shutdown,
    .close = sock_close,
};

void transport_socket_init(struct transport *t, int fd)
{
    t->ops = &k_socket_ops;
    t->fd = fd;
    t->impl = NULL;
    t->read_want = t->write_want = t->flags = 0;
}
