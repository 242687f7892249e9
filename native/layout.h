/*
 * The shared segment, byte by byte.
 *
 * One POSIX shared-memory object per engine instance, created by the parent
 * (the embedded Client or the control plane) and mapped by every worker and
 * attached client.  Every offset below is relative to the segment's base, so
 * each process may map it at a different address.  All integers are native
 * (little-endian on every platform fastworker supports).
 *
 *   0x0000  fw_header      one page: identity, geometry, the ring lock, the
 *                          intent record, lanes, free list, wake-up words
 *   workers_off            fw_worker[max_workers]   one cache line each
 *   clients_off            fw_client[max_clients]   two cache lines each
 *   slots_off              fw_slot[nslots]          256 B each
 *   arena_map_off          u8[arena_units]          buddy allocator byte map
 *   arena_off              arena_size bytes         page aligned, big payloads
 *
 * Truth and indexes.  The slot table is the truth: each slot's `state` is
 * written last, under the lock, and is the commit point of every operation.
 * Lanes, the free list, the per-client done lists and the arena's free lists
 * are indexes derived from it.  A process that dies holding the lock can
 * leave an index half-updated; whoever next gets EOWNERDEAD rebuilds all the
 * indexes from the slot table (ring.c: fw_rebuild) before it marks the
 * mutex consistent.  That is what the intent record is for: it says which
 * operation was interrupted, by whom, on which slot.
 *
 * Change anything here and bump FW_LAYOUT_VERSION: attaching refuses a
 * segment of another version.
 */
#ifndef FASTWORKER_LAYOUT_H
#define FASTWORKER_LAYOUT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define FW_MAGIC 0x3130474e49525746ULL /* "FWRING01" read as little-endian u64 */
#define FW_LAYOUT_VERSION 3u

#define FW_CACHE_LINE 64u
#define FW_PAGE 4096u
#define FW_HEADER_SIZE 4096u
#define FW_SLOT_SIZE 256u
#define FW_SLOT_HEAD 80u
#define FW_INLINE_CAP (FW_SLOT_SIZE - FW_SLOT_HEAD) /* 176 bytes of payload in the slot */
#define FW_LANES 4u                                  /* CRITICAL, HIGH, NORMAL, LOW */
#define FW_MAX_WORKERS 256u
#define FW_MAX_CLIENTS 1024u
#define FW_MAX_SLOTS (1u << 20)
#define FW_NONE 0xffffffffu /* "no slot" / "no block" in links and references */

/* Arena: a buddy allocator of power-of-two blocks from 1 KiB up. */
#define FW_ARENA_MIN_ORDER 10u
#define FW_ARENA_MAX_ORDER 40u
#define FW_MAP_FREE 0x80u      /* map byte of a free block's first unit */
#define FW_MAP_ORDER_MASK 0x3fu /* map byte: order - FW_ARENA_MIN_ORDER + 1; 0 = not a block head */

/* Slot states.  FREE -> QUEUED (submit) -> RUNNING (take) -> DONE (complete)
 * -> HELD (client drains) -> FREE.  RESERVED: a submitter owns the slot while
 * it copies a big payload into the arena outside the lock. */
enum fw_slot_state {
    FW_SLOT_FREE = 0,
    FW_SLOT_RESERVED = 1,
    FW_SLOT_QUEUED = 2,
    FW_SLOT_RUNNING = 3,
    FW_SLOT_DONE = 4,
    FW_SLOT_HELD = 5,
};

/* Outcome written by whoever completes a slot. */
enum fw_result_status {
    FW_RESULT_NONE = 0,
    FW_RESULT_SUCCESS = 1,
    FW_RESULT_FAILURE = 2,
    FW_RESULT_CANCELLED = 3, /* stopped while running (its worker was killed on purpose) */
};

/* Operations named in the intent record. */
enum fw_op {
    FW_OP_NONE = 0,
    FW_OP_SUBMIT = 1,
    FW_OP_TAKE = 2,
    FW_OP_COMPLETE = 3,
    FW_OP_DRAIN = 4,
    FW_OP_RELEASE = 5,
    FW_OP_CANCEL = 6,
    FW_OP_RECLAIM = 7,
    FW_OP_ALLOC = 8,
    FW_OP_PUBLISH = 9,
    FW_OP_CLIENT = 10,
    FW_OP_COUNT = 11,
};

