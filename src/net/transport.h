/*
 * transport.h - the byte stream under a connection: a plain socket
 * (transport.c) or TLS (tls.c).
 *
 * The HTTP layer reads and writes a connection only through these calls, so a
 * transport that keeps its own buffers and state (a TLS session) plugs in
 * without touching the protocol code. The calls are non-blocking and follow
 * one convention: a count of bytes, or -1 with errno set (EAGAIN: try again
 * after the events in read_want / write_want).
 */
#ifndef BRISK_TRANSPORT_H
#define BRISK_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

struct transport;

/* What a transport waits for before the call that said EAGAIN can make progress. */
enum transport_want {
    TRANSPORT_WANT_READ = 1,  /* the socket must become readable */
    TRANSPORT_WANT_WRITE = 2, /* the socket must become writable (TLS: a read may need to write) */
};

struct transport_ops {
    /* Read up to len bytes: > 0 bytes read, 0 at end of stream, -1 with errno. */
    ssize_t (*read)(struct transport *t, void *buf, size_t len);
    /* Write from iov[0..n): bytes accepted (possibly fewer than offered), or -1 with errno
     * (EPIPE/ECONNRESET when the peer is gone; never raises SIGPIPE). */
    ssize_t (*writev)(struct transport *t, const struct iovec *iov, int n);
    /* Bytes already decoded inside the transport that a read returns without the socket
     * becoming readable again (TLS records); NULL means none are ever held. */
    size_t (*pending)(const struct transport *t);
    /* Say that no more bytes will be written (a clean close: TCP FIN, TLS close_notify).
     * Returns 0 or -1 with errno (EAGAIN: call again when write_want is met). */
    int (*shutdown)(struct transport *t);
    /* Release the transport and close its socket (which also leaves the epoll set). */
    void (*close)(struct transport *t);
};

/*
 * Embedded in the connection that owns it; fd < 0 once closed. read_want and
 * write_want say (enum transport_want bits) what the last read or write that
 * returned EAGAIN waits for: a socket's read waits for readable, a TLS read
 * may wait for writable.
 */
struct transport {
    const struct transport_ops *ops;
    int fd;
    void *impl; /* the transport's own state (TLS: the SSL object); NULL for a socket */
    unsigned char read_want;
    unsigned char write_want;
    unsigned char flags; /* the transport's own (TLS: the handshake has finished) */
};

/* Make t a plain socket transport over the connected, non-blocking socket fd (owned from now). */
void transport_socket_init(struct transport *t, int fd);

static inline ssize_t transport_read(struct transport *t, void *buf, size_t len)
{
    return t->ops->read(t, buf, len);
}

static inline ssize_t transport_writev(struct transport *t, const struct iovec *iov, int n)
{
    return t->ops->writev(t, iov, n);
}

/* True when a read can return bytes without a new readiness event. */
static inline bool transport_has_pending(const struct transport *t)
{
    return t->ops->pending && t->ops->pending(t) > 0;
}

static inline int transport_shutdown(struct transport *t)
{
    return t->ops->shutdown(t);
}

/* Close t (once; later calls do nothing). */
static inline void transport_close(struct transport *t)
{
    if (t->fd >= 0)
        t->ops->close(t);
}

#endif
