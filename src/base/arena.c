/*
 * arena.c - bump allocator for request-scoped memory (see arena.h).
 *
 * Memory comes in blocks of at least ARENA_MIN_BLOCK bytes, each new block
 * twice the size of the previous one (capped at ARENA_MAX_BLOCK), so a small
 * request costs one malloc for the life of the connection and a big one a few.
 * An allocation larger than a quarter of the block size gets a block of its
 * own, linked behind the current one so the current block's slack stays in
 * use. The cap counts bytes handed out (rounded up to the alignment), not
 * bytes malloc'ed, so what a client can make us allocate is bounded by about
 * twice the cap.
 *
 * Under AddressSanitizer the unused part of every block is poisoned, so a read
 * or write past the end of an allocation is reported even inside a block.
 */
#include "base/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/log.h"

#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ASAN 1
#endif
#endif

#ifdef ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define ARENA_ALIGN alignof(max_align_t)
#define ARENA_MIN_BLOCK ((size_t)4096)
#define ARENA_MAX_BLOCK ((size_t)1 << 20)

struct arena_block {
    struct arena_block *next; /* older block */
    size_t size;              /* usable bytes in data[] */
    size_t used;              /* bytes handed out from data[] */
    alignas(max_align_t) unsigned char data[];
};

_Static_assert((ARENA_ALIGN & (ARENA_ALIGN - 1)) == 0, "alignment must be a power of two");
_Static_assert(offsetof(struct arena_block, data) % ARENA_ALIGN == 0, "data must be aligned");

void arena_init(struct arena *a, size_t cap)
{
    a->head = NULL;
    a->used_total = 0;
    a->cap = cap;
}

static struct arena_block *block_new(size_t size)
{
    struct arena_block *b = malloc(offsetof(struct arena_block, data) + size);
    if (!b)
        log_fatal("out of memory allocating an arena block of %zu bytes", size);
    b->next = NULL;
    b->size = size;
    b->used = 0;
    POISON(b->data, size);
    return b;
}

static void block_free(struct arena_block *b)
{
    UNPOISON(b->data, b->size);
    free(b);
}

void *arena_alloc(struct arena *a, size_t n)
{
    /* n == 0 still gets a distinct, aligned pointer (of one alignment unit). */
    if (n > a->cap || n > SIZE_MAX - ARENA_ALIGN)
        return NULL;
    size_t need = n ? (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1) : ARENA_ALIGN;
    if (need > a->cap - a->used_total)
        return NULL;

    struct arena_block *b = a->head;
    if (likely(b && b->size - b->used >= need)) {
        void *p = b->data + b->used;
        b->used += need;
        a->used_total += need;
        UNPOISON(p, n);
        return p;
    }

    size_t grow = b ? b->size * 2 : ARENA_MIN_BLOCK;
    if (grow > ARENA_MAX_BLOCK)
        grow = ARENA_MAX_BLOCK;
    if (grow < ARENA_MIN_BLOCK)
        grow = ARENA_MIN_BLOCK;

    struct arena_block *nb;
    if (need > grow / 4) {
        /* Large: a block of its own. Keep the current block at the head when
         * it still has more room than the new one would, so its slack serves
         * the small allocations that follow. */
        nb = block_new(need);
        if (b && b->size - b->used > 0) {
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            a->head = nb;
        }
    } else {
        nb = block_new(grow);
        nb->next = b;
        a->head = nb;
    }
    void *p = nb->data + nb->used;
    nb->used += need;
    a->used_total += need;
    UNPOISON(p, n);
    return p;
}

void arena_reset(struct arena *a, size_t keep)
{
    /* Keep the largest block that fits in keep bytes; free the others. */
    struct arena_block *best = NULL;
    for (struct arena_block *b = a->head; b; b = b->next)
        if (b->size <= keep && (!best || b->size > best->size))
            best = b;
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        if (b != best)
            block_free(b);
        b = next;
    }
    if (best) {
        best->next = NULL;
        best->used = 0;
        POISON(best->data, best->size);
    }
    a->head = best;
    a->used_total = 0;
}

void arena_free(struct arena *a)
{
    arena_reset(a, 0);
}
