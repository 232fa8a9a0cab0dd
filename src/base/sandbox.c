/*
 * sandbox.c - privilege drop and seccomp allowlist (see sandbox.h and
 * docs/security.md).
 *
 * The allowlist was found by running the whole test suite (normal and ASan
 * builds) under `strace -f` and with BRISK_SANDBOX=log, then reading what
 * each call is for; libpq's connect/reconnect path was traced against a local
 * PostgreSQL. Anything not listed kills the process (SECCOMP_RET_KILL_PROCESS).
 * A few calls get an error instead of the kill, because a library asks for
 * them and copes with the refusal: clone3 (ENOSYS: glibc then uses clone,
 * whose flags a filter can see), executable mappings (EPERM: no new code at
 * run time), fchown (EPERM) and the isatty() ioctl (ENOTTY).
 */
#define _GNU_SOURCE
#include "base/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <linux/netlink.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/compiler.h"
#include "base/log.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_ASAN 1
#endif
#endif
#ifndef SANDBOX_ASAN
#define SANDBOX_ASAN 0
#endif

/* How a listed system call is filtered. */
enum rule_kind {
    RULE_ALLOW,         /* any arguments */
    RULE_NO_EXEC,       /* mmap/mprotect: allowed unless arg 2 (prot) has PROT_EXEC (then EPERM) */
    RULE_SOCKET_DOMAIN, /* socket: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK/NETLINK_ROUTE (libpq) */
    RULE_CLONE_THREAD,  /* clone: only with CLONE_THREAD (pthread_create); no fork */
    RULE_SELF_SIGNAL,   /* tgkill: only to this process (abort, glibc's setxid broadcast) */
    RULE_ENOSYS,        /* refused with ENOSYS: the caller falls back (clone3 -> clone) */
    RULE_EPERM,         /* refused with EPERM: the caller copes */
    RULE_FIONREAD,      /* ioctl: FIONREAD (the DNS resolver); TCGETS gets ENOTTY */
    RULE_NICE_ONLY,     /* setpriority(PRIO_PROCESS, tid, 0..19): lower only; else EPERM */
};

struct rule {
    const char *name;
    int nr;
    enum rule_kind kind;
};

#define ALLOW(n)                                                                                   \
    {                                                                                              \
#n, SCMP_SYS(n), RULE_ALLOW                                                                \
    }
#define RULE(n, k)                                                                                 \
    {                                                                                              \
#n, SCMP_SYS(n), k                                                                         \
    }

