/*
 * test_json.c - unit tests for the JSON reader/writer (src/json/json.c) and the
 * arena (src/base/arena.c).
 *
 * Inputs are parsed from memory that ends right at a PROT_NONE page, so any read
 * past len faults at once (picohttpparser's guard-page trick); every truncated
 * prefix of a set of valid documents is checked that way.
 *
 * The writer's fast paths (json_put_str_body, user_write_json) are compared byte
 * for byte with the plain loops they replaced, kept here as references.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "app/user_json.h"
#include "base/arena.h"
#include "base/buf.h"
#include "base/timefmt.h"
#include "json/json.h"
#include "test.h"

#define GUARD_DATA ((size_t)8 << 20)

static char *g_guard; /* GUARD_DATA readable bytes followed by a PROT_NONE page */
static struct arena g_arena;
static struct json_error g_err;

static void guard_init(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *m =
        mmap(NULL, GUARD_DATA + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + GUARD_DATA, page, PROT_NONE) != 0) {
        perror("mmap");
        exit(2);
    }
    g_guard = m;
}

/* Copy s[0..n) so that it ends at the guard page; valid until the next call. */
static const char *guard_copy(const char *s, size_t n)
{
    if (n > GUARD_DATA) {
        fprintf(stderr, "input too large for the guard region\n");
        exit(2);
    }
    char *dst = g_guard + GUARD_DATA - n;
    memcpy(dst, s, n);
    return dst;
}

/* Parse s[0..n) (through the guard page) in a fresh arena; NULL on error (g_err set). */
static const struct json_value *parse_n(const char *s, size_t n)
{
    const struct json_value *v = NULL;
    arena_reset(&g_arena, 1 << 20);
    memset(&g_err, 0, sizeof g_err);
    const char *in = guard_copy(s, n);
    if (json_parse(in, n, &g_arena, &v, &g_err) != 0)
        return NULL;
    return v;
}

static const struct json_value *parse(const char *s)
{
    return parse_n(s, strlen(s));
}

static bool str_is(struct str s, const char *bytes, size_t n)
{
    return s.len == n && (n == 0 || memcmp(s.ptr, bytes, n) == 0);
}

static bool value_eq(const struct json_value *a, const struct json_value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case JSON_NULL:
    case JSON_TRUE:
    case JSON_FALSE:
        return true;
    case JSON_NUMBER:
        return str_eq(a->u.num.raw, b->u.num.raw) && a->u.num.is_int == b->u.num.is_int &&
               (!a->u.num.is_int || a->u.num.i == b->u.num.i);
    case JSON_STRING:
        return str_eq(a->u.str, b->u.str);
    case JSON_ARRAY:
        if (a->u.arr.n != b->u.arr.n)
            return false;
        for (size_t i = 0; i < a->u.arr.n; i++)
            if (!value_eq(&a->u.arr.items[i], &b->u.arr.items[i]))
                return false;
        return true;
    case JSON_OBJECT:
        if (a->u.obj.n != b->u.obj.n)
            return false;
        for (size_t i = 0; i < a->u.obj.n; i++)
            if (!str_eq(a->u.obj.members[i].key, b->u.obj.members[i].key) ||
                !value_eq(&a->u.obj.members[i].value, &b->u.obj.members[i].value))
                return false;
        return true;
    }
    return false;
}

/* Compact serialization of s (parsed) into out (NUL-terminated); false on parse error. */
static bool reserialize(const char *s, char *out, size_t cap)
{
    const struct json_value *v = parse(s);
    if (!v)
        return false;
    struct buf b;
    buf_init(&b, 0);
    json_write_value(&b, v);
    bool fits = !b.failed && b.len < cap;
    if (fits) {
        memcpy(out, b.data, b.len);
        out[b.len] = '\0';
    }
    buf_free(&b);
    return fits;
}

/* ---- literals and whitespace ------------------------------------------- */

static void test_literals(void)
{
    static const struct {
        const char *in;
        int type; /* -1: must be rejected */
    } cases[] = {
        {"null", JSON_NULL},
        {"true", JSON_TRUE},
        {"false", JSON_FALSE},
        {" \t\r\n null \t\r\n", JSON_NULL},
        {"\n\ntrue", JSON_TRUE},
        {"false\r\n", JSON_FALSE},
        {"nul", -1},
        {"nulll", -1},
        {"NULL", -1},
        {"True", -1},
        {"tru", -1},
        {"truex", -1},
        {"fals", -1},
        {"falsey", -1},
        {"n", -1},
        {"\vnull", -1},
        {"\fnull", -1},
        {"null\f", -1},
        {"\xc2\xa0null", -1},
        {"\xef\xbb\xbfnull", -1}, /* BOM */
        {"null null", -1},
        {"nullnull", -1},
        {"undefined", -1},
        {"None", -1},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const struct json_value *v = parse(cases[i].in);
        if (cases[i].type < 0) {
            ok(v == NULL, "literal case %zu %s rejected", i, cases[i].in);
            ok(g_err.msg[0] != '\0' && !g_err.too_large, "literal case %zu has message", i);
        } else {
            ok(v && (int)v->type == cases[i].type, "literal case %zu %s", i, cases[i].in);
        }
    }
    /* NUL bytes are not whitespace */
    ok(parse_n("null\0", 5) == NULL, "trailing NUL rejected");
    ok(parse_n("\0null", 5) == NULL, "leading NUL rejected");
    ok(parse_n("", 0) == NULL, "empty input rejected");
    ok(strcmp(g_err.msg, "invalid json: empty document") == 0, "empty message: %s", g_err.msg);
    ok(g_err.offset == 0 && !g_err.too_large, "empty offset");
    ok(parse(" \t\r\n ") == NULL, "whitespace only rejected");
    ok(g_err.offset == 5, "whitespace only offset %zu", g_err.offset);
}

/* ---- numbers ------------------------------------------------------------- */

