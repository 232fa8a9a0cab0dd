/*
 * openapi.c - GET /openapi.json: the OpenAPI 3.1 description of every route.
 *
 * The document's one source is api/openapi.json in the repository. The
 * assembler copies its bytes into .rodata at build time (.incbin, below), so
 * the binary serves exactly the file it was built from and reads nothing at
 * run time (the sandbox and the dropped privileges stay as they are). The
 * path is relative to the directory the compiler runs in: the repository
 * root, where make runs; the Makefile lists the file as a prerequisite of
 * this object so an edit of the document rebuilds it.
 * tests/blackbox/test_openapi.py checks the document against the route table
 * and every response the black-box suite sees against the document.
 */
#include "app/app.h"

#ifndef BRISK_OPENAPI_JSON
#define BRISK_OPENAPI_JSON "api/openapi.json"
#endif

/* The document's bytes (no NUL) and their count, defined by the assembly below. */
extern const char brisk_openapi_json[] __attribute__((visibility("hidden")));
extern const unsigned long long brisk_openapi_json_len __attribute__((visibility("hidden")));

__asm__(".pushsection .rodata,\"a\"\n"
        ".balign 16\n"
        ".globl brisk_openapi_json\n"
        ".hidden brisk_openapi_json\n"
        ".type brisk_openapi_json, %object\n"
        "brisk_openapi_json:\n"
        ".incbin \"" BRISK_OPENAPI_JSON "\"\n"
        ".Lbrisk_openapi_json_end:\n"
        ".size brisk_openapi_json, .Lbrisk_openapi_json_end - brisk_openapi_json\n"
        ".balign 8\n"
        ".globl brisk_openapi_json_len\n"
        ".hidden brisk_openapi_json_len\n"
        ".type brisk_openapi_json_len, %object\n"
        "brisk_openapi_json_len:\n"
        ".8byte .Lbrisk_openapi_json_end - brisk_openapi_json\n"
        ".size brisk_openapi_json_len, 8\n"
        ".popsection\n");

void handle_openapi(struct http_ctx *c)
{
    /* a body past the response cap becomes a 500 in the HTTP layer */
    buf_append(http_body(c), brisk_openapi_json, (size_t)brisk_openapi_json_len);
    http_respond(c, 200, "application/json");
}