static const struct rule k_rules[] = {
    /* event loops: epoll, the wake-up eventfd (read/write) */
    ALLOW(epoll_wait),
    ALLOW(epoll_pwait),
    ALLOW(epoll_ctl),
    ALLOW(read),
    ALLOW(write),
    ALLOW(readv),
    ALLOW(writev),
    ALLOW(close),
    /* client connections */
    ALLOW(accept4),
    ALLOW(recvfrom),
    ALLOW(sendto),
    ALLOW(setsockopt),
    ALLOW(getsockopt),
    ALLOW(getsockname),
    ALLOW(getpeername),
    ALLOW(fcntl),
    /* PostgreSQL (libpq) connects and reconnects from the loops: TCP or unix
     * sockets; resolving a host name reads /etc/hosts, asks DNS (UDP,
     * sendmmsg, FIONREAD) and, with several addresses, the kernel's address
     * list (a NETLINK_ROUTE socket: bind, sendto, recvmsg) */
    RULE(socket, RULE_SOCKET_DOMAIN),
    ALLOW(connect),
    ALLOW(bind),
    ALLOW(poll),
    ALLOW(ppoll),
    ALLOW(recvmsg),
    ALLOW(sendmmsg),
    RULE(ioctl, RULE_FIONREAD),
    ALLOW(uname),
    ALLOW(sysinfo), /* OpenSSL, for TLS connections */
    ALLOW(getuid),
    ALLOW(geteuid),
    /* SQLite: database, WAL, shared memory, temporary files (also OpenSSL's
     * and libpq's configuration files) */
    ALLOW(openat),
    ALLOW(pread64),
    ALLOW(pwrite64),
    ALLOW(lseek),
    ALLOW(fsync),
    ALLOW(fdatasync),
    ALLOW(ftruncate),
    ALLOW(fstat),
    ALLOW(newfstatat),
    ALLOW(access),
    ALLOW(faccessat), /* access() where there is no access call (aarch64) */
    ALLOW(unlink),
    ALLOW(unlinkat),
    /* /metrics counts its open descriptors (process_open_fds) by listing
     * /proc/self/fd: openat is above, the listing needs getdents64. It names
     * entries of directories the process could open anyway, nothing more */
    ALLOW(getdents64),
    /* as root, SQLite hands files it creates to the database's owner and
     * ignores a failure: refused, brisk never changes owners after start-up */
    RULE(fchown, RULE_EPERM),
    /* time */
    ALLOW(clock_gettime),
    ALLOW(clock_nanosleep),
    ALLOW(nanosleep),
    ALLOW(gettimeofday),
    /* memory */
    RULE(mmap, RULE_NO_EXEC),
    RULE(mprotect, RULE_NO_EXEC),
    ALLOW(munmap),
    ALLOW(mremap),
    ALLOW(madvise),
    ALLOW(brk),
    ALLOW(getrandom),
    /* threads: the event loops are started after the filter */
    ALLOW(futex),
    RULE(clone, RULE_CLONE_THREAD),
    RULE(clone3, RULE_ENOSYS),
    ALLOW(set_robust_list),
    ALLOW(rseq),
    ALLOW(sched_yield),
    ALLOW(getpid),
    ALLOW(gettid),
    /* signals (sigwait on the main thread), abort, exit */
    ALLOW(rt_sigprocmask),
    ALLOW(rt_sigreturn),
    ALLOW(rt_sigtimedwait),
    RULE(tgkill, RULE_SELF_SIGNAL),
    /* worker-pool threads lower their own priority as they start, which can
     * be after the filter (src/net/workpool.c) */
    RULE(setpriority, RULE_NICE_ONLY),
    ALLOW(exit),
    ALLOW(exit_group),
#if SANDBOX_ASAN
    /* AddressSanitizer / LeakSanitizer (sanitizer builds only): alternate
     * signal stacks and handlers, /proc/self/maps and /proc/self/task (open,
     * getdents), symbolized reports, and the leak check at exit, which stops
     * the threads with ptrace from a clone()d tracer (see RULE_CLONE_THREAD) */
    ALLOW(open),
    ALLOW(getdents),
    ALLOW(readlink), /* /proc/self/exe, to symbolize a report */
    ALLOW(sigaltstack),
    ALLOW(rt_sigaction),
    ALLOW(prctl),
    ALLOW(ptrace),
    ALLOW(wait4),
    ALLOW(getppid),
    ALLOW(sched_getaffinity),
#endif
};

size_t sandbox_allowlist_size(void)
{
    return ARRAY_LEN(k_rules);
}

const char *sandbox_allowlist_name(size_t i)
{
    return i < ARRAY_LEN(k_rules) ? k_rules[i].name : NULL;
}

bool sandbox_sanitizer_build(void)
{
    return SANDBOX_ASAN;
}

/* ---- the filter ---- */

static int add_rule(scmp_filter_ctx ctx, const struct rule *r)
{
    int rc;
    /* A call this architecture does not have (open, poll, epoll_wait on aarch64):
     * SCMP_SYS() gave libseccomp's negative pseudo-number. Nothing to allow; its
     * successor (openat, ppoll, epoll_pwait) has its own entry. */
    if (r->nr < 0)
        return 0;
    switch (r->kind) {
    case RULE_ALLOW:
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 0);
    case RULE_NO_EXEC:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1,
                              SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
        if (rc == 0)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), r->nr, 1,
                                  SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC));
        return rc;
    case RULE_SOCKET_DOMAIN: {
        static const int domains[] = {AF_UNIX, AF_INET, AF_INET6};
        rc = 0;
        for (size_t i = 0; rc == 0 && i < ARRAY_LEN(domains); i++)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1,
                                  SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)domains[i], 0));
        /* getaddrinfo's address sorting asks the kernel for local addresses */
        if (rc == 0)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 2,
                                  SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)AF_NETLINK, 0),
                                  SCMP_A2(SCMP_CMP_EQ, (scmp_datum_t)NETLINK_ROUTE, 0));
        return rc;
    }
    case RULE_CLONE_THREAD:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
