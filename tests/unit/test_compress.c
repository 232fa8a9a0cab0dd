/*
 * test_compress.c - unit tests for response compression (src/http/compress.c):
 * the Accept-Encoding parser and the choice it leads to, and the gzip of a
 * response body in place with a loop's compressor (decompressed again and
 * compared).
 */
#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/compress.h"
#include "http/http_int.h"
#include "test.h"

static struct http_accept_enc parse(const char *s)
{
    struct http_accept_enc a;
    http_accept_enc_init(&a);
    http_accept_enc_parse(&a, s, strlen(s));
    return a;
}

static void test_parse(void)
{
    static const struct {
        const char *in;
        int gzip, identity, star;
    } cases[] = {
        {"gzip", 1000, -1, -1},
        {"GZIP", 1000, -1, -1},
        {"x-gzip", 1000, -1, -1},
        {"gzip;q=0", 0, -1, -1},
        {"gzip; q=0.5", 500, -1, -1},
        {"gzip ;Q=0.25", 250, -1, -1},
        {"gzip;q=1.000", 1000, -1, -1},
        {"gzip;q=0.001", 1, -1, -1},
        {"gzip, deflate, br", 1000, -1, -1},
        {" gzip ,\tidentity;q=0 ", 1000, 0, -1},
        {"*;q=0", -1, -1, 0},
        {"*", -1, -1, 1000},
        {"br;q=1, *;q=0.3, identity;q=0.7", -1, 700, 300},
        {"gzip;q=0.8, gzip;q=0.2", 200, -1, -1}, /* named twice: the lowest */
        {"gzip, gzip;q=0", 0, -1, -1},
        {",,gzip,,", 1000, -1, -1}, /* empty list elements */
        {"", -1, -1, -1},
        /* malformed elements are ignored, the rest of the list counts */
        {"gzip;q=2, identity", -1, 1000, -1},
        {"gzip;q=1.1", -1, -1, -1},
        {"gzip;q=1.0001", -1, -1, -1},
        {"gzip;q=0.1234", -1, -1, -1},
        {"gzip;q=.5", -1, -1, -1},
        {"gzip;q=", -1, -1, -1},
        {"gzip;q = 0.5", -1, -1, -1},
        {"gzip;level=9", -1, -1, -1},
        {"gzip;q=0.5;x=1", -1, -1, -1},
        {"gzip q=0.5", -1, -1, -1},
        {"\"gzip\"", -1, -1, -1},
        {";q=0.5", -1, -1, -1},
        {"gzip;", -1, -1, -1},
        {"gzipx", -1, -1, -1},
        {"gzi", -1, -1, -1},
        {"identity;q=0, *", -1, 0, 1000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct http_accept_enc a = parse(cases[i].in);
        ok(a.present && a.gzip == cases[i].gzip && a.identity == cases[i].identity &&
               a.star == cases[i].star,
           "parse %s: gzip %d identity %d star %d", cases[i].in, a.gzip, a.identity, a.star);
    }
    /* two fields are one list */
    struct http_accept_enc a;
    http_accept_enc_init(&a);
    ok(!a.present && a.gzip == -1, "init: nothing sent");
    http_accept_enc_parse(&a, "identity;q=0.5", 14);
    http_accept_enc_parse(&a, "gzip", 4);
    ok(a.gzip == 1000 && a.identity == 500, "two fields");
    /* the length bounds the read: "gzip;q=0" cut after "gzip" */
    a = (struct http_accept_enc){0};
    http_accept_enc_init(&a);
    http_accept_enc_parse(&a, "gzip;q=0", 4);
    ok(a.gzip == 1000, "reads only n bytes");
}

static enum http_coding choose(const char *field, size_t len, size_t min_bytes)
{
    struct http_accept_enc a;
    http_accept_enc_init(&a);
    if (field)
        http_accept_enc_parse(&a, field, strlen(field));
    return http_accept_enc_choose(&a, len, min_bytes);
}

static void test_choose(void)
{
    enum { I = HTTP_CODING_IDENTITY, G = HTTP_CODING_GZIP };
    static const struct {
        const char *field; /* NULL: no Accept-Encoding field */
        size_t len, min;
        int want;
    } cases[] = {
        {NULL, 5000, 1024, I},          /* no field: no preference, nothing unasked */
        {"", 5000, 1024, I},            /* empty: identity only */
        {"gzip", 5000, 1024, G},        /* */
        {"gzip", 1024, 1024, G},        /* at the threshold */
        {"gzip", 1023, 1024, I},        /* below */
        {"gzip", 5000, 0, I},           /* compression off */
        {"gzip;q=0", 5000, 1024, I},    /* refused */
        {"deflate, br", 5000, 1024, I}, /* nothing we have */
        {"*", 5000, 1024, G},           /* any coding */
        {"*;q=0", 5000, 1024, I},       /* none at all: identity anyway */
        {"*;q=0, gzip", 5000, 1024, G}, /* */
        {"gzip;q=0.1", 5000, 1024, G},  /* identity not named: preferred least */
        {"gzip;q=0.5, identity", 5000, 1024, I},
        {"gzip, identity;q=0.5", 5000, 1024, G},
        {"gzip;q=0.5, identity;q=0.5", 5000, 1024, G}, /* a tie: gzip */
        {"*;q=0.8, gzip;q=0.5", 5000, 1024, I},        /* identity gets *'s 0.8 */
        {"gzip, identity;q=0", 10, 1024, G},           /* identity refused: any size */
        {"gzip, *;q=0", 10, 1024, G},                  /* the same through * */
        {"gzip, *;q=0, identity", 10, 1024, I},        /* identity named: allowed */
        {"identity;q=0", 5000, 1024, I},               /* nothing acceptable: identity anyway */
        {"identity;q=0, gzip;q=0", 5000, 1024, I},
        {"gzip, identity;q=0", 5000, 0, I}, /* off: identity even when refused */
        {"x-gzip", 5000, 1024, G},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum http_coding got = choose(cases[i].field, cases[i].len, cases[i].min);
        ok((int)got == cases[i].want, "choose %s len %zu min %zu: %d", cases[i].field, cases[i].len,
           cases[i].min, (int)got);
    }
}

/* A request object on a fake loop, with Accept-Encoding fields as given. */
struct fake {
    struct server_config cfg;
    struct http_loop hl;
    struct http_ctx c;
    struct http_header hdrs[4];
};

static void fake_init(struct fake *f, uint64_t min_bytes, const char *ae)
{
    memset(f, 0, sizeof *f);
    f->cfg.compress_min_bytes = min_bytes;
    f->hl.cfg = &f->cfg;
    f->c.hl = &f->hl;
    buf_init(&f->c.body, 0);
    f->c.req.headers = f->hdrs;
    f->hdrs[0] = (struct http_header){STR_LIT("Host"), STR_LIT("x")};
    f->c.req.num_headers = 1;
    if (ae) {
        f->hdrs[1] = (struct http_header){STR_LIT("accept-encoding"), {ae, strlen(ae)}};
        f->c.req.num_headers = 2;
    }
}

static bool gunzip_equals(const struct buf *gz, const char *want, size_t n)
{
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    char *out = malloc(n + 1);
    size_t got = 0;
    enum libdeflate_result r = libdeflate_gzip_decompress(d, gz->data, gz->len, out, n + 1, &got);
    bool same = r == LIBDEFLATE_SUCCESS && got == n && memcmp(out, want, n) == 0;
    free(out);
    libdeflate_free_decompressor(d);
    return same;
}

static void test_response(void)
{
    /* a users-list-like body */
    struct buf src;
    buf_init(&src, 0);
    BUF_LIT(&src, "{\"users\":[");
    for (int i = 0; i < 200; i++) {
        if (i)
            buf_append_char(&src, ',');
        buf_printf(&src, "{\"id\":%d,\"name\":\"User %d\",\"email\":\"u%d@example.com\"}", i, i, i);
    }
    BUF_LIT(&src, "]}");

    struct fake f;
    fake_init(&f, 1024, "gzip");
    char *first_buf = NULL;
    for (int round = 0; round < 3; round++) {
        buf_reset(&f.c.body);
        buf_append(&f.c.body, src.data, src.len);
        char *body_before = f.c.body.data;
        enum http_body_coding r = http_compress_response(&f.c, 200, NULL, true);
        ok(r == HTTP_BODY_GZIP, "round %d: gzip", round);
        ok(f.c.body.len < src.len / 3, "round %d: %zu bytes from %zu", round, f.c.body.len,
           src.len);
        ok(gunzip_equals(&f.c.body, src.data, src.len), "round %d: round trip", round);
        /* the two buffers trade places: after the first round no new allocation */
        if (round == 0)
            first_buf = body_before;
        else
            ok(f.c.body.data == first_buf || body_before == first_buf, "round %d: buffers reused",
               round);
    }
    ok(f.hl.zc != NULL, "compressor made on first use");

    buf_reset(&f.c.body);
    buf_append(&f.c.body, src.data, src.len);
    ok(http_compress_response(&f.c, 200, "application/json; charset=utf-8", true) == HTTP_BODY_GZIP,
       "application/json with parameters");
    buf_reset(&f.c.body);
    buf_append(&f.c.body, src.data, src.len);
    ok(http_compress_response(&f.c, 200, "text/plain; charset=utf-8", true) == HTTP_BODY_PLAIN &&
           f.c.body.len == src.len,
       "text/plain: never");
    ok(http_compress_response(&f.c, 200, "application/jsonx", true) == HTTP_BODY_PLAIN,
       "application/jsonx is not JSON");
    ok(http_compress_response(&f.c, 204, NULL, true) == HTTP_BODY_PLAIN, "204: never");
    ok(http_compress_response(&f.c, 304, NULL, true) == HTTP_BODY_PLAIN, "304: never");
    ok(http_compress_response(&f.c, 200, NULL, false) == HTTP_BODY_NEGOTIATED &&
           f.c.body.len == src.len,
       "head not parsed: Accept-Encoding not read, Vary still");
    buf_reset(&f.c.body);
    BUF_LIT(&f.c.body, "{\"error\":\"not found\"}");
    ok(http_compress_response(&f.c, 404, NULL, true) == HTTP_BODY_NEGOTIATED && f.c.body.len == 21,
       "small body: Vary, not compressed");
    http_compressor_free(f.hl.zc);
    buf_free(&f.c.body);

    /* identity refused: even a small body, even one that grows */
    fake_init(&f, 1024, "gzip, identity;q=0");
    BUF_LIT(&f.c.body, "{}");
    ok(http_compress_response(&f.c, 200, NULL, true) == HTTP_BODY_GZIP &&
           gunzip_equals(&f.c.body, "{}", 2),
       "identity;q=0: 2 bytes gzip'd");
    http_compressor_free(f.hl.zc);
    buf_free(&f.c.body);

    /* incompressible bytes are sent as they are */
    fake_init(&f, 16, "gzip");
    unsigned x = 12345;
    for (int i = 0; i < 4096; i++) {
        x = x * 1103515245u + 12345u;
        buf_append_char(&f.c.body, (char)(x >> 24));
    }
    ok(http_compress_response(&f.c, 200, NULL, true) == HTTP_BODY_NEGOTIATED &&
           f.c.body.len == 4096,
       "random bytes: not compressed");
    http_compressor_free(f.hl.zc);
    buf_free(&f.c.body);

    /* over 1 MiB: the loop would wait too long, sent as it is */
    fake_init(&f, 1024, "gzip");
    while (f.c.body.len <= ((size_t)1 << 20))
        buf_append(&f.c.body, src.data, src.len);
    size_t big = f.c.body.len;
    ok(http_compress_response(&f.c, 200, NULL, true) == HTTP_BODY_NEGOTIATED && f.c.body.len == big,
       "over 1 MiB: not compressed");
    buf_reset(&f.c.body);
    while (f.c.body.len + src.len <= ((size_t)1 << 20))
        buf_append(&f.c.body, src.data, src.len);
    ok(http_compress_response(&f.c, 200, NULL, true) == HTTP_BODY_GZIP, "just under 1 MiB: gzip");
    http_compressor_free(f.hl.zc);
    buf_free(&f.c.body);

    fake_init(&f, 0, "gzip");
    buf_append(&f.c.body, src.data, src.len);
    ok(http_compress_response(&f.c, 200, NULL, true) == HTTP_BODY_PLAIN && f.hl.zc == NULL,
       "min bytes 0: off, no Vary, no compressor");
    buf_free(&f.c.body);
    buf_free(&src);
}

int main(void)
{
    test_parse();
    test_choose();
    test_response();
    return test_done();
}
