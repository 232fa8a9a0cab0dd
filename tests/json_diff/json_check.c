/*
 * json_check.c - driver for the JSON differential test (gen_and_compare.py).
 *
 * Reads documents from stdin, each as a decimal length, a newline and that many
 * bytes, and prints one line per document:
 *   OK <TAB> compact re-serialization (json_write_value) <TAB> numbers
 *   ERR <TAB> error message
 *   BAD <TAB> what broke (an invariant of brisk's own, e.g. the writer's output
 *             does not parse back to the same value)
 * "numbers" lists every number of the document in document order, separated by
 * spaces: the int64 value when is_int is set, "x" otherwise. The writer never
 * emits a raw tab or newline (controls are escaped), so lines are unambiguous.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "base/buf.h"
#include "json/json.h"

static void numbers(struct buf *b, const struct json_value *v, int *first)
{
    switch (v->type) {
    case JSON_NUMBER:
        if (!*first)
            buf_append_char(b, ' ');
        *first = 0;
        if (v->u.num.is_int)
            buf_append_i64(b, v->u.num.i);
        else
            buf_append_char(b, 'x');
        break;
    case JSON_ARRAY:
        for (size_t i = 0; i < v->u.arr.n; i++)
            numbers(b, &v->u.arr.items[i], first);
        break;
    case JSON_OBJECT:
        for (size_t i = 0; i < v->u.obj.n; i++)
            numbers(b, &v->u.obj.members[i].value, first);
        break;
    default:
        break;
    }
}

static int same(const struct json_value *a, const struct json_value *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case JSON_NUMBER:
        return str_eq(a->u.num.raw, b->u.num.raw) && a->u.num.is_int == b->u.num.is_int &&
               a->u.num.i == b->u.num.i;
    case JSON_STRING:
        return str_eq(a->u.str, b->u.str);
    case JSON_ARRAY:
        if (a->u.arr.n != b->u.arr.n)
            return 0;
        for (size_t i = 0; i < a->u.arr.n; i++)
            if (!same(&a->u.arr.items[i], &b->u.arr.items[i]))
                return 0;
        return 1;
    case JSON_OBJECT:
        if (a->u.obj.n != b->u.obj.n)
            return 0;
        for (size_t i = 0; i < a->u.obj.n; i++)
            if (!str_eq(a->u.obj.members[i].key, b->u.obj.members[i].key) ||
                !same(&a->u.obj.members[i].value, &b->u.obj.members[i].value))
                return 0;
        return 1;
    default:
        return 1;
    }
}

static void check(const char *doc, size_t len, struct arena *a, struct buf *out)
{
    const struct json_value *v = NULL, *v2 = NULL;
    struct json_error err;
    struct buf w;
    buf_init(&w, 0);
    arena_reset(a, (size_t)1 << 20);
    if (json_parse(doc, len, a, &v, &err) != 0) {
        if (err.offset > len || memchr(err.msg, '\n', sizeof err.msg) || !err.msg[0])
            buf_printf(out, "BAD\tbad error fields: offset %zu\n", err.offset);
        else
            buf_printf(out, "ERR\t%s\n", err.msg);
        buf_free(&w);
        return;
    }
    json_write_value(&w, v);
    if (!json_utf8_valid(doc, len)) {
        buf_printf(out, "BAD\taccepted invalid utf-8\n");
    } else if (json_parse(w.data, w.len, a, &v2, &err) != 0) {
        buf_printf(out, "BAD\twriter output does not parse: %s\n", err.msg);
    } else if (!same(v, v2)) {
        buf_printf(out, "BAD\twriter output parses to a different value\n");
    } else {
        buf_append(out, "OK\t", 3);
        buf_append(out, w.data, w.len);
        buf_append_char(out, '\t');
        int first = 1;
        numbers(out, v, &first);
        buf_append_char(out, '\n');
    }
    buf_free(&w);
}

int main(void)
{
    struct arena a;
    struct buf out;
    arena_init(&a, (size_t)256 << 20);
    buf_init(&out, 0);
    char line[32];
    while (fgets(line, sizeof line, stdin)) {
        char *end;
        unsigned long long n = strtoull(line, &end, 10);
        if (end == line || *end != '\n' || n > ((size_t)1 << 30)) {
            fprintf(stderr, "json_check: bad record header\n");
            return 2;
        }
        char *doc = malloc(n ? (size_t)n : 1);
        if (!doc || fread(doc, 1, (size_t)n, stdin) != (size_t)n) {
            fprintf(stderr, "json_check: short record\n");
            return 2;
        }
        check(doc, (size_t)n, &a, &out);
        free(doc);
        if (out.len > (1 << 16)) {
            fwrite(out.data, 1, out.len, stdout);
            buf_reset(&out);
        }
    }
    fwrite(out.data, 1, out.len, stdout);
    buf_free(&out);
    arena_free(&a);
    return 0;
}
