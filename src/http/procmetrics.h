/*
 * procmetrics.h - the process_* metrics the Prometheus client libraries
 * export (Go's process collector, Rust's prometheus::process_collector):
 * resident and virtual memory, CPU time, open and maximum descriptors, start
 * time. Read from /proc/self at scrape time only; nothing on the request
 * path.
 */
#ifndef BRISK_PROCMETRICS_H
#define BRISK_PROCMETRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

/* The fields of /proc/self/stat the metrics use (proc(5) numbering). */
struct proc_stat {
    uint64_t utime_ticks; /* 14: user CPU time, clock ticks */
    uint64_t stime_ticks; /* 15: system CPU time, clock ticks */
    uint64_t start_ticks; /* 22: start time, clock ticks after boot */
    uint64_t vsize_bytes; /* 23: virtual memory size */
    uint64_t rss_pages;   /* 24: resident set size */
};

/*
 * Parse the text of /proc/PID/stat (text[0..len), no terminator needed).
 * The command name (field 2) may hold spaces and parentheses: fields are
 * counted after its last ')'. Returns 0, or -1 when the text is cut short or
 * a field used is not a decimal number (out is then unspecified).
 */
int procmetrics_parse_stat(const char *text, size_t len, struct proc_stat *out);

/*
 * The soft "Max open files" limit from the text of /proc/PID/limits.
 * Returns 0, or -1 when the line is missing, malformed or "unlimited".
 */
int procmetrics_parse_max_fds(const char *text, size_t len, uint64_t *out);

/* Note the process start time (once, before the loops start). */
void procmetrics_init(void);

/*
 * Append the process_* families to b. A value that cannot be read (a /proc
 * file missing or malformed) is left out with its HELP and TYPE lines. Any
 * thread; does not block beyond reading /proc/self.
 */
void procmetrics_render(struct buf *b);

#endif
