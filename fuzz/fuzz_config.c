/*
 * fuzz_config.c - libFuzzer harness for configuration parsing (src/config.c).
 *
 *   make build/fuzz/fuzz_config && build/fuzz/fuzz_config -dict=fuzz/config.dict fuzz/corpus/config
 *
 * Input: records separated by '\n'. A record "$NAME=VALUE" is an environment
 * variable (read through config_load_with's getenv hook), any other record is
 * one argv element after "serve". Invariants:
 *   - success: every setting within its documented range, required strings
 *     non-empty, the database URL accepted by db_url_check, every string
 *     pointing into the input or being its default; loading twice gives the
 *     same result;
 *   - failure: one line "brisk: ..." that fits the buffer;
 *   - secrets (BRISK_API_TOKEN, BRISK_RECEIPT_KEY, the password of a database
 *     URL, from the environment or from --flag=value / --flag value) never
 *     reach the error text: the same input with the secrets masked must not
 *     produce an error that lacks them while the real one has them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db/db.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

enum { MAX_ENV = 64, MAX_ARGS = 64, MAX_SECRETS = 2 * (MAX_ENV + MAX_ARGS) };

struct input {
    char *buf; /* the records, NUL-separated; env and argv point into it */
    size_t len;
    const char *env_name[MAX_ENV];
    const char *env_val[MAX_ENV];
    int nenv;
    char *argv[MAX_ARGS];
    int argc;
};

static const struct input *g_in; /* what the getenv hook reads */

static const char *fuzz_getenv(const char *name)
{
    for (int i = 0; i < g_in->nenv; i++)
        if (strcmp(g_in->env_name[i], name) == 0)
            return g_in->env_val[i];
    return NULL;
}

static void parse_input(struct input *in, const uint8_t *data, size_t size)
{
    memset(in, 0, sizeof *in);
    in->buf = malloc(size + 1);
    CHECK(in->buf);
    memcpy(in->buf, data, size);
    in->buf[size] = 0;
    in->len = size;
    char *p = in->buf, *end = in->buf + size;
    while (p <= end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        *nl = 0; /* an embedded NUL just shortens the record, as in a real environment */
        if (p[0] == '$') {
            char *eq = strchr(p + 1, '=');
            if (eq && in->nenv < MAX_ENV) {
                *eq = 0;
                in->env_name[in->nenv] = p + 1;
                in->env_val[in->nenv++] = eq + 1;
            }
        } else if (in->argc < MAX_ARGS && (p < end || p[0])) {
            in->argv[in->argc++] = p;
        }
        p = nl + 1;
    }
}

static bool points_into(const struct input *in, const char *s)
{
    return s >= in->buf && s <= in->buf + in->len;
}

/* A string setting points into the input or is its default. */
static void check_string(const struct input *in, const char *s, const char *def)
{
    CHECK(s != NULL);
    CHECK(points_into(in, s) || strcmp(s, def) == 0);
}

