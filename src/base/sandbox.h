/*
 * sandbox.h - least privilege after start-up: drop root to BRISK_USER and
 * install a seccomp syscall allowlist (libseccomp) covering every thread.
 *
 * Start-up order (src/main.c, src/http/server.c):
 *   config_load -> sandbox_prepare (config time: bad values exit 2)
 *   -> migrations, listeners bound, database handles opened
 *   -> sandbox_harden (server_config.harden): chown the SQLite files, drop
 *      privileges, load the filter with TSYNC so threads that already run
 *      (workpool, background workers) are covered too
 *   -> event-loop threads start (they inherit the filter).
 * docs/security.md explains the allowlist group by group.
 */
#ifndef BRISK_SANDBOX_H
#define BRISK_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

/* What a system call outside the allowlist does. */
enum sandbox_mode {
    SANDBOX_OFF,     /* no filter (BRISK_SANDBOX=0: debugging) */
    SANDBOX_ENFORCE, /* the process is killed with SIGSYS (default) */
    SANDBOX_LOG,     /* allowed, but logged by the kernel (dmesg / audit): finds missing entries */
};

struct sandbox_options {
    const char *mode;         /* BRISK_SANDBOX: "1", "0" or "log" */
    const char *user;         /* BRISK_USER: NULL or "" = keep the account brisk was started as */
    const char *database_url; /* its SQLite files are handed to `user` before the drop */
};

/*
 * Validate the options and resolve the account, at configuration time (the
 * account database cannot be read once the filter is on). Returns 0, or -1
 * after writing one line "brisk: BRISK_...: <problem>" into err (cap bytes):
 * an unknown mode or user, or BRISK_USER naming another account while not
 * started as root. The options are copied; call once, before sandbox_harden.
 */
int sandbox_prepare(const struct sandbox_options *opts, char *err, size_t cap);

/*
 * The server_config.harden hook: called once, after the listeners are bound
 * and the database handles opened, before the event loops start. As root with
 * a BRISK_USER: chowns the SQLite database files (and their directory when it
 * holds nothing else) to that account, drops to it (initgroups, setgid,
 * setuid) and checks that root cannot be regained. As root without one: logs
 * a warning. Then installs the syscall filter for every thread unless the
 * mode is SANDBOX_OFF. Returns 0, or -1 after logging (start-up then stops).
 */
int sandbox_harden(void);

/*
 * Build the allowlist and load it into the kernel for every thread of the
 * process (SCMP_FLTATR_CTL_TSYNC, with no_new_privs). Irreversible. Exported
 * so tests can install exactly the filter the server runs under. Returns 0,
 * or a negative errno value (nothing installed). mode SANDBOX_OFF returns 0.
 */
int sandbox_install_filter(enum sandbox_mode mode);

/*
 * Build the same filter, load nothing, and write libseccomp's readable form of
 * it (seccomp_export_pfc: "# filter for arch ...", one "# filter for syscall
 * \"name\" (nr)" per listed call) to fd: what this build's architecture gets,
 * checkable where the filter cannot be loaded (qemu-user). Returns 0, or a
 * negative errno value. mode SANDBOX_OFF writes nothing and returns 0.
 */
int sandbox_export_filter(enum sandbox_mode mode, int fd);

/* Number of system calls the allowlist names (for logs and tests). */
size_t sandbox_allowlist_size(void);

/* Name of allowlist entry i (< sandbox_allowlist_size()), for docs and tests. */
const char *sandbox_allowlist_name(size_t i);

/* True when built with AddressSanitizer (the allowlist then has its extra entries). */
bool sandbox_sanitizer_build(void);

#endif
