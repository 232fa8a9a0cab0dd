/*
 * tls.c - the TLS context and transport (see tls.h).
 *
 * Non-blocking throughout: OpenSSL reads and writes the socket itself
 * (its socket BIO, which kTLS needs) and says SSL_ERROR_WANT_READ/WRITE,
 * which become EAGAIN plus read_want/write_want for the connection. The
 * socket BIO writes with write(2), not send(MSG_NOSIGNAL): a peer that is
 * gone would raise SIGPIPE, which server_run ignores process-wide (and
 * tls_init makes sure of).
 */
#define _GNU_SOURCE
#include "net/tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

/* Mozilla "intermediate" (v5.7) for TLS 1.2; TLS 1.3's suites are OpenSSL's defaults, the
 * same three Mozilla lists. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:prime256v1:secp384r1"

/* The protocols ALPN may select, in the server's order of preference (wire format:
 * length-prefixed): h2 first unless tls_offer_h2(false) turned it off. */
static const unsigned char k_alpn_h2[] = "\x02h2\x08http/1.1";
static const unsigned char k_alpn_h1[] = "\x08http/1.1";
static bool g_offer_h2 = true; /* set before tls_init, read-only afterwards */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *g_ctx; /* under g_lock; each SSL holds its own reference */
static char g_cert[4096], g_key[4096];
static bool g_ktls; /* the kernel has the tls ULP (probed once by tls_init) */

/* ---------------------------------------------------------------- ticket keys */

/*
 * Session tickets are encrypted with keys of our own, rotated in memory: OpenSSL's
 * built-in ticket key is made once per context and never changes, so a process up for
 * months would protect every ticket with one key. Here a new key starts every
 * TICKET_PERIOD_S; tickets under the one before are still accepted (and renewed), older
 * ones mean a full handshake. Tickets live TICKET_PERIOD_S (SSL_CTX_set_timeout), so
 * none outlives both keys. The keys are process-wide, not per context: a SIGHUP reload
 * keeps resumption working. They never leave memory.
 */
#define TICKET_PERIOD_S 3600

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    time_t born; /* 0: not made yet */
};

static pthread_mutex_t g_tk_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ticket_key g_tk_cur, g_tk_prev; /* under g_tk_lock */

/* Make g_tk_cur a fresh key (the old one becomes g_tk_prev). Returns 0 or -1. Locked. */
static int ticket_key_rotate(time_t now)
{
    struct ticket_key k;
    if (RAND_bytes(k.name, sizeof k.name) != 1 || RAND_priv_bytes(k.aes, sizeof k.aes) != 1 ||
        RAND_priv_bytes(k.hmac, sizeof k.hmac) != 1)
        return -1;
    k.born = now;
    g_tk_prev = g_tk_cur;
    g_tk_cur = k;
    OPENSSL_cleanse(&k, sizeof k);
    return 0;
}

/* Set up the cipher and MAC of one ticket with key k (AES-256-CBC + HMAC-SHA256, the
 * scheme OpenSSL's own tickets use). Returns 1 or 0. */
static int ticket_crypt_init(const struct ticket_key *k, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                             EVP_MAC_CTX *hctx, int enc)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[3];
    params[0] =
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof k->hmac);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[2] = OSSL_PARAM_construct_end();
    if (EVP_MAC_CTX_set_params(hctx, params) != 1)
        return 0;
    if (enc)
        return EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1;
    return EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1;
}

/*
 * OpenSSL's ticket callback. enc: name a key and set up encryption (1, or -1 on failure:
 * no ticket is sent). !enc: find the key named (1; 2 = valid but under the old key, send
 * a new ticket; 0 = unknown, full handshake).
 */
static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    (void)ssl;
    struct ticket_key k;
    memset(&k, 0, sizeof k);
    int rc = 0;
    time_t now = time(NULL);
    pthread_mutex_lock(&g_tk_lock);
    if (g_tk_cur.born == 0 || now - g_tk_cur.born >= TICKET_PERIOD_S)
        (void)ticket_key_rotate(now); /* on failure the current key serves a while longer */
    if (enc) {
        k = g_tk_cur;
        rc = k.born ? 1 : -1;
    } else if (g_tk_cur.born && memcmp(key_name, g_tk_cur.name, 16) == 0) {
        k = g_tk_cur;
        rc = 1;
    } else if (g_tk_prev.born && memcmp(key_name, g_tk_prev.name, 16) == 0) {
        k = g_tk_prev;
        rc = 2;
    }
    pthread_mutex_unlock(&g_tk_lock);
    if (rc == 1 || rc == 2) {
        if (enc) {
            memcpy(key_name, k.name, 16);
            if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
                rc = -1;
        }
        if (rc > 0 && !ticket_crypt_init(&k, iv, cctx, hctx, enc))
            rc = enc ? -1 : 0;
    }
    OPENSSL_cleanse(&k, sizeof k);
    return rc;
}

