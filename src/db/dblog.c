/*
 * dblog.c - db__log, the log line format both backends share (see db_int.h).
 * Its own file: the backends call it and db.c calls the backends.
 */
#include <stdarg.h>
#include <stdio.h>

#include "db/db_int.h"

void db__log(enum log_level level, const char *backend, const char *target, const char *error,
             const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n < 0)
        text[0] = '\0';
    const struct log_field f[] = {LOG_STR("db", backend), LOG_STR("target", target),
                                  LOG_STR("error", error)};
    /* a text cut at 1 KiB is marked as cut: log_fields only marks its own limit */
    log_fields(level, f, ARRAY_LEN(f), "db %s %s: %s%s", backend, target, text,
               n >= (int)sizeof text ? "...[truncated]" : "");
}
