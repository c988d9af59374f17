/* arena.c — the per-step bump allocator behind activations, gradients and the tape.
 *
 * It grows by chaining blocks when a step needs more than it has; ag_arena_reset()
 * then merges them into one block of the combined size, so from the second step on a
 * step of the same shape is served from a single block without calling malloc.
 */
#include "autograd/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ARENA_ALIGN = 64, ARENA_MIN_BLOCK = 1 << 20 };

struct ag_arena_block {
    ag_arena_block *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    unsigned char *base; /* ARENA_ALIGN-aligned start of the usable bytes */
};

static ag_arena_block *block_new(size_t size)
{
    ag_arena_block *b = malloc(sizeof *b);
    if (!b)
        return NULL;
    void *mem = NULL;
    if (posix_memalign(&mem, ARENA_ALIGN, size) != 0) {
        free(b);
        return NULL;
    }
    b->next = NULL;
    b->size = size;
    b->used = 0;
    b->base = mem;
    return b;
}

static void block_free_chain(ag_arena_block *b)
{
    while (b) {
        ag_arena_block *next = b->next;
        free(b->base);
        free(b);
        b = next;
    }
}

void ag_arena_init(ag_arena *a) { memset(a, 0, sizeof *a); }

void ag_arena_deinit(ag_arena *a)
{
    block_free_chain(a->head);
    memset(a, 0, sizeof *a);
}

static size_t align_up(size_t n) { return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1); }

void *ag_arena_alloc(ag_arena *a, size_t bytes)
{
    size_t need = align_up(bytes ? bytes : 1);
    if (need < bytes)
        return NULL; /* overflow */
    ag_arena_block *b = a->head;
    if (!b || b->size - b->used < need) {
        size_t size = need > ARENA_MIN_BLOCK ? need : ARENA_MIN_BLOCK;
        /* Grow geometrically so a step that needs much more settles quickly. */
        if (b && size < b->size)
            size = b->size;
        ag_arena_block *nb = block_new(size);
        if (!nb)
            return NULL;
        nb->next = b;
        a->head = nb;
        a->capacity += size;
        b = nb;
    }
    void *p = b->base + b->used;
    b->used += need;
    a->used += need;
    return p;
}

void ag_arena_reset(ag_arena *a)
{
    ag_arena_block *b = a->head;
    if (b && b->next) {
        /* Several blocks: replace them by one that holds the whole high-water mark. */
        size_t total = a->capacity;
        block_free_chain(b);
        a->head = block_new(total);
        a->capacity = a->head ? total : 0;
    } else if (b) {
        b->used = 0;
    }
    a->used = 0;
}
