/*
 * test_sandbox.c - the seccomp allowlist the server runs under really stops
 * what it does not list, and lets through what the server needs.
 *
 * Each case forks; the child installs exactly the server's filter
 * (sandbox_install_filter) and makes one call; the parent checks the child was
 * killed by SIGSYS, or that it reported success / the expected errno.
 *
 * BRISK_TEST_EMULATED=WHY (tests/deploy/test_arm64.py: "qemu-user"): the kernel
 * is not the target's and no filter can be loaded, so only the filter's
 * construction is checked (sandbox_export_filter) and the kernel cases are
 * skipped. BRISK_TEST_SANDBOX_PFC=PATH also writes the exported filter there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/sandbox.h"
#include "http/procmetrics.h"
#include "test.h"

/* Child exit codes. */
enum { CHILD_OK = 0, CHILD_FILTER_FAILED = 90, CHILD_CALL_RETURNED = 91, CHILD_WRONG = 92 };

static char g_tmpdir[64];
static int g_listener = -1; /* bound and listening before any filter */
static pid_t g_parent;      /* the test process, for the cross-process signal */

static void *thread_fn(void *arg)
{
    *(int *)arg = 42;
    return NULL;
}

/* Fork; the child installs the filter (mode) and returns fn()'s exit code. */
static int run_child(int (*fn)(void), enum sandbox_mode mode)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core); /* SIGSYS would dump core */
        /* as in the server, a thread has run before the filter (the worker
         * pool): glibc sets up its thread signal handlers at the first one */
        pthread_t t;
        int v = 0;
        if (pthread_create(&t, NULL, thread_fn, &v) != 0 || pthread_join(t, NULL) != 0)
            _exit(CHILD_WRONG);
        if (sandbox_install_filter(mode) != 0)
            _exit(CHILD_FILTER_FAILED);
        _exit(fn());
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

static bool killed_by_sigsys(int st)
{
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS;
}

static bool exited_ok(int st)
{
    return WIFEXITED(st) && WEXITSTATUS(st) == CHILD_OK;
}

static const char *describe(int st)
{
    static char b[64];
    if (WIFSIGNALED(st))
        snprintf(b, sizeof b, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(b, sizeof b, "exit %d", WEXITSTATUS(st));
    return b;
}

/* ---- forbidden calls: each must kill the process ---- */

static int call_packet_socket(void)
{
    socket(AF_PACKET, SOCK_RAW, 0); /* a raw sniffer socket */
    return CHILD_CALL_RETURNED;
}

static int call_execve(void)
{
    char *argv[] = {(char *)"/bin/true", NULL};
    char *envp[] = {NULL};
    execve("/bin/true", argv, envp);
    return errno == EPERM ? CHILD_OK : CHILD_CALL_RETURNED; /* sanitizer builds: EPERM */
}

static int call_fork(void)
{
    pid_t p = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0); /* fork() without glibc's atfork */
    if (p == 0)
        _exit(0);
    return p < 0 && errno == EPERM ? CHILD_OK : CHILD_CALL_RETURNED; /* sanitizer builds: EPERM */
}

static int call_setuid(void)
{
    syscall(SYS_setuid, 0);
    return CHILD_CALL_RETURNED;
}

static int call_ptrace(void)
{
    ptrace(PTRACE_TRACEME, 0, NULL, NULL);
    return CHILD_CALL_RETURNED;
}

static int call_kill_other(void)
{
    syscall(SYS_tgkill, g_parent, g_parent, 0); /* signal 0 to the parent: a probe only */
    return CHILD_CALL_RETURNED;
}

static int call_unshare(void)
{
    unshare(CLONE_NEWUSER);
    return CHILD_CALL_RETURNED;
}

static int call_chmod(void)
{
    chmod(g_tmpdir, 0777);
    return CHILD_CALL_RETURNED;
}

static int call_ioctl_tiocsti(void)
{
    char c = 'x';
    ioctl(0, TIOCSTI, &c); /* typing into the terminal */
    return CHILD_CALL_RETURNED;
}

