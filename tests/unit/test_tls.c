/*
 * test_tls.c - the TLS transport (net/tls.c) over a socket pair against an
 * OpenSSL client: start-up errors name the setting, the non-blocking
 * handshake inside reads, reads and gathered writes, a write bigger than the
 * socket buffer, garbage, reload (new pair for new connections, the old
 * connection goes on, a broken pair keeps the old one).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "net/tls.h"
#include "test.h"

static char g_dir[] = "/tmp/brisk-tls-test-XXXXXX";
static char g_cert[256], g_key[256], g_other_key[256];

/* A self-signed P-256 (or RSA) certificate for cn into cert/key files. Returns 0 or -1. */
static int make_pair(const char *cn, bool rsa, const char *cert, const char *key)
{
    int rc = -1;
    EVP_PKEY *k = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *fc = NULL, *fk = NULL;
    if (!k || !x)
        goto out;
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    if (X509_sign(x, k, EVP_sha256()) == 0)
        goto out;
    fc = fopen(cert, "w");
    fk = fopen(key, "w");
    if (fc && fk && PEM_write_X509(fc, x) == 1 &&
        PEM_write_PrivateKey(fk, k, NULL, NULL, 0, NULL, NULL) == 1)
        rc = 0;
out:
    if (fc)
        fclose(fc);
    if (fk)
        fclose(fk);
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

struct pair {
    struct transport t; /* the server side, under test */
    SSL_CTX *cctx;
    SSL *c; /* the client */
    int cfd;
};

/* A connected pair: t is the server's TLS transport, c a non-blocking client. */
static int pair_open(struct pair *p)
{
    int fds[2];
    memset(p, 0, sizeof *p);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0)
        return -1;
    if (tls_transport_init(&p->t, fds[0], "test-peer") != 0) {
        close(fds[1]);
        return -1;
    }
    p->cfd = fds[1];
    p->cctx = SSL_CTX_new(TLS_client_method());
    p->c = SSL_new(p->cctx);
    SSL_set_fd(p->c, p->cfd);
    SSL_set_connect_state(p->c);
    SSL_set_alpn_protos(p->c, (const unsigned char *)"\x02h2\x08http/1.1", 12);
    return 0;
}

static void pair_close(struct pair *p)
{
    SSL_free(p->c);
    SSL_CTX_free(p->cctx);
    close(p->cfd);
    transport_close(&p->t);
}

/* Turn both sides until the client's handshake is done and the server's read says EAGAIN. */
static bool handshake(struct pair *p)
{
    char b[16];
    for (int i = 0; i < 50; i++) {
        int r = SSL_do_handshake(p->c);
        ssize_t n = transport_read(&p->t, b, sizeof b);
        if (n < 0 && errno != EAGAIN)
            return false;
        if (r == 1 && n < 0 && errno == EAGAIN)
            return true;
    }
    return false;
}

/* The subject CN the client was shown. */
static void served_cn(struct pair *p, char *out, size_t cap)
{
    X509 *x = SSL_get1_peer_certificate(p->c);
    out[0] = 0;
    if (x)
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)cap);
    X509_free(x);
}

static void test_start_up_errors(void)
{
    char err[512];
    ok(!tls_enabled(), "off before tls_init");
    ok(tls_init("/nonexistent.pem", g_key, err, sizeof err) == -1 &&
           strstr(err, "BRISK_TLS_CERT (--tls-cert)") && strstr(err, "No such file"),
       "missing cert: %s", err);
    ok(tls_init(g_cert, "/nonexistent.key", err, sizeof err) == -1 &&
           strstr(err, "BRISK_TLS_KEY (--tls-key)"),
       "missing key: %s", err);
    ok(tls_init(g_cert, g_other_key, err, sizeof err) == -1 && strstr(err, "BRISK_TLS_KEY"),
       "key of another certificate: %s", err);
    ok(!tls_enabled(), "still off after failures");
    ok(tls_reload(err, sizeof err) == -1, "no reload while off");
    struct transport t;
    int fds[2];
    ok(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0, "socketpair");
    ok(tls_transport_init(&t, fds[0], "x") == -1 && t.fd == -1, "no transport without context");
    close(fds[1]);
    ok(tls_init(g_cert, g_key, err, sizeof err) == 0, "good pair: %s", err);
    ok(tls_enabled(), "on");
}

