/*
 * test_core.c - unit tests for buffers, slices, time formatting, the router,
 * field validation and configuration parsing.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "app/validate.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/str.h"
#include "base/timefmt.h"
#include "config.h"
#include "http/router.h"
#include "net/cidr.h"
#include "test.h"

static void test_buf(void)
{
    struct buf b;
    buf_init(&b, 8);
    buf_append(&b, "abcd", 4);
    ok(!b.failed && b.len == 4, "append within cap");
    buf_append(&b, "efghi", 5);
    ok(b.failed && b.len == 4, "append past cap fails and keeps content");
    buf_append(&b, "x", 1);
    ok(b.len == 4, "failed flag is sticky");
    buf_reset(&b);
    ok(!b.failed && b.len == 0, "reset clears");
    buf_append_i64(&b, -42);
    ok(b.len == 3 && memcmp(b.data, "-42", 3) == 0, "i64 negative");
    buf_free(&b);

    buf_init(&b, 0);
    buf_append_i64(&b, INT64_MIN);
    ok(b.len == 20 && memcmp(b.data, "-9223372036854775808", 20) == 0, "INT64_MIN");
    buf_reset(&b);
    buf_append_u64(&b, UINT64_MAX);
    ok(b.len == 20 && memcmp(b.data, "18446744073709551615", 20) == 0, "UINT64_MAX");
    buf_reset(&b);
    buf_append(&b, "hello world", 11);
    buf_consume(&b, 6);
    ok(b.len == 5 && memcmp(b.data, "world", 5) == 0, "consume moves the rest");
    buf_free(&b);
}

static void test_str(void)
{
    static const struct {
        const char *in;
        bool ok;
        int64_t v;
    } cases[] = {
        {"0", true, 0},
        {"1", true, 1},
        {"42", true, 42},
        {"9223372036854775807", true, INT64_MAX},
        {"9223372036854775808", false, 0},
        {"99999999999999999999", false, 0},
        {"", false, 0},
        {"01", false, 0},
        {"-1", false, 0},
        {"+1", false, 0},
        {"1a", false, 0},
        {" 1", false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t v = -7;
        bool r = str_to_i64((struct str){cases[i].in, strlen(cases[i].in)}, &v);
        ok(r == cases[i].ok && (!r || v == cases[i].v), "str_to_i64(\"%s\")", cases[i].in);
    }
    ok(str_ieq_lit(STR_LIT("Content-LENGTH"), "content-length"), "ieq");
    ok(!str_ieq_lit(STR_LIT("content-lengt"), "content-length"), "ieq length");
}

static void test_time(void)
{
    static const struct {
        int64_t t;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00Z"},          {951782400, "2000-02-29T00:00:00Z"},
        {1795759553, "2026-11-27T06:05:53Z"}, {4107542399, "2100-02-28T23:59:59Z"},
        {1709251199, "2024-02-29T23:59:59Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[RFC3339_LEN + 1] = {0};
        fmt_rfc3339(out, cases[i].t);
        ok(strcmp(out, cases[i].want) == 0, "rfc3339(%lld) = %s, want %s", (long long)cases[i].t,
           out, cases[i].want);
    }
    ok(days_from_civil(1970, 1, 1) == 0, "epoch day");
    ok(days_from_civil(2000, 3, 1) == 11017, "2000-03-01");
}

static void h_a(struct http_ctx *c)
{
    (void)c;
}

static void test_router(void)
{
    static const struct route table[] = {
        {HTTP_GET, "/health", h_a, ROUTE_PUBLIC, 0},
        {HTTP_POST, "/users", h_a, 0, 0},
        {HTTP_GET, "/users", h_a, 0, 0},
        {HTTP_GET, "/users/{id}", h_a, 0, 0},
        {HTTP_DELETE, "/users/{id}", h_a, 0, 0},
        {HTTP_POST, "/orders/process", h_a, 0, 0},
        {HTTP_GET, "/orders/{id}", h_a, 0, 0},
        {HTTP_GET, "/users/{id}/orders", h_a, 0, 0},
    };
    ok(router_init(table, sizeof table / sizeof table[0]) == 0, "router_init");
    char scratch[256];
    struct router_match m;

    ok(router_match(HTTP_GET, STR_LIT("/health"), scratch, &m) && m.route == 0, "literal");
    ok(!router_match(HTTP_GET, STR_LIT("/health/"), scratch, &m) && m.path_route == -1,
       "trailing slash is another path");
    ok(router_match(HTTP_GET, STR_LIT("/users"), scratch, &m) && m.route == 2,
       "method picks the route");
    ok(router_match(HTTP_GET, STR_LIT("/users/42"), scratch, &m) && m.route == 3 &&
           m.nparams == 1 && str_eq(m.params[0], STR_LIT("42")),
       "param captured");
    ok(router_match(HTTP_GET, STR_LIT("/users/%34%32"), scratch, &m) && m.route == 3 &&
           str_eq(m.params[0], STR_LIT("42")),
       "param percent-decoded");
    ok(!router_match(HTTP_GET, STR_LIT("/users/4%2F2"), scratch, &m), "%%2F never matches");
    ok(!router_match(HTTP_GET, STR_LIT("/users/%zz"), scratch, &m), "bad escape");
    ok(!router_match(HTTP_GET, STR_LIT("/users//orders"), scratch, &m), "empty param");
    ok(!router_match(HTTP_PUT, STR_LIT("/users/7"), scratch, &m) && m.path_route == 3 &&
           m.allow == ((1u << HTTP_GET) | (1u << HTTP_DELETE)),
       "405 info: allow mask");
    ok(router_match(HTTP_POST, STR_LIT("/orders/process"), scratch, &m) && m.route == 5,
       "literal before param");
    ok(router_match(HTTP_GET, STR_LIT("/orders/process"), scratch, &m) && m.route == 6 &&
           str_eq(m.params[0], STR_LIT("process")),
       "GET falls to the param route");
    ok(router_match(HTTP_GET, STR_LIT("/users/9/orders"), scratch, &m) && m.route == 7 &&
           str_eq(m.params[0], STR_LIT("9")),
       "nested param");
    ok(!router_match(HTTP_GET, STR_LIT("/"), scratch, &m) && m.path_route == -1, "root");
    ok(!router_match(HTTP_GET, STR_LIT("/a/b/c/d/e/f/g/h/i/j"), scratch, &m), "deep path");
}

static struct str S(const char *s) {
    return (struct str){s, strlen(s)};
}

static void
test_validate(void)
{
    char name[1024];
    ok(validate_name(S("Ada Lovelace")) == NULL, "plain name");
    ok(validate_name(S("")) != NULL, "empty name");
    memset(name, 'a', 200);
    ok(validate_name((struct str){name, 200}) == NULL, "200 chars");
    ok(validate_name((struct str){name, 201}) != NULL, "201 chars");
    for (int i = 0; i < 200; i++)
        memcpy(name + 2 * i, "\xc3\xa9", 2);
    ok(validate_name((struct str){name, 400}) == NULL, "200 two-byte chars");
    memcpy(name + 400, "\xc3\xa9", 2);
    ok(validate_name((struct str){name, 402}) != NULL, "201 two-byte chars");
    ok(validate_name(S("a\x01z")) != NULL, "C0 control");
    ok(validate_name(S("a\x7fz")) != NULL, "DEL");
    ok(validate_name(S("a\xc2\x85z")) != NULL, "C1 control NEL");
    ok(validate_name(S("a\xc2\xa0z")) == NULL, "NBSP is not a control");
    ok(validate_name((struct str){"a\0b", 3}) != NULL, "NUL");
    ok(validate_name(S("\xff")) != NULL, "invalid utf-8");

    ok(validate_email(S("a@b")) == NULL, "3 bytes");
    ok(validate_email(S("@b")) != NULL, "2 bytes");
    ok(validate_email(S("ab@")) != NULL, "nothing after @");
    ok(validate_email(S("@ab")) != NULL, "nothing before @");
    ok(validate_email(S("abc")) != NULL, "no @");
    ok(validate_email(S("a@b@c")) != NULL, "two @");
    ok(validate_email(S("a b@c")) != NULL, "space");
    char email[300];
    memset(email, 'a', sizeof email);
    email[10] = '@';
    ok(validate_email((struct str){email, 254}) == NULL, "254 bytes");
    ok(validate_email((struct str){email, 255}) != NULL, "255 bytes");

    int64_t id;
    ok(parse_id(S("1"), &id) && id == 1, "id 1");
    ok(!parse_id(S("0"), &id), "id 0");
    ok(!parse_id(S("-1"), &id), "id -1");
    ok(!parse_id(S("9223372036854775808"), &id), "id overflow");
    ok(parse_id(S("9223372036854775807"), &id) && id == INT64_MAX, "id max");
}

static const char *g_env[][2] = {{NULL, NULL}, {NULL, NULL}, {NULL, NULL}};

static const char *fake_getenv(const char *name)
{
    for (size_t i = 0; i < sizeof g_env / sizeof g_env[0]; i++)
        if (g_env[i][0] && strcmp(g_env[i][0], name) == 0)
            return g_env[i][1];
    return NULL;
}

static int load(struct config *cfg, int argc, char **argv, char *err)
{
    return config_load_with(cfg, argc, argv, fake_getenv, err, 256);
}

static void test_config(void)
{
    struct config cfg;
    char err[256];
    ok(load(&cfg, 0, NULL, err) == 0, "defaults load");
    ok(strcmp(cfg.addr_host, "0.0.0.0") == 0 && cfg.port == 8080, "default addr");
    ok(strcmp(cfg.database_url, "sqlite:./data/brisk.db") == 0, "default db");
    ok(cfg.max_body_bytes == 8388608 && cfg.max_header_bytes == 16384 && cfg.max_headers == 100,
       "default limits");
    ok(cfg.header_timeout_ms == 10000 && cfg.body_timeout_ms == 60000 &&
           cfg.idle_timeout_ms == 60000 && cfg.drain_seconds == 10,
       "default timers");
    ok(cfg.threads >= 1, "threads default to cores");
    ok(strcmp(cfg.receipt_key, "dev-receipt-key") == 0, "default receipt key");

    g_env[0][0] = "BRISK_ADDR";
    g_env[0][1] = "[::1]:9000";
    g_env[1][0] = "BRISK_THREADS";
    g_env[1][1] = "3";
    ok(load(&cfg, 0, NULL, err) == 0 && strcmp(cfg.addr_host, "::1") == 0 && cfg.port == 9000 &&
           cfg.threads == 3,
       "env values");
    char *argv1[] = {"--threads=5", "--addr", "127.0.0.1:1"};
    ok(load(&cfg, 3, argv1, err) == 0 && cfg.threads == 5 && cfg.port == 1 &&
           strcmp(cfg.addr_host, "127.0.0.1") == 0,
       "flags win over env");

    static const struct {
        const char *env, *val, *must_mention;
    } bad[] = {
        {"BRISK_THREADS", "0", "BRISK_THREADS"},
        {"BRISK_THREADS", "two", "BRISK_THREADS"},
        {"BRISK_ADDR", "nonsense", "BRISK_ADDR"},
        {"BRISK_ADDR", "1.2.3.4:70000", "BRISK_ADDR"},
        {"BRISK_LOG_FORMAT", "xml", "BRISK_LOG_FORMAT"},
        {"BRISK_LOG_LEVEL", "loud", "BRISK_LOG_LEVEL"},
        {"BRISK_MAX_BODY_BYTES", "-1", "BRISK_MAX_BODY_BYTES"},
        {"BRISK_MAX_BODY_BYTES", "0", "BRISK_MAX_BODY_BYTES"},
        {"BRISK_MAX_BODY_BYTES", "99999999999999999999999", "BRISK_MAX_BODY_BYTES"},
        {"BRISK_DATABASE_URL", "", "BRISK_DATABASE_URL"},
        {"BRISK_API_TOKEN", "", "BRISK_API_TOKEN"},
        {"BRISK_TRUSTED_PROXIES", "10.0.0.0/33", "BRISK_TRUSTED_PROXIES"},
        {"BRISK_TRUSTED_PROXIES", "proxy.internal", "BRISK_TRUSTED_PROXIES"},
        {"BRISK_TRUSTED_PROXIES", "10.0.0.1,", "BRISK_TRUSTED_PROXIES"},
        {"BRISK_DRAIN_GRACE_MS", "-5", "BRISK_DRAIN_GRACE_MS"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        g_env[0][0] = bad[i].env;
        g_env[0][1] = bad[i].val;
        g_env[1][0] = NULL;
        err[0] = 0;
        ok(load(&cfg, 0, NULL, err) == -1 && strstr(err, bad[i].must_mention) && !strchr(err, '\n'),
           "bad %s=%s rejected with a line naming it (%s)", bad[i].env, bad[i].val, err);
    }
    g_env[0][0] = "BRISK_API_TOKEN";
    g_env[0][1] = "s3cret-token";
    ok(load(&cfg, 0, NULL, err) == 0 && strcmp(cfg.api_token, "s3cret-token") == 0, "token");
    g_env[0][0] = "BRISK_DATABASE_URL";
    g_env[0][1] = "";
    ok(load(&cfg, 0, NULL, err) == -1 && !strstr(err, "s3cret"), "no secret echoed");
    g_env[0][0] = NULL;
    char *argv2[] = {"--bogus=1"};
    ok(load(&cfg, 1, argv2, err) == -1 && strstr(err, "--bogus"), "unknown flag");
    char *argv3[] = {"--threads"};
    ok(load(&cfg, 1, argv3, err) == -1 && strstr(err, "missing value"), "flag without value");

    /* TLS: off by default; both files or neither; an address of its own needs them */
    ok(load(&cfg, 0, NULL, err) == 0 && !*cfg.tls_cert && !*cfg.tls_key && !cfg.tls_addr_host[0],
       "TLS off by default");
    char *tls1[] = {"--tls-cert=c.pem", "--tls-key=k.pem", "--tls-addr=[::1]:8443"};
    ok(load(&cfg, 3, tls1, err) == 0 && strcmp(cfg.tls_cert, "c.pem") == 0 &&
           strcmp(cfg.tls_key, "k.pem") == 0 && strcmp(cfg.tls_addr_host, "::1") == 0 &&
           cfg.tls_port == 8443 && cfg.port == 8080,
       "TLS flags (%s)", err);
    char *tls2[] = {"--tls-cert=c.pem"};
    ok(load(&cfg, 1, tls2, err) == -1 && strstr(err, "BRISK_TLS_KEY") && !strchr(err, '\n'),
       "cert without key (%s)", err);
    char *tls3[] = {"--tls-key=k.pem"};
    ok(load(&cfg, 1, tls3, err) == -1 && strstr(err, "BRISK_TLS_CERT"), "key without cert");
    char *tls4[] = {"--tls-addr=:8443"};
    ok(load(&cfg, 1, tls4, err) == -1 && strstr(err, "BRISK_TLS_ADDR"), "TLS address alone");
    char *tls5[] = {"--tls-cert=c.pem", "--tls-key=k.pem", "--tls-addr=8443"};
    ok(load(&cfg, 3, tls5, err) == -1 && strstr(err, "BRISK_TLS_ADDR"), "bad TLS address");
    char *tls6[] = {"--tls-cert=c.pem", "--tls-key=k.pem", "--tls-addr="};
    ok(load(&cfg, 3, tls6, err) == 0 && !cfg.tls_addr_host[0], "empty TLS address: none");
}

