/*
 * test_procmetrics.c - the /proc parsers behind the process_* metrics
 * (src/http/procmetrics.c), their rendering, and label-value escaping
 * (src/http/metrics.c).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "http/metrics.h"
#include "http/procmetrics.h"
#include "test.h"

/* A /proc/PID/stat line as Linux 6.x prints it, with comm in the middle. */
static void stat_line(char *out, size_t cap, const char *comm)
{
    snprintf(out, cap,
             "4242 (%s) S 1 4242 4242 0 -1 4194560 1234 0 0 0 "
             "37 12 0 0 20 0 5 0 987654 123456789 2345 18446744073709551615 "
             "1 1 0 0 0 0 0 4096 16386 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
             comm);
}

static void test_parse_stat(void)
{
    static const char *const comms[] = {"brisk", "a b", "x) S 1 2 (y", ")", "", "((("};
    char line[512];
    for (size_t i = 0; i < sizeof comms / sizeof comms[0]; i++) {
        stat_line(line, sizeof line, comms[i]);
        struct proc_stat st = {0};
        int rc = procmetrics_parse_stat(line, strlen(line), &st);
        ok(rc == 0, "comm %s parses", comms[i]);
        ok(st.utime_ticks == 37 && st.stime_ticks == 12, "comm %s: utime %llu stime %llu", comms[i],
           (unsigned long long)st.utime_ticks, (unsigned long long)st.stime_ticks);
        ok(st.start_ticks == 987654, "comm %s: starttime %llu", comms[i],
           (unsigned long long)st.start_ticks);
        ok(st.vsize_bytes == 123456789 && st.rss_pages == 2345, "comm %s: vsize %llu rss %llu",
           comms[i], (unsigned long long)st.vsize_bytes, (unsigned long long)st.rss_pages);
    }

    stat_line(line, sizeof line, "brisk");
    size_t full = strlen(line);
    /* every cut that ends inside or right after the fields used fails */
    const char *rss = strstr(line, " 2345 ") + 1;
    size_t need = (size_t)(rss - line) + 5; /* through the separator after rss */
    for (size_t n = 0; n < need; n++) {
        struct proc_stat st;
        ok(procmetrics_parse_stat(line, n, &st) != 0, "cut after %zu of %zu bytes fails", n, full);
    }
    struct proc_stat st;
    ok(procmetrics_parse_stat(line, need, &st) == 0 && st.rss_pages == 2345,
       "the text through rss and its separator is enough");

    static const char *const bad[] = {
        "4242 brisk S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22\n", /* no ( ) */
        "4242 (brisk) S 1 4242 4242 0 -1 4194560 1234 0 0 0 -37 12 0 0 20 0 5 0 1 2 3 4\n",
        "4242 (brisk) S 1 4242 4242 0 -1 4194560 1234 0 0 0 37 12 0 0 20 0 5 0 1 2x 3 4\n",
        "4242 (brisk) S 1 4242 4242 0 -1 4194560 1234 0 0 0 37 12 0 0 20 0 5 0 1 2\n", /* no rss */
        "4242 (brisk) S 1 4242 4242 0 -1 4194560 1234 0 0 0 37  12 0 0 20 0 5 0 1 2 3 4\n",
        /* vsize past 2^64 */
        "1 (b) S 1 1 1 0 -1 0 0 0 0 0 37 12 0 0 20 0 5 0 1 99999999999999999999 4\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct proc_stat s2;
        ok(procmetrics_parse_stat(bad[i], strlen(bad[i]), &s2) != 0, "malformed stat %zu fails", i);
    }

    /* the real file */
    char buf[2048];
    int fd = open("/proc/self/stat", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    if (fd >= 0)
        close(fd);
    ok(n > 0, "read /proc/self/stat");
    struct proc_stat me = {0};
    ok(n > 0 && procmetrics_parse_stat(buf, (size_t)n, &me) == 0, "/proc/self/stat parses");
    long page = sysconf(_SC_PAGESIZE);
    /* qemu-user (tests/deploy/test_arm64.py) writes rss and vsize as 0 in its /proc/self/stat */
    if (!getenv("BRISK_TEST_EMULATED")) {
        ok(me.rss_pages > 0 && me.rss_pages * (uint64_t)page < (1ull << 32), "rss %llu pages",
           (unsigned long long)me.rss_pages);
        ok(me.vsize_bytes >= me.rss_pages * (uint64_t)page, "vsize %llu",
           (unsigned long long)me.vsize_bytes);
    }
    ok(me.start_ticks > 0, "starttime %llu", (unsigned long long)me.start_ticks);
}

static const char k_limits[] =
    "Limit                     Soft Limit           Hard Limit           Units     \n"
    "Max cpu time              unlimited            unlimited            seconds   \n"
    "Max file size             unlimited            unlimited            bytes     \n"
    "Max open files            20000                1048576              files     \n"
    "Max locked memory         8388608              8388608              bytes     \n";

static void test_parse_max_fds(void)
{
    uint64_t v = 0;
    ok(procmetrics_parse_max_fds(k_limits, strlen(k_limits), &v) == 0 && v == 20000,
       "soft limit of a sample: %llu", (unsigned long long)v);
    /* the last line, no newline at the end */
    const char *tail = "Limit  Soft  Hard  Units\nMax open files            1024 4096 files";
    ok(procmetrics_parse_max_fds(tail, strlen(tail), &v) == 0 && v == 1024, "last line: %llu",
       (unsigned long long)v);

    static const char *const bad[] = {
        "",
        "Max open files\n",
        "Max open files            unlimited            unlimited            files\n",
        "Max open files            1024\n", /* no hard-limit column */
        "Max open filesx           1024                 4096                 files\n",
        "Max locked memory         8388608              8388608              bytes\n",
        "Max open files            12a4                 4096                 files\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        ok(procmetrics_parse_max_fds(bad[i], strlen(bad[i]), &v) != 0 && v == 7,
           "limits %zu refused", i);
    }
    /* cut inside the number: "Max open files   2000" then EOF has no hard column */
    const char *cut = strstr(k_limits, "20000") + 4;
    ok(procmetrics_parse_max_fds(k_limits, (size_t)(cut - k_limits), &v) != 0,
       "a cut-off limits file is refused");

    char buf[4096];
    int fd = open("/proc/self/limits", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    if (fd >= 0)
        close(fd);
    struct rlimit rl;
    ok(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
    ok(n > 0 && procmetrics_parse_max_fds(buf, (size_t)n, &v) == 0 && v == rl.rlim_cur,
       "/proc/self/limits: %llu, getrlimit %llu", (unsigned long long)v,
       (unsigned long long)rl.rlim_cur);
}

/* The value of the one sample of `name` in an exposition, or -1. */
static double sample(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

static void test_render(void)
{
    procmetrics_init();
    struct buf b;
    buf_init(&b, 0);
    buf_append_char(&b, '\n');
    procmetrics_render(&b);
    buf_append_char(&b, 0);
    ok(!b.failed, "render fits");
    static const char *const families[] = {
        "process_cpu_seconds_total counter",
        "process_open_fds gauge",
        "process_max_fds gauge",
        "process_virtual_memory_bytes gauge",
        "process_resident_memory_bytes gauge",
        "process_start_time_seconds gauge",
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char type[96];
        snprintf(type, sizeof type, "\n# TYPE %s\n", families[i]);
        ok(strstr(b.data, type) != NULL, "%s", type + 1);
    }
    ok(sample(b.data, "process_open_fds") >= 3, "open fds %g", sample(b.data, "process_open_fds"));
    double rss = sample(b.data, "process_resident_memory_bytes");
    if (!getenv("BRISK_TEST_EMULATED")) /* 0 under qemu-user, as above */
        ok(rss > 1e5 && rss < 1e10, "rss %g", rss);
    double st = sample(b.data, "process_start_time_seconds");
    double now = (double)time(NULL);
    ok(st > now - 600 && st <= now + 1, "start time %.2f, now %.0f", st, now);
    double cpu = sample(b.data, "process_cpu_seconds_total");
    ok(cpu > 0 && cpu < 600, "cpu seconds %g", cpu);
    buf_free(&b);
}

static void test_label_value(void)
{
    struct buf b;
    buf_init(&b, 0);
    metrics_append_label_value(&b, "0.1.0");
    metrics_append_label_value(&b, "|a\"b\\c\nd");
    buf_append_char(&b, 0);
    ok(strcmp(b.data, "0.1.0|a\\\"b\\\\c\\nd") == 0, "escaped: %s", b.data);
    buf_free(&b);
}

int main(void)
{
    test_parse_stat();
    test_parse_max_fds();
    test_render();
    test_label_value();
    return test_done();
}
