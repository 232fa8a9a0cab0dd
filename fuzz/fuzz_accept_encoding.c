/*
 * fuzz_accept_encoding.c - libFuzzer harness for the Accept-Encoding parser
 * (src/http/compress.c), which reads the client's bytes. The input is one
 * field value. Checks: every q-value is -1 (absent) or 0..1000; the list is
 * one list however it is split into fields (cut at the first comma: the same
 * result); a field given twice changes nothing (a coding keeps its lowest q);
 * the choice is identity whenever compression is off, and gzip only when gzip
 * (or *) was accepted with q > 0.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/compress.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

static bool q_ok(int q)
{
    return q >= -1 && q <= 1000;
}

static bool same(const struct http_accept_enc *a, const struct http_accept_enc *b)
{
    return a->present == b->present && a->gzip == b->gzip && a->identity == b->identity &&
           a->star == b->star;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so ASan catches a read past the value */
    char *s = malloc(size ? size : 1);
    CHECK(s);
    memcpy(s, data, size);

    struct http_accept_enc a;
    http_accept_enc_init(&a);
    http_accept_enc_parse(&a, s, size);
    CHECK(a.present && q_ok(a.gzip) && q_ok(a.identity) && q_ok(a.star));

    struct http_accept_enc twice = a;
    http_accept_enc_parse(&twice, s, size);
    CHECK(same(&a, &twice));

    const char *comma = memchr(s, ',', size);
    if (comma) {
        size_t cut = (size_t)(comma - s);
        struct http_accept_enc split;
        http_accept_enc_init(&split);
        http_accept_enc_parse(&split, s, cut);
        http_accept_enc_parse(&split, comma + 1, size - cut - 1);
        CHECK(same(&a, &split));
    }

    static const size_t lens[] = {0, 1, 1023, 1024, 1 << 20};
    int gz = a.gzip >= 0 ? a.gzip : a.star >= 0 ? a.star : 0;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        CHECK(http_accept_enc_choose(&a, lens[i], 0) == HTTP_CODING_IDENTITY);
        if (http_accept_enc_choose(&a, lens[i], 1024) == HTTP_CODING_GZIP)
            CHECK(gz > 0);
    }
    free(s);
    return 0;
}
