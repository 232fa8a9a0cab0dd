/*
 * log.h - leveled logging to stderr, text or JSON lines.
 *
 * Each thread formats into its own buffer; lines are written with a single
 * write(2) so lines of different threads never interleave. Access-log lines
 * are batched per event-loop iteration (log_flush) to keep syscalls off the
 * per-request path.
 */
#ifndef BRISK_LOG_H
#define BRISK_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/compiler.h"
#include "base/str.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Configure once at start-up, before any thread is started. */
void log_configure(enum log_level level, bool json);

/* Parse "debug|info|warn|error"; returns false on anything else. */
bool log_level_parse(const char *s, enum log_level *out);

/* True when messages of this level are written. */
bool log_enabled(enum log_level level);

/* Write one message line (printf format) at the given level, flushed at once. */
void log_msg(enum log_level level, const char *fmt, ...) PRINTF_FMT(2, 3);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/*
 * Structured fields of an event. In JSON mode each becomes a member of the
 * line ("db":"postgres", "error":"...", "conn":1) next to "msg"; text lines
 * show the message only, which already says the same in words. A field
 * with a NULL str and !is_num is left out.
 */
struct log_field {
    const char *key; /* a JSON-safe name: [a-z_]+ */
    const char *str;
    long long num;
    bool is_num;
};
#define LOG_STR(k, v) ((struct log_field){(k), (v), 0, false})
#define LOG_INT(k, v) ((struct log_field){(k), NULL, (long long)(v), true})

/* log_msg with n fields (see struct log_field). */
void log_fields(enum log_level level, const struct log_field *f, size_t n, const char *fmt, ...)
    PRINTF_FMT(4, 5);

/* log_fields with a va_list, for wrappers that add their own fields. */
void log_vfields(enum log_level level, const struct log_field *f, size_t n, const char *fmt,
                 va_list ap) PRINTF_FMT(4, 0);

/*
 * Name the calling thread in its JSON lines: role "loop" and index 2 add
 * "loop":2 to every event and access line the thread writes. Call once as
 * the thread starts; role must be a static JSON-safe name.
 */
void log_set_thread(const char *role, int index);

/* Log at error level and abort: for broken invariants and out-of-memory. */
NORETURN void log_fatal(const char *fmt, ...) PRINTF_FMT(1, 2);

/* One access-log line, buffered in the calling thread until log_flush(). */
struct access_entry {
    struct str method;
    struct str route; /* route pattern, e.g. /users/{id}; "-" when unmatched */
    struct str path;  /* raw path as received (no query) */
    int status;
    double duration_ms;
    uint64_t bytes; /* response bytes (headers + body) */
    struct str request_id;
    struct str client; /* peer address (or, behind a trusted proxy, from X-Forwarded-For) */
    struct str proto;  /* "HTTP/1.1", "HTTP/1.0" */
    uint64_t bytes_in; /* request bytes (head + body) */
};
/* One access line (info; warn for a 5xx), buffered per thread until log_flush. */
void log_access(const struct access_entry *e);

/* Write this thread's buffered access lines, if any. */
void log_flush(void);

/* Flush and free this thread's buffer; call before a thread that logged access lines exits. */
void log_thread_done(void);

#endif
