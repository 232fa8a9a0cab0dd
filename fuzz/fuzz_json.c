/*
 * fuzz_json.c - libFuzzer harness for the JSON reader and writer.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -Isrc fuzz/fuzz_json.c src/json/json.c \
 *        src/base/arena.c src/base/buf.c src/base/log.c src/base/str.c -o fuzz_json
 * Run:   ./fuzz_json -dict=fuzz/json.dict fuzz/corpus/json
 *
 * Besides "no crash, no over-read", it checks invariants (aborting on a
 * violation):
 *  - accepted input is valid UTF-8, and every decoded string and key is too;
 *  - objects have no duplicate keys, nesting is at most JSON_MAX_DEPTH;
 *  - is_int/i agree with the literal;
 *  - round trip: json_write_value's output parses back to the same value, and
 *    writing that again gives the same bytes;
 *  - on rejection the error has a message and an offset within the input;
 *  - json_utf8_valid agrees with a naive reference decoder;
 *  - json_write_str of any valid UTF-8 input parses back to the same bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/arena.h"
#include "base/buf.h"
#include "json/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Reference UTF-8 check: decode each sequence and reject what Unicode forbids. */
static int utf8_ref(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t c = s[i], cp, min;
        size_t k;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < k)
            return 0;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k;
    }
    return 1;
}

static int same(const struct json_value *a, const struct json_value *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case JSON_NUMBER:
        return str_eq(a->u.num.raw, b->u.num.raw) && a->u.num.is_int == b->u.num.is_int &&
               (!a->u.num.is_int || a->u.num.i == b->u.num.i);
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

static void check_number(const struct json_value *v)
{
    struct str r = v->u.num.raw;
    CHECK(r.len > 0);
    if (!v->u.num.is_int)
        return;
    /* an int literal is -?digits; recompute its value */
    size_t i = r.ptr[0] == '-';
    int neg = (int)i;
    CHECK(r.len > i && r.len - i <= 19);
    uint64_t mag = 0;
    for (; i < r.len; i++) {
        CHECK(r.ptr[i] >= '0' && r.ptr[i] <= '9');
        mag = mag * 10 + (uint64_t)(r.ptr[i] - '0');
    }
    if (neg)
        CHECK((uint64_t)0 - (uint64_t)v->u.num.i == mag);
    else
        CHECK((uint64_t)v->u.num.i == mag && v->u.num.i >= 0);
}

static void check_tree(const struct json_value *v, int depth)
{
    switch (v->type) {
    case JSON_NUMBER:
        check_number(v);
        break;
    case JSON_STRING:
        CHECK(v->u.str.ptr != NULL);
        CHECK(json_utf8_valid(v->u.str.ptr, v->u.str.len));
        break;
    case JSON_ARRAY:
        CHECK(depth + 1 <= JSON_MAX_DEPTH);
        CHECK((v->u.arr.n == 0) == (v->u.arr.items == NULL));
        for (size_t i = 0; i < v->u.arr.n; i++)
            check_tree(&v->u.arr.items[i], depth + 1);
        break;
    case JSON_OBJECT:
        CHECK(depth + 1 <= JSON_MAX_DEPTH);
        CHECK((v->u.obj.n == 0) == (v->u.obj.members == NULL));
        for (size_t i = 0; i < v->u.obj.n; i++) {
            const struct json_member *m = &v->u.obj.members[i];
            CHECK(json_utf8_valid(m->key.ptr, m->key.len));
            if (m->key.len < 64 && !memchr(m->key.ptr, '\0', m->key.len)) {
                char k[64];
                memcpy(k, m->key.ptr, m->key.len);
                k[m->key.len] = '\0';
                CHECK(json_get(v, k) == &m->value);
            }
            /* no duplicates (pairwise: fuzz inputs are small) */
            for (size_t j = 0; j < i && v->u.obj.n <= 512; j++)
                CHECK(!str_eq(v->u.obj.members[j].key, m->key));
            check_tree(&m->value, depth + 1);
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct arena a;
    static int init;
    if (!init) {
        arena_init(&a, (size_t)64 << 20);
        init = 1;
    }
    arena_reset(&a, (size_t)64 << 10);

    const char *in = (const char *)data;
    int utf8 = utf8_ref(data, size);
    CHECK(json_utf8_valid(in, size) == (utf8 != 0));

    const struct json_value *v = NULL;
    struct json_error err;
    memset(&err, 0, sizeof err);
    if (json_parse(in, size, &a, &v, &err) != 0) {
        CHECK(err.offset <= size);
        CHECK(err.msg[0] != '\0' && memchr(err.msg, '\0', sizeof err.msg) != NULL);
        CHECK(!err.too_large);
    } else {
        CHECK(v != NULL);
        CHECK(utf8);
        check_tree(v, 0);

        struct buf w1, w2;
        buf_init(&w1, 0);
        buf_init(&w2, 0);
        json_write_value(&w1, v);
        CHECK(!w1.failed);
        CHECK(w1.len <= size);
        const struct json_value *v2 = NULL;
        struct json_error err2;
        int rc = json_parse(w1.data, w1.len, &a, &v2, &err2);
        if (rc != 0)
            fprintf(stderr, "writer output rejected: %s\n%.*s\n", err2.msg, (int)w1.len, w1.data);
        CHECK(rc == 0);
        CHECK(same(v, v2));
        json_write_value(&w2, v2);
        CHECK(w1.len == w2.len && memcmp(w1.data, w2.data, w1.len) == 0);
        buf_free(&w1);
        buf_free(&w2);
    }

    if (utf8) {
        struct buf w;
        buf_init(&w, 0);
        json_write_str(&w, in, size);
        const struct json_value *s = NULL;
        CHECK(json_parse(w.data, w.len, &a, &s, &err) == 0);
        CHECK(s->type == JSON_STRING && s->u.str.len == size &&
              (size == 0 || memcmp(s->u.str.ptr, in, size) == 0));
        buf_free(&w);
    }
    return 0;
}