static void test_cidr(void)
{
    struct cidr r[CIDR_MAX];
    char err[160];
    int n = cidr_parse_list(" 10.0.0.0/8 , 192.168.1.7,fd00::/8,::1", r, CIDR_MAX, err, sizeof err);
    ok(n == 4, "four ranges (%d: %s)", n, n < 0 ? err : "");
    ok(cidr_match(r, n, "10.200.3.4", 10) && cidr_match(r, n, "192.168.1.7", 11) &&
           cidr_match(r, n, "fd12::5", 7) && cidr_match(r, n, "::1", 3),
       "addresses inside match");
    ok(!cidr_match(r, n, "11.0.0.1", 8) && !cidr_match(r, n, "192.168.1.8", 11) &&
           !cidr_match(r, n, "fe80::1", 7) && !cidr_match(r, n, "::2", 3) &&
           !cidr_match(r, n, "garbage", 7),
       "addresses outside (and garbage) do not");
    n = cidr_parse_list("172.16.0.0/12", r, CIDR_MAX, err, sizeof err);
    ok(n == 1 && cidr_match(r, n, "172.31.255.255", 14) && !cidr_match(r, n, "172.32.0.0", 10),
       "a prefix that is not a byte boundary");
    ok(cidr_parse_list("", r, CIDR_MAX, err, sizeof err) == 0, "empty list");
    ok(cidr_parse_list("1.2.3.4/", r, CIDR_MAX, err, sizeof err) == -1 && strstr(err, "1.2.3.4/"),
       "missing prefix named");
    ok(cidr_parse_list("::1/129", r, CIDR_MAX, err, sizeof err) == -1, "IPv6 prefix too long");
}

