/*
 * config.c - settings from the environment and flags (see config.h).
 *
 * One table drives parsing, validation and --help, so a new setting is one
 * line here and one field in struct config.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "config.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/compiler.h"
#include "base/log.h"
#include "db/db.h"
#include "net/cidr.h"

enum opt_type {
    OPT_ADDR,
    OPT_TLS_ADDR,
    OPT_STR,
    OPT_U64,
    OPT_INT_THREADS,
    OPT_LOG_FORMAT,
    OPT_LOG_LEVEL
};

struct opt {
    const char *flag; /* without the leading -- */
    const char *env;
    enum opt_type type;
    size_t offset; /* into struct config */
    uint64_t min, max;
    const char *def; /* default as text (parsed like user input) */
    const char *help;
};

#define OFF(f) offsetof(struct config, f)

static const struct opt k_opts[] = {
    {"addr", "BRISK_ADDR", OPT_ADDR, OFF(port), 0, 0, "0.0.0.0:8080",
     "listen address host:port (IPv6 as [::]:8080); a host name binds every address it "
     "resolves to"},
    {"tls-cert", "BRISK_TLS_CERT", OPT_STR, OFF(tls_cert), 0, 4000, "",
     "PEM certificate chain (leaf first); with BRISK_TLS_KEY turns TLS on: on BRISK_TLS_ADDR "
     "when set, else BRISK_ADDR itself speaks TLS; SIGHUP reloads it"},
    {"tls-key", "BRISK_TLS_KEY", OPT_STR, OFF(tls_key), 0, 4000, "",
     "PEM private key (RSA or ECDSA, unencrypted) of BRISK_TLS_CERT"},
    {"tls-addr", "BRISK_TLS_ADDR", OPT_TLS_ADDR, OFF(tls_port), 0, 0, "",
     "a second listen address host:port speaking TLS, while BRISK_ADDR stays cleartext "
     "(needs BRISK_TLS_CERT and BRISK_TLS_KEY)"},
    {"database-url", "BRISK_DATABASE_URL", OPT_STR, OFF(database_url), 1, 4096,
     "sqlite:./data/brisk.db", "sqlite:PATH, postgres://user:pass@host:port/db or a libpq string"},
    {"threads", "BRISK_THREADS", OPT_INT_THREADS, OFF(threads), 1, 1024, "",
     "event-loop threads (default: the CPUs this process may run on, its affinity mask)"},
    {"api-token", "BRISK_API_TOKEN", OPT_STR, OFF(api_token), 0, 4096, "",
     "when set, every endpoint but /health, /ready, /metrics needs Authorization: Bearer TOKEN"},
    {"receipt-key", "BRISK_RECEIPT_KEY", OPT_STR, OFF(receipt_key), 1, 4096, "dev-receipt-key",
     "HMAC-SHA256 key for order receipts"},
    {"log-format", "BRISK_LOG_FORMAT", OPT_LOG_FORMAT, OFF(log_json), 0, 0, "text",
     "log line format: text or json"},
    {"log-level", "BRISK_LOG_LEVEL", OPT_LOG_LEVEL, OFF(log_level), 0, 0, "info",
     "debug, info (includes access log), warn or error"},
    {"max-body-bytes", "BRISK_MAX_BODY_BYTES", OPT_U64, OFF(max_body_bytes), 1, (uint64_t)1 << 30,
     "8388608", "largest request body (413 above)"},
    {"max-batch-bytes", "BRISK_MAX_BATCH_BYTES", OPT_U64, OFF(max_batch_bytes), 1,
     (uint64_t)1 << 30, "67108864", "largest POST /orders/process body (413 above)"},
    {"max-header-bytes", "BRISK_MAX_HEADER_BYTES", OPT_U64, OFF(max_header_bytes), 256,
     (uint64_t)1 << 20, "16384", "largest request line + headers (431 above)"},
    {"max-headers", "BRISK_MAX_HEADERS", OPT_U64, OFF(max_headers), 1, 1000, "100",
     "most header fields in a request (431 above)"},
    {"h2-max-streams", "BRISK_H2_MAX_STREAMS", OPT_U64, OFF(h2_max_streams), 0, 1000, "100",
     "HTTP/2 streams a connection may have in flight (0: no HTTP/2, neither h2 by ALPN nor "
     "h2c)"},
    {"compress-min-bytes", "BRISK_COMPRESS_MIN_BYTES", OPT_U64, OFF(compress_min_bytes), 0,
     (uint64_t)1 << 30, "1024",
     "gzip JSON responses of at least this many bytes for clients that accept it (0: never)"},
    {"header-timeout-ms", "BRISK_HEADER_TIMEOUT_MS", OPT_U64, OFF(header_timeout_ms), 1, 86400000,
     "10000", "request head must arrive within this (408 after)"},
    {"body-timeout-ms", "BRISK_BODY_TIMEOUT_MS", OPT_U64, OFF(body_timeout_ms), 1, 86400000,
     "60000", "request body must arrive within this (408 after); also the write timeout"},
    {"idle-timeout-ms", "BRISK_IDLE_TIMEOUT_MS", OPT_U64, OFF(idle_timeout_ms), 1, 86400000,
     "60000", "idle keep-alive connections are closed after this"},
    {"drain-seconds", "BRISK_DRAIN_SECONDS", OPT_U64, OFF(drain_seconds), 0, 3600, "10",
     "on SIGTERM/SIGINT, longest wait for requests in flight"},
    {"drain-grace-ms", "BRISK_DRAIN_GRACE_MS", OPT_U64, OFF(drain_grace_ms), 0, 600000, "1500",
     "on SIGTERM/SIGINT, keep accepting and keep idle connections this long (answered with "
     "Connection: close), within the drain"},
    {"bg-workers", "BRISK_BG_WORKERS", OPT_U64, OFF(bg_workers), 0, 64, "1",
     "background threads processing pending orders (0: none in this process)"},
    {"db-busy-timeout-ms", "BRISK_DB_BUSY_TIMEOUT_MS", OPT_U64, OFF(db_busy_timeout_ms), 0, 600000,
     "5000",
     "SQLite: how long a write waits for the lock; PostgreSQL: longest wait for a query, a "
     "host-name lookup or a connect; then 503"},
    {"database-read-url", "BRISK_DATABASE_READ_URL", OPT_STR, OFF(database_read_url), 0, 16384, "",
     "PostgreSQL read replicas (postgres:// URLs, comma-separated) for GET reads; writes "
     "and background work stay on the primary"},
    {"replica-max-lag-ms", "BRISK_REPLICA_MAX_LAG_MS", OPT_U64, OFF(replica_max_lag_ms), 1, 3600000,
     "5000", "a replica further behind than this is skipped (reads go to the primary)"},
    {"ready-timeout-ms", "BRISK_READY_TIMEOUT_MS", OPT_U64, OFF(ready_timeout_ms), 1, 600000,
     "1000", "GET /ready answers 503 when the database has not answered within this"},
    {"db-pool", "BRISK_DB_POOL", OPT_U64, OFF(db_pool), 1, 64, "2",
     "PostgreSQL: connections per event-loop thread and per background worker"},
    {"trusted-proxies", "BRISK_TRUSTED_PROXIES", OPT_STR, OFF(trusted_proxies), 0, 4096, "",
     "comma-separated addresses/CIDRs of proxies whose X-Forwarded-For names the client in "
     "the access log"},
    {"sandbox", "BRISK_SANDBOX", OPT_STR, OFF(sandbox), 1, 8, "1",
     "syscall allowlist after start-up: 1 (on), 0 (off, for debugging), log (log, not refuse)"},
    {"user", "BRISK_USER", OPT_STR, OFF(user), 0, 63, "",
     "started as root: serve as this account once listeners and files are open"},
};