/* ---------------------------------------------------------------- context */

/* Never prompt on the terminal for an encrypted key's passphrase: fail instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/*
 * Pick the protocol: the first of ours (k_alpn order) the client offers. A
 * client that offers ALPN but none of ours gets the no_application_protocol
 * alert (RFC 7301); one that offers no ALPN is served HTTP/1.1.
 */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    unsigned char *sel = NULL;
    unsigned char sel_len = 0;
    const unsigned char *ours = g_offer_h2 ? k_alpn_h2 : k_alpn_h1;
    unsigned int ours_len =
        g_offer_h2 ? (unsigned int)sizeof k_alpn_h2 - 1 : (unsigned int)sizeof k_alpn_h1 - 1;
    if (SSL_select_next_proto(&sel, &sel_len, ours, ours_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    *outlen = sel_len;
    return SSL_TLSEXT_ERR_OK;
}

/* The first OpenSSL error as text ("No such file or directory", "no start line", "key values
 * mismatch"): the first says why, the later ones only where ("PEM lib"). Clears the queue. */
static const char *ssl_reason(char *buf, size_t cap)
{
    unsigned long e = ERR_peek_error();
    const char *r = NULL;
    if (e && ERR_GET_LIB(e) == ERR_LIB_SYS)
        r = strerror(ERR_GET_REASON(e)); /* a system error's reason is its errno */
    else if (e)
        r = ERR_reason_error_string(e);
    snprintf(buf, cap, "%s", r ? r : "unknown OpenSSL error");
    ERR_clear_error();
    return buf;
}

/* A new context for cert/key, or NULL with one line naming the setting in err. */
static SSL_CTX *ctx_build(const char *cert, const char *key, char *err, size_t cap)
{
    char why[160];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, cap, "brisk: TLS: cannot create a context: %s", ssl_reason(why, sizeof why));
        return NULL;
    }
    /* no renegotiation (a client-driven CPU sink), kTLS when the kernel has it (asked
     * for only then: without the ULP OpenSSL would still try two setsockopt calls per
     * connection, both failing); the server's cipher order (AES-128-GCM first: cheapest
     * with AES-NI), except that a client putting ChaCha20 first (a phone without AES
     * instructions) gets it; OpenSSL 3 already refuses compression and SSLv2/3 */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_PRIORITIZE_CHACHA | (g_ktls ? SSL_OP_ENABLE_KTLS : 0));
    /* partial writes: a big response goes out record by record without waiting for all of
     * it; moving buffer: a retried write may come from a reallocated output buffer;
     * release buffers: an idle connection does not keep OpenSSL's 2 × ~17 kB record
     * buffers (nginx sets it too) */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    /* Resumption by stateless tickets only (TLS 1.2 and 1.3): no server-side session
     * cache to lock across loops or to grow; the ticket keys rotate (ticket_cb). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, TICKET_PERIOD_S);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1 || SSL_CTX_set_dh_auto(ctx, 1) != 1 ||
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1) {
        snprintf(err, cap, "brisk: TLS: cannot set protocols and ciphers: %s",
                 ssl_reason(why, sizeof why));
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, cap, "brisk: BRISK_TLS_CERT (--tls-cert): cannot load \"%.200s\": %s", cert,
                 ssl_reason(why, sizeof why));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, cap, "brisk: BRISK_TLS_KEY (--tls-key): cannot load \"%.200s\": %s", key,
                 ssl_reason(why, sizeof why));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, cap,
                 "brisk: BRISK_TLS_KEY (--tls-key): \"%.200s\" does not match the certificate "
                 "in BRISK_TLS_CERT: %s",
                 key, ssl_reason(why, sizeof why));
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* True when the kernel has the "tls" ULP kTLS needs: an unconnected TCP socket then refuses
 * it with ENOTCONN; without the ULP the lookup fails first with ENOENT. */
static bool kernel_has_ktls(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool has = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls") == 0 || errno != ENOENT;
    close(fd);
    return has;
}

