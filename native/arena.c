/*
 * Buddy allocator over the arena.  Unit = 1 KiB (FW_ARENA_MIN_ORDER).  The
 * map holds one byte per unit: for the first unit of a block, its order
 * (biased so that 0 means "not a block head") and FW_MAP_FREE if it is free.
 * Free blocks of each order form a doubly linked list whose links live in
 * the first 8 bytes of the free block itself.
 */
#include "arena.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t next;
    uint32_t prev;
} free_link;

#define NORDERS (FW_ARENA_MAX_ORDER - FW_ARENA_MIN_ORDER + 1)

static inline free_link *link_of(fw_seg *s, uint32_t unit) { return (free_link *)fw_arena_ptr(s, unit); }
static inline uint32_t units_of(uint32_t order) { return 1u << (order - FW_ARENA_MIN_ORDER); }
static inline uint8_t map_byte(uint32_t order, int free_) { return (uint8_t)((order - FW_ARENA_MIN_ORDER + 1) | (free_ ? FW_MAP_FREE : 0)); }
static inline uint32_t map_order(uint8_t b) { return (b & FW_MAP_ORDER_MASK) + FW_ARENA_MIN_ORDER - 1; }

uint32_t fw_arena_order_for(uint64_t len)
{
    uint32_t order = FW_ARENA_MIN_ORDER;
    while (order < 63 && (1ULL << order) < len)
        order++;
    return order;
}

static void push_free(fw_seg *s, uint32_t unit, uint32_t order)
{
    uint32_t *head = &s->h->arena_free_heads[order - FW_ARENA_MIN_ORDER];
    free_link *l = link_of(s, unit);
    l->next = *head;
    l->prev = FW_NONE;
    if (*head != FW_NONE)
        link_of(s, *head)->prev = unit;
    *head = unit;
    s->arena_map[unit] = map_byte(order, 1);
    s->h->arena_free_units += units_of(order);
}

static void unlink_free(fw_seg *s, uint32_t unit, uint32_t order)
{
    free_link *l = link_of(s, unit);
    if (l->prev != FW_NONE)
        link_of(s, l->prev)->next = l->next;
    else
        s->h->arena_free_heads[order - FW_ARENA_MIN_ORDER] = l->next;
    if (l->next != FW_NONE)
        link_of(s, l->next)->prev = l->prev;
    s->arena_map[unit] = 0;
    s->h->arena_free_units -= units_of(order);
}

/* Cover [start, end) units with the largest aligned free blocks. */
static void free_range(fw_seg *s, uint32_t start, uint32_t end)
{
    while (start < end) {
        uint32_t order = FW_ARENA_MIN_ORDER;
        while (order < FW_ARENA_MAX_ORDER) {
            uint32_t bigger = units_of(order + 1);
            if (start % bigger != 0 || start + bigger > end)
                break;
            order++;
        }
        push_free(s, start, order);
        start += units_of(order);
    }
}

static void reset(fw_seg *s)
{
    memset(s->arena_map, 0, s->h->arena_units);
    for (uint32_t i = 0; i < NORDERS; i++)
        s->h->arena_free_heads[i] = FW_NONE;
    s->h->arena_free_units = 0;
}

void fw_arena_init(fw_seg *s)
{
    reset(s);
    free_range(s, 0, s->h->arena_units);
}

static int arena_ready(fw_seg *s)
{
    return __atomic_load_n(&s->h->arena_state, __ATOMIC_ACQUIRE) == FW_ARENA_READY;
}

int fw_arena_alloc(fw_seg *s, uint32_t order, uint32_t *unit_out)
{
    if (order > s->h->arena_max_order)
        return FW_E_TOOBIG;
    if (!arena_ready(s))
        return __atomic_load_n(&s->h->arena_state, __ATOMIC_ACQUIRE) == FW_ARENA_FAILED ? FW_E_ARENA_FAILED
                                                                                         : FW_E_ARENA_FULL;
    uint32_t have = order;
    while (have <= s->h->arena_max_order && s->h->arena_free_heads[have - FW_ARENA_MIN_ORDER] == FW_NONE)
        have++;
    if (have > s->h->arena_max_order)
        return FW_E_ARENA_FULL;
    uint32_t unit = s->h->arena_free_heads[have - FW_ARENA_MIN_ORDER];
    unlink_free(s, unit, have);
    while (have > order) { /* split, keeping the lower half */
        have--;
        push_free(s, unit + units_of(have), have);
    }
    s->arena_map[unit] = map_byte(order, 0);
    *unit_out = unit;
    return FW_OK;
}

