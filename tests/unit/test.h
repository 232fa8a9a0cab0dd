/*
 * test.h - minimal TAP-style unit test helpers.
 *
 * ok(cond, fmt, ...) prints "ok N - ..." or "not ok N - ..." and counts;
 * test_done() prints "N passed, N failed" and returns the exit status.
 */
#ifndef BRISK_TEST_H
#define BRISK_TEST_H

#include <stdio.h>

static int test_passed, test_failed;

#define ok(cond, ...)                                                                              \
    do {                                                                                           \
        if (cond) {                                                                                \
            test_passed++;                                                                         \
        } else {                                                                                   \
            test_failed++;                                                                         \
            printf("not ok %d - %s:%d: ", test_passed + test_failed, __FILE__, __LINE__);          \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

static inline int test_done(void)
{
    printf("%d passed, %d failed\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}

#endif