/* log_access's line for status at the given level, captured from fd 2 ("" for none). */
static void access_line(int status, enum log_level level, char *out, size_t cap)
{
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    dup2(fileno(tmp), 2);
    log_configure(level, false);
    struct access_entry e = {.method = STR_LIT("GET"),
                             .route = STR_LIT("/ready"),
                             .path = STR_LIT("/ready"),
                             .status = status,
                             .request_id = STR_LIT("r1"),
                             .client = STR_LIT("203.0.113.9"),
                             .proto = STR_LIT("HTTP/1.1"),
                             .bytes_in = 42};
    log_access(&e);
    log_flush();
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, cap - 1, tmp);
    out[n] = 0;
    fclose(tmp);
    log_configure(LOG_WARN, false);
}

static void test_access_log(void)
{
    char line[512];
    access_line(200, LOG_INFO, line, sizeof line);
    ok(strstr(line, " info access GET /ready") && strstr(line, "client=203.0.113.9") &&
           strstr(line, "proto=HTTP/1.1") && strstr(line, "bytes_in=42"),
       "access line with client, protocol, bytes in: %s", line);
    access_line(503, LOG_INFO, line, sizeof line);
    ok(strstr(line, " warn access GET /ready") != NULL, "a 503 access line is warn: %s", line);
    access_line(503, LOG_WARN, line, sizeof line);
    ok(strstr(line, "status=503") != NULL, "and shows at BRISK_LOG_LEVEL=warn: %s", line);
    access_line(404, LOG_WARN, line, sizeof line);
    ok(line[0] == 0, "a 404 does not at warn: %s", line);
}