void fw_arena_free(fw_seg *s, uint32_t unit)
{
    uint32_t order = map_order(s->arena_map[unit]);
    s->arena_map[unit] = 0;
    while (order < s->h->arena_max_order) {
        uint32_t buddy = unit ^ units_of(order);
        if (buddy + units_of(order) > s->h->arena_units)
            break;
        uint8_t b = s->arena_map[buddy];
        if (!(b & FW_MAP_FREE) || map_order(b) != order)
            break;
        unlink_free(s, buddy, order);
        unit = unit < buddy ? unit : buddy;
        order++;
    }
    push_free(s, unit, order);
}

typedef struct {
    uint32_t unit;
    uint32_t order;
} live_block;

static int by_unit(const void *a, const void *b)
{
    uint32_t x = ((const live_block *)a)->unit, y = ((const live_block *)b)->unit;
    return (x > y) - (x < y);
}

void fw_arena_rebuild(fw_seg *s)
{
    if (!arena_ready(s))
        return; /* nothing was ever allocated from it */
    uint32_t n = s->h->nslots, live = 0;
    live_block *blocks = malloc(sizeof(live_block) * (n ? n : 1));
    for (uint32_t i = 0; i < n; i++) {
        fw_slot *sl = &s->slots[i];
        if (sl->state != FW_SLOT_FREE && sl->block != FW_NONE && blocks) {
            blocks[live].unit = sl->block;
            blocks[live].order = sl->block_order;
            live++;
        } else if (sl->state == FW_SLOT_FREE) {
            sl->block = FW_NONE;
        }
    }
    reset(s);
    if (!blocks) { /* no memory to sort: forget every block rather than corrupt the map */
        free_range(s, 0, s->h->arena_units);
        for (uint32_t i = 0; i < n; i++)
            s->slots[i].block = FW_NONE;
        return;
    }
    qsort(blocks, live, sizeof(live_block), by_unit);
    uint32_t at = 0;
    for (uint32_t i = 0; i < live; i++) {
        free_range(s, at, blocks[i].unit);
        s->arena_map[blocks[i].unit] = map_byte(blocks[i].order, 0);
        at = blocks[i].unit + units_of(blocks[i].order);
    }
    free_range(s, at, s->h->arena_units);
    free(blocks);
}

int fw_arena_check(fw_seg *s, uint64_t *used_units_out)
{
    if (!arena_ready(s)) {
        if (used_units_out)
            *used_units_out = 0;
        return 0;
    }
    uint64_t free_units = 0;
    for (uint32_t o = FW_ARENA_MIN_ORDER; o <= s->h->arena_max_order; o++) {
        uint32_t prev = FW_NONE;
        for (uint32_t u = s->h->arena_free_heads[o - FW_ARENA_MIN_ORDER]; u != FW_NONE; u = link_of(s, u)->next) {
            if (u >= s->h->arena_units || u % units_of(o) != 0)
                return -1;
            if (s->arena_map[u] != map_byte(o, 1))
                return -2;
            if (link_of(s, u)->prev != prev)
                return -3;
            prev = u;
            free_units += units_of(o);
            if (free_units > s->h->arena_units)
                return -4; /* a cycle */
        }
    }
    if (free_units != s->h->arena_free_units)
        return -5;
    uint64_t used = 0;
    for (uint32_t i = 0; i < s->h->nslots; i++) {
        fw_slot *sl = &s->slots[i];
        if (sl->state == FW_SLOT_FREE || sl->block == FW_NONE)
            continue;
        if (sl->block >= s->h->arena_units || s->arena_map[sl->block] != map_byte(sl->block_order, 0))
            return -6;
        used += units_of(sl->block_order);
    }
    if (used + free_units != s->h->arena_units)
        return -7; /* a block leaked or was freed twice */
    if (used_units_out)
        *used_units_out = used;
    return 0;
}