static void test_io(void)
{
    struct pair p;
    char b[64];
    ok(pair_open(&p) == 0, "pair");
    ok(handshake(&p), "handshake");
    const unsigned char *alpn = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(p.c, &alpn, &alen);
    ok(alen == 2 && memcmp(alpn, "h2", 2) == 0, "ALPN h2 preferred over http/1.1");
    ok(tls_transport_is_h2(&p.t), "the transport says h2");
    ok(SSL_version(p.c) == TLS1_3_VERSION, "TLS 1.3");
    ok(p.t.read_want == TRANSPORT_WANT_READ, "waiting to read");
    /* two records in the socket: one read returns both (edge-triggered epoll needs it) */
    size_t w;
    ok(SSL_write_ex(p.c, "GET / ", 6, &w) == 1 && SSL_write_ex(p.c, "HTTP/1.1", 8, &w) == 1,
       "client writes");
    ssize_t n = transport_read(&p.t, b, sizeof b);
    ok(n == 14 && memcmp(b, "GET / HTTP/1.1", 14) == 0, "both records in one read (%zd)", n);
    ok(!transport_has_pending(&p.t), "nothing pending");
    struct iovec iov[3] = {{"ab", 2}, {"", 0}, {"cd", 2}};
    ok(transport_writev(&p.t, iov, 3) == 4, "writev");
    size_t got = 0;
    ok(SSL_read_ex(p.c, b, sizeof b, &got) == 1 && got >= 2, "client reads");
    if (got < 4) {
        size_t more = 0;
        SSL_read_ex(p.c, b + got, sizeof b - got, &more);
        got += more;
    }
    ok(got == 4 && memcmp(b, "abcd", 4) == 0, "gathered bytes arrive in order");

    /* 4 MB: more than the socket holds, so partial writes and EAGAIN until the client reads */
    size_t big = (size_t)4 << 20, sent = 0, recvd = 0;
    unsigned char *out = malloc(big), *in = malloc(big);
    for (size_t i = 0; i < big; i++)
        out[i] = (unsigned char)(i * 7);
    int eagain = 0;
    while (recvd < big) {
        if (sent < big) {
            struct iovec one = {out + sent, big - sent};
            ssize_t k = transport_writev(&p.t, &one, 1);
            if (k > 0 && (size_t)k < big - sent)
                eagain++; /* a partial write: the socket took part of it */
            if (k > 0)
                sent += (size_t)k;
            else if (errno == EAGAIN && p.t.write_want == TRANSPORT_WANT_WRITE)
                eagain++;
            else
                break;
        }
        size_t k = 0;
        while (SSL_read_ex(p.c, in + recvd, big - recvd, &k) == 1)
            recvd += k;
    }
    ok(sent == big && recvd == big && memcmp(in, out, big) == 0, "4 MB through (%zu/%zu)", sent,
       recvd);
    ok(eagain > 0, "the socket filled up at least once (%d partial writes or EAGAIN)", eagain);
    free(out);
    free(in);

    /* close_notify from the client: end of stream */
    SSL_shutdown(p.c);
    ok(transport_read(&p.t, b, sizeof b) == 0, "close_notify reads as EOF");
    pair_close(&p);
}

static void test_garbage(void)
{
    struct pair p;
    char b[64];
    ok(pair_open(&p) == 0, "pair");
    ok(write(p.cfd, "GET / HTTP/1.1\r\n\r\n", 18) == 18, "plain HTTP to the TLS side");
    errno = 0;
    ssize_t n = transport_read(&p.t, b, sizeof b);
    ok(n == -1 && errno != EAGAIN, "refused (%zd, %s)", n, strerror(errno));
    struct iovec iov = {"x", 1};
    ok(transport_writev(&p.t, &iov, 1) == -1 && errno == ENOTCONN, "no write before handshake");
    pair_close(&p);
    /* the peer leaves mid-handshake */
    ok(pair_open(&p) == 0, "pair");
    ok(write(p.cfd, "\x16\x03\x01", 3) == 3, "a record header");
    n = transport_read(&p.t, b, sizeof b);
    ok(n == -1 && errno == EAGAIN, "waits for the rest");
    close(p.cfd);
    p.cfd = -1;
    n = transport_read(&p.t, b, sizeof b);
    ok(n <= 0 && (n == 0 || errno != EAGAIN), "the peer left: EOF or error (%zd)", n);
    SSL_free(p.c);
    SSL_CTX_free(p.cctx);
    transport_close(&p.t);
}

static void test_reload(void)
{
    struct pair old, now;
    char cn[64], err[512];
    ok(pair_open(&old) == 0 && handshake(&old), "connection before the reload");
    served_cn(&old, cn, sizeof cn);
    ok(strcmp(cn, "first") == 0, "first certificate (%s)", cn);
    ok(make_pair("second", true, g_cert, g_key) == 0, "new RSA pair on disk");
    ok(tls_reload(err, sizeof err) == 0, "reload: %s", err);
    ok(pair_open(&now) == 0 && handshake(&now), "connection after the reload");
    served_cn(&now, cn, sizeof cn);
    ok(strcmp(cn, "second") == 0, "new certificate (%s)", cn);
    pair_close(&now);
    /* the old connection goes on with its context */
    size_t w;
    char b[16];
    ok(SSL_write_ex(old.c, "ping", 4, &w) == 1 && transport_read(&old.t, b, sizeof b) == 4,
       "the old connection still works");
    pair_close(&old);
    FILE *f = fopen(g_cert, "w");
    if (f) {
        fputs("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n", f);
        fclose(f);
    }
    ok(tls_reload(err, sizeof err) == -1 && strstr(err, "BRISK_TLS_CERT"), "broken pair: %s", err);
    ok(pair_open(&now) == 0 && handshake(&now), "connection after the failed reload");
    served_cn(&now, cn, sizeof cn);
    ok(strcmp(cn, "second") == 0, "previous certificate kept (%s)", cn);
    pair_close(&now);
}

int main(void)
{
    log_configure(LOG_ERROR, false);
    if (!mkdtemp(g_dir))
        return 1;
    snprintf(g_cert, sizeof g_cert, "%s/cert.pem", g_dir);
    snprintf(g_key, sizeof g_key, "%s/key.pem", g_dir);
    snprintf(g_other_key, sizeof g_other_key, "%s/other.key", g_dir);
    char other_cert[256];
    snprintf(other_cert, sizeof other_cert, "%s/other.pem", g_dir);
    ok(make_pair("first", false, g_cert, g_key) == 0, "test pair");
    ok(make_pair("other", false, other_cert, g_other_key) == 0, "another pair");
    test_start_up_errors();
    test_io();
    test_garbage();
    test_reload();
    tls_free();
    unlink(g_cert);
    unlink(g_key);
    unlink(g_other_key);
    unlink(other_cert);
    rmdir(g_dir);
    return test_done();
}
