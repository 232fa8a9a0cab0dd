/*
 * main.c - command line, configuration and wiring; nothing else.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "app/app.h"
#include "app/bgworker.h"
#include "app/pricing.h"
#include "base/log.h"
#include "base/sandbox.h"
#include "config.h"
#include "db/db.h"
#include "http/router.h"
#include "http/server.h"
#include "manpage.h"
#include "net/tls.h"

static struct bgworker_config g_bg;

static int start_background(void)
{
    return bgworker_start(&g_bg);
}

static int harden(void)
{
    return sandbox_harden();
}

static void usage(FILE *out)
{
    fprintf(out,
            "brisk %s - users and orders HTTP API\n\n"
            "Usage:\n"
            "  brisk serve [--flag=value ...]   run the server\n"
            "  brisk migrate [--flag=value ...] apply database migrations and exit\n"
            "  brisk --help | --version\n\n",
            BRISK_VERSION);
    config_usage(out);
    fprintf(out, "\nBad values stop start-up with one line naming the setting and exit status 2.\n"
                 "SIGTERM/SIGINT: answer with Connection: close for the drain grace, then stop\n"
                 "accepting, finish requests in flight, exit 0.\n");
}

static bool is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0;
}

/* True for a loopback address or a name for one ("localhost"): reachable from this machine only. */
static bool loopback_host(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

/* Settings that work but leave the service open: one warn line each. */
static void warn_insecure(const struct config *cfg)
{
    if (loopback_host(cfg->addr_host))
        return;
    if (!*cfg->api_token)
        log_warn("BRISK_API_TOKEN is not set: every endpoint on %s:%d answers without "
                 "authentication",
                 cfg->addr_host, cfg->port);
    if (strcmp(cfg->receipt_key, PRICING_DEFAULT_KEY) == 0)
        log_warn("BRISK_RECEIPT_KEY is the built-in development key: anyone can forge order "
                 "receipts; set a secret key");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        fprintf(stderr, "\nbrisk: no command given (brisk serve runs the server)\n");
        return 2;
    }
    const char *cmd = argv[1];
    if (is_help(cmd)) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "help-man") == 0) {
        /* brisk(1) from the settings table --help prints (make man) */
        manpage_write(stdout, BRISK_VERSION);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("brisk %s\n", BRISK_VERSION);
        return 0;
    }
    bool migrate_only = strcmp(cmd, "migrate") == 0;
    if (!migrate_only && strcmp(cmd, "serve") != 0) {
        if (strncmp(cmd, "--", 2) == 0)
            fprintf(stderr,
                    "brisk: flags go after a command: brisk serve %.64s (see brisk --help)\n", cmd);
        else
            fprintf(stderr, "brisk: unknown command \"%.64s\" (see brisk --help)\n", cmd);
        return 2;
    }
    for (int a = 2; a < argc; a++) {
        if (strcmp(argv[a], "--help") == 0 || strcmp(argv[a], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    }

    struct config cfg;
    char err[512];
    if (config_load(&cfg, argc - 2, argv + 2, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    log_configure((enum log_level)cfg.log_level, cfg.log_json);
    struct sandbox_options sbo = {
        .mode = cfg.sandbox, .user = cfg.user, .database_url = cfg.database_url};
    if (!migrate_only && sandbox_prepare(&sbo, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (pricing_set_key(cfg.receipt_key) != 0) {
        fprintf(stderr,
                "brisk: BRISK_RECEIPT_KEY (--receipt-key): cannot be used as an HMAC key\n");
        return 2;
    }

    struct db_config dbc = {.url = cfg.database_url,
                            .busy_timeout_ms = (int)cfg.db_busy_timeout_ms,
                            .pool_size = (int)cfg.db_pool,
                            .read_url = cfg.database_read_url,
                            .replica_max_lag_ms = (int)cfg.replica_max_lag_ms};
    /* background workers claim and mark orders: the primary only */
    static struct db_config bg_dbc;
    bg_dbc = dbc;
    bg_dbc.read_url = NULL;
    struct app_config app = {
        .db = &dbc,
        .threads = cfg.threads,
        .max_batch_body = cfg.max_batch_bytes,
        .ready_timeout_ms = (int)cfg.ready_timeout_ms,
        .start = start_background,
        .stop = bgworker_stop,
        .harden = harden,
    };
    struct server_config sc = {
        .addr_host = cfg.addr_host,
        .port = cfg.port,
        /* cert + key alone: the one listener speaks TLS; with BRISK_TLS_ADDR, that one does */
        .tls = *cfg.tls_cert && !cfg.tls_addr_host[0],
        .tls_addr_host = cfg.tls_addr_host[0] ? cfg.tls_addr_host : NULL,
        .tls_port = cfg.tls_port,
        .threads = cfg.threads,
        .limits = {.max_header_bytes = cfg.max_header_bytes,
                   .max_headers = cfg.max_headers,
                   .max_body = cfg.max_body_bytes},
        .h2_max_streams = cfg.h2_max_streams,
        .header_timeout_ms = cfg.header_timeout_ms,
        .body_timeout_ms = cfg.body_timeout_ms,
        .idle_timeout_ms = cfg.idle_timeout_ms,
        .drain_ms = cfg.drain_seconds * 1000,
        .drain_grace_ms = cfg.drain_grace_ms,
        .api_token = cfg.api_token,
        .trusted_proxies = cfg.trusted_proxies,
        .compress_min_bytes = cfg.compress_min_bytes,
    };
    /* Address and port first: a name that does not resolve or a port in use
     * must not leave a freshly created and migrated database behind. */
    if (!migrate_only) {
        /* a certificate or key that does not load is a bad setting, like a bad address */
        tls_offer_h2(cfg.h2_max_streams > 0);
        if (*cfg.tls_cert && tls_init(cfg.tls_cert, cfg.tls_key, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            return 2;
        }
        int lr = server_listen(&sc, err, sizeof err);
        if (lr != 0) {
            fprintf(stderr, "%s\n", err);
            return lr == SERVER_BAD_ADDR ? 2 : 1;
        }
        warn_insecure(&cfg);
    }

    if (db_migrate(&dbc) != 0)
        return 1;
    if (migrate_only) {
        log_info("migrations applied");
        return 0;
    }

    g_bg = (struct bgworker_config){.threads = (int)cfg.bg_workers, .batch = 100, .db = &bg_dbc};
    size_t nroutes;
    const struct route *routes = app_routes(&app, &nroutes);
    if (router_init(routes, nroutes) != 0)
        return 1;
    sc.app = app_server_hooks(&app);
    int rc = server_run(&sc) == 0 ? 0 : 1;
    tls_free();
    return rc;
}
