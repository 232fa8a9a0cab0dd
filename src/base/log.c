/*
 * log.c - leveled logging to stderr (see log.h).
 */
#include "base/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"

/* A message line longer than this is cut, visibly (TRUNCATED_MARK). */
#define LOG_MSG_MAX 2048
/* Room for the structured fields of one JSON line, escaped. */
#define LOG_FIELDS_MAX 4096

static enum log_level g_level = LOG_INFO;
static bool g_json = false;

static _Thread_local struct buf t_access; /* batched access lines of this thread */
static _Thread_local const char *t_role;  /* log_set_thread: "loop", "worker" or NULL */
static _Thread_local int t_index;

void log_set_thread(const char *role, int index)
{
    t_role = role;
    t_index = index;
}

void log_configure(enum log_level level, bool json)
{
    g_level = level;
    g_json = json;
}

bool log_level_parse(const char *s, enum log_level *out)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return true;
        }
    }
    return false;
}

bool log_enabled(enum log_level level)
{
    return level >= g_level;
}

static const char *level_name(enum log_level l)
{
    switch (l) {
    case LOG_DEBUG:
        return "debug";
    case LOG_INFO:
        return "info";
    case LOG_WARN:
        return "warn";
    default:
        return "error";
    }
}

/* Current UTC time as 2026-11-27T06:05:53.123Z into dst (>= 32 bytes). */
static void fmt_now(char *dst, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(dst, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
             tm.tm_sec % 100, (int)(ts.tv_nsec / 1000000) % 1000);
}

/* Append s as JSON string content (without quotes), escaping what JSON requires. */
static void append_json_escaped(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf_append_char(b, '\\');
            buf_append_char(b, (char)c);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_append(b, e, 6);
        } else {
            buf_append_char(b, (char)c);
        }
    }
}

/* Append untrusted text for a text-format log line: control bytes become '?'. */
static void append_text_safe(struct buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        buf_append_char(b, (c < 0x20 || c == 0x7f || c == ' ') ? '?' : (char)c);
    }
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing stderr */
        }
        p += w;
        n -= (size_t)w;
    }
}

/*
 * Write one already formatted message line. It is formatted into a stack
 * buffer (the message is at most LOG_MSG_MAX bytes, 6x when JSON-escaped),
 * never into the heap: an out-of-memory line must still come out.
 */
static void emit(enum log_level level, const char *msg, size_t mlen, const struct log_field *f,
                 size_t nf)
{
    char ts[40];
    char line[LOG_MSG_MAX * 6 + LOG_FIELDS_MAX + 128];
    struct buf b;
    fmt_now(ts, sizeof ts);
    buf_init_fixed(&b, line, sizeof line);
    if (g_json) {
        buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts, level_name(level));
        append_json_escaped(&b, msg, mlen);
        buf_append_char(&b, '"');
        if (t_role)
            buf_printf(&b, ",\"%s\":%d", t_role, t_index);
        /* fields share a bounded room: one too long is cut, the line still comes out */
        size_t room = b.len + LOG_FIELDS_MAX;
        for (size_t i = 0; i < nf && b.len < room; i++) {
            if (f[i].is_num) {
                buf_printf(&b, ",\"%s\":%lld", f[i].key, f[i].num);
            } else if (f[i].str) {
                size_t n = strnlen(f[i].str, LOG_MSG_MAX);
                size_t left = (room - b.len) / 6;
                buf_printf(&b, ",\"%s\":\"", f[i].key);
                append_json_escaped(&b, f[i].str, n < left ? n : left);
                buf_append_char(&b, '"');
            }
        }
        buf_append_cstr(&b, "}\n");
    } else {
        buf_printf(&b, "%s %s ", ts, level_name(level));
        buf_append(&b, msg, mlen);
        buf_append_char(&b, '\n');
    }
    if (!b.failed)
        write_all(2, b.data, b.len);
}

/*
 * Length of a vsnprintf result in msg[cap]. A message cut at cap ends in
 * TRUNCATED_MARK instead of stopping silently mid-word.
 */