#ifdef __X32_SYSCALL_BIT
static int call_x32(void)
{
    /* the x32 ABI's numbers (bit 30 set) are refused as a foreign architecture */
    syscall(__X32_SYSCALL_BIT + SYS_getpid);
    return CHILD_CALL_RETURNED;
}
#endif

static int call_mount(void)
{
    syscall(SYS_mount, "none", g_tmpdir, "tmpfs", 0, NULL);
    return CHILD_CALL_RETURNED;
}

/* ---- calls that get an error instead of the kill ---- */

static int call_exec_mapping(void)
{
    void *p =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED || errno != EPERM)
        return CHILD_WRONG;
    p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return CHILD_WRONG;
    if (mprotect(p, 4096, PROT_READ | PROT_EXEC) == 0 || errno != EPERM)
        return CHILD_WRONG;
    return mprotect(p, 4096, PROT_READ) == 0 ? CHILD_OK : CHILD_WRONG;
}

static int call_clone3(void)
{
    long r = syscall(SYS_clone3, NULL, 0);
    return r == -1 && errno == ENOSYS ? CHILD_OK : CHILD_WRONG;
}

static int call_setpriority(void)
{
    /* the worker pool lowers its own threads' priority: allowed; raising or
     * touching other users or groups is refused */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), 10) != 0)
        return 10;
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), -5) != -1 || errno != EPERM)
        return 11;
    if (setpriority(PRIO_USER, 0, 10) != -1 || errno != EPERM)
        return 12;
    return CHILD_OK;
}

static int call_fchown(void)
{
    int r = fchown(1, 0, 0);
    return r == -1 && errno == EPERM ? CHILD_OK : CHILD_WRONG;
}

/* ---- what the server needs keeps working ---- */

static int call_allowed(void)
{
    /* threads (the event loops start after the filter) */
    pthread_t t;
    int v = 0;
    if (pthread_create(&t, NULL, thread_fn, &v) != 0 || pthread_join(t, NULL) != 0 || v != 42)
        return 10;
    /* memory */
    void *big = malloc(8 << 20);
    if (!big)
        return 11;
    memset(big, 1, 8 << 20);
    free(big);
    /* sockets: a client to the listener bound before the filter (as the
     * server's are), accept4, send/recv */
    int l = g_listener;
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    if (getsockname(l, (struct sockaddr *)&a, &al) != 0)
        return 12;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0)
        return 13;
    int s = -1;
    for (int i = 0; i < 1000 && s < 0; i++)
        s = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int one = 1;
    char buf[8];
    if (s < 0 || setsockopt(s, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one) != 0 ||
        send(c, "ping", 4, MSG_NOSIGNAL) != 4)
        return 14;
    ssize_t n = -1;
    for (int i = 0; i < 100000 && n < 0; i++)
        n = recv(s, buf, sizeof buf, 0);
    if (n != 4 || memcmp(buf, "ping", 4) != 0)
        return 15;
    int avail = -1;
    if (ioctl(s, FIONREAD, &avail) != 0 || avail != 0)
        return 16;
    close(s);
    close(c);
    close(l);
    int u = socket(AF_UNIX, SOCK_STREAM, 0);
    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    if (u < 0 || v6 < 0)
        return 17;
    close(u);
    close(v6);
    /* SQLite: a new database in WAL mode, written and read back */
    char path[128];
    snprintf(path, sizeof path, "%s/sandboxed.db", g_tmpdir);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return 18;
    int rc = sqlite3_exec(db,
                          "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                          "CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3);"
                          "CREATE TEMP TABLE tt AS SELECT * FROM t ORDER BY x DESC;",
                          NULL, NULL, NULL);
    sqlite3_stmt *st = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "SELECT sum(x) FROM t", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 6 ? SQLITE_OK : 1;
    sqlite3_finalize(st);
    if (sqlite3_close(db) != SQLITE_OK || rc != SQLITE_OK)
        return 19;
    if (unlink(path) != 0)
        return 20;
    /* time, randomness, sleeping */
    struct timespec ts = {0, 1000};
    unsigned char r[8];
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0 || nanosleep(&(struct timespec){0, 1000}, NULL) ||
        getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return 21;
    return CHILD_OK;
}

