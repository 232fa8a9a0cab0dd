/*
 * fuzz_url.c - libFuzzer harness for url_decode and url_query_next (src/http/url.c).
 *
 *   clang -fsanitize=fuzzer,address,undefined -Isrc fuzz/fuzz_url.c \
 *         src/http/url.c -o fuzz_url
 *
 * url_decode is compared with a slow reference decoder, in and out of place;
 * query iteration must hand out slices inside the query, without '&', that
 * together with the separators account for every byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int ref_hex(char c)
{
    const char *digits = "0123456789abcdef0123456789ABCDEF";
    const char *p = c ? strchr(digits, c) : NULL;
    return p ? (int)((p - digits) % 16) : -1;
}

static bool ref_decode(const char *in, size_t n, char *out, size_t *out_len, bool plus)
{
    size_t o = 0, i = 0;
    while (i < n) {
        if (in[i] == '%') {
            if (i + 2 >= n)
                return false;
            int a = ref_hex(in[i + 1]), b = ref_hex(in[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0))
                return false;
            out[o++] = (char)(a * 16 + b);
            i += 3;
        } else {
            out[o++] = (plus && in[i] == '+') ? ' ' : in[i];
            i++;
        }
    }
    *out_len = o;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1);
    char *out = malloc(size ? size : 1);
    char *ref = malloc(size ? size : 1);
    if (size)
        memcpy(in, data, size);

    for (int plus = 0; plus < 2; plus++) {
        size_t ol = 0, rl = 0;
        bool a = url_decode(in, size, out, &ol, plus);
        bool b = ref_decode((const char *)data, size, ref, &rl, plus);
        CHECK(a == b);
        if (a) {
            CHECK(ol == rl && ol <= size && (ol == 0 || memcmp(out, ref, ol) == 0));
            CHECK(ol == 0 || memchr(out, '\0', ol) == NULL || memchr(data, '\0', size) != NULL);
        }
        /* in place gives the same result */
        char *ip = malloc(size ? size : 1);
        if (size)
            memcpy(ip, data, size);
        size_t il = 0;
        CHECK(url_decode(ip, size, ip, &il, plus) == a);
        if (a)
            CHECK(il == ol && (il == 0 || memcmp(ip, out, il) == 0));
        free(ip);
    }

    /* every byte is a separator '&', a key byte, a value byte or the '=' between them */
    struct str q = {in, size}, k, v;
    size_t covered = 0, amps = 0;
    while (url_query_next(&q, &k, &v)) {
        CHECK(k.ptr >= in && k.ptr + k.len <= in + size);
        CHECK(v.ptr >= in && v.ptr + v.len <= in + size);
        CHECK(memchr(k.ptr, '&', k.len) == NULL && memchr(k.ptr, '=', k.len) == NULL);
        CHECK(memchr(v.ptr, '&', v.len) == NULL);
        bool eq = v.ptr != k.ptr + k.len;
        if (eq)
            CHECK(v.ptr == k.ptr + k.len + 1 && v.ptr[-1] == '=');
        CHECK(k.len + v.len + eq > 0);
        CHECK(q.len == 0 || q.ptr + q.len == in + size);
        covered += k.len + v.len + eq;
    }
    CHECK(q.len == 0);
    for (size_t i = 0; i < size; i++)
        amps += in[i] == '&';
    CHECK(covered + amps == size);

    free(in);
    free(out);
    free(ref);
    return 0;
}