static void check_config(const struct input *in, const struct config *c)
{
    CHECK(c->port >= 0 && c->port <= 65535);
    size_t hl = strnlen(c->addr_host, sizeof c->addr_host);
    CHECK(hl > 0 && hl < sizeof c->addr_host);
    CHECK(c->threads >= 1 && c->threads <= 1024);
    CHECK(c->log_level >= 0 && c->log_level <= 3);
    CHECK(c->max_body_bytes >= 1 && c->max_body_bytes <= (1u << 30));
    CHECK(c->max_batch_bytes >= 1 && c->max_batch_bytes <= (1u << 30));
    CHECK(c->max_header_bytes >= 256 && c->max_header_bytes <= (1u << 20));
    CHECK(c->max_headers >= 1 && c->max_headers <= 1000);
    CHECK(c->header_timeout_ms >= 1 && c->header_timeout_ms <= 86400000);
    CHECK(c->body_timeout_ms >= 1 && c->body_timeout_ms <= 86400000);
    CHECK(c->idle_timeout_ms >= 1 && c->idle_timeout_ms <= 86400000);
    CHECK(c->drain_seconds <= 3600);
    CHECK(c->db_busy_timeout_ms <= 600000);
    CHECK(c->bg_workers <= 64);

    check_string(in, c->database_url, "sqlite:./data/brisk.db");
    CHECK(c->database_url[0] && strlen(c->database_url) <= 4096);
    CHECK(db_url_check(c->database_url) == NULL);
    check_string(in, c->receipt_key, "dev-receipt-key");
    CHECK(c->receipt_key[0] && strlen(c->receipt_key) <= 4096);
    check_string(in, c->api_token, "");
    CHECK(strlen(c->api_token) <= 4096);
    check_string(in, c->sandbox, "1");
    CHECK(c->sandbox[0] && strlen(c->sandbox) <= 8);
    check_string(in, c->user, "");
    CHECK(strlen(c->user) <= 63);
}

static void check_error(const char *err, size_t cap)
{
    size_t n = strnlen(err, cap);
    CHECK(n > 0 && n < cap);
    CHECK(strncmp(err, "brisk: ", 7) == 0);
    CHECK(strchr(err, '\n') == NULL);
}

/* ---- secrets ---- */

struct secret {
    char *at; /* inside a copy of the input, masked in place */
    size_t len;
};

static bool is_secret_env(const char *name)
{
    return strcmp(name, "BRISK_API_TOKEN") == 0 || strcmp(name, "BRISK_RECEIPT_KEY") == 0;
}

static bool is_secret_flag(const char *name, size_t n)
{
    return (n == 9 && memcmp(name, "api-token", 9) == 0) ||
           (n == 11 && memcmp(name, "receipt-key", 11) == 0);
}

/* The flags brisk knows, read once from its own --help table so that a flag
 * added to config.c cannot be mistaken here for a stray (secret) argument. */
#define MAX_FLAGS 64
static char g_flags[MAX_FLAGS][32];
static int g_nflags;

static void learn_flags(const char *usage)
{
    for (const char *p = usage; (p = strstr(p, "\n  --")) != NULL && g_nflags < MAX_FLAGS;) {
        p += 5;
        size_t n = strcspn(p, " \n");
        CHECK(n > 0 && n < sizeof g_flags[0]);
        memcpy(g_flags[g_nflags], p, n);
        g_flags[g_nflags++][n] = '\0';
        p += n;
    }
    CHECK(g_nflags >= 20); /* the table's shape changed: fix the parse above */
}

static bool is_known_flag(const char *name, size_t n)
{
    for (int i = 0; i < g_nflags; i++)
        if (strlen(g_flags[i]) == n && memcmp(g_flags[i], name, n) == 0)
            return true;
    return false;
}

/* The password of "scheme://user:PASSWORD@host..." or of a "password=..." keyword. */
static void add_url_password(struct secret *s, int *n, char *url)
{
    char *sep = strstr(url, "://");
    if (sep) {
        char *at = strchr(sep + 3, '@');
        char *colon = strchr(sep + 3, ':');
        if (at && colon && colon < at && *n < MAX_SECRETS)
            s[(*n)++] = (struct secret){colon + 1, (size_t)(at - colon - 1)};
        return;
    }
    char *pw = strstr(url, "password=");
    if (pw && *n < MAX_SECRETS) {
        char *v = pw + 9;
        size_t len = strcspn(v, " \t");
        s[(*n)++] = (struct secret){v, len};
    }
}

