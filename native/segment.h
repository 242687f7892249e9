/* The process-local view of a shared segment, and creating or attaching one. */
#ifndef FASTWORKER_SEGMENT_H
#define FASTWORKER_SEGMENT_H

#include "layout.h"

#include <stdint.h>

/* Status codes shared by every native call: 0 is success; each negative
 * value maps to one exception in module.c (one table, see there). */
enum fw_status {
    FW_OK = 0,
    FW_E_SYS = -1,        /* an OS call failed; errno says which */
    FW_E_FOREIGN = -2,    /* not a fastworker segment (wrong magic) */
    FW_E_VERSION = -3,    /* a fastworker segment of another layout version */
    FW_E_CORRUPT = -4,    /* header geometry does not fit the object */
    FW_E_NOT_READY = -5,  /* the creator has not finished initialising it */
    FW_E_NOSPACE_SHM = -6,/* /dev/shm cannot hold the segment */
    FW_E_FULL = -7,       /* no free slot: back-pressure, retry later */
    FW_E_ARENA_FULL = -8, /* no arena block free now: back-pressure */
    FW_E_TOOBIG = -9,     /* payload larger than the arena's largest block */
    FW_E_STALE = -10,     /* the handle's slot was reused or reclaimed */
    FW_E_LOCK = -11,      /* the ring lock is unrecoverable */
    FW_E_ARG = -12,       /* an argument is out of range */
    FW_E_SHUTDOWN = -13,  /* the segment is shutting down */
    FW_E_ARENA_FAILED = -14, /* the arena's pages could not be reserved */
    FW_E_ARENA_STUCK = -15, /* no block can ever free up for a result: queued arguments hold the arena */
};

typedef struct fw_seg fw_seg;

struct fw_seg {
    uint8_t *base;
    uint64_t size;
    fw_header *h;
    fw_worker *workers;
    fw_client *clients;
    fw_slot *slots;
    uint8_t *arena_map;
    uint8_t *arena;
    uint32_t pid;               /* this process, cached (fork resets it in module.c) */
    /* Called around a wait on a contended lock, so the binding can release
     * the GIL there; ring.c knows nothing of Python. */
    void *(*block_begin)(void);
    void (*block_end)(void *);
};

typedef struct {
    uint32_t nslots;
    uint64_t arena_size;
    uint32_t max_workers;
    uint32_t max_clients;
    uint32_t owner_pid;
    uint64_t owner_start_time;
    uint64_t epoch;
} fw_geometry;

/* Size of the segment for a geometry (0 if the geometry is out of range). */
uint64_t fw_segment_size(const fw_geometry *g);

/* Create, size (posix_fallocate: a too-small /dev/shm fails here, never with
 * SIGBUS later), map and initialise a new segment with mode 0600.  The
 * arena's pages are reserved now if reserve_arena, else by a later
 * fw_seg_reserve_arena (until then no arena block is handed out). */
int fw_seg_create(const char *name, const fw_geometry *g, int reserve_arena, fw_seg *out);

/* Reserve the arena's pages of a segment created without them: 0 or an
 * errno.  Takes no lock (it may run long; call it without the GIL). */
int fw_seg_fallocate_arena(fw_seg *s, const char *name);

/* Then open the arena for allocation (err == 0) or mark it failed, under
 * the ring lock.  Does nothing if the arena is no longer pending. */
int fw_seg_open_arena(fw_seg *s, int err);

/* Map an existing segment and check its identity and geometry. */
int fw_seg_attach(const char *name, fw_seg *out);

/* Check a mapped header (used by attach; exported for tests). */
int fw_seg_validate(const uint8_t *base, uint64_t size);

void fw_seg_close(fw_seg *s);

#endif
