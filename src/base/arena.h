/*
 * arena.h - bump allocator for request-scoped memory.
 *
 * One arena per connection; everything a request allocates (parsed JSON,
 * decoded strings) dies in one arena_reset() when the response is done, and
 * the blocks are kept for the next request. A hard cap bounds what one request
 * can make us allocate.
 */
#ifndef BRISK_ARENA_H
#define BRISK_ARENA_H

#include <stddef.h>

#include "base/compiler.h"

struct arena_block;

struct arena {
    struct arena_block *head; /* current block (list of blocks, newest first) */
    size_t used_total;        /* bytes handed out since the last reset */
    size_t cap;               /* max bytes handed out between resets */
};

/* Initialise an empty arena that may hand out up to cap bytes between resets. */
void arena_init(struct arena *a, size_t cap);

/*
 * Allocate n bytes aligned for any type. Returns NULL when the cap would be
 * exceeded (the caller answers 413/400); aborts if the system is out of memory.
 * The memory is valid until the next arena_reset/arena_free. n == 0 gives a
 * distinct pointer (it counts as one alignment unit). Each request is counted
 * against the cap rounded up to the alignment (16 bytes on x86-64). Under
 * AddressSanitizer the bytes past n are poisoned.
 */
void *arena_alloc(struct arena *a, size_t n) WARN_UNUSED;

/* Forget all allocations; keeps one block (up to keep bytes) for reuse, frees the rest. */
void arena_reset(struct arena *a, size_t keep);

/* Free every block. */
void arena_free(struct arena *a);

#endif