static int call_sigwait(void)
{
    /* the main thread's shutdown path: block, raise, sigwait */
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    raise(SIGTERM);
    int sig = 0;
    return sigwait(&s, &sig) == 0 && sig == SIGTERM ? CHILD_OK : CHILD_WRONG;
}

/* ---- TSYNC: threads that exist before the filter are covered too ---- */

static int g_go[2];

static void *late_caller(void *arg)
{
    (void)arg;
    char c;
    if (read(g_go[0], &c, 1) == 1)
        socket(AF_PACKET, SOCK_RAW, 0);
    return NULL;
}

static void test_tsync(void)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        pthread_t t;
        if (pipe(g_go) != 0 || pthread_create(&t, NULL, late_caller, NULL) != 0)
            _exit(CHILD_WRONG);
        if (sandbox_install_filter(SANDBOX_ENFORCE) != 0)
            _exit(CHILD_FILTER_FAILED);
        if (write(g_go[1], "x", 1) != 1)
            _exit(CHILD_WRONG);
        pthread_join(t, NULL);
        _exit(CHILD_CALL_RETURNED);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    ok(killed_by_sigsys(st), "a thread started before the filter is filtered too (TSYNC): %s",
       describe(st));
}

static int call_sysinfo(void)
{
    struct sysinfo si;
    return sysinfo(&si) == 0 ? CHILD_OK : CHILD_WRONG;
}

static int call_proc_metrics(void)
{
    /* /metrics' process_* families: /proc/self files and the /proc/self/fd listing */
    struct buf b;
    buf_init(&b, 0);
    procmetrics_init();
    procmetrics_render(&b);
    buf_append_char(&b, 0);
    bool all = !b.failed && strstr(b.data, "\nprocess_open_fds ") &&
               strstr(b.data, "\nprocess_max_fds ") &&
               strstr(b.data, "\nprocess_resident_memory_bytes ") &&
               strstr(b.data, "\nprocess_start_time_seconds ");
    buf_free(&b);
    return all ? CHILD_OK : CHILD_WRONG;
}

static int call_getppid(void)
{
    /* log mode: a call outside the list is allowed (and logged by the kernel) */
    return syscall(SYS_getppid) > 0 ? CHILD_OK : CHILD_WRONG;
}

static char *volatile g_sink;

static int call_heap_overflow(void)
{
    /* a sanitizer report must still be printed (and symbolized) under the filter */
    volatile size_t n = 17;
    g_sink = malloc(16);
    memset(g_sink, 'x', n);
    free(g_sink);
    return CHILD_CALL_RETURNED;
}

/* Sanitizer builds: run call_heap_overflow with stderr captured into out. */
static int run_child_report(char *out, size_t cap)
{
    char path[128];
    snprintf(path, sizeof path, "%s/report.txt", g_tmpdir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    int saved = dup(2);
    dup2(fd, 2);
    int st = run_child(call_heap_overflow, SANDBOX_ENFORCE);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, out, cap - 1, 0);
    out[n > 0 ? n : 0] = 0;
    close(fd);
    unlink(path);
    return st;
}

static void test_allowlist_table(void)
{
    size_t n = sandbox_allowlist_size();
    ok(n > 40 && n < 120, "allowlist has %zu entries", n);
    bool has_epoll = false, has_exec = false, has_ptrace = false;
    for (size_t i = 0; i < n; i++) {
        const char *name = sandbox_allowlist_name(i);
        ok(name && *name, "entry %zu has a name", i);
        if (!name)
            continue;
        has_epoll |= strcmp(name, "epoll_wait") == 0;
        has_exec |= strcmp(name, "execve") == 0;
        has_ptrace |= strcmp(name, "ptrace") == 0;
    }
    ok(sandbox_allowlist_name(n) == NULL, "no entry past the end");
    ok(has_epoll, "epoll_wait is allowed");
    ok(!has_exec, "execve is not on the list");
    ok(has_ptrace == sandbox_sanitizer_build(), "ptrace only in sanitizer builds (LeakSanitizer)");
}