/* One line naming the certificate and the record path, at start and after a reload. */
static void log_loaded(SSL_CTX *ctx, const char *what)
{
    char subject[256] = "?";
    X509 *x = SSL_CTX_get0_certificate(ctx);
    EVP_PKEY *k = x ? X509_get0_pubkey(x) : NULL;
    if (x)
        X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
    log_info("TLS %s: certificate %s (%s key, %d bits) from %s", what, subject,
             k && EVP_PKEY_get_base_id(k) == EVP_PKEY_EC    ? "ECDSA"
             : k && EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA ? "RSA"
                                                            : "other",
             k ? EVP_PKEY_get_bits(k) : 0, g_cert);
}

int tls_init(const char *cert_path, const char *key_path, char *err, size_t cap)
{
    if (strlen(cert_path) >= sizeof g_cert || strlen(key_path) >= sizeof g_key) {
        snprintf(err, cap, "brisk: BRISK_TLS_CERT / BRISK_TLS_KEY: path too long");
        return -1;
    }
    g_ktls = kernel_has_ktls();
    SSL_CTX *ctx = ctx_build(cert_path, key_path, err, cap);
    if (!ctx)
        return -1;
    /* OpenSSL's socket BIO writes with write(2): a gone peer must not kill the process */
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_cert, sizeof g_cert, "%s", cert_path);
    snprintf(g_key, sizeof g_key, "%s", key_path);
    pthread_mutex_lock(&g_lock);
    SSL_CTX *old = g_ctx;
    g_ctx = ctx;
    pthread_mutex_unlock(&g_lock);
    SSL_CTX_free(old);
    log_loaded(ctx, "enabled");
    if (g_ktls)
        log_info("TLS records: kTLS (SSL_OP_ENABLE_KTLS: the kernel has the tls ULP; OpenSSL "
                 "hands each connection's keys to it when the cipher allows)");
    else
        log_info("TLS records: userspace (OpenSSL); kTLS not used: this kernel has no tls "
                 "ULP");
    return 0;
}

int tls_reload(char *err, size_t cap)
{
    pthread_mutex_lock(&g_lock);
    bool on = g_ctx != NULL;
    pthread_mutex_unlock(&g_lock);
    if (!on) {
        snprintf(err, cap, "TLS is not enabled");
        return -1;
    }
    SSL_CTX *ctx = ctx_build(g_cert, g_key, err, cap);
    if (!ctx)
        return -1;
    pthread_mutex_lock(&g_lock);
    SSL_CTX *old = g_ctx;
    g_ctx = ctx;
    pthread_mutex_unlock(&g_lock);
    SSL_CTX_free(old); /* freed for real once the last connection made with it closes */
    log_loaded(ctx, "reloaded");
    return 0;
}

void tls_offer_h2(bool on)
{
    g_offer_h2 = on;
}

bool tls_transport_is_h2(const struct transport *t)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    if (!t->impl)
        return false;
    SSL_get0_alpn_selected((const SSL *)t->impl, &p, &n);
    return n == 2 && p[0] == 'h' && p[1] == '2';
}

bool tls_enabled(void)
{
    pthread_mutex_lock(&g_lock);
    bool on = g_ctx != NULL;
    pthread_mutex_unlock(&g_lock);
    return on;
}

void tls_free(void)
{
    pthread_mutex_lock(&g_lock);
    SSL_CTX *old = g_ctx;
    g_ctx = NULL;
    pthread_mutex_unlock(&g_lock);
    SSL_CTX_free(old);
}

/* ---------------------------------------------------------------- transport */

#define TLS_HANDSHAKE_DONE 1 /* transport flags: the handshake finished once */

/* A failed handshake, at debug with the peer's address (a fatal error also leaves OpenSSL
 * "in init", so the transport remembers whether the handshake had finished). */
static void log_handshake_failure(const struct transport *t, const char *why)
{
    if (t->flags & TLS_HANDSHAKE_DONE)
        return;
    const char *peer = SSL_get_app_data((SSL *)t->impl);
    log_debug("TLS handshake with %s failed: %s", peer && *peer ? peer : "?", why);
}

/*
 * Turn the result r of an SSL call into the transport convention: -1 with
 * errno (EAGAIN and *want set for WANT_READ/WRITE), or 0 for a clean end of
 * stream (close_notify, or a peer that just closed).
 */
static ssize_t ssl_fail(struct transport *t, int r, unsigned char *want)
{
    SSL *ssl = t->impl;
    int saved = errno;
    int e = SSL_get_error(ssl, r);
    char why[160];
    switch (e) {
    case SSL_ERROR_WANT_READ:
        *want = TRANSPORT_WANT_READ;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        *want = TRANSPORT_WANT_WRITE;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        log_handshake_failure(t, saved ? strerror(saved) : "connection closed");
        errno = saved && saved != EAGAIN ? saved : ECONNRESET;
        return -1;
    default:
        if (ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING &&
            (t->flags & TLS_HANDSHAKE_DONE)) {
            ERR_clear_error();
            return 0; /* closed without close_notify: the framing says if anything was lost */
        }
        log_handshake_failure(t, ssl_reason(why, sizeof why));
        ERR_clear_error();
        errno = ECONNRESET;
        return -1;
    }
}

