/*
 * fuzz_xff.c - libFuzzer harness for the access log's client address: the
 * input is split into X-Forwarded-For field values (at NUL bytes) and walked
 * by http_client_addr with a trusted-proxy list that believes half the
 * address space, so the walk goes deep. Checks: the answer is the peer or a
 * byte range of one of the fields, never longer than the field.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct server_config cfg = {.trusted_proxies = "0.0.0.0/1, 10.0.0.0/8, ::/1, fd00::/8"};
    http_request_setup(&cfg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1);
    CHECK(copy);
    memcpy(copy, data, size);
    struct http_header hdrs[8];
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= size && n < 8; i++) {
        if (i == size || copy[i] == 0) {
            hdrs[n].name = (struct str){n % 2 ? "x-forwarded-for" : "X-Forwarded-For", 15};
            hdrs[n].value = (struct str){copy + start, i - start};
            n++;
            start = i + 1;
        }
    }
    struct http_ctx c;
    memset(&c, 0, sizeof c);
    c.req.headers = hdrs;
    c.req.num_headers = n;
    strcpy(c.peer, "10.1.2.3");
    c.peer_len = strlen(c.peer);
    struct str got = http_client_addr(&c);
    bool ok = got.ptr == c.peer;
    for (size_t h = 0; h < n && !ok; h++)
        ok = got.ptr >= hdrs[h].value.ptr &&
             got.ptr + got.len <= hdrs[h].value.ptr + hdrs[h].value.len;
    CHECK(ok);
    free(copy);
    return 0;
}