#define TRUNCATED_MARK "...[truncated]"
static size_t clamp_len(char *msg, int n, size_t cap)
{
    if (n < 0)
        return 0;
    if ((size_t)n < cap)
        return (size_t)n;
    memcpy(msg + cap - sizeof TRUNCATED_MARK, TRUNCATED_MARK, sizeof TRUNCATED_MARK);
    return cap - 1;
}

void log_vfields(enum log_level level, const struct log_field *f, size_t n, const char *fmt,
                 va_list ap)
{
    if (level < g_level)
        return;
    char msg[LOG_MSG_MAX];
    int len = vsnprintf(msg, sizeof msg, fmt, ap);
    emit(level, msg, clamp_len(msg, len, sizeof msg), f, n);
}

void log_fields(enum log_level level, const struct log_field *f, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vfields(level, f, n, fmt, ap);
    va_end(ap);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vfields(level, NULL, 0, fmt, ap);
    va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
    char msg[LOG_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(LOG_ERROR, msg, clamp_len(msg, n, sizeof msg), NULL, 0);
    abort();
}

void log_access(const struct access_entry *e)
{
    /* a 5xx is what an operator searches for (a 503: the database is down) */
    bool warn = e->status >= 500;
    if ((warn ? LOG_WARN : LOG_INFO) < g_level)
        return;
    struct buf *b = &t_access;
    if (b->max == 0)
        buf_init(b, 0);
    char ts[40];
    fmt_now(ts, sizeof ts);
    if (g_json) {
        buf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"access\",\"method\":\"", ts,
                   warn ? "warn" : "info");
        append_json_escaped(b, e->method.ptr, e->method.len);
        buf_append_cstr(b, "\",\"route\":\"");
        append_json_escaped(b, e->route.ptr, e->route.len);
        buf_append_cstr(b, "\",\"path\":\"");
        append_json_escaped(b, e->path.ptr, e->path.len);
        buf_printf(b, "\",\"status\":%d,\"duration_ms\":%.3f,\"bytes\":%llu,\"request_id\":\"",
                   e->status, e->duration_ms, (unsigned long long)e->bytes);
        append_json_escaped(b, e->request_id.ptr, e->request_id.len);
        buf_append_cstr(b, "\",\"client\":\"");
        append_json_escaped(b, e->client.ptr, e->client.len);
        buf_append_cstr(b, "\",\"proto\":\"");
        append_json_escaped(b, e->proto.ptr, e->proto.len);
        buf_printf(b, "\",\"bytes_in\":%llu", (unsigned long long)e->bytes_in);
        if (t_role)
            buf_printf(b, ",\"%s\":%d", t_role, t_index);
        buf_append_cstr(b, "}\n");
    } else {
        buf_printf(b, "%s %s access ", ts, warn ? "warn" : "info");
        append_text_safe(b, e->method.ptr, e->method.len);
        buf_append_char(b, ' ');
        append_text_safe(b, e->path.ptr, e->path.len);
        buf_append_cstr(b, " route=");
        append_text_safe(b, e->route.ptr, e->route.len);
        buf_printf(b, " status=%d duration_ms=%.3f bytes=%llu request_id=", e->status,
                   e->duration_ms, (unsigned long long)e->bytes);
        append_text_safe(b, e->request_id.ptr, e->request_id.len);
        buf_append_cstr(b, " client=");
        append_text_safe(b, e->client.ptr, e->client.len);
        buf_append_cstr(b, " proto=");
        append_text_safe(b, e->proto.ptr, e->proto.len);
        buf_printf(b, " bytes_in=%llu\n", (unsigned long long)e->bytes_in);
    }
    if (b->len > (size_t)64 * 1024)
        log_flush();
}

void log_flush(void)
{
    struct buf *b = &t_access;
    if (b->len && !b->failed)
        write_all(2, b->data, b->len);
    buf_reset(b);
}

void log_thread_done(void)
{
    log_flush();
    buf_free(&t_access);
}