static void test_numbers(void)
{
    static const struct {
        const char *in;
        bool valid, is_int;
        int64_t i;
    } cases[] = {
        {"0", true, true, 0},
        {"-0", true, true, 0},
        {"1", true, true, 1},
        {"-1", true, true, -1},
        {"7", true, true, 7},
        {"10", true, true, 10},
        {"123456789", true, true, 123456789},
        {"-123456789", true, true, -123456789},
        {"9223372036854775807", true, true, INT64_MAX},
        {"-9223372036854775807", true, true, -INT64_MAX},
        {"-9223372036854775808", true, true, INT64_MIN},
        {"9223372036854775806", true, true, INT64_MAX - 1},
        {"9223372036854775808", true, false, 0},
        {"-9223372036854775809", true, false, 0},
        {"9999999999999999999", true, false, 0},
        {"10000000000000000000", true, false, 0},
        {"18446744073709551615", true, false, 0},
        {"18446744073709551616", true, false, 0},
        {"-18446744073709551616", true, false, 0},
        {"123456789012345678901234567890", true, false, 0},
        {"1000000000000000000", true, true, 1000000000000000000LL},
        {"1.0", true, false, 0},
        {"1.5", true, false, 0},
        {"-1.5", true, false, 0},
        {"0.0", true, false, 0},
        {"-0.0", true, false, 0},
        {"0.000001", true, false, 0},
        {"1e5", true, false, 0},
        {"1E5", true, false, 0},
        {"1e+5", true, false, 0},
        {"1E-5", true, false, 0},
        {"0e0", true, false, 0},
        {"-0E-0", true, false, 0},
        {"1.5e300", true, false, 0},
        {"1e400", true, false, 0},
        {"123.456e-789", true, false, 0},
        {"1e0001", true, false, 0},
        {"01", false, false, 0},
        {"00", false, false, 0},
        {"-01", false, false, 0},
        {"000.5", false, false, 0},
        {"+1", false, false, 0},
        {"+0", false, false, 0},
        {".5", false, false, 0},
        {"-.5", false, false, 0},
        {"1.", false, false, 0},
        {"1.e5", false, false, 0},
        {"1e", false, false, 0},
        {"1e+", false, false, 0},
        {"1e-", false, false, 0},
        {"1E+-1", false, false, 0},
        {"1ee1", false, false, 0},
        {"1.5.5", false, false, 0},
        {"-", false, false, 0},
        {"--1", false, false, 0},
        {"- 1", false, false, 0},
        {"0x10", false, false, 0},
        {"0X10", false, false, 0},
        {"1_000", false, false, 0},
        {"1,000", false, false, 0},
        {"Infinity", false, false, 0},
        {"-Infinity", false, false, 0},
        {"NaN", false, false, 0},
        {"-NaN", false, false, 0},
        {"inf", false, false, 0},
        {"\xd9\xa3", false, false, 0},     /* ARABIC-INDIC DIGIT THREE */
        {"\xef\xbc\x91", false, false, 0}, /* FULLWIDTH DIGIT ONE */
        {"1 2", false, false, 0},
        {"1-", false, false, 0},
        {"-e5", false, false, 0},
        {"e5", false, false, 0},
        {"1.5e", false, false, 0},
        {"1.5E+", false, false, 0},
    };
    for (size_t k = 0; k < ARRAY_LEN(cases); k++) {
        const char *in = cases[k].in;
        const struct json_value *v = parse(in);
        if (!cases[k].valid) {
            ok(v == NULL, "number %s rejected", in);
            continue;
        }
        ok(v && v->type == JSON_NUMBER, "number %s parsed (%s)", in, v ? "" : g_err.msg);
        if (!v || v->type != JSON_NUMBER)
            continue;
        ok(str_is(v->u.num.raw, in, strlen(in)), "number %s raw", in);
        ok(v->u.num.is_int == cases[k].is_int, "number %s is_int %d", in, v->u.num.is_int);
        if (cases[k].is_int)
            ok(v->u.num.i == cases[k].i, "number %s value %lld", in, (long long)v->u.num.i);
    }
    /* numbers delimited by container punctuation and whitespace */
    const struct json_value *v = parse("[0,-0,1e5,-9223372036854775808 ,\t2.5\n]");
    ok(v && v->type == JSON_ARRAY && v->u.arr.n == 5, "numbers in array");
    if (v && v->u.arr.n == 5) {
        ok(v->u.arr.items[0].u.num.is_int && v->u.arr.items[0].u.num.i == 0, "item 0");
        ok(str_is(v->u.arr.items[1].u.num.raw, "-0", 2), "item 1 raw");
        ok(!v->u.arr.items[2].u.num.is_int && str_is(v->u.arr.items[2].u.num.raw, "1e5", 3),
           "item 2");
        ok(v->u.arr.items[3].u.num.i == INT64_MIN && v->u.arr.items[3].u.num.is_int, "item 3");
        ok(str_is(v->u.arr.items[4].u.num.raw, "2.5", 3), "item 4 raw");
    }
    v = parse("{\"a\":-12}");
    ok(v && json_get(v, "a") && json_get(v, "a")->u.num.i == -12, "number in object");
    ok(parse("[01]") == NULL, "leading zero in array");
    ok(strstr(g_err.msg, "leading zero") != NULL, "leading zero message: %s", g_err.msg);
    ok(parse("[1.]") == NULL, "1. in array");
    ok(parse("[-]") == NULL, "- in array");
    ok(parse("{\"a\":.5}") == NULL, ".5 in object");
    ok(parse("[1e]") == NULL, "1e in array");
}

/* ---- strings ------------------------------------------------------------- */