/*
 * Read until buf is full or the socket is drained: SSL_read_ex returns one
 * record at a time, and a short read tells the connection that the socket is
 * empty (edge-triggered epoll would not report the records still in it).
 */
static ssize_t tls_read(struct transport *t, void *buf, size_t len)
{
    SSL *ssl = t->impl;
    size_t total = 0;
    while (total < len) {
        size_t n = 0;
        ERR_clear_error();
        int r = SSL_read_ex(ssl, (char *)buf + total, len - total, &n);
        if (r == 1) {
            t->flags |= TLS_HANDSHAKE_DONE;
            total += n;
            continue;
        }
        if (SSL_is_init_finished(ssl))      /* (false after a fatal error) */
            t->flags |= TLS_HANDSHAKE_DONE; /* finished, no application data yet */
        unsigned char want = 0;
        ssize_t f = ssl_fail(t, r, &want);
        if (want)
            t->read_want = want;
        if (total > 0)
            return (ssize_t)total; /* the error (or EAGAIN) shows again on the next read */
        return f;
    }
    return (ssize_t)total;
}

/* Each buffer is handed to SSL_write_ex as it is (records are cut from it, no copy here). */
static ssize_t tls_writev(struct transport *t, const struct iovec *iov, int n)
{
    SSL *ssl = t->impl;
    size_t total = 0;
    if (!(t->flags & TLS_HANDSHAKE_DONE)) {
        /* only a timeout answers before the handshake finished: nothing can be sent */
        errno = ENOTCONN;
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len == 0)
            continue;
        size_t w = 0;
        ERR_clear_error();
        int r = SSL_write_ex(ssl, iov[i].iov_base, iov[i].iov_len, &w);
        if (r == 1) {
            total += w;
            if (w < iov[i].iov_len)
                break;
            continue;
        }
        unsigned char want = 0;
        ssize_t f = ssl_fail(t, r, &want);
        if (want)
            t->write_want = want;
        if (total > 0)
            return (ssize_t)total;
        if (f == 0) {
            errno = EPIPE; /* the peer sent close_notify: it reads no more */
            return -1;
        }
        return -1;
    }
    return (ssize_t)total;
}

static size_t tls_pending(const struct transport *t)
{
    const SSL *ssl = t->impl;
    return (size_t)SSL_pending(ssl) + (size_t)SSL_has_pending(ssl);
}

static int tls_shutdown(struct transport *t)
{
    SSL *ssl = t->impl;
    ERR_clear_error();
    int r = SSL_shutdown(ssl); /* 0: close_notify sent; we do not wait for the peer's */
    if (r >= 0)
        return 0;
    unsigned char want = 0;
    (void)ssl_fail(t, r, &want);
    if (want) {
        t->write_want = want;
        errno = EAGAIN;
    }
    return -1;
}

static void tls_close(struct transport *t)
{
    SSL *ssl = t->impl;
    /* a best-effort close_notify (one non-blocking try) when the session is sound */
    if (SSL_is_init_finished(ssl) && !(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN)) {
        /* (a session that failed is "in init" again: no close_notify after an error) */
        ERR_clear_error();
        (void)SSL_shutdown(ssl);
    }
    ERR_clear_error();
    SSL_free(ssl);
    t->impl = NULL;
    close(t->fd);
    t->fd = -1;
}

static const struct transport_ops k_tls_ops = {
    .read = tls_read,
    .writev = tls_writev,
    .pending = tls_pending,
    .shutdown = tls_shutdown,
    .close = tls_close,
};

int tls_transport_init(struct transport *t, int fd, const char *peer)
{
    SSL *ssl = NULL;
    pthread_mutex_lock(&g_lock);
    if (g_ctx)
        ssl = SSL_new(g_ctx); /* takes its own reference: a reload cannot free it under us */
    pthread_mutex_unlock(&g_lock);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        close(fd);
        t->fd = -1;
        t->impl = NULL;
        return -1;
    }
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, (void *)peer); /* only read, by log_handshake_failure */
    t->ops = &k_tls_ops;
    t->fd = fd;
    t->impl = ssl;
    t->read_want = t->write_want = t->flags = 0;
    return 0;
}