/* One log_fields line in JSON mode, captured from fd 2. */
static void fields_line(const struct log_field *f, size_t n, const char *msg, char *out, size_t cap)
{
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    dup2(fileno(tmp), 2);
    log_configure(LOG_INFO, true);
    log_fields(LOG_WARN, f, n, "%s", msg);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t got = fread(out, 1, cap - 1, tmp);
    out[got] = 0;
    fclose(tmp);
    log_configure(LOG_WARN, false);
}

static void test_log_fields(void)
{
    char line[16384];
    const struct log_field f[] = {LOG_STR("db", "postgres"), LOG_STR("error", "bad \"quote\"\n"),
                                  LOG_STR("skipped", NULL), LOG_INT("conn", 3)};
    log_set_thread("loop", 2);
    fields_line(f, 4, "connection lost", line, sizeof line);
    ok(strstr(line, "\"msg\":\"connection lost\",\"loop\":2,\"db\":\"postgres\","
                    "\"error\":\"bad \\\"quote\\\"\\u000a\",\"conn\":3}\n") != NULL,
       "JSON line with thread and fields: %s", line);
    ok(strstr(line, "skipped") == NULL, "a NULL field is left out");
    log_set_thread(NULL, 0);
    /* a huge field is cut, the line still comes out whole */
    static char big[3000];
    memset(big, 'x', sizeof big - 1);
    const struct log_field g[] = {LOG_STR("a", big), LOG_STR("b", big), LOG_STR("c", big)};
    fields_line(g, 3, "big", line, sizeof line);
    size_t len = strlen(line);
    ok(len > 1000 && len < 3 * 3000 && line[len - 2] == '}' && line[len - 1] == '\n' &&
           strstr(line, "\"loop\"") == NULL,
       "oversized fields are cut, the line ends well (%zu bytes)", len);
}

