/* The overflow arena: a buddy allocator of power-of-two blocks for payloads
 * too big for a slot.  Every call is made with the ring lock held. */
#ifndef FASTWORKER_ARENA_H
#define FASTWORKER_ARENA_H

#include "segment.h"

#include <stdint.h>

/* The smallest order whose block holds len bytes. */
uint32_t fw_arena_order_for(uint64_t len);

void fw_arena_init(fw_seg *s);

/* 0 and the block's first unit, FW_E_TOOBIG if no block of that order can
 * ever exist in this arena, FW_E_ARENA_FULL if none is free now. */
int fw_arena_alloc(fw_seg *s, uint32_t order, uint32_t *unit_out);

void fw_arena_free(fw_seg *s, uint32_t unit);

static inline uint8_t *fw_arena_ptr(fw_seg *s, uint32_t unit)
{
    return s->arena + ((uint64_t)unit << FW_ARENA_MIN_ORDER);
}

/* Rebuild the allocator from the blocks the slot table references. */
void fw_arena_rebuild(fw_seg *s);

/* Check the free lists and the map against each other and the slots;
 * returns 0 or a negative number naming the first broken rule. */
int fw_arena_check(fw_seg *s, uint64_t *used_units_out);

#endif