#if SANDBOX_ASAN
        /* LeakSanitizer's tracer: clone(CLONE_VM|CLONE_UNTRACED|...) without CLONE_THREAD.
         * A fork (the symbolizer) gets EPERM: the report is printed unsymbolized. */
        if (rc == 0)
            rc = seccomp_rule_add(
                ctx, SCMP_ACT_ALLOW, r->nr, 1,
                SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD | CLONE_UNTRACED, CLONE_UNTRACED));
        if (rc == 0)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), r->nr, 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD | CLONE_UNTRACED, 0));
#endif
        return rc;
    case RULE_NICE_ONLY:
        /* a negative nice value is sign-extended: far above 19 when compared unsigned */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 2,
                              SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)PRIO_PROCESS, 0),
                              SCMP_A2(SCMP_CMP_LE, 19, 0));
        if (rc == 0)
            rc =
                seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), r->nr, 1, SCMP_A2(SCMP_CMP_GT, 19, 0));
        if (rc == 0)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), r->nr, 1,
                                  SCMP_A0(SCMP_CMP_NE, (scmp_datum_t)PRIO_PROCESS, 0));
        return rc;
    case RULE_SELF_SIGNAL:
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1,
                                SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid(), 0));
    case RULE_ENOSYS:
        return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), r->nr, 0);
    case RULE_EPERM:
        return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), r->nr, 0);
    case RULE_FIONREAD:
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1,
                              SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)FIONREAD, 0));
        /* isatty() (stdio's first use of a stream, sanitizer reports): "not a terminal" */
        if (rc == 0)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOTTY), r->nr, 1,
                                  SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)TCGETS, 0));
        return rc;
    }
    return -EINVAL;
}

/* The filter for mode (not SANDBOX_OFF), for this build's architecture only
 * (SCMP_ARCH_NATIVE), not loaded: 0 and *out, or a negative errno value. */
static int build_filter(enum sandbox_mode mode, scmp_filter_ctx *out)
{
    uint32_t deflt = mode == SANDBOX_LOG ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
    scmp_filter_ctx ctx = seccomp_init(deflt);
    if (!ctx) /* libseccomp found no seccomp(2) (API level < 3: old kernel, qemu-user) */
        return seccomp_api_get() < 3 ? -ENOSYS : -ENOMEM;
    /* every thread, not just the caller; a foreign architecture's calls are a kill */
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    if (rc == 0)
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (rc == 0)
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
    for (size_t i = 0; rc == 0 && i < ARRAY_LEN(k_rules); i++)
        rc = add_rule(ctx, &k_rules[i]);
#if SANDBOX_ASAN
    /* a symbolizer would be started with fork+exec: refuse politely */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(execve), 0);
#endif
    if (rc != 0) {
        seccomp_release(ctx);
        return rc;
    }
    *out = ctx;
    return 0;
}

int sandbox_install_filter(enum sandbox_mode mode)
{
    if (mode == SANDBOX_OFF)
        return 0;
    scmp_filter_ctx ctx = NULL;
    int rc = build_filter(mode, &ctx);
    if (rc == 0)
        rc = seccomp_load(ctx);
    if (rc > 0) /* TSYNC: the id of a thread that could not be synchronised */
        rc = -ESRCH;
    seccomp_release(ctx);
    return rc;
}

int sandbox_export_filter(enum sandbox_mode mode, int fd)
{
    if (mode == SANDBOX_OFF)
        return 0;
    scmp_filter_ctx ctx = NULL;
    int rc = build_filter(mode, &ctx);
    if (rc == 0)
        rc = seccomp_export_pfc(ctx, fd);
    seccomp_release(ctx);
    return rc;
}

/* ---- options and privilege drop ---- */