static int fail(char *err, size_t cap, const struct opt *o, const char *problem, const char *val)
{
    /* values are echoed (shortened) except secrets, which are never printed */
    bool secret = o->offset == OFF(api_token) || o->offset == OFF(receipt_key) ||
                  o->offset == OFF(database_url) || o->offset == OFF(database_read_url);
    if (val && !secret)
        snprintf(err, cap, "brisk: %s (--%s): \"%.80s\" %s", o->env, o->flag, val, problem);
    else
        snprintf(err, cap, "brisk: %s (--%s): %s", o->env, o->flag, problem);
    return -1;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s)
        return -1;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* host:port, [v6]:port or :port into host (64 bytes) and *port_out. */
static int parse_addr(char *addr_host, int *port_out, const char *s)
{
    const char *colon;
    size_t hlen;
    const char *host = s;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':')
            return -1;
        host = s + 1;
        hlen = (size_t)(end - host);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - s);
    }
    if (hlen >= sizeof((struct config *)0)->addr_host)
        return -1;
    uint64_t port;
    if (parse_u64(colon + 1, &port) != 0 || port > 65535)
        return -1;
    if (hlen == 0) {
        strcpy(addr_host, "0.0.0.0"); /* NOLINT: fits */
    } else {
        memcpy(addr_host, host, hlen);
        addr_host[hlen] = 0;
    }
    *port_out = (int)port;
    return 0;
}

static int apply(struct config *cfg, const struct opt *o, const char *val, char *err, size_t cap)
{
    char *base = (char *)cfg;
    switch (o->type) {
    case OPT_ADDR:
        if (parse_addr(cfg->addr_host, &cfg->port, val) != 0)
            return fail(err, cap, o, "is not host:port (e.g. 0.0.0.0:8080)", val);
        return 0;
    case OPT_TLS_ADDR:
        cfg->tls_addr_host[0] = 0; /* "": no TLS listener of its own */
        cfg->tls_port = 0;
        if (*val && parse_addr(cfg->tls_addr_host, &cfg->tls_port, val) != 0)
            return fail(err, cap, o, "is not host:port (e.g. 0.0.0.0:8443)", val);
        return 0;
    case OPT_STR: {
        size_t n = strlen(val);
        if (n < o->min)
            return fail(err, cap, o, "must not be empty", NULL);
        if (n > o->max)
            return fail(err, cap, o, "is too long", NULL);
        const char *problem = o->offset == OFF(database_url) ? db_url_check(val) : NULL;
        if (problem)
            return fail(err, cap, o, problem, NULL);
        if (o->offset == OFF(trusted_proxies)) {
            struct cidr ranges[CIDR_MAX];
            char why[160];
            if (cidr_parse_list(val, ranges, CIDR_MAX, why, sizeof why) < 0)
                return fail(err, cap, o, why, NULL);
        }
        memcpy(base + o->offset, &val, sizeof val);
        return 0;
    }
    case OPT_U64: {
        uint64_t v;
        if (parse_u64(val, &v) != 0)
            return fail(err, cap, o, "is not a non-negative integer", val);
        if (v < o->min || v > o->max) {
            snprintf(err, cap, "brisk: %s (--%s): %llu is outside %llu..%llu", o->env, o->flag,
                     (unsigned long long)v, (unsigned long long)o->min, (unsigned long long)o->max);
            return -1;
        }
        memcpy(base + o->offset, &v, sizeof v);
        return 0;
    }
    case OPT_INT_THREADS: {
        uint64_t v;
        if (!*val) {
            /* the CPUs this process may run on (taskset, cgroup cpusets), not
             * all online ones: two loops pinned to one core only contend */
            cpu_set_t set;
            long n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                                 : sysconf(_SC_NPROCESSORS_ONLN);
            v = n > 0 ? (uint64_t)n : 1;
        } else if (parse_u64(val, &v) != 0 || v < o->min || v > o->max) {
            return fail(err, cap, o, "is not a thread count in 1..1024", val);
        }
        int t = (int)v;
        memcpy(base + o->offset, &t, sizeof t);
        return 0;
    }
    case OPT_LOG_FORMAT:
        if (strcmp(val, "json") == 0)
            cfg->log_json = true;
        else if (strcmp(val, "text") == 0)
            cfg->log_json = false;
        else
            return fail(err, cap, o, "is not json or text", val);
        return 0;
    case OPT_LOG_LEVEL: {
        enum log_level l;
        if (!log_level_parse(val, &l))
            return fail(err, cap, o, "is not debug, info, warn or error", val);
        cfg->log_level = (int)l;
        return 0;
    }
    }
    return -1;
}

/* A value the user gave (environment or flag), not a default. */
static int apply_given(struct config *cfg, const struct opt *o, const char *val, char *err,
                       size_t cap)
{
    /* "BRISK_API_TOKEN=" is most likely a secret that did not arrive (an empty
     * variable in a unit file or a CI secret): refusing beats serving with no
     * auth. Unset still means no auth. */
    if (o->offset == OFF(api_token) && !*val)
        return fail(err, cap, o, "is set but empty (unset it to serve without auth)", NULL);
    return apply(cfg, o, val, err, cap);
}

int config_load_with(struct config *cfg, int argc, char **argv,
                     const char *(*getenv_fn)(const char *), char *err, size_t cap)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < ARRAY_LEN(k_opts); i++)
        if (apply(cfg, &k_opts[i], k_opts[i].def, err, cap) != 0)
            return -1;
    for (size_t i = 0; i < ARRAY_LEN(k_opts); i++) {
        const char *v = getenv_fn(k_opts[i].env);
        if (v && apply_given(cfg, &k_opts[i], v, err, cap) != 0)
            return -1;
    }
    for (int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) != 0) {
            /* not echoed: a stray argument is often a secret that lost its flag */
            snprintf(err, cap,
                     "brisk: unexpected argument %d after the command (flags are --name=value "
                     "or --name value; see brisk --help)",
                     a + 1);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt *o = NULL;
        for (size_t i = 0; i < ARRAY_LEN(k_opts); i++)
            if (strlen(k_opts[i].flag) == nlen && memcmp(k_opts[i].flag, name, nlen) == 0)
                o = &k_opts[i];
        if (!o) {
            /* the name only: the value of a mistyped --api-token=... is a secret */
            snprintf(err, cap, "brisk: unknown flag \"--%.*s\" (see brisk --help)",
                     (int)(nlen > 64 ? 64 : nlen), name);
            return -1;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            /* "--threads --api-token=x": the next flag is not this one's value */
            if (a + 1 >= argc || strncmp(argv[a + 1], "--", 2) == 0) {
                snprintf(err, cap, "brisk: %s (--%s): missing value", o->env, o->flag);
                return -1;
            }
            val = argv[++a];
        }
        if (apply_given(cfg, o, val, err, cap) != 0)
            return -1;
    }
    /* TLS needs both files; a TLS address without them would serve nothing */
    if (!*cfg->tls_cert != !*cfg->tls_key) {
        snprintf(err, cap, "brisk: %s: must be set too when %s is set",
                 *cfg->tls_cert ? "BRISK_TLS_KEY (--tls-key)" : "BRISK_TLS_CERT (--tls-cert)",
                 *cfg->tls_cert ? "BRISK_TLS_CERT" : "BRISK_TLS_KEY");
        return -1;
    }
    if (cfg->tls_addr_host[0] && !*cfg->tls_cert) {
        snprintf(err, cap,
                 "brisk: BRISK_TLS_ADDR (--tls-addr): needs BRISK_TLS_CERT and BRISK_TLS_KEY");
        return -1;
    }
    /* checked once both are known: replicas need a PostgreSQL primary */
    const char *problem = db_read_url_check(cfg->database_url, cfg->database_read_url);
    if (problem) {
        snprintf(err, cap, "brisk: BRISK_DATABASE_READ_URL (--database-read-url): %s", problem);
        return -1;
    }
    return 0;
}

static const char *real_getenv(const char *name)
{
    return getenv(name);
}

int config_load(struct config *cfg, int argc, char **argv, char *err, size_t cap)
{
    return config_load_with(cfg, argc, argv, real_getenv, err, cap);
}

void config_usage(FILE *out)
{
    fprintf(out, "Settings (flag / environment variable / default):\n");
    for (size_t i = 0; i < ARRAY_LEN(k_opts); i++) {
        const struct opt *o = &k_opts[i];
        fprintf(out, "  --%-20s %-26s %s\n      %s\n", o->flag, o->env, o->def[0] ? o->def : "-",
                o->help);
    }
}

bool config_setting_at(size_t i, struct config_setting *out)
{
    if (i >= ARRAY_LEN(k_opts))
        return false;
    const struct opt *o = &k_opts[i];
    *out = (struct config_setting){.flag = o->flag, .env = o->env, .def = o->def, .help = o->help};
    return true;
}