/* The arena's pages are reserved (posix_fallocate) after the segment is
 * created, by the fork server, so that a big arena does not delay the start;
 * no block is handed out before that has succeeded. */
enum fw_arena_state {
    FW_ARENA_PENDING = 0,
    FW_ARENA_READY = 1,
    FW_ARENA_FAILED = 2,
};

/* Header flags. */
#define FW_FLAG_SHUTDOWN 1u

/* Worker states (fw_worker.state). */
enum fw_worker_state {
    FW_WORKER_EMPTY = 0,
    FW_WORKER_IDLE = 1,
    FW_WORKER_BUSY = 2,
    FW_WORKER_SLEEPING = 3,
    FW_WORKER_GONE = 4,
};

typedef struct {
    uint32_t head;
    uint32_t tail;
    uint32_t count;
    uint32_t _pad;
} fw_lane;

typedef struct {
    uint32_t op;    /* enum fw_op in progress, FW_OP_NONE when the lock is free */
    uint32_t pid;   /* who holds the lock */
    uint32_t slot;  /* the slot the operation is about, or FW_NONE */
    uint32_t _pad;
    uint64_t count; /* how many times a dead holder's operation was recovered */
    uint64_t last_op_pid; /* (op << 32) | pid of the last recovered operation */
} fw_intent;

typedef struct {
    /* 0x000 identity and geometry: written once by the creator */
    uint64_t magic;
    uint32_t layout_version;
    uint32_t header_size;
    uint64_t total_size;
    uint32_t owner_pid;
    uint32_t flags;            /* FW_FLAG_*, atomic */
    uint64_t owner_start_time; /* /proc/<pid>/stat field 22: guards against pid reuse */
    uint64_t epoch;            /* random, chosen at creation */
    uint32_t nslots;
    uint32_t slot_size;
    uint32_t max_workers;
    uint32_t max_clients;
    uint64_t workers_off;
    uint64_t clients_off;
    uint64_t slots_off;
    uint64_t arena_map_off;
    uint64_t arena_off;
    uint64_t arena_size;
    uint32_t arena_units;      /* arena_size >> FW_ARENA_MIN_ORDER */
    uint32_t arena_max_order;  /* largest block order the arena holds */
    uint32_t ready;            /* set last by the creator, with release order */
    uint32_t arena_state;      /* enum fw_arena_state */
    uint32_t arena_errno;      /* why reserving the arena failed */
    uint8_t _pad0[0x100 - 0x84];

    /* 0x100 the ring lock, alone on its lines */
    union {
        pthread_mutex_t mutex;
        uint8_t _space[128];
    } lock;

    /* 0x180 intent record: written under the lock */
    fw_intent intent;
    uint8_t _pad1[FW_CACHE_LINE - sizeof(fw_intent)];

    /* 0x1c0 ring indexes: under the lock */
    fw_lane lanes[FW_LANES];      /* 64 B */
    uint32_t free_head;
    uint32_t free_count;
    uint64_t next_seq;            /* FIFO order of submits and completions */
    uint64_t submitted;
    uint64_t completed;
    uint64_t cancelled;
    uint64_t reclaimed;
    uint64_t arena_free_units;
    uint32_t arena_free_heads[FW_ARENA_MAX_ORDER - FW_ARENA_MIN_ORDER + 1]; /* unit index or FW_NONE */
    uint8_t _pad2[0x300 - 0x238 - 4 * (FW_ARENA_MAX_ORDER - FW_ARENA_MIN_ORDER + 1)];

    /* 0x300 futex word the workers sleep on; bumped by every submit */
    uint32_t work_seq;
    uint32_t futex_wakes; /* how many FUTEX_WAKE calls submitters made (a test reads it) */
    uint8_t _pad3[FW_CACHE_LINE - 8];

    /* 0x340 one bit per sleeping worker (atomic or/and) */
    uint64_t sleeping[FW_MAX_WORKERS / 64];
    uint8_t _pad4[FW_CACHE_LINE - 8 * (FW_MAX_WORKERS / 64)];

    /* 0x380 futex word bumped whenever arena blocks or slots are freed, for
     * producers waiting for space; waiters count themselves in space_waiters */
    uint32_t space_seq;
    uint32_t space_waiters;
    uint8_t _pad5[FW_CACHE_LINE - 8];

    /* 0x3c0 spinning: at most one worker spins before it sleeps (the token),
     * for at most spin_ns; 0 turns spinning off (set by the owner) */
    uint32_t spinner;        /* 0, or the spinning worker's index + 1 */
    uint32_t ncpus;          /* cores this engine may use: spinning needs one to spare */
    uint64_t spin_ns;
    uint64_t spin_deadline;  /* CLOCK_MONOTONIC ns when the current spin ends */
    uint64_t spin_hits;      /* spins that found work */
    uint64_t spin_misses;
    uint64_t rescues;        /* sleeps that ended by their safety timeout with work queued */
    uint64_t failed;         /* tasks completed with FAILURE (under the ring lock) */
    uint8_t _pad7[FW_CACHE_LINE - 56];
} fw_header;

