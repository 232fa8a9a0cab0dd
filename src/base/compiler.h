/*
 * compiler.h - attribute macros shared by every module.
 *
 * Kept in one place so call sites stay readable and a different compiler only
 * needs this file changed.
 */
#ifndef BRISK_COMPILER_H
#define BRISK_COMPILER_H

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define WARN_UNUSED __attribute__((warn_unused_result))
#define PRINTF_FMT(a, b) __attribute__((format(printf, a, b)))
#define NORETURN __attribute__((noreturn))
#define FALLTHROUGH __attribute__((fallthrough)) /* this case goes on into the next */
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif
