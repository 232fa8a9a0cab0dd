/*
 * config.h - configuration from environment variables and `brisk serve` flags.
 *
 * Every setting has an environment variable (BRISK_ADDR ...) and a flag
 * (--addr ...); flags win. A bad value is reported as one line naming the
 * setting, and start-up stops with exit status 2.
 */
#ifndef BRISK_CONFIG_H
#define BRISK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct config {
    char addr_host[64];
    int port;
    char tls_addr_host[64]; /* "" = no separate TLS listener */
    int tls_port;
    const char *tls_cert; /* "" = TLS off */
    const char *tls_key;
    const char *database_url;
    int threads;
    const char *api_token;
    const char *receipt_key;
    bool log_json;
    int log_level; /* enum log_level */
    uint64_t max_body_bytes;
    uint64_t max_batch_bytes;
    uint64_t max_header_bytes;
    uint64_t max_headers;
    uint64_t h2_max_streams;     /* 0 = no HTTP/2 */
    uint64_t compress_min_bytes; /* 0 = responses are never compressed */
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t drain_seconds;
    uint64_t drain_grace_ms;
    uint64_t db_busy_timeout_ms;
    uint64_t ready_timeout_ms;
    const char *database_read_url; /* "" = no read replicas */
    uint64_t replica_max_lag_ms;
    uint64_t db_pool;
    uint64_t bg_workers;
    const char *trusted_proxies; /* "" = none */
    const char *sandbox;         /* "1", "0" or "log": checked by sandbox_prepare */
    const char *user;            /* "" = stay the account brisk was started as */
};

/*
 * Fill *cfg from defaults, then the environment (getenv), then argv (flags
 * after the "serve" command: --name=value or --name value). Returns 0, or -1
 * after writing one line "brisk: <SETTING>: <problem>" into err (cap bytes).
 * String values point into the environment or argv (not copied).
 */
int config_load(struct config *cfg, int argc, char **argv, char *err, size_t cap);

/* Same as config_load but reading variables through getenv_fn (used by tests and fuzzing). */
int config_load_with(struct config *cfg, int argc, char **argv,
                     const char *(*getenv_fn)(const char *), char *err, size_t cap);

/* Write the settings table (flag, variable, default, meaning) for --help. */
void config_usage(FILE *out);

/* One row of the settings table, for generated documentation (brisk help-man). */
struct config_setting {
    const char *flag; /* without the leading -- */
    const char *env;
    const char *def; /* "" = no default (the help says what unset means) */
    const char *help;
};

/* Row i of the table into *out, in --help order; false past the last row. */
bool config_setting_at(size_t i, struct config_setting *out);

#endif
