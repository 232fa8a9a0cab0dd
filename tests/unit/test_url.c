/*
 * test_url.c - unit tests for percent-decoding and query iteration (src/http/url.c).
 *
 * Inputs are placed against a PROT_NONE page so that reading past the end of
 * an escape ("%4" at the end) faults at once.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http/url.h"
#include "test.h"

static char *guard_region;
static size_t guard_span;

static void guard_init(void)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    guard_span = pg;
    char *m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + pg, pg, PROT_NONE) != 0) {
        perror("guard page");
        exit(2);
    }
    guard_region = m;
}

static char *guard_place(const void *src, size_t n)
{
    char *p = guard_region + guard_span - n;
    if (n)
        memcpy(p, src, n);
    return p;
}

struct dec_case {
    const char *in;
    size_t in_len;
    bool plus;
    bool ok;
    const char *out;
    size_t out_len;
};

#define DOK(in, plus, out)                                                                         \
    {                                                                                              \
        in, sizeof(in) - 1, plus, true, out, sizeof(out) - 1                                       \
    }
#define DBAD(in, plus)                                                                             \
    {                                                                                              \
        in, sizeof(in) - 1, plus, false, "", 0                                                     \
    }

static const struct dec_case dec_cases[] = {
    DOK("", false, ""),
    DOK("abc", false, "abc"),
    DOK("a%20b", false, "a b"),
    DOK("%41%42%43", false, "ABC"),
    DOK("%4a%4A", false, "JJ"),
    DOK("%e2%82%ac", false, "\xe2\x82\xac"),
    DOK("%ff", false, "\xff"),
    DOK("%25", false, "%"),
    DOK("%2525", false, "%25"),
    DOK("%2B", true, "+"),
    DOK("a+b", false, "a+b"),
    DOK("a+b", true, "a b"),
    DOK("++", true, "  "),
    DOK("%01", false, "\x01"),
    DOK("/users/42", false, "/users/42"),
    DBAD("%", false),
    DBAD("a%", false),
    DBAD("%4", false),
    DBAD("ab%4", true),
    DBAD("%zz", false),
    DBAD("%4g", false),
    DBAD("%g4", false),
    DBAD("% 41", false),
    DBAD("%00", false),
    DBAD("a%00b", true),
    DBAD("%+1", true),
    DBAD("%-1", false),
};

static void test_decode(void)
{
    for (size_t i = 0; i < sizeof(dec_cases) / sizeof(dec_cases[0]); i++) {
        const struct dec_case *c = &dec_cases[i];
        const char *in = guard_place(c->in, c->in_len);
        char out[64];
        memset(out, 'X', sizeof(out));
        size_t out_len = 999;
        bool r = url_decode(in, c->in_len, out, &out_len, c->plus);
        if (c->ok) {
            ok(r && out_len == c->out_len && memcmp(out, c->out, out_len) == 0 &&
                   out[out_len] == 'X',
               "decode \"%s\" plus=%d: r=%d len=%zu", c->in, c->plus, r, out_len);
        } else {
            ok(!r, "decode \"%s\" plus=%d rejected", c->in, c->plus);
        }
    }

    /* in place */
    char buf[] = "a%2Fb+c%3d";
    size_t n = 0;
    ok(url_decode(buf, strlen(buf), buf, &n, true) && n == 6 && memcmp(buf, "a/b c=", 6) == 0,
       "decode in place");
}

struct pair {
    const char *k, *v;
};

struct query_case {
    const char *q;
    struct pair pairs[6]; /* up to {NULL} */
};

static const struct query_case query_cases[] = {
    {"", {{NULL, NULL}}},
    {"&", {{NULL, NULL}}},
    {"&&&", {{NULL, NULL}}},
    {"a=1", {{"a", "1"}, {NULL, NULL}}},
    {"a=1&b=2", {{"a", "1"}, {"b", "2"}, {NULL, NULL}}},
    {"limit=10&after=42&", {{"limit", "10"}, {"after", "42"}, {NULL, NULL}}},
    {"&a=1&&b&=c&d=", {{"a", "1"}, {"b", ""}, {"", "c"}, {"d", ""}, {NULL, NULL}}},
    {"a==b&c=d=e", {{"a", "=b"}, {"c", "d=e"}, {NULL, NULL}}},
    {"x%20y=%41+b", {{"x%20y", "%41+b"}, {NULL, NULL}}},
    {"flag", {{"flag", ""}, {NULL, NULL}}},
};

static void test_query(void)
{
    for (size_t i = 0; i < sizeof(query_cases) / sizeof(query_cases[0]); i++) {
        const struct query_case *c = &query_cases[i];
        size_t n = strlen(c->q);
        const char *b = guard_place(c->q, n);
        struct str q = {b, n}, k, v;
        size_t j = 0;
        bool good = true;
        while (url_query_next(&q, &k, &v)) {
            if (j >= 6 || !c->pairs[j].k) {
                good = false;
                break;
            }
            size_t kl = strlen(c->pairs[j].k), vl = strlen(c->pairs[j].v);
            if (k.len != kl || memcmp(k.ptr, c->pairs[j].k, kl) != 0 || v.len != vl ||
                (vl && memcmp(v.ptr, c->pairs[j].v, vl) != 0))
                good = false;
            /* raw slices stay inside the query */
            if ((k.len && (k.ptr < b || k.ptr + k.len > b + n)) ||
                (v.len && (v.ptr < b || v.ptr + v.len > b + n)))
                good = false;
            j++;
        }
        ok(good && c->pairs[j].k == NULL, "query \"%s\": %zu pairs", c->q, j);
        ok(q.len == 0, "query \"%s\": consumed", c->q);
        ok(!url_query_next(&q, &k, &v), "query \"%s\": stays exhausted", c->q);
    }
}

int main(void)
{
    guard_init();
    test_decode();
    test_query();
    return test_done();
}