/* The filter as built for this architecture: one arch section (the build's own), a rule
 * for every listed call the architecture has and none for those it lacks. */
static void test_filter_export(void)
{
    static char pfc[1 << 16];
    char path[128];
    snprintf(path, sizeof path, "%s/filter.pfc", g_tmpdir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = fd >= 0 ? sandbox_export_filter(SANDBOX_ENFORCE, fd) : -errno;
    ok(rc == 0, "the filter builds (not loaded) and exports: %s", strerror(-rc));
    ssize_t n = fd >= 0 ? pread(fd, pfc, sizeof pfc - 1, 0) : -1;
    pfc[n > 0 ? n : 0] = 0;
    if (fd >= 0)
        close(fd);
    unlink(path);
    ok(n > 0 && (size_t)n < sizeof pfc - 1, "exported %zd bytes", n);

    uint32_t native = seccomp_arch_native();
#if defined(__x86_64__)
    ok(native == SCMP_ARCH_X86_64, "native architecture is x86-64: %u", native);
#elif defined(__aarch64__)
    ok(native == SCMP_ARCH_AARCH64, "native architecture is aarch64: %u", native);
#endif
    char want[64];
    snprintf(want, sizeof want, "# filter for arch ");
    const char *a = strstr(pfc, want);
    unsigned got = 0;
    ok(a && sscanf(strchr(a, '(') ? strchr(a, '(') : a, "(%u)", &got) == 1 && got == native &&
           !strstr(a + 1, want),
       "one architecture in the filter, the native one (%u): %u", native, got);

    size_t absent = 0;
    char absent_names[256] = "";
    for (size_t i = 0; i < sandbox_allowlist_size(); i++) {
        const char *name = sandbox_allowlist_name(i);
        char needle[96];
        int nr = seccomp_syscall_resolve_name(name);
        snprintf(needle, sizeof needle, "# filter for syscall \"%s\" (%d)", name, nr);
        if (nr >= 0) {
            ok(strstr(pfc, needle) != NULL, "%s (%d) is in the filter", name, nr);
        } else {
            snprintf(needle, sizeof needle, "\"%s\"", name);
            ok(strstr(pfc, needle) == NULL, "%s (not on this architecture) is not", name);
            absent++;
            size_t l = strlen(absent_names);
            snprintf(absent_names + l, sizeof absent_names - l, " %s", name);
        }
    }
    printf("# %zu listed calls this architecture does not have:%s\n", absent, absent_names);
    ok(strstr(pfc, "$syscall == 42949") == NULL, "no pseudo-syscall number in the filter");
    /* the calls glibc makes instead of the old ones must be there on every architecture */
    static const char *const needed[] = {"openat",   "newfstatat", "ppoll", "epoll_pwait",
                                         "unlinkat", "faccessat",  "clone", "futex"};
    for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++) {
        char needle[96];
        snprintf(needle, sizeof needle, "# filter for syscall \"%s\"", needed[i]);
        ok(seccomp_syscall_resolve_name(needed[i]) >= 0 && strstr(pfc, needle),
           "%s is on this architecture and in the filter", needed[i]);
    }

    const char *copy = getenv("BRISK_TEST_SANDBOX_PFC");
    if (copy && *copy) {
        FILE *f = fopen(copy, "w");
        ok(f && fputs(pfc, f) >= 0, "filter written to %s", copy);
        if (f)
            fclose(f);
    }
}