static struct {
    bool prepared;
    enum sandbox_mode mode;
    bool switch_user; /* started as root with BRISK_USER naming another account */
    char user[64];
    uid_t uid;
    gid_t gid;
    char db_path[PATH_MAX]; /* SQLite file to hand over, or "" */
} g_sb;

/* The SQLite file a database URL names, or NULL (PostgreSQL, URI names, :memory:). */
static const char *sqlite_path(const char *url)
{
    if (!url)
        return NULL;
    const char *p = url;
    if (strncasecmp(url, "sqlite://", 9) == 0)
        p = url + 9;
    else if (strncasecmp(url, "sqlite:", 7) == 0)
        p = url + 7;
    else if (strstr(url, "://") || strchr(url, '='))
        return NULL; /* postgres://..., a libpq "key=value" string: no local files */
    if (!*p || strncmp(p, "file:", 5) == 0 || strcmp(p, ":memory:") == 0)
        return NULL;
    return p;
}

int sandbox_prepare(const struct sandbox_options *opts, char *err, size_t cap)
{
    memset(&g_sb, 0, sizeof g_sb);
    const char *mode = opts->mode ? opts->mode : "1";
    if (strcmp(mode, "1") == 0) {
        g_sb.mode = SANDBOX_ENFORCE;
    } else if (strcmp(mode, "0") == 0) {
        g_sb.mode = SANDBOX_OFF;
    } else if (strcmp(mode, "log") == 0) {
        g_sb.mode = SANDBOX_LOG;
    } else {
        snprintf(err, cap, "brisk: BRISK_SANDBOX (--sandbox): \"%.32s\" is not 1, 0 or log", mode);
        return -1;
    }

    const char *path = sqlite_path(opts->database_url);
    if (path && strlen(path) < sizeof g_sb.db_path)
        snprintf(g_sb.db_path, sizeof g_sb.db_path, "%s", path);

    if (opts->user && opts->user[0]) {
        if (strlen(opts->user) >= sizeof g_sb.user) {
            snprintf(err, cap, "brisk: BRISK_USER (--user): is too long");
            return -1;
        }
        errno = 0;
        struct passwd *pw = getpwnam(opts->user);
        if (!pw) {
            snprintf(err, cap, "brisk: BRISK_USER (--user): \"%.64s\" is not an account here",
                     opts->user);
            return -1;
        }
        uid_t euid = geteuid();
        if (euid != 0 && pw->pw_uid != euid) {
            snprintf(err, cap,
                     "brisk: BRISK_USER (--user): \"%.64s\" is another account; only root can "
                     "switch (running as uid %u)",
                     opts->user, (unsigned)euid);
            return -1;
        }
        snprintf(g_sb.user, sizeof g_sb.user, "%s", opts->user);
        g_sb.uid = pw->pw_uid;
        g_sb.gid = pw->pw_gid;
        g_sb.switch_user = euid == 0 && pw->pw_uid != 0;
    }
    g_sb.prepared = true;
    return 0;
}

/* Hand one file to the account if it is a regular file this process owns. */
static void chown_if_ours(const char *path, uid_t me)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != me)
        return;
    if (fchownat(AT_FDCWD, path, g_sb.uid, g_sb.gid, AT_SYMLINK_NOFOLLOW) != 0)
        log_warn("sandbox: cannot hand %s to %s: %s", path, g_sb.user, strerror(errno));
}

