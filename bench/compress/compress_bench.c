/*
 * compress_bench.c - whole-buffer gzip of brisk's response bodies: zlib
 * against libdeflate, the two Debian libraries src/http/compress.c could use.
 *
 *   compress_bench [-n ITERS] [-r RUNS] FILE...
 *
 * Each FILE is one response body (bench/compress/run.sh saves them from a
 * running brisk: GET /users?limit=1000, /users?limit=50, /users/1, and the
 * POST /orders/process answer to a 1000-order batch). For every library and
 * level the body is compressed ITERS times with state that is reused, as the
 * server reuses its per-loop compressor: zlib's z_stream is deflateReset()
 * between bodies (deflateInit2 once, windowBits 31: a gzip wrapper), the
 * libdeflate compressor is allocated once. The output is decompressed once
 * with zlib and compared with the input. One JSON object per line on stdout:
 * median ns per body over RUNS runs, MB/s of input, output bytes and ratio.
 */
#define _GNU_SOURCE
#include <libdeflate.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap);
    for (;;) {
        if (n == cap)
            p = realloc(p, cap *= 2);
        size_t r = fread(p + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    fclose(f);
    *len = n;
    return p;
}

struct zctx {
    z_stream zs;
    int level;
};

static size_t zlib_gzip(struct zctx *z, const char *in, size_t n, char *out, size_t cap)
{
    if (deflateReset(&z->zs) != Z_OK)
        return 0;
    z->zs.next_in = (Bytef *)(uintptr_t)in;
    z->zs.avail_in = (uInt)n;
    z->zs.next_out = (Bytef *)out;
    z->zs.avail_out = (uInt)cap;
    if (deflate(&z->zs, Z_FINISH) != Z_STREAM_END)
        return 0;
    return cap - z->zs.avail_out;
}

static int verify(const char *in, size_t n, const char *gz, size_t gzlen)
{
    char *back = malloc(n + 1);
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, 31) != Z_OK)
        return -1;
    s.next_in = (Bytef *)(uintptr_t)gz;
    s.avail_in = (uInt)gzlen;
    s.next_out = (Bytef *)back;
    s.avail_out = (uInt)(n + 1);
    int rc = inflate(&s, Z_FINISH);
    int ok = rc == Z_STREAM_END && s.total_out == n && memcmp(back, in, n) == 0;
    inflateEnd(&s);
    free(back);
    return ok ? 0 : -1;
}

static void run(const char *name, const char *lib, int level, const char *in, size_t n, int iters,
                int runs)
{
    size_t cap = n + n / 8 + 1024; /* above both libraries' bounds for these sizes */
    char *out = malloc(cap);
    struct zctx z;
    struct libdeflate_compressor *ld = NULL;
    bool is_zlib = strcmp(lib, "zlib") == 0;
    if (is_zlib) {
        memset(&z.zs, 0, sizeof z.zs);
        if (deflateInit2(&z.zs, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            exit(1);
    } else {
        ld = libdeflate_alloc_compressor(level);
        if (!ld)
            exit(1);
    }
    uint64_t *t = calloc((size_t)runs, sizeof *t);
    size_t olen = 0;
    for (int r = 0; r < runs; r++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < iters; i++)
            olen = is_zlib ? zlib_gzip(&z, in, n, out, cap)
                           : libdeflate_gzip_compress(ld, in, n, out, cap);
        t[r] = (now_ns() - t0) / (uint64_t)iters;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_u64);
    uint64_t ns = t[runs / 2];
    if (olen == 0 || verify(in, n, out, olen) != 0) {
        fprintf(stderr, "%s %s level %d: round trip failed\n", name, lib, level);
        exit(1);
    }
    printf("{\"body\":\"%s\",\"in_bytes\":%zu,\"lib\":\"%s\",\"level\":%d,\"ns_per_body\":%llu,"
           "\"mb_per_s\":%.1f,\"out_bytes\":%zu,\"ratio\":%.2f}\n",
           name, n, lib, level, (unsigned long long)ns, (double)n * 1e3 / (double)(ns ? ns : 1),
           olen, (double)n / (double)olen);
    if (is_zlib)
        deflateEnd(&z.zs);
    else
        libdeflate_free_compressor(ld);
    free(t);
    free(out);
}

int main(int argc, char **argv)
{
    int iters = 0, runs = 5, i = 1;
    for (; i < argc && argv[i][0] == '-'; i += 2) {
        if (i + 1 >= argc)
            break;
        if (strcmp(argv[i], "-n") == 0)
            iters = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-r") == 0)
            runs = atoi(argv[i + 1]);
    }
    if (i >= argc || runs < 1) {
        fprintf(stderr, "usage: compress_bench [-n ITERS] [-r RUNS] FILE...\n");
        return 2;
    }
    static const struct {
        const char *lib;
        int level;
    } cfgs[] = {{"zlib", 1}, {"zlib", 6}, {"libdeflate", 1}, {"libdeflate", 4}, {"libdeflate", 6}};
    for (; i < argc; i++) {
        size_t n;
        char *in = read_file(argv[i], &n);
        if (!in || n == 0) {
            fprintf(stderr, "compress_bench: cannot read %s\n", argv[i]);
            return 1;
        }
        const char *name = strrchr(argv[i], '/') ? strrchr(argv[i], '/') + 1 : argv[i];
        /* about 0.2 s of work per run at 100 MB/s unless -n says otherwise */
        int it = iters > 0 ? iters : (int)(20000000 / n + 1);
        for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++)
            run(name, cfgs[c].lib, cfgs[c].level, in, n, it, runs);
        free(in);
    }
    return 0;
}
