/*
 * tls.h - TLS for the connections of the TLS listener: one process-wide
 * server context (OpenSSL 3 libssl) and a transport (transport.h) over it.
 *
 * The context is built at start-up from a PEM certificate chain and key and
 * can be replaced at run time (SIGHUP): connections made before keep the
 * context they started with (each SSL object holds a reference), new ones
 * get the new one. Everything here is safe to call from any thread.
 */
#ifndef BRISK_TLS_H
#define BRISK_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "net/transport.h"

/*
 * Load cert_path (PEM: the certificate, then any intermediates) and key_path
 * (PEM private key, RSA or ECDSA, unencrypted) into the process's context:
 * TLS 1.2 and 1.3 only, Mozilla "intermediate" ciphers for 1.2, ALPN
 * h2 (unless tls_offer_h2(false)) and http/1.1, session tickets, kTLS when the kernel offers it.
 * Logs once which record path (kTLS or userspace) is in use. Returns 0, or -1 with one line "brisk:
 * BRISK_TLS_CERT (--tls-cert): ..." (or BRISK_TLS_KEY) in err (cap bytes); on failure nothing
 * changes. Call once, before the loops start.
 */
int tls_init(const char *cert_path, const char *key_path, char *err, size_t cap);

/*
 * Build a new context from the paths tls_init was given and make it the one
 * new connections use; connections in flight keep theirs. Returns 0, or -1
 * with the reason in err (cap bytes), the current context unchanged.
 */
int tls_reload(char *err, size_t cap);

/* Offer h2 by ALPN (the default) or only http/1.1; call before tls_init. */
void tls_offer_h2(bool on);

/* True when the handshake of TLS transport t chose h2 by ALPN (false before it finished,
 * and for a socket transport). */
bool tls_transport_is_h2(const struct transport *t);

/* True once tls_init succeeded (and until tls_free). */
bool tls_enabled(void);

/*
 * Make t a server-side TLS transport over the accepted, non-blocking socket
 * fd (owned from now on, also on failure: then fd is closed). The handshake
 * runs inside the first reads. peer: the client's address as text, for the
 * debug line of a failed handshake; it must live as long as t (it may be
 * filled in after this call). Returns 0, or -1 (out of memory, or no
 * context) with the socket closed and t->fd = -1.
 */
int tls_transport_init(struct transport *t, int fd, const char *peer);

/* Drop the process's context (at exit; connections still open keep theirs alive). */
void tls_free(void);

#endif