/* Collect the secret spans of `in` (whose strings live in in->buf). */
static int find_secrets(struct input *in, struct secret *s)
{
    int n = 0;
    for (int i = 0; i < in->nenv; i++) {
        char *v = (char *)in->env_val[i];
        if (is_secret_env(in->env_name[i]) && n < MAX_SECRETS)
            s[n++] = (struct secret){v, strlen(v)};
        else if (strcmp(in->env_name[i], "BRISK_DATABASE_URL") == 0)
            add_url_password(s, &n, v);
    }
    for (int a = 0; a < in->argc; a++) {
        char *arg = in->argv[a];
        if (strncmp(arg, "--", 2) != 0) {
            /* a stray argument may be a secret that lost its flag ("--api-token= SECRET") */
            if (n < MAX_SECRETS)
                s[n++] = (struct secret){arg, strlen(arg)};
            continue;
        }
        char *name = arg + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        bool db = nl == 12 && memcmp(name, "database-url", 12) == 0;
        bool known = is_known_flag(name, nl);
        if (known && !is_secret_flag(name, nl) && !db) {
            if (!eq && a + 1 < in->argc && strncmp(in->argv[a + 1], "--", 2) != 0)
                a++; /* its value, echoed when bad: not a secret */
            continue;
        }
        /* a secret flag's value, or the value of a mistyped one (--api_token=SECRET) */
        char *val = eq ? eq + 1 : NULL;
        if (!eq && known && a + 1 < in->argc && strncmp(in->argv[a + 1], "--", 2) != 0)
            val = in->argv[++a];
        if (!val)
            continue;
        if (db)
            add_url_password(s, &n, val);
        else if (n < MAX_SECRETS)
            s[n++] = (struct secret){val, strlen(val)};
    }
    return n;
}

static void check_secrets(const uint8_t *data, size_t size, const char *err)
{
    struct input masked;
    parse_input(&masked, data, size);
    struct secret s[MAX_SECRETS];
    int n = find_secrets(&masked, s);
    /* remember each secret's text, then mask it in place (same length) */
    char *orig[MAX_SECRETS];
    for (int i = 0; i < n; i++) {
        orig[i] = strndup(s[i].at, s[i].len);
        CHECK(orig[i]);
    }
    for (int i = 0; i < n; i++)
        memset(s[i].at, 'Z', s[i].len);
    struct config cfg;
    char err2[512];
    g_in = &masked;
    int rc = config_load_with(&cfg, masked.argc, masked.argv, fuzz_getenv, err2, sizeof err2);
    /* Masking can change which setting fails (a URL's validity depends on its
     * password): compare only errors about the same thing, i.e. equal up to
     * the first quoted value. */
    size_t head = strcspn(err, "\"");
    bool comparable = rc != 0 && strncmp(err, err2, head) == 0 && err2[head] == err[head];
    for (int i = 0; i < n; i++) {
        /* short values can match message text by chance ("brisk", "is") */
        if (comparable && s[i].len >= 4 && strstr(err, orig[i]) && !strstr(err2, orig[i])) {
            fprintf(stderr, "secret \"%s\" in the error: %s\n", orig[i], err);
            CHECK(!"a secret reached the error text");
        }
        free(orig[i]);
    }
    free(masked.buf);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* --help's table, once: it reads every default and help text, and names
     * every flag */
    char *usage = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&usage, &len);
    CHECK(out);
    config_usage(out);
    CHECK(fclose(out) == 0);
    learn_flags(usage);
    free(usage);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    struct input in;
    parse_input(&in, data, size);
    g_in = &in;
    struct config cfg, again;
    char err[512], err_again[512];
    memset(err, 0, sizeof err);
    int rc = config_load_with(&cfg, in.argc, in.argv, fuzz_getenv, err, sizeof err);
    if (rc == 0) {
        check_config(&in, &cfg);
        CHECK(config_load_with(&again, in.argc, in.argv, fuzz_getenv, err_again,
                               sizeof err_again) == 0);
        CHECK(memcmp(&cfg, &again, sizeof cfg) == 0);
    } else {
        CHECK(rc == -1);
        check_error(err, sizeof err);
        check_secrets(data, size, err);
    }
    free(in.buf);
    return 0;
}
