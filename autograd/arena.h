/* arena.h — per-step bump allocator (internal to autograd). See arena.c. */
#ifndef CQAT_AG_ARENA_H
#define CQAT_AG_ARENA_H

#include <stddef.h>

typedef struct ag_arena_block ag_arena_block;

typedef struct ag_arena {
    ag_arena_block *head; /* newest block first */
    size_t capacity;      /* bytes held in all blocks */
    size_t used;          /* bytes handed out since the last reset */
} ag_arena;

void ag_arena_init(ag_arena *a);
void ag_arena_deinit(ag_arena *a);
/* 64-byte aligned, uninitialised; NULL when memory runs out. */
void *ag_arena_alloc(ag_arena *a, size_t bytes);
void ag_arena_reset(ag_arena *a);

#endif