/* ASan reserves terabytes of shadow memory: an address-space limit cannot work under it. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#ifndef TEST_ASAN
/*
 * Child: cap the address space, use up the heap, then run `what` (1: log_fatal,
 * 2: grow a buffer). Both must print their line on stderr (into pipe_w) and
 * abort - not recurse into the allocator that just failed.
 */
static void oom_child(int what, int pipe_w)
{
    if (dup2(pipe_w, 2) < 0)
        _exit(90);
    struct rlimit rl = {512ul << 20, 512ul << 20};
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        _exit(91);
    /* volatile: a compiler may drop an allocation whose result is only tested */
    void *volatile block;
    size_t n = 0;
    while (n < 100000 && (block = malloc(64 << 10)) != NULL) /* leaked: the child exits */
        n++;
    if ((block = malloc(64 << 10)) != NULL)
        _exit(92); /* the limit did not take */
    if (what == 1) {
        log_fatal("fatal after %zu blocks: %s", n, "no memory left");
    } else {
        struct buf b;
        buf_init(&b, (size_t)1 << 40);
        if (buf_reserve(&b, (size_t)1 << 30) == 0)
            _exit(93);
        _exit(94); /* reserve failed without aborting */
    }
    _exit(95); /* log_fatal returned */
}
#endif