static void test_strings(void)
{
    static const struct {
        const char *in;
        const char *out;
        size_t out_len;
    } good[] = {
        {"\"\"", "", 0},
        {"\"abc\"", "abc", 3},
        {"\"\\\"\"", "\"", 1},
        {"\"\\\\\"", "\\", 1},
        {"\"\\/\"", "/", 1},
        {"\"\\b\"", "\b", 1},
        {"\"\\f\"", "\f", 1},
        {"\"\\n\"", "\n", 1},
        {"\"\\r\"", "\r", 1},
        {"\"\\t\"", "\t", 1},
        {"\"/\"", "/", 1},
        {"\"\\u0041\"", "A", 1},
        {"\"\\u0000\"", "\0", 1},
        {"\"a\\u0000b\"", "a\0b", 3},
        {"\"\\u001f\"", "\x1f", 1},
        {"\"\\u007f\"", "\x7f", 1},
        {"\"\\u0080\"", "\xc2\x80", 2},
        {"\"\\u00e9\"", "\xc3\xa9", 2},
        {"\"\\u00E9\"", "\xc3\xa9", 2},
        {"\"\\u07ff\"", "\xdf\xbf", 2},
        {"\"\\u0800\"", "\xe0\xa0\x80", 3},
        {"\"\\u20ac\"", "\xe2\x82\xac", 3},
        {"\"\\uffff\"", "\xef\xbf\xbf", 3},
        {"\"\\ufeff\"", "\xef\xbb\xbf", 3},
        {"\"\\ud7ff\"", "\xed\x9f\xbf", 3},
        {"\"\\ue000\"", "\xee\x80\x80", 3},
        {"\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4},
        {"\"\\uD83D\\uDE00\"", "\xf0\x9f\x98\x80", 4},
        {"\"\\ud800\\udc00\"", "\xf0\x90\x80\x80", 4},
        {"\"\\udbff\\udfff\"", "\xf4\x8f\xbf\xbf", 4},
        {"\"x\\ud83d\\ude00y\"", "x\xf0\x9f\x98\x80y", 6},
        {"\"a\\nb\\u00e9c\\\\d\"",
         "a\nb\xc3\xa9"
         "c\\d",
         8},
        {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8},
        {"\"\xc3\xa9\"", "\xc3\xa9", 2},
        {"\"\xe2\x82\xac\"", "\xe2\x82\xac", 3},
        {"\"\xf0\x9f\x98\x80\"", "\xf0\x9f\x98\x80", 4},
        {"\"\xf4\x8f\xbf\xbf\"", "\xf4\x8f\xbf\xbf", 4},
        {"\"\xed\x9f\xbf\"", "\xed\x9f\xbf", 3},
        {"\"\xee\x80\x80\"", "\xee\x80\x80", 3},
        {"\"\xef\xbb\xbf\"", "\xef\xbb\xbf", 3},
        {"\"\x7f\"", "\x7f", 1},
        {"\"\\u0061\\u0062\"", "ab", 2},
        {"\"long run of plain ascii then \\n escape and more plain text after it\"",
         "long run of plain ascii then \n escape and more plain text after it", 66},
        {"\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9 \\t\"",
         "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9 \t", 14},
    };
    for (size_t k = 0; k < ARRAY_LEN(good); k++) {
        const struct json_value *v = parse(good[k].in);
        ok(v && v->type == JSON_STRING, "string case %zu %s (%s)", k, good[k].in,
           v ? "" : g_err.msg);
        if (v && v->type == JSON_STRING)
            ok(str_is(v->u.str, good[k].out, good[k].out_len), "string case %zu value (len %zu)", k,
               v->u.str.len);
    }

    static const char *const bad[] = {
        "\"",
        "\"abc",
        "\"abc\\\"",
        "\"\\",
        "\"\\u",
        "\"\\u004",
        "\"\\u0041",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"\\uzzzz\"",
        "\"\\u 123\"",
        "\"\\U0041\"",
        "\"\\x41\"",
        "\"\\a\"",
        "\"\\'\"",
        "\"\\0\"",
        "\"\\ \"",
        "\"\\\n\"",
        "\"\\ud83d\"",        /* lone high */
        "\"\\ud83dx\"",       /* high followed by text */
        "\"\\ud83d\\n\"",     /* high followed by another escape */
        "\"\\ud83d\\ud83d\"", /* high + high */
        "\"\\ud83d\\u0041\"", /* high + BMP */
        "\"\\ude00\"",        /* lone low */
        "\"\\ude00\\ud83d\"", /* reversed pair */
        "\"\\udfff\"",
        "\"\\udc00\"",
        "\"\\ud800\"",
        "\"\\udbff\"",
        "\"\\ud83d\\ude0\"", /* truncated low */
        "\"\\ud83d\\",
        "\"\\ud83d\\u",
        "\"\\ud83d\\ude00",
        "\"\x01\"",
        "\"\x1f\"",
        "\"\t\"",
        "\"\n\"",
        "\"\r\"",
        "\"a\nb\"",
        "'abc'",
        "\"abc\"\"",
        "\"abc\" \"def\"",
        "\"\xed\xa0\x80\"", /* surrogate encoded in UTF-8 */
        "\"\xed\xbf\xbf\"",
        "\"\xc0\x80\"", /* overlong NUL */
        "\"\xc1\xbf\"",
        "\"\xe0\x80\x80\"",
        "\"\xe0\x9f\xbf\"",
        "\"\xf0\x80\x80\x80\"",
        "\"\xf0\x8f\xbf\xbf\"",
        "\"\xf4\x90\x80\x80\"", /* > U+10FFFF */
        "\"\xf5\x80\x80\x80\"",
        "\"\xf8\x88\x80\x80\x80\"",
        "\"\xfe\"",
        "\"\xff\"",
        "\"\x80\"", /* lone continuation */
        "\"\xbf\"",
        "\"\xc3\"",         /* truncated 2-byte inside string */
        "\"\xe2\x82\"",     /* truncated 3-byte */
        "\"\xf0\x9f\x98\"", /* truncated 4-byte */
        "\"\xc3\xc3\xa9\"",
        "\"\xe2\x28\xa1\"",
        "\"\xc3", /* truncated at end of input */
        "\"\xe2\x82",
        "\"\xf0\x9f\x98",
        "\"\xf0\x9f",
        "\"\xf0",
    };
    for (size_t k = 0; k < ARRAY_LEN(bad); k++) {
        ok(parse(bad[k]) == NULL, "bad string %zu rejected", k);
        ok(g_err.msg[0] && g_err.offset <= strlen(bad[k]), "bad string %zu message/offset", k);
    }

    /* embedded NUL raw in a string is a control character */
    ok(parse_n("\"a\0b\"", 5) == NULL, "raw NUL in string rejected");

    /* zero-copy: strings without escapes point into the input */
    const char *doc = "[\"plain\",\"esc\\n\"]";
    size_t n = strlen(doc);
    const struct json_value *v = parse_n(doc, n);
    const char *in = g_guard + GUARD_DATA - n;
    ok(v && v->u.arr.n == 2, "zero-copy doc");
    if (v && v->u.arr.n == 2) {
        ok(v->u.arr.items[0].u.str.ptr == in + 2, "unescaped string points into input");
        ok(v->u.arr.items[1].u.str.ptr < in || v->u.arr.items[1].u.str.ptr >= in + n,
           "escaped string decoded elsewhere");
        ok(str_is(v->u.arr.items[1].u.str, "esc\n", 4), "escaped value");
    }

    /* specific messages */
    ok(parse("\"a\\qb\"") == NULL && g_err.offset == 2, "invalid escape offset %zu", g_err.offset);
    ok(strcmp(g_err.msg, "invalid json at offset 2: invalid escape in string") == 0, "msg: %s",
       g_err.msg);
    ok(parse("\"ab\\ud800\"") == NULL && strstr(g_err.msg, "lone surrogate"), "lone msg: %s",
       g_err.msg);
    ok(parse("\"ab\x01\"") == NULL && g_err.offset == 3 && strstr(g_err.msg, "control character"),
       "control msg: %s", g_err.msg);
    ok(parse("\"ab\xff\"") == NULL && g_err.offset == 3 && strstr(g_err.msg, "utf-8"),
       "utf-8 msg: %s", g_err.msg);
    ok(parse("[\"abc") == NULL && strstr(g_err.msg, "unterminated string"), "unterminated: %s",
       g_err.msg);

    /* long strings exercising the 8-byte scanning around every kind of byte */
    char big[300];
    for (size_t pos = 1; pos < 40; pos++) {
        static const char *const inserts[] = {"\\n", "\xc3\xa9", "\x01", "\"", "\xff", "\\u20ac"};
        static const bool valid[] = {true, true, false, true, false, true};
        for (size_t m = 0; m < ARRAY_LEN(inserts); m++) {
            size_t len = 0;
            big[len++] = '"';
            for (size_t j = 1; j < pos; j++)
                big[len++] = 'a';
            size_t il = strlen(inserts[m]);
            memcpy(big + len, inserts[m], il);
            len += il;
            for (size_t j = 0; j < 20; j++)
                big[len++] = 'b';
            big[len++] = '"';
            v = parse_n(big, len);
            if (m == 3) /* an inner quote ends the string early: trailing data */
                ok(v == NULL, "early quote at %zu rejected", pos);
            else
                ok((v != NULL) == valid[m], "insert %zu at %zu: %s", m, pos, v ? "ok" : g_err.msg);
        }
    }
}

/* ---- UTF-8 validation ---------------------------------------------------- */

static void test_utf8(void)
{
    static const struct {
        const char *s;
        size_t n;
        bool valid;
    } cases[] = {
        {"", 0, true},
        {"abc", 3, true},
        {"\x00", 1, true},
        {"\x7f", 1, true},
        {"\xc2\x80", 2, true},
        {"\xdf\xbf", 2, true},
        {"\xe0\xa0\x80", 3, true},
        {"\xed\x9f\xbf", 3, true},
        {"\xee\x80\x80", 3, true},
        {"\xef\xbf\xbf", 3, true},
        {"\xf0\x90\x80\x80", 4, true},
        {"\xf4\x8f\xbf\xbf", 4, true},
        {"\xf3\xbf\xbf\xbf", 4, true},
        {"abcdefgh\xc3\xa9ijklmnop", 18, true},
        {"\x80", 1, false},
        {"\xbf", 1, false},
        {"\xc0\x80", 2, false},
        {"\xc1\xbf", 2, false},
        {"\xc2", 1, false},
        {"\xc2\x7f", 2, false},
        {"\xc2\xc0", 2, false},
        {"\xe0\x80\x80", 3, false},
        {"\xe0\x9f\xbf", 3, false},
        {"\xed\xa0\x80", 3, false},
        {"\xed\xbf\xbf", 3, false},
        {"\xe1\x80", 2, false},
        {"\xf0\x80\x80\x80", 4, false},
        {"\xf0\x8f\xbf\xbf", 4, false},
        {"\xf4\x90\x80\x80", 4, false},
        {"\xf5\x80\x80\x80", 4, false},
        {"\xf0\x90\x80", 3, false},
        {"\xf0\x90\x80\x7f", 4, false},
        {"\xfe", 1, false},
        {"\xff", 1, false},
        {"abcdefghijklmnop\x80", 17, false},
        {"abcdefghijklmnop\xe2\x82", 18, false},
    };
    for (size_t k = 0; k < ARRAY_LEN(cases); k++) {
        const char *p = guard_copy(cases[k].s, cases[k].n);
        ok(json_utf8_valid(p, cases[k].n) == cases[k].valid, "utf8 case %zu", k);
    }
    /* the reader agrees with json_utf8_valid on the same bytes inside a string */
    for (size_t k = 0; k < ARRAY_LEN(cases); k++) {
        char doc[64];
        if (memchr(cases[k].s, 0, cases[k].n) || memchr(cases[k].s, 0x7f, cases[k].n))
            continue;
        doc[0] = '"';
        memcpy(doc + 1, cases[k].s, cases[k].n);
        doc[cases[k].n + 1] = '"';
        ok((parse_n(doc, cases[k].n + 2) != NULL) == cases[k].valid, "utf8 in string %zu", k);
    }
    /* non-ASCII outside strings */
    ok(parse("\xc3\xa9") == NULL, "non-ASCII value rejected");
    ok(parse("[1,\xc3\xa9]") == NULL, "non-ASCII item rejected");
    ok(parse("{\"a\"\xc2\xa0:1}") == NULL, "NBSP as whitespace rejected");
}

/* ---- arrays and objects -------------------------------------------------- */

static void test_containers(void)
{
    const struct json_value *v = parse("[]");
    ok(v && v->type == JSON_ARRAY && v->u.arr.n == 0, "empty array");
    v = parse(" [ \n ] ");
    ok(v && v->type == JSON_ARRAY && v->u.arr.n == 0, "empty array with whitespace");
    v = parse("{}");
    ok(v && v->type == JSON_OBJECT && v->u.obj.n == 0, "empty object");
    v = parse("{ \t}");
    ok(v && v->type == JSON_OBJECT && v->u.obj.n == 0, "empty object with whitespace");

    v = parse(" { \"name\" : \"Ada\" , \"n\":[1, [true,false] ,null,{}],\"e\":{\"x\":[]} } ");
    ok(v && v->type == JSON_OBJECT && v->u.obj.n == 3, "object parsed (%s)", v ? "" : g_err.msg);
    if (v && v->u.obj.n == 3) {
        ok(str_is(v->u.obj.members[0].key, "name", 4), "key 0");
        ok(str_is(v->u.obj.members[1].key, "n", 1), "key 1");
        ok(str_is(v->u.obj.members[2].key, "e", 1), "key 2");
        const struct json_value *name = json_get(v, "name");
        ok(name && name->type == JSON_STRING && str_is(name->u.str, "Ada", 3), "json_get name");
        const struct json_value *arr = json_get(v, "n");
        ok(arr && arr->type == JSON_ARRAY && arr->u.arr.n == 4, "array member");
        if (arr && arr->u.arr.n == 4) {
            ok(arr->u.arr.items[0].type == JSON_NUMBER && arr->u.arr.items[0].u.num.i == 1,
               "arr[0]");
            const struct json_value *inner = &arr->u.arr.items[1];
            ok(inner->type == JSON_ARRAY && inner->u.arr.n == 2 &&
                   inner->u.arr.items[0].type == JSON_TRUE &&
                   inner->u.arr.items[1].type == JSON_FALSE,
               "nested array");
            ok(arr->u.arr.items[2].type == JSON_NULL, "arr[2]");
            ok(arr->u.arr.items[3].type == JSON_OBJECT && arr->u.arr.items[3].u.obj.n == 0,
               "arr[3]");
        }
        const struct json_value *e = json_get(v, "e");
        ok(e && json_get(e, "x") && json_get(e, "x")->type == JSON_ARRAY, "nested object");
        ok(json_get(v, "missing") == NULL, "json_get absent");
        ok(json_get(v, "Name") == NULL, "json_get is case-sensitive");
        ok(json_get(v, "nam") == NULL, "json_get prefix");
        ok(json_get(name, "x") == NULL, "json_get on non-object");
        ok(json_get(NULL, "x") == NULL, "json_get on NULL");
    }

    /* absent, null and zero are distinct */
    v = parse("{\"a\":null,\"b\":0,\"c\":\"\"}");
    ok(v && json_get(v, "a") && json_get(v, "a")->type == JSON_NULL, "null member present");
    ok(v && json_get(v, "b") && json_get(v, "b")->type == JSON_NUMBER, "zero member");
    ok(v && json_get(v, "c") && json_get(v, "c")->u.str.len == 0, "empty string member");
    ok(v && json_get(v, "d") == NULL, "absent member");

    /* escaped keys are decoded */
    v = parse("{\"a\\u0062\":1,\"\\n\":2,\"\":3}");
    ok(v && json_get(v, "ab") && json_get(v, "\n") && json_get(v, ""), "escaped keys");

    /* big array: items contiguous and in order (the slot stack grows in the arena) */
    struct buf b;
    buf_init(&b, 0);
    buf_append_char(&b, '[');
    for (int i = 0; i < 100000; i++) {
        if (i)
            buf_append_char(&b, ',');
        buf_append_i64(&b, i * 3 - 7);
    }
    buf_append_char(&b, ']');
    v = parse_n(b.data, b.len);
    ok(v && v->type == JSON_ARRAY && v->u.arr.n == 100000, "big array");
    if (v && v->u.arr.n == 100000) {
        bool all = true;
        for (size_t i = 0; i < 100000; i++)
            all = all && v->u.arr.items[i].u.num.i == (int64_t)i * 3 - 7;
        ok(all, "big array values");
    }

    /* nested arrays of objects, each with items, exercise slot stack bookkeeping */
    buf_reset(&b);
    buf_append_char(&b, '[');
    for (int i = 0; i < 200; i++) {
        if (i)
            buf_append_char(&b, ',');
        buf_printf(&b, "{\"id\":%d,\"tags\":[%d,%d,{\"k\":[%d]}],\"z\":%d}", i, i, i + 1, i + 2,
                   -i);
    }
    buf_append_char(&b, ']');
    v = parse_n(b.data, b.len);
    ok(v && v->u.arr.n == 200, "array of objects");
    if (v && v->u.arr.n == 200) {
        bool all = true;
        for (int i = 0; i < 200; i++) {
            const struct json_value *o = &v->u.arr.items[i];
            const struct json_value *tags = json_get(o, "tags");
            all = all && o->u.obj.n == 3 && json_get(o, "id")->u.num.i == i &&
                  json_get(o, "z")->u.num.i == -i && tags->u.arr.n == 3 &&
                  tags->u.arr.items[1].u.num.i == i + 1 &&
                  json_get(&tags->u.arr.items[2], "k")->u.arr.items[0].u.num.i == i + 2;
        }
        ok(all, "array of objects values");
    }
    buf_free(&b);

    /* *out is untouched on failure */
    const struct json_value *sentinel = (const struct json_value *)&g_err;
    const struct json_value *out = sentinel;
    arena_reset(&g_arena, 1 << 20);
    ok(json_parse("[1,", 3, &g_arena, &out, &g_err) == -1 && out == sentinel, "out untouched");
}

/* ---- syntax errors ------------------------------------------------------- */

static void test_syntax_errors(void)
{
    static const char *const bad[] = {
        "[",
        "]",
        "{",
        "}",
        "[1",
        "[1,",
        "[1,]",
        "[,1]",
        "[,]",
        "[1 2]",
        "[1,,2]",
        "[1:2]",
        "{\"a\"}",
        "{\"a\" 1}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{\"a\":1 \"b\":2}",
        "{1:2}",
        "{a:1}",
        "{'a':1}",
        "{\"a\"::1}",
        "{\"a\":1,,\"b\":2}",
        "{,}",
        "{\"a\",1}",
        "{\"a\":1",
        "{\"a\":",
        "{\"a\"",
        "{\"",
        "[\"a\"",
        "[true",
        "[true false]",
        "[null,]",
        "{}}",
        "[]]",
        "[]{}",
        "{}[]",
        "1 2",
        "[1]x",
        "[1] [2]",
        "// c\n1",
        "/* c */ 1",
        "1 // c",
        "#1",
        "[1,2,3]]",
        "{\"a\":1}}",
        "[[]",
        "[{]",
        "[}",
        "{]",
        "{\"a\":[}",
        "[\"a\":1]",
        "{\"a\":1]",
        "[1}",
        "\"a\":1",
        "=",
        "[\x01]",
        "[\x7f]",
        "[\"\\u00\"]",
        "()",
        "[1,2,3,]",
        "{\"a\":{\"b\":{}}",
        "[[[]]",
        "truefalse",
        "[true,false,]",
        "nil",
        "[01,2]",
    };
    for (size_t k = 0; k < ARRAY_LEN(bad); k++) {
        ok(parse(bad[k]) == NULL, "syntax error %zu %s rejected", k, bad[k]);
        ok(!g_err.too_large && g_err.offset <= strlen(bad[k]) && g_err.msg[0],
           "syntax error %zu fields", k);
    }

    static const struct {
        const char *in;
        size_t off;
        const char *msg;
    } msgs[] = {
        {"[1 2]", 3, "invalid json at offset 3: expected ',' or ']'"},
        {"{\"a\":1 \"b\":2}", 7, "invalid json at offset 7: expected ',' or '}'"},
        {"{\"a\" 1}", 5, "invalid json at offset 5: expected ':'"},
        {"{1:2}", 1, "invalid json at offset 1: expected a string key"},
        {"[1,]", 3, "invalid json at offset 3: trailing comma"},
        {"{\"a\":1,}", 7, "invalid json at offset 7: trailing comma"},
        {"[1", 2, "invalid json at offset 2: unexpected end of input"},
        {"{\"a\":", 5, "invalid json at offset 5: unexpected end of input"},
        {"[1] x", 4, "invalid json at offset 4: unexpected data after the json value"},
        {"[x]", 1, "invalid json at offset 1: expected a value"},
        {"tru", 3, "invalid json at offset 3: unexpected end of input"},
        {"trux", 0, "invalid json at offset 0: invalid literal"},
        {"01", 0, "invalid json at offset 0: leading zeros are not allowed in numbers"},
        {"[1.]", 3, "invalid json at offset 3: expected a digit after '.'"},
        {"1e+x", 3, "invalid json at offset 3: expected a digit in exponent"},
        {"-x", 1, "invalid json at offset 1: expected a digit"},
        {"\"abc", 0, "invalid json at offset 0: unterminated string"},
    };
    for (size_t k = 0; k < ARRAY_LEN(msgs); k++) {
        ok(parse(msgs[k].in) == NULL, "message case %s rejected", msgs[k].in);
        ok(g_err.offset == msgs[k].off, "message case %s offset %zu", msgs[k].in, g_err.offset);
        ok(strcmp(g_err.msg, msgs[k].msg) == 0, "message case %s: got \"%s\"", msgs[k].in,
           g_err.msg);
        ok(!g_err.too_large, "message case %s not too_large", msgs[k].in);
    }
}

/* ---- nesting depth ------------------------------------------------------- */

static void nested(struct buf *b, int levels, bool objects, bool empty_inner)
{
    buf_reset(b);
    for (int i = 0; i < levels; i++)
        buf_append_cstr(b, objects && i % 2 ? "{\"k\":" : "[");
    if (!empty_inner)
        buf_append_cstr(b, "1");
    for (int i = levels - 1; i >= 0; i--)
        buf_append_cstr(b, objects && i % 2 ? "}" : "]");
}

static void test_depth(void)
{
    struct buf b;
    buf_init(&b, 0);
    for (int objects = 0; objects < 2; objects++) {
        for (int empty = 0; empty < 2; empty++) {
            if (objects && empty)
                continue; /* "{\"k\":}" is not valid anyway */
            nested(&b, 64, objects, empty);
            const struct json_value *v = parse_n(b.data, b.len);
            ok(v != NULL, "64 levels accepted (obj %d empty %d): %s", objects, empty,
               v ? "" : g_err.msg);
            if (v) {
                int d = 0;
                const struct json_value *c = v;
                while (c && (c->type == JSON_ARRAY || c->type == JSON_OBJECT)) {
                    d++;
                    if (c->type == JSON_ARRAY)
                        c = c->u.arr.n ? &c->u.arr.items[0] : NULL;
                    else
                        c = c->u.obj.n ? &c->u.obj.members[0].value : NULL;
                }
                ok(d == 64, "depth is 64 (%d)", d);
            }
            nested(&b, 65, objects, empty);
            ok(parse_n(b.data, b.len) == NULL, "65 levels rejected");
            ok(strcmp(g_err.msg, "nesting deeper than 64 levels") == 0, "depth msg: %s", g_err.msg);
            ok(g_err.offset == 64 * 1 + (objects ? 32 * 4 : 0), "depth offset %zu", g_err.offset);
            ok(!g_err.too_large, "depth not too_large");
        }
    }
    /* very deep input fails fast at level 65 */
    buf_reset(&b);
    for (int i = 0; i < 1000000; i++)
        buf_append_char(&b, '[');
    ok(parse_n(b.data, b.len) == NULL && g_err.offset == 64, "1e6 '[' rejected at 64");
    /* depth counts open containers, not siblings */
    buf_reset(&b);
    for (int i = 0; i < 1000; i++)
        buf_append_cstr(&b, i ? ",[[]]" : "[[[]]");
    buf_append_char(&b, ']');
    ok(parse_n(b.data, b.len) != NULL, "many shallow siblings accepted");
    buf_free(&b);
}

/* ---- duplicate keys ------------------------------------------------------ */

static void test_duplicates(void)
{
    ok(parse("{\"a\":1,\"a\":2}") == NULL, "duplicate rejected");
    ok(strcmp(g_err.msg, "duplicate key \"a\"") == 0, "dup msg: %s", g_err.msg);
    ok(g_err.offset == 7 && !g_err.too_large, "dup offset %zu", g_err.offset);
    ok(parse("{\"email\":\"x\",\"name\":\"y\",\"email\":\"z\"}") == NULL, "dup email");
    ok(strcmp(g_err.msg, "duplicate key \"email\"") == 0, "dup email msg: %s", g_err.msg);
    ok(parse("{\"a\":1,\"\\u0061\":2}") == NULL, "dup after unescaping");
    ok(strcmp(g_err.msg, "duplicate key \"a\"") == 0, "dup unescaped msg: %s", g_err.msg);
    ok(parse("{\"\\u00e9\":1,\"\xc3\xa9\":2}") == NULL, "dup é escaped vs raw");
    ok(parse("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}") == NULL, "dup astral");
    ok(parse("{\"\":1,\"\":2}") == NULL, "dup empty key");
    ok(strcmp(g_err.msg, "duplicate key \"\"") == 0, "dup empty msg: %s", g_err.msg);
    ok(parse("{\"a\":1,\"A\":2}") != NULL, "case differs is not a dup");
    ok(parse("{\"a\":1,\"a\\u0000\":2}") != NULL, "NUL suffix is not a dup");
    ok(parse("{\"a\":1,\"b\":{\"a\":2}}") != NULL, "same key in nested object is fine");
    ok(parse("[{\"a\":1},{\"a\":2}]") != NULL, "same key in sibling objects is fine");
    ok(parse("{\"a\":{\"x\":1,\"x\":1}}") == NULL, "dup in nested object");
    ok(parse("{\"x\\ny\":1,\"x\\ny\":2}") == NULL &&
           strcmp(g_err.msg, "duplicate key \"x?y\"") == 0,
       "control char in dup key replaced: %s", g_err.msg);
    ok(parse("{\"a\\\"b\":1,\"a\\\"b\":2}") == NULL &&
           strcmp(g_err.msg, "duplicate key \"a\"b\"") == 0,
       "quote in dup key: %s", g_err.msg);

    /* long key is truncated in the message, on a character boundary */
    struct buf b;
    buf_init(&b, 0);
    buf_append_cstr(&b, "{\"");
    for (int i = 0; i < 39; i++)
        buf_append_char(&b, 'k');
    for (int i = 0; i < 50; i++)
        buf_append_cstr(&b, "\xc3\xa9");
    buf_append_cstr(&b, "\":1,\"");
    char key[39 + 100];
    memcpy(key, b.data + 2, sizeof key);
    buf_append(&b, key, sizeof key);
    buf_append_cstr(&b, "\":2}");
    ok(parse_n(b.data, b.len) == NULL, "long dup key rejected");
    ok(strncmp(g_err.msg, "duplicate key \"kkkk", 18) == 0 && strlen(g_err.msg) < 64, "long: %s",
       g_err.msg);
    ok(strstr(g_err.msg, "kkk...\"") != NULL, "cut before the 2-byte char: %s", g_err.msg);
    ok(json_utf8_valid(g_err.msg, strlen(g_err.msg)), "message is valid utf-8");

    /* big objects use the hash set */
    for (int dup_at = -1; dup_at < 3; dup_at++) {
        buf_reset(&b);
        buf_append_char(&b, '{');
        int n = 5000;
        for (int i = 0; i < n; i++) {
            if (i)
                buf_append_char(&b, ',');
            buf_printf(&b, "\"key%d\":%d", i, i);
        }
        if (dup_at == 0)
            buf_append_cstr(&b, ",\"key0\":1");
        else if (dup_at == 1)
            buf_append_cstr(&b, ",\"key4999\":1");
        else if (dup_at == 2)
            buf_append_cstr(&b, ",\"key\\u0031234\":1");
        buf_append_char(&b, '}');
        const struct json_value *v = parse_n(b.data, b.len);
        if (dup_at < 0) {
            ok(v && v->u.obj.n == 5000, "5000 unique keys accepted");
            ok(v && json_get(v, "key4321") && json_get(v, "key4321")->u.num.i == 4321,
               "lookup in big object");
        } else {
            ok(v == NULL, "dup in big object rejected (%d)", dup_at);
            const char *want[] = {"duplicate key \"key0\"", "duplicate key \"key4999\"",
                                  "duplicate key \"key1234\""};
            ok(strcmp(g_err.msg, want[dup_at]) == 0, "big dup msg: %s", g_err.msg);
        }
    }
    /* sizes around the pairwise/hash threshold */
    for (int n = 14; n <= 19; n++) {
        for (int dup = 0; dup < 2; dup++) {
            buf_reset(&b);
            buf_append_char(&b, '{');
            for (int i = 0; i < n; i++)
                buf_printf(&b, "%s\"%c\":0", i ? "," : "", 'a' + (dup && i == n - 1 ? 3 : i));
            buf_append_char(&b, '}');
            ok((parse_n(b.data, b.len) == NULL) == (dup == 1), "threshold n=%d dup=%d", n, dup);
        }
    }
    buf_free(&b);
}

/* ---- truncation and guard page ------------------------------------------- */

static void test_truncation(void)
{
    static const char *const docs[] = {
        ("{\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\",\"n\":[1,2.5,-3e7,true,false,"
         "null,{}],\"u\":\"\\ud83d\\ude00\\u00e9\\n\"}"),
        "[\"\xf0\x9f\x98\x80\xc3\xa9\xe2\x82\xac\",[[[[]]]],{\"a\":{\"b\":[null]}},\"\\\\\"]",
        "\"a long string with an escape \\t and unicode \xe2\x82\xac at the end\"",
        "true",
        "false",
        "null",
        "{ \"a\" : [ 1 , 2 ] , \"b\" : { } }",
        "[-9223372036854775808,9223372036854775807,0.5e-3]",
    };
    for (size_t k = 0; k < ARRAY_LEN(docs); k++) {
        size_t n = strlen(docs[k]);
        ok(parse_n(docs[k], n) != NULL, "doc %zu valid: %s", k, g_err.msg);
        size_t rejected = 0;
        for (size_t cut = 0; cut < n; cut++) {
            if (parse_n(docs[k], cut) == NULL && g_err.offset <= cut)
                rejected++;
            else
                printf("# doc %zu prefix %zu accepted\n", k, cut);
        }
        ok(rejected == n, "doc %zu: all %zu prefixes rejected", k, n);
    }
    /* numbers: prefixes that end in the middle are rejected, digits-only prefixes are numbers */
    const char *num = "-12.5e+3";
    size_t n = strlen(num);
    for (size_t cut = 0; cut < n; cut++) {
        bool valid = cut == 2 || cut == 3 || cut == 5; /* "-1", "-12", "-12.5" */
        ok((parse_n(num, cut) != NULL) == valid, "number prefix %zu", cut);
    }
}

/* ---- writer -------------------------------------------------------------- */

static void test_writer(void)
{
    struct buf b;
    buf_init(&b, 0);
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"", 0, "\"\""},
        {"abc", 3, "\"abc\""},
        {"a\"b", 3, "\"a\\\"b\""},
        {"a\\b", 3, "\"a\\\\b\""},
        {"/", 1, "\"/\""},
        {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
        {"\x00", 1, "\"\\u0000\""},
        {"\x01\x1f\x0b\x1b", 4, "\"\\u0001\\u001f\\u000b\\u001b\""},
        {"\x7f", 1, "\"\x7f\""},
        {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""},
        {"0123456789abcdef\"0123456789abcdef", 33, "\"0123456789abcdef\\\"0123456789abcdef\""},
        {"0123456789abcdefghij\n", 21, "\"0123456789abcdefghij\\n\""},
        {"\n0123456789abcdefghij", 21, "\"\\n0123456789abcdefghij\""},
        {"\xe2\x80\xa8\xe2\x80\xa9", 6, "\"\xe2\x80\xa8\xe2\x80\xa9\""},
        {"</script>", 9, "\"</script>\""},
    };
    for (size_t k = 0; k < ARRAY_LEN(cases); k++) {
        buf_reset(&b);
        json_write_str(&b, cases[k].in, cases[k].n);
        size_t ol = strlen(cases[k].out);
        ok(b.len == ol && memcmp(b.data, cases[k].out, ol) == 0, "write_str case %zu: %.*s", k,
           (int)b.len, b.data);
    }
    /* every byte value < 0x80 round-trips through writer and reader */
    char all[128];
    for (int i = 0; i < 128; i++)
        all[i] = (char)i;
    buf_reset(&b);
    json_write_str(&b, all, sizeof all);
    const struct json_value *v = parse_n(b.data, b.len);
    ok(v && v->type == JSON_STRING && str_is(v->u.str, all, sizeof all), "all ASCII round trip");

    /* compact re-serialization keeps number literals and member order */
    char out[512];
    ok(reserialize(" { \"b\" : [ 1 , 2.50 , -0 , 1E+5 ] , \"a\" : { \"\\u0041\" : null } , "
                   "\"c\" : \"\\/\\ud83d\\ude00\\u0001\" } ",
                   out, sizeof out),
       "reserialize");
    ok(strcmp(out,
              "{\"b\":[1,2.50,-0,1E+5],\"a\":{\"A\":null},\"c\":\"/\xf0\x9f\x98\x80\\u0001\"}") ==
           0,
       "compact output: %s", out);
    ok(reserialize("[true,false,null,[],{},\"\"]", out, sizeof out) &&
           strcmp(out, "[true,false,null,[],{},\"\"]") == 0,
       "literals output: %s", out);

    /* hand-built values */
    struct json_value items[3];
    memset(items, 0, sizeof items);
    items[0].type = JSON_NUMBER;
    items[0].u.num.is_int = true;
    items[0].u.num.i = INT64_MIN;
    items[1].type = JSON_STRING;
    items[1].u.str = STR_LIT("x\ty");
    items[2].type = JSON_STRING; /* empty, NULL pointer */
    struct json_member mem = {STR_LIT("k"), {.type = JSON_ARRAY}};
    mem.value.u.arr.items = items;
    mem.value.u.arr.n = 3;
    struct json_value root = {.type = JSON_OBJECT};
    root.u.obj.members = &mem;
    root.u.obj.n = 1;
    buf_reset(&b);
    json_write_value(&b, &root);
    ok(b.len == strlen("{\"k\":[-9223372036854775808,\"x\\ty\",\"\"]}") &&
           memcmp(b.data, "{\"k\":[-9223372036854775808,\"x\\ty\",\"\"]}", b.len) == 0,
       "hand-built value: %.*s", (int)b.len, b.data);

    /* capped buffer: failure is sticky and reported through b.failed */
    struct buf small;
    buf_init(&small, 8);
    json_write_str(&small, "0123456789", 10);
    ok(small.failed, "writer into small buffer fails");
    buf_free(&small);

    /* parse -> write -> parse gives the same value */
    static const char *const docs[] = {
        "{\"a\":[1,2,{\"b\":\"\\u0000\\u001f\\\"\\\\\"}],\"\\ud83d\\ude00\":-1.5e-7}",
        "[\"\x7f\",\"\\u007f\",\"\\b\\f\\n\\r\\t\",9223372036854775808]",
    };
    for (size_t k = 0; k < ARRAY_LEN(docs); k++) {
        struct arena a2;
        arena_init(&a2, 1 << 20);
        const struct json_value *v1 = NULL, *v2 = NULL;
        struct json_error e;
        ok(json_parse(docs[k], strlen(docs[k]), &a2, &v1, &e) == 0, "round trip %zu parse 1", k);
        buf_reset(&b);
        json_write_value(&b, v1);
        ok(json_parse(b.data, b.len, &a2, &v2, &e) == 0, "round trip %zu parse 2", k);
        ok(v1 && v2 && value_eq(v1, v2), "round trip %zu equal", k);
        arena_free(&a2);
    }
    buf_free(&b);
}