/* True when directory `dir` holds nothing but the database's own files. */
static bool dir_holds_only_db(const char *dir, const char *base)
{
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool only = true;
    size_t bl = strlen(base);
    struct dirent *e;
    while (only && (e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
            continue;
        only = strncmp(n, base, bl) == 0 &&
               (n[bl] == 0 || strcmp(n + bl, "-wal") == 0 || strcmp(n + bl, "-shm") == 0 ||
                strcmp(n + bl, "-journal") == 0);
    }
    closedir(d);
    return only;
}

/*
 * The SQLite files must stay writable after the drop (the open descriptors
 * are, but SQLite creates and deletes -wal/-shm/-journal next to the
 * database). Only what this process owns is touched, and the directory only
 * when it is brisk's alone (./data), never a shared one like /tmp or /etc.
 */
static void hand_over_database(void)
{
    if (!g_sb.db_path[0])
        return;
    uid_t me = geteuid();
    char f[PATH_MAX + 16];
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < ARRAY_LEN(suffixes); i++) {
        snprintf(f, sizeof f, "%s%s", g_sb.db_path, suffixes[i]);
        chown_if_ours(f, me);
    }

    char dir[PATH_MAX];
    const char *slash = strrchr(g_sb.db_path, '/');
    const char *base = slash ? slash + 1 : g_sb.db_path;
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == g_sb.db_path) {
        snprintf(dir, sizeof dir, "/");
    } else {
        memcpy(dir, g_sb.db_path, (size_t)(slash - g_sb.db_path));
        dir[slash - g_sb.db_path] = 0;
    }
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return;
    if (st.st_uid == g_sb.uid)
        return; /* already theirs */
    if (st.st_uid != me || (st.st_mode & S_ISVTX) || strcmp(dir, "/") == 0 ||
        !dir_holds_only_db(dir, base)) {
        log_warn("sandbox: directory %s is not handed to %s (not brisk's alone): %s must be "
                 "able to create and delete files there, or SQLite cannot clean up its WAL",
                 dir, g_sb.user, g_sb.user);
        return;
    }
    if (fchownat(AT_FDCWD, dir, g_sb.uid, g_sb.gid, AT_SYMLINK_NOFOLLOW) != 0)
        log_warn("sandbox: cannot hand %s to %s: %s", dir, g_sb.user, strerror(errno));
}

/* initgroups + setgid + setuid, then prove root cannot be regained. */
static int drop_privileges(void)
{
    if (initgroups(g_sb.user, g_sb.gid) != 0 || setgid(g_sb.gid) != 0 || setuid(g_sb.uid) != 0) {
        log_error("sandbox: cannot switch to user %s: %s", g_sb.user, strerror(errno));
        return -1;
    }
    uid_t r, e, s;
    gid_t rg, eg, sg;
    if (getresuid(&r, &e, &s) != 0 || getresgid(&rg, &eg, &sg) != 0 || r != g_sb.uid ||
        e != g_sb.uid || s != g_sb.uid || rg != g_sb.gid || eg != g_sb.gid || sg != g_sb.gid) {
        log_error("sandbox: user switch to %s did not take effect", g_sb.user);
        return -1;
    }
    if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0) {
        log_error("sandbox: root can be regained after switching to %s: refusing to serve",
                  g_sb.user);
        return -1;
    }
#if SANDBOX_ASAN
    /* setuid made the process non-dumpable, which stops LeakSanitizer's
     * tracer from attaching to our threads at exit; sanitizer builds only */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
#endif
    log_info("sandbox: running as user %s (uid %u, gid %u)", g_sb.user, (unsigned)g_sb.uid,
             (unsigned)g_sb.gid);
    return 0;
}

int sandbox_harden(void)
{
    if (!g_sb.prepared) {
        log_error("sandbox: sandbox_prepare was not called");
        return -1;
    }
    if (g_sb.switch_user) {
        hand_over_database();
        if (drop_privileges() != 0)
            return -1;
    } else if (geteuid() == 0) {
        log_warn("running as root: set BRISK_USER to an unprivileged account to drop root after "
                 "start-up (see docs/security.md)");
    }
    if (g_sb.mode == SANDBOX_OFF) {
        log_warn("sandbox: syscall filter disabled (BRISK_SANDBOX=0)");
        return 0;
    }
    int rc = sandbox_install_filter(g_sb.mode);
    if (rc != 0) {
        log_error("sandbox: cannot install the syscall filter: %s (BRISK_SANDBOX=0 disables it)",
                  strerror(-rc));
        return -1;
    }
    size_t here = 0; /* the calls this architecture has (aarch64 lacks open, poll, ...) */
    for (size_t i = 0; i < ARRAY_LEN(k_rules); i++)
        here += k_rules[i].nr >= 0;
    log_info("sandbox: syscall filter on (%zu system calls allowed%s)", here,
             g_sb.mode == SANDBOX_LOG ? ", others logged, not refused" : "");
    return 0;
}
