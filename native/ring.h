/* The priority ring: lanes, slots, done lists, the robust lock and its
 * recovery.  Plain C over a mapped segment; no Python. */
#ifndef FASTWORKER_RING_H
#define FASTWORKER_RING_H

#include "segment.h"

#include <stdint.h>

static inline uint64_t fw_handle(uint32_t idx, uint32_t gen) { return ((uint64_t)gen << 32) | idx; }
static inline uint32_t fw_handle_idx(uint64_t h) { return (uint32_t)h; }
static inline uint32_t fw_handle_gen(uint64_t h) { return (uint32_t)(h >> 32); }

/* A task as a worker takes it: the payload stays in shared memory (inline
 * or in an arena block) and is read by the caller before completing. */
typedef struct {
    uint64_t handle;
    uint64_t tag;
    uint32_t client;
    uint32_t fn_id;
    uint32_t flags;
    uint32_t lane;
    uint32_t len;
    const uint8_t *data;
} fw_taken;

/* A piece of a result written at `offset` of its payload: a result laid out
 * by the caller (out-of-band buffers) is copied straight into place. */
typedef struct {
    uint64_t offset;
    const uint8_t *data;
    uint32_t len;
} fw_part;

/* One task to submit: `len` bytes from `data`, or, when nparts > 0, laid out
 * from `parts` (copied straight into place). */
typedef struct {
    uint32_t lane;
    uint32_t fn_id;
    uint32_t flags;
    uint64_t tag;
    const uint8_t *data;
    uint32_t len;
    const fw_part *parts;
    uint32_t nparts;
} fw_submission;

/* Take the lock for `op` on `slot`.  A dead previous holder is recovered
 * here (indexes rebuilt from the slot table) before the mutex is marked
 * consistent.  FW_E_LOCK if the mutex is unrecoverable. */
int fw_lock(fw_seg *s, uint32_t op, uint32_t slot);
void fw_unlock(fw_seg *s);

/* Submit n tasks for `client`, all or none.  Payloads up to FW_INLINE_CAP
 * are copied under the lock; bigger ones get arena blocks, are copied
 * outside the lock, then published.  handles_out[i] for each.  FW_E_FULL /
 * FW_E_ARENA_FULL when there is no room now, FW_E_TOOBIG when a payload can
 * never fit.  Wakes sleeping workers. */
int fw_submit(fw_seg *s, uint32_t client, const fw_submission *subs, uint32_t n, uint64_t *handles_out);

/* Take the most urgent queued task for worker (widx, incarnation), without
 * sleeping.  1 if one was taken, 0 if the lanes are empty. */
int fw_take(fw_seg *s, uint32_t widx, uint32_t incarnation, fw_taken *out);

/* Sleep until work may be there (or timeout_ns passes, or a signal).  The
 * worker's sleeping bit is set around the sleep so submitters wake it. */
int fw_take_wait(fw_seg *s, uint32_t widx, uint32_t incarnation, int64_t timeout_ns, fw_taken *out);

/* Complete a running task with a result of len bytes, given as parts (one
 * part at offset 0 for a contiguous result; gaps are left as they are).  If the result does
 * not fit in the slot, an arena block is allocated, filled outside the lock
 * and then published.  FW_E_STALE if the slot is no longer this worker's
 * (reclaimed).  *notify_out is set when the client must be woken through
 * its eventfd (it had armed it).  With `next`, the worker's next task is
 * taken under the same lock (*took_out says whether there was one). */
int fw_complete(fw_seg *s, uint64_t handle, uint32_t widx, uint32_t incarnation, uint32_t status,
                uint32_t flags, const fw_part *parts, uint32_t nparts, uint32_t len, int *notify_out,
                uint32_t *client_out, fw_taken *next, int *took_out);

/* Move up to max DONE slots of `client` to HELD and return their indexes in
 * completion order.  The caller reads them, then releases them. */
uint32_t fw_drain(fw_seg *s, uint32_t client, uint32_t *idx_out, uint32_t max);

/* Free HELD slots (and their arena blocks) after the client read them. */
int fw_release(fw_seg *s, const uint32_t *idx, uint32_t n);

/* Arm the client's wake-up; returns 1 if results are already waiting (the
 * caller should drain again rather than sleep). */
int fw_arm(fw_seg *s, uint32_t client);

/* Cancel a queued task of `client`: 1 if removed (it will never run), 0 if
 * it is no longer queued. */
int fw_cancel(fw_seg *s, uint32_t client, uint64_t handle);

/* Fail the task a dead worker was running with an error payload (truncated
 * to what fits inline).  Writes up to max (handle, client) pairs. */
uint32_t fw_reclaim_worker(fw_seg *s, uint32_t widx, uint32_t incarnation, uint32_t status, const uint8_t *err,
                           uint32_t errlen, uint64_t *handles_out, uint32_t *clients_out, uint32_t max);

/* Stop the worker running `handle`: it takes nothing more, the caller kills
 * it.  1 and the worker's (index, incarnation) if the task was running, 0 if
 * not (queued, finished, or another task now), < 0 on error. */
int fw_stop_running(fw_seg *s, uint64_t handle, uint32_t *widx_out, uint32_t *incarnation_out);

/* Workers whose running task passed the deadline it set: each is stopped as
 * by fw_stop_running and returned, for the caller to kill. */
typedef struct {
    uint32_t worker;
    uint32_t incarnation;
    uint64_t handle;
    uint32_t timeout_ms;
} fw_expiry;
uint32_t fw_expired(fw_seg *s, uint64_t now_ns, fw_expiry *out, uint32_t max);

/* The earliest deadline of a running task (CLOCK_MONOTONIC ns), 0 if none; read without the lock. */
uint64_t fw_next_deadline(fw_seg *s);

/* Tell producers waiting for a slot or an arena block that one was freed. */
void fw_space_freed(fw_seg *s);

/* Counts of slots by state and a consistency check of every index. */
typedef struct {
    uint32_t by_state[6];
    uint32_t queued_by_lane[FW_LANES];
    uint32_t free_listed;
    uint32_t done_listed;
    uint64_t arena_used_units;
    int error; /* 0, or a negative code naming the first broken invariant */
} fw_census;

int fw_check(fw_seg *s, fw_census *out);

/* Take a free entry of the client table (its generation bumped). */
int fw_client_open(fw_seg *s, uint32_t pid, uint32_t *client_out, uint32_t *gen_out);
int fw_client_close(fw_seg *s, uint32_t client);

/* Give every task of client `from` to client `to` (the control plane): queued
 * and running ones keep going and complete to `to`, finished ones move to
 * `to`'s done list; `mark` goes into the top 16 bits of each task's tag so
 * `to` can tell whose they were.  `from` is closed.  Returns how many
 * results were delivered to `to` (>= 0), *moved_out how many tasks moved. */
int fw_client_handover(fw_seg *s, uint32_t from, uint32_t to, uint32_t mark, uint32_t *moved_out);

/* How long a worker may spin for work before it sleeps (0: never), and how
 * many cores the engine may use (it spins only with one to spare). */
void fw_set_spin(fw_seg *s, uint64_t ns, uint32_t ncpus);

/* Refuse new work and wake every sleeper so it can see that. */
void fw_shutdown(fw_seg *s);

/* Tests only: make this process die (SIGKILL) in the middle of the next
 * operation `op` while it holds the ring lock. */
void fw_set_crash_point(uint32_t op);

#endif