/* ---- writer fast paths against the original loops ------------------------- */

/* The original json_write_str: a byte loop through the checked appends. */
static void ref_write_str(struct buf *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t run = 0;
    buf_append_char(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        char e = 0;
        switch (c) {
        case '"':
            e = '"';
            break;
        case '\\':
            e = '\\';
            break;
        case '\b':
            e = 'b';
            break;
        case '\f':
            e = 'f';
            break;
        case '\n':
            e = 'n';
            break;
        case '\r':
            e = 'r';
            break;
        case '\t':
            e = 't';
            break;
        default:
            if (c < 0x20)
                e = 'u';
        }
        if (!e)
            continue;
        if (i > run)
            buf_append(b, str + run, i - run);
        if (e == 'u') {
            char t[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            buf_append(b, t, sizeof t);
        } else {
            char t[2] = {'\\', e};
            buf_append(b, t, sizeof t);
        }
        run = i + 1;
    }
    if (n > run)
        buf_append(b, str + run, n - run);
    buf_append_char(b, '"');
}

/* The original write_user of src/app/users.c. */
static void ref_write_user(struct buf *b, const struct db_user *u)
{
    char ts[RFC3339_LEN];
    BUF_LIT(b, "{\"id\":");
    buf_append_i64(b, u->id);
    BUF_LIT(b, ",\"name\":");
    ref_write_str(b, u->name.ptr, u->name.len);
    BUF_LIT(b, ",\"email\":");
    ref_write_str(b, u->email.ptr, u->email.len);
    BUF_LIT(b, ",\"created_at\":\"");
    fmt_rfc3339(ts, u->created_at);
    buf_append(b, ts, sizeof ts);
    BUF_LIT(b, "\"}");
}

static bool buf_same(const struct buf *x, const struct buf *y)
{
    return x->len == y->len && x->failed == y->failed &&
           (x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
}

/* s[0..n) (copied to end at the guard page) through json_write_str and through
 * json_put_str_body (into exactly JSON_STR_BODY_MAX(n) bytes of malloc, for ASan),
 * both compared with the reference; returns true when all agree. */
static bool str_same(const char *s, size_t n)
{
    static struct buf got, want;
    if (!got.max) {
        buf_init(&got, 0);
        buf_init(&want, 0);
    }
    const char *in = guard_copy(s, n);
    buf_reset(&got);
    buf_reset(&want);
    BUF_LIT(&got, "x"); /* not at offset 0 */
    BUF_LIT(&want, "x");
    json_write_str(&got, in, n);
    ref_write_str(&want, in, n);
    bool same = buf_same(&got, &want);
    char *room = malloc(JSON_STR_BODY_MAX(n));
    if (!room)
        abort();
    char *end = json_put_str_body(room, in, n);
    same = same && (size_t)(end - room) + 3 == want.len &&
           memcmp(room, want.data + 2, want.len - 3) == 0;
    free(room);
    return same;
}

static void test_writer_fast(void)
{
    /* every byte value alone, and at every position of clean strings of every length up
     * to 40 (the word, overlap and tail paths) */
    long bad = 0;
    for (int c = 0; c < 256; c++) {
        char one = (char)c;
        bad += !str_same(&one, 1);
    }
    ok(bad == 0, "each byte 0x00..0xff alone: %ld mismatches", bad);
    bad = 0;
    char s[8192];
    for (size_t n = 0; n <= 40; n++) {
        for (size_t i = 0; i < n; i++)
            s[i] = (char)('a' + i % 26);
        bad += !str_same(s, n);
        for (size_t pos = 0; pos < n; pos++)
            for (int c = 0; c < 256; c++) {
                char keep = s[pos];
                s[pos] = (char)c;
                bad += !str_same(s, n);
                s[pos] = keep;
            }
    }
    ok(bad == 0, "each byte at each position, lengths 0..40: %ld mismatches", bad);

    /* random strings, biased towards bytes that need escapes and towards the bytes a
     * borrow can falsely flag ('#' after '"', ']' after '\\', 0x20 and 0x01 after 0) */
    static const unsigned char pool[] = {'"', '\\', 0,    1,    0x1f, 0x20, '#',  ']',
                                         '!', '[',  0x7f, 0x80, 0xff, 'a',  '\n', 0x21};
    uint64_t x = 0x243f6a8885a308d3ULL;
    bad = 0;
    for (int k = 0; k < 20000; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t n = (size_t)(x % 300);
        unsigned density = (unsigned)(x >> 60); /* 0..15: how often a pool byte */
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s[i] = (x & 15) < density ? (char)pool[(x >> 8) % sizeof pool] : (char)(x >> 16);
        }
        bad += !str_same(s, n);
    }
    ok(bad == 0, "random strings: %ld mismatches", bad);

    /* long strings cross the writer's 4096-byte pieces; escapes on and around the seam */
    bad = 0;
    for (size_t n = 4090; n <= 4100; n++) {
        memset(s, 'q', n);
        bad += !str_same(s, n);
        for (size_t pos = 4088; pos < n; pos++) {
            s[pos] = '\n';
            bad += !str_same(s, n);
            s[pos] = 'q';
        }
    }
    memset(s, '"', sizeof s);
    bad += !str_same(s, sizeof s);
    for (size_t i = 0; i < sizeof s; i++)
        s[i] = (char)(i * 7);
    bad += !str_same(s, sizeof s);
    ok(bad == 0, "long strings: %ld mismatches", bad);

    /* capped buffers: same bytes, same length, same failed flag, for every cap from
     * too small to enough, starting empty or part full, and already failed */
    static const char *const strs[] = {"", "Ada Lovelace", "a\"b\\c\nd\x01", "0123456789abcdefXYZ"};
    bad = 0;
    for (size_t k = 0; k < ARRAY_LEN(strs); k++) {
        for (size_t max = 1; max < 80; max++) {
            for (int pre = 0; pre < 3; pre++) {
                struct buf g, w;
                buf_init(&g, max);
                buf_init(&w, max);
                if (pre == 1) {
                    BUF_LIT(&g, "ab");
                    BUF_LIT(&w, "ab");
                }
                if (pre == 2) {
                    g.failed = w.failed = 1;
                }
                json_write_str(&g, strs[k], strlen(strs[k]));
                ref_write_str(&w, strs[k], strlen(strs[k]));
                bad += !buf_same(&g, &w);
                buf_free(&g);
                buf_free(&w);
            }
        }
    }
    /* a long string into a cap between its length and the worst case */
    memset(s, 'z', 5000);
    s[4500] = '\t';
    for (size_t max = 4000; max < 5100; max += 7) {
        struct buf g, w;
        buf_init(&g, max);
        buf_init(&w, max);
        json_write_str(&g, s, 5000);
        ref_write_str(&w, s, 5000);
        bad += !buf_same(&g, &w);
        buf_free(&g);
        buf_free(&w);
    }
    ok(bad == 0, "capped and failed buffers: %ld mismatches", bad);
}

static void test_user_json(void)
{
    static char big[5000];
    memset(big, 'n', sizeof big);
    big[4999] = '"';
    const struct db_user users[] = {
        {42, STR_LIT("Ada Lovelace"), STR_LIT("ada@example.com"), 1795759553},
        {0, STR_LIT(""), STR_LIT(""), 0},
        {INT64_MAX, STR_LIT("A \"quoted\" \\ name\n"), STR_LIT("x@y.z"), 253402300799},
        {INT64_MIN, STR_LIT("\xc3\xa9\x01\x7f"), STR_LIT("e@e.e"), -1},
        {-5, {NULL, 0}, {NULL, 0}, INT64_MIN},
        {7, {big, sizeof big}, STR_LIT("long@example.com"), 951782400},
        {8, STR_LIT("n"), {big, 4096}, 951782400},
        {9, STR_LIT("n"), {big, 4097}, 951782400},
    };
    long bad = 0;
    for (size_t k = 0; k < ARRAY_LEN(users); k++) {
        struct buf g, w;
        buf_init(&g, 0);
        buf_init(&w, 0);
        for (int rep = 0; rep < 3; rep++) { /* appended after what is there */
            user_write_json(&g, &users[k]);
            ref_write_user(&w, &users[k]);
        }
        bad += !buf_same(&g, &w);
        buf_free(&g);
        buf_free(&w);
        /* every cap, part full or failed */
        size_t maxcap = users[k].name.len + users[k].email.len + 120;
        for (size_t max = 1; max < maxcap; max += max < 200 ? 1 : 97) {
            for (int pre = 0; pre < 3; pre++) {
                buf_init(&g, max);
                buf_init(&w, max);
                if (pre == 1) {
                    BUF_LIT(&g, "[");
                    BUF_LIT(&w, "[");
                }
                if (pre == 2)
                    g.failed = w.failed = 1;
                user_write_json(&g, &users[k]);
                ref_write_user(&w, &users[k]);
                bad += !buf_same(&g, &w);
                buf_free(&g);
                buf_free(&w);
            }
        }
    }
    ok(bad == 0, "user_write_json as the original write_user: %ld mismatches", bad);
    struct buf b;
    buf_init(&b, 0);
    user_write_json(&b, &users[0]);
    static const char want[] = "{\"id\":42,\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\","
                               "\"created_at\":\"2026-11-27T06:05:53Z\"}";
    ok(b.len == sizeof want - 1 && memcmp(b.data, want, b.len) == 0, "user: %.*s", (int)b.len,
       b.data);
    buf_free(&b);
}

/* ---- arena ---------------------------------------------------------------- */

static void test_arena(void)
{
    struct arena a;
    arena_init(&a, 100000);
    ok(a.head == NULL && a.used_total == 0, "arena init empty");
    char *p1 = arena_alloc(&a, 1);
    char *p2 = arena_alloc(&a, 3);
    char *p3 = arena_alloc(&a, 17);
    ok(p1 && p2 && p3 && p1 != p2 && p2 != p3, "small allocations distinct");
    ok(((uintptr_t)p1 | (uintptr_t)p2 | (uintptr_t)p3) % _Alignof(max_align_t) == 0, "aligned");
    memset(p3, 0xab, 17);
    char *z = arena_alloc(&a, 0);
    ok(z != NULL && z != p3, "zero-size allocation");
    char *big = arena_alloc(&a, 50000);
    ok(big != NULL && (uintptr_t)big % _Alignof(max_align_t) == 0, "large allocation");
    memset(big, 1, 50000);
    char *after = arena_alloc(&a, 10);
    ok(after != NULL, "small allocation after a large one");
    memset(after, 2, 10);
    ok(p3[16] == (char)0xab && big[49999] == 1, "earlier memory intact");
    ok(arena_alloc(&a, 60000) == NULL, "allocation over the cap refused");
    ok(arena_alloc(&a, SIZE_MAX) == NULL, "SIZE_MAX refused");
    ok(arena_alloc(&a, SIZE_MAX - 8) == NULL, "SIZE_MAX-8 refused");
    size_t used = a.used_total;
    ok(used <= 100000 && used >= 50000 + 17 + 10, "used_total %zu", used);
    /* fill up to the cap exactly */
    size_t left = a.cap - a.used_total;
    left &= ~(size_t)(_Alignof(max_align_t) - 1);
    ok(left == 0 || arena_alloc(&a, left) != NULL, "allocation up to the cap");
    ok(arena_alloc(&a, 1) == NULL, "cap reached");
    arena_reset(&a, 8192);
    ok(a.used_total == 0, "reset clears used_total");
    ok(a.head != NULL, "reset keeps a block");
    char *q = arena_alloc(&a, 100);
    ok(q != NULL, "allocation after reset");
    arena_reset(&a, 0);
    ok(a.head == NULL, "reset with keep 0 frees all");
    /* many allocations across growing blocks */
    arena_init(&a, (size_t)64 << 20);
    bool good = true;
    for (int i = 0; i < 20000; i++) {
        size_t n = (size_t)(i % 300) + 1;
        unsigned char *m = arena_alloc(&a, n);
        good = good && m && (uintptr_t)m % _Alignof(max_align_t) == 0;
        if (m)
            memset(m, i & 0xff, n);
    }
    ok(good, "20000 allocations");
    arena_free(&a);
    ok(a.head == NULL && a.used_total == 0, "arena_free");

    /* the cap makes an over-large document fail with too_large */
    struct arena tiny;
    arena_init(&tiny, 1000);
    const struct json_value *v = NULL;
    struct json_error e;
    const char *doc =
        "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28]";
    memset(&e, 0, sizeof e);
    ok(json_parse(doc, strlen(doc), &tiny, &v, &e) == -1, "over-large document rejected");
    ok(e.too_large, "too_large set");
    ok(strcmp(e.msg, "json document too large") == 0, "too large msg: %s", e.msg);
    arena_reset(&tiny, 4096);
    ok(json_parse("[1,2,3]", 7, &tiny, &v, &e) == 0, "small document fits");
    arena_reset(&tiny, 4096);
    struct buf sb;
    buf_init(&sb, 0);
    buf_append_char(&sb, '"');
    for (int i = 0; i < 2000; i++)
        buf_append_cstr(&sb, "\\n");
    buf_append_char(&sb, '"');
    memset(&e, 0, sizeof e);
    ok(json_parse(sb.data, sb.len, &tiny, &v, &e) == -1 && e.too_large, "big escaped string");
    /* an unescaped string needs no arena memory but the root */
    buf_reset(&sb);
    buf_append_char(&sb, '"');
    for (int i = 0; i < 5000; i++)
        buf_append_char(&sb, 'x');
    buf_append_char(&sb, '"');
    arena_reset(&tiny, 4096);
    ok(json_parse(sb.data, sb.len, &tiny, &v, &e) == 0, "big plain string is zero-copy");
    /* a big object hits the cap in the slot stack or the member array */
    arena_reset(&tiny, 4096);
    buf_reset(&sb);
    buf_append_char(&sb, '{');
    for (int i = 0; i < 100; i++)
        buf_printf(&sb, "%s\"k%d\":%d", i ? "," : "", i, i);
    buf_append_char(&sb, '}');
    memset(&e, 0, sizeof e);
    ok(json_parse(sb.data, sb.len, &tiny, &v, &e) == -1 && e.too_large, "big object too_large");
    buf_free(&sb);
    arena_free(&tiny);

    /* a zero cap refuses everything */
    arena_init(&tiny, 0);
    ok(arena_alloc(&tiny, 1) == NULL && arena_alloc(&tiny, 0) == NULL, "zero cap");
    ok(json_parse("1", 1, &tiny, &v, &e) == -1 && e.too_large, "zero cap parse");
    arena_free(&tiny);
}

int main(void)
{
    guard_init();
    arena_init(&g_arena, (size_t)256 << 20);
    test_literals();
    test_numbers();
    test_strings();
    test_utf8();
    test_containers();
    test_syntax_errors();
    test_depth();
    test_duplicates();
    test_truncation();
    test_writer();
    test_writer_fast();
    test_user_json();
    test_arena();
    arena_free(&g_arena);
    return test_done();
}