typedef struct {
    uint32_t pid;
    uint32_t incarnation;  /* bumped by the parent each time the index is reused */
    uint32_t state;        /* enum fw_worker_state */
    uint32_t current_slot; /* slot being run, FW_NONE when idle */
    uint64_t tasks_done;
    uint64_t wakeups;      /* times this worker returned from a futex sleep */
    uint64_t started_ns;
    uint64_t deadline_ns;  /* CLOCK_MONOTONIC ns when the running task's time is up, 0: none */
    uint32_t timeout_ms;   /* the limit that deadline enforces, for the error message */
    uint32_t stop;         /* the incarnation the parent is killing (set under the lock): it takes nothing more */
    uint8_t _pad[FW_CACHE_LINE - 56];
} fw_worker;

typedef struct {
    /* line 0: under the lock */
    uint32_t pid;
    uint32_t gen;        /* bumped on every (re)use of the entry: ABA guard */
    uint32_t in_use;
    uint32_t done_head;  /* FIFO of DONE slots for this client */
    uint32_t done_tail;
    uint32_t done_count; /* also read without the lock (atomic) by arm() */
    uint64_t submitted;
    uint64_t completed;
    uint64_t notifies;   /* eventfd writes made for this client */
    uint8_t _pad0[FW_CACHE_LINE - 48];
    /* line 1: the armed word, written by the client and swapped by workers */
    uint32_t armed;
    uint8_t _pad1[FW_CACHE_LINE - 4];
} fw_client;

typedef struct {
    uint32_t state;       /* enum fw_slot_state; the commit word, written last */
    uint32_t gen;         /* bumped when the slot is freed: a handle is (gen << 32) | index */
    uint32_t next;        /* link in the free list, a lane or a done list */
    uint32_t prev;        /* back link in a lane (O(1) cancel) */
    uint16_t client;
    uint8_t lane;
    uint8_t status;       /* enum fw_result_status */
    uint16_t worker;
    uint16_t incarnation;
    uint64_t seq;         /* order key: submit order while queued, completion order when done */
    uint32_t fn_id;
    uint32_t flags;       /* codec flags of the payload (arguments, then result) */
    uint32_t len;         /* payload length */
    uint32_t block;       /* arena unit of the payload, FW_NONE when inline */
    uint8_t block_order;
    uint8_t _pad0[3];
    uint32_t client_gen;  /* the client entry's generation when submitted: a later user of
                             the entry never sees this task */
    uint64_t t_start;     /* CLOCK_REALTIME ns */
    uint64_t t_end;
    uint64_t tag;         /* the submitter's own number for the task */
    uint8_t inline_data[FW_INLINE_CAP];
} fw_slot;

_Static_assert(sizeof(fw_header) <= FW_HEADER_SIZE, "header must fit its page");
_Static_assert(offsetof(fw_header, lock) == 0x100, "lock offset");
_Static_assert(offsetof(fw_header, intent) == 0x180, "intent offset");
_Static_assert(offsetof(fw_header, lanes) == 0x1c0, "lanes offset");
_Static_assert(offsetof(fw_header, work_seq) == 0x300, "work_seq offset");
_Static_assert(offsetof(fw_header, sleeping) == 0x340, "sleeping offset");
_Static_assert(offsetof(fw_header, space_seq) == 0x380, "space_seq offset");
_Static_assert(sizeof(pthread_mutex_t) <= 128, "mutex fits its reserve");
_Static_assert(sizeof(fw_worker) == FW_CACHE_LINE, "worker entry is one line");
_Static_assert(sizeof(fw_client) == 2 * FW_CACHE_LINE, "client entry is two lines");
_Static_assert(offsetof(fw_slot, inline_data) == FW_SLOT_HEAD, "slot head size");
_Static_assert(sizeof(fw_slot) == FW_SLOT_SIZE, "slot size");

#endif