int main(void)
{
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/brisk-sandbox-XXXXXX");
    if (!mkdtemp(g_tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    bool san = sandbox_sanitizer_build();
    g_parent = getpid();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    g_listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (g_listener < 0 || bind(g_listener, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(g_listener, 4) != 0) {
        perror("listener");
        return 1;
    }
    test_allowlist_table();

    const char *emulated = getenv("BRISK_TEST_EMULATED");
    if (emulated && *emulated) {
        /* libseccomp asks the kernel what it supports; under emulation the answer is
         * "no seccomp(2)", so tell it the real target's level to build the filter */
        ok(seccomp_api_set(3) == 0, "libseccomp API level 3 for the build");
        test_filter_export();
        printf("# skipped under %s: the kernel-enforced cases (no filter can be loaded)\n",
               emulated);
        close(g_listener);
        rmdir(g_tmpdir);
        return test_done();
    }
    test_filter_export();

    static const struct {
        const char *what;
        int (*fn)(void);
        bool san_allowed; /* allowed (or EPERM) in sanitizer builds */
    } forbidden[] = {
        {"socket(AF_PACKET)", call_packet_socket, false},
        {"execve", call_execve, true},
        {"fork (clone without CLONE_THREAD)", call_fork, true},
        {"setuid", call_setuid, false},
        {"ptrace", call_ptrace, true},
        {"tgkill to another process", call_kill_other, false},
        {"unshare", call_unshare, false},
        {"chmod", call_chmod, false},
        {"ioctl(TIOCSTI)", call_ioctl_tiocsti, false},
#ifdef __X32_SYSCALL_BIT /* x86-64 only */
        {"x32 system call", call_x32, false},
#endif
        {"mount", call_mount, false},
    };
    for (size_t i = 0; i < sizeof forbidden / sizeof forbidden[0]; i++) {
        int st = run_child(forbidden[i].fn, SANDBOX_ENFORCE);
        if (san && forbidden[i].san_allowed)
            ok(!WIFSIGNALED(st) || killed_by_sigsys(st),
               "%s under the sanitizer build's filter: %s", forbidden[i].what, describe(st));
        else
            ok(killed_by_sigsys(st), "%s kills the process with SIGSYS: %s", forbidden[i].what,
               describe(st));
    }
    /* execve and fork are refused with EPERM in sanitizer builds, killed otherwise */
    if (san) {
        static char report[16384];
        int rst = run_child_report(report, sizeof report);
        ok(!killed_by_sigsys(rst) && strstr(report, "heap-buffer-overflow") &&
               strstr(report, "test_sandbox.c"),
           "sanitizer build: a report is printed and symbolized under the filter: %s, %.300s",
           describe(rst), report);
        int st = run_child(call_execve, SANDBOX_ENFORCE);
        ok(exited_ok(st), "sanitizer build: execve gets EPERM: %s", describe(st));
        st = run_child(call_fork, SANDBOX_ENFORCE);
        ok(exited_ok(st), "sanitizer build: fork gets EPERM: %s", describe(st));
    }

    static const struct {
        const char *what;
        int (*fn)(void);
    } refused[] = {
        {"PROT_EXEC mappings get EPERM", call_exec_mapping},
        {"clone3 gets ENOSYS (glibc falls back to clone)", call_clone3},
        {"fchown gets EPERM", call_fchown},
        {"setpriority: lowering a thread's own priority only", call_setpriority},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        int st = run_child(refused[i].fn, SANDBOX_ENFORCE);
        ok(exited_ok(st), "%s: %s", refused[i].what, describe(st));
    }

    int st = run_child(call_allowed, SANDBOX_ENFORCE);
    ok(exited_ok(st), "threads, memory, sockets, SQLite in WAL mode, time work: %s", describe(st));
    st = run_child(call_sigwait, SANDBOX_ENFORCE);
    ok(exited_ok(st), "sigwait works: %s", describe(st));
    st = run_child(call_sysinfo, SANDBOX_ENFORCE);
    ok(exited_ok(st), "sysinfo (OpenSSL) works: %s", describe(st));
    st = run_child(call_proc_metrics, SANDBOX_ENFORCE);
    ok(exited_ok(st), "process metrics (/proc/self, getdents64) work: %s", describe(st));
    test_tsync();
    if (!san) {
        st = run_child(call_getppid, SANDBOX_LOG);
        ok(exited_ok(st), "log mode lets an unlisted call through: %s", describe(st));
    }
    st = run_child(call_packet_socket, SANDBOX_OFF);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == CHILD_CALL_RETURNED, "mode off installs nothing: %s",
       describe(st));

    close(g_listener);
    rmdir(g_tmpdir);
    return test_done();
}
