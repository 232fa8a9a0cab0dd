/*
 * procmetrics.c - process_* metrics from /proc/self (see procmetrics.h).
 *
 * Names, types and HELP texts follow the Go client's process collector, so
 * dashboards written for it work unchanged. Sources:
 *   process_cpu_seconds_total      clock_gettime(CLOCK_PROCESS_CPUTIME_ID): user +
 *                                  system time of every thread, in nanoseconds (the
 *                                  utime + stime of /proc/self/stat, finer than ticks)
 *   process_resident_memory_bytes  /proc/self/stat rss (pages) * page size
 *   process_virtual_memory_bytes   /proc/self/stat vsize
 *   process_open_fds               entries of /proc/self/fd, less the one listing it
 *   process_max_fds                /proc/self/limits "Max open files", soft limit
 *                                  (read live: prlimit(1) can change it)
 *   process_start_time_seconds     at start-up: CLOCK_REALTIME - CLOCK_BOOTTIME +
 *                                  /proc/self/stat starttime / CLK_TCK, which is what
 *                                  the clients' btime (/proc/stat) + starttime works
 *                                  out to; the kernel derives btime the same way
 * The sandbox allows what this needs: openat, read, close, and getdents64 for
 * listing /proc/self/fd (src/base/sandbox.c).
 */
#include "http/procmetrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Start time in unix seconds; < 0 until procmetrics_init worked it out. */
static double g_start_time = -1;

/* Decimal digits at p (before end) into *out; returns the end of them, or NULL. */
static const char *parse_u64(const char *p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = p;
    while (p < end && *p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return NULL;
        v = v * 10 + d;
        p++;
    }
    if (p == s)
        return NULL;
    *out = v;
    return p;
}

int procmetrics_parse_stat(const char *text, size_t len, struct proc_stat *out)
{
    const char *end = text + len, *p = NULL;
    for (const char *q = text; q < end; q++)
        if (*q == ')')
            p = q + 1;
    if (!p)
        return -1;
    /* fields 3.. follow, one space before each */
    int have = 0;
    for (int field = 3; field <= 24; field++) {
        if (p >= end || *p != ' ')
            return -1;
        p++;
        uint64_t *dst = NULL;
        switch (field) {
        case 14:
            dst = &out->utime_ticks;
            break;
        case 15:
            dst = &out->stime_ticks;
            break;
        case 22:
            dst = &out->start_ticks;
            break;
        case 23:
            dst = &out->vsize_bytes;
            break;
        case 24:
            dst = &out->rss_pages;
            break;
        default:
            break;
        }
        if (dst) {
            p = parse_u64(p, end, dst);
            if (!p)
                return -1;
            have++;
        } else {
            const char *s = p;
            while (p < end && *p != ' ' && *p != '\n')
                p++;
            if (p == s)
                return -1;
        }
    }
    /* the last field used must end at a separator, not in the middle of a number */
    if (p >= end || (*p != ' ' && *p != '\n'))
        return -1;
    return have == 5 ? 0 : -1;
}

int procmetrics_parse_max_fds(const char *text, size_t len, uint64_t *out)
{
    static const char k_name[] = "Max open files";
    const size_t n = sizeof k_name - 1;
    const char *end = text + len;
    for (const char *line = text; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *eol = nl ? nl : end;
        if ((size_t)(eol - line) > n && memcmp(line, k_name, n) == 0 && line[n] == ' ') {
            const char *p = line + n;
            while (p < eol && *p == ' ')
                p++;
            uint64_t v;
            const char *q = parse_u64(p, eol, &v);
            if (!q || q == eol || *q != ' ') /* "unlimited", or no hard-limit column */
                return -1;
            *out = v;
            return 0;
        }
        line = eol + 1;
    }
    return -1;
}

/*
 * Read all of a /proc file into buf (cap bytes). Returns its length, or -1
 * when it cannot be opened or read or does not fit (a cut-off file would
 * parse as garbage).
 */