static void test_out_of_memory(void)
{
#ifdef TEST_ASAN
    printf("# out-of-memory aborts: skipped under ASan (no RLIMIT_AS with its shadow memory)\n");
#else
    static const char *const want[] = {"", "no memory left", "out of memory growing a buffer"};
    if (getenv("BRISK_TEST_EMULATED")) { /* qemu-user keeps the guest's heap outside RLIMIT_AS */
        printf("# out-of-memory aborts: skipped under %s\n", getenv("BRISK_TEST_EMULATED"));
        return;
    }
    for (int what = 1; what <= 2; what++) {
        int fds[2];
        if (pipe(fds) != 0) {
            ok(0, "pipe");
            return;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            oom_child(what, fds[1]);
        }
        close(fds[1]);
        char err[2048];
        size_t len = 0;
        ssize_t r;
        while (len < sizeof err - 1 && (r = read(fds[0], err + len, sizeof err - 1 - len)) > 0)
            len += (size_t)r;
        err[len] = 0;
        close(fds[0]);
        int st = 0;
        ok(pid > 0 && waitpid(pid, &st, 0) == pid, "wait for the child");
        ok(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "case %d: aborts (status 0x%x)", what, st);
        ok(strstr(err, want[what]) != NULL, "case %d: says so on stderr: %s", what, err);
    }
#endif
}

int main(void)
{
    test_out_of_memory();
    test_log_fields();
    test_buf();
    test_str();
    test_time();
    test_router();
    test_validate();
    test_config();
    test_cidr();
    test_access_log();
    return test_done();
}