static ssize_t read_proc(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    for (;;) {
        if (len == cap) {
            len = SIZE_MAX;
            break;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            len = SIZE_MAX;
            break;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    return len == SIZE_MAX ? -1 : (ssize_t)len;
}

static int read_stat(struct proc_stat *st)
{
    char text[1024]; /* about 300 bytes: 52 numbers and a name of at most 16 */
    ssize_t n = read_proc("/proc/self/stat", text, sizeof text);
    return n < 0 ? -1 : procmetrics_parse_stat(text, (size_t)n, st);
}

static double ts_seconds(const struct timespec *ts)
{
    return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

void procmetrics_init(void)
{
    struct timespec real, boot;
    struct proc_stat st;
    long tck = sysconf(_SC_CLK_TCK);
    if (clock_gettime(CLOCK_REALTIME, &real) != 0)
        return;
    if (tck > 0 && read_stat(&st) == 0 && clock_gettime(CLOCK_BOOTTIME, &boot) == 0) {
        double t = ts_seconds(&real) - ts_seconds(&boot) + (double)st.start_ticks / (double)tck;
        if (t > 0 && t <= ts_seconds(&real) + 1) {
            g_start_time = t;
            return;
        }
    }
    /* no /proc: now, before the loops start, is as close to the exec as we can tell */
    g_start_time = ts_seconds(&real);
}

/* Descriptors open in this process, or -1. */
static long count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int self = dirfd(d);
    long n = 0;
    bool failed = false;
    for (;;) {
        errno = 0;
        const struct dirent *e = readdir(d);
        if (!e) {
            failed = errno != 0;
            break;
        }
        uint64_t fd;
        const char *name = e->d_name, *end = name + strlen(name);
        if (name[0] == '.')
            continue;
        if (parse_u64(name, end, &fd) != end) {
            failed = true;
            break;
        }
        if (self < 0 || fd != (uint64_t)self)
            n++;
    }
    if (closedir(d) != 0)
        failed = true;
    return failed ? -1 : n;
}

static void gauge(struct buf *b, const char *name, const char *help, uint64_t v)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s ", name, help, name, name);
    buf_append_u64(b, v);
    buf_append_char(b, '\n');
}

void procmetrics_render(struct buf *b)
{
    struct timespec cpu;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu) == 0)
        buf_printf(b,
                   "# HELP process_cpu_seconds_total Total user and system CPU time spent in "
                   "seconds.\n# TYPE process_cpu_seconds_total counter\n"
                   "process_cpu_seconds_total %.9f\n",
                   ts_seconds(&cpu));

    long fds = count_fds();
    if (fds >= 0)
        gauge(b, "process_open_fds", "Number of open file descriptors.", (uint64_t)fds);

    char limits[4096]; /* about 1.4 KB: 16 lines of 80 columns */
    ssize_t n = read_proc("/proc/self/limits", limits, sizeof limits);
    uint64_t max_fds;
    if (n >= 0 && procmetrics_parse_max_fds(limits, (size_t)n, &max_fds) == 0)
        gauge(b, "process_max_fds", "Maximum number of open file descriptors.", max_fds);

    struct proc_stat st;
    long page = sysconf(_SC_PAGESIZE);
    if (read_stat(&st) == 0) {
        gauge(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.", st.vsize_bytes);
        if (page > 0 && st.rss_pages <= UINT64_MAX / (uint64_t)page)
            gauge(b, "process_resident_memory_bytes", "Resident memory size in bytes.",
                  st.rss_pages * (uint64_t)page);
    }

    if (g_start_time > 0)
        buf_printf(b,
                   "# HELP process_start_time_seconds Start time of the process since unix "
                   "epoch in seconds.\n# TYPE process_start_time_seconds gauge\n"
                   "process_start_time_seconds %.2f\n",
                   g_start_time);
}
