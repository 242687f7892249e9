/*
 * The priority ring.  Every public function takes the ring lock for the
 * shortest time it can: payloads are encoded and decoded by the caller
 * outside, big copies happen with the lock released, and wake-up syscalls
 * are made after unlocking.
 *
 * Commit rule (see layout.h): within a locked operation each slot's `state`
 * is written after the fields it vouches for and before the indexes that
 * point to it are linked.  fw_rebuild therefore can rebuild every index
 * from the states alone, whatever instruction a dead holder stopped at.
 */
#include "ring.h"
#include "arena.h"
#include "wake.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)

/* Copies at least this big are made with the GIL released. */
#define FW_BIG_COPY (64u * 1024u)

static uint32_t crash_op = FW_OP_NONE;
#define CRASH_POINT(op_)                                  \
    do {                                                  \
        if (__builtin_expect(crash_op == (op_), 0))       \
            raise(SIGKILL);                               \
    } while (0)

void fw_set_crash_point(uint32_t op) { crash_op = op; }

/* ---------------------------------------------------------------- lists */

static void lane_push(fw_seg *s, uint32_t lane, uint32_t idx)
{
    fw_lane *L = &s->h->lanes[lane];
    fw_slot *sl = &s->slots[idx];
    sl->next = FW_NONE;
    sl->prev = L->tail;
    if (L->tail != FW_NONE)
        s->slots[L->tail].next = idx;
    else
        L->head = idx;
    L->tail = idx;
    L->count++;
}

static void lane_unlink(fw_seg *s, uint32_t lane, uint32_t idx)
{
    fw_lane *L = &s->h->lanes[lane];
    fw_slot *sl = &s->slots[idx];
    if (sl->prev != FW_NONE)
        s->slots[sl->prev].next = sl->next;
    else
        L->head = sl->next;
    if (sl->next != FW_NONE)
        s->slots[sl->next].prev = sl->prev;
    else
        L->tail = sl->prev;
    sl->next = sl->prev = FW_NONE;
    L->count--;
}

static void done_push(fw_seg *s, uint32_t client, uint32_t idx)
{
    fw_client *c = &s->clients[client];
    s->slots[idx].next = FW_NONE;
    if (c->done_tail != FW_NONE)
        s->slots[c->done_tail].next = idx;
    else
        c->done_head = idx;
    c->done_tail = idx;
    ADD(&c->done_count, 1);
}

static void free_push(fw_seg *s, uint32_t idx)
{
    fw_slot *sl = &s->slots[idx];
    sl->gen++;
    sl->status = FW_RESULT_NONE;
    sl->prev = FW_NONE;
    sl->next = s->h->free_head;
    STORE_REL(&sl->state, FW_SLOT_FREE);
    s->h->free_head = idx;
    s->h->free_count++;
}

/* Free a slot's arena block; returns 1 if one was freed. */
static int drop_block(fw_seg *s, fw_slot *sl)
{
    if (sl->block == FW_NONE)
        return 0;
    uint32_t unit = sl->block;
    sl->block = FW_NONE; /* unreferenced first: a crash here leaks nothing after rebuild */
    fw_arena_free(s, unit);
    return 1;
}

/* After unlocking: tell producers waiting for room that there is some. */
void fw_space_freed(fw_seg *s)
{
    ADD(&s->h->space_seq, 1);
    if (LOAD(&s->h->space_waiters) > 0)
        fw_futex_wake(&s->h->space_seq, 1 << 30);
}

/* Is the client that submitted this slot still the one in its table entry? */
static int client_current(fw_seg *s, const fw_slot *sl)
{
    const fw_client *c = &s->clients[sl->client];
    return c->in_use && c->gen == sl->client_gen;
}

/* ---------------------------------------------------------- the lock */

static uint32_t self_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;
static void refresh_pid(void) { self_pid = (uint32_t)getpid(); }
static void init_pid(void)
{
    refresh_pid();
    pthread_atfork(NULL, NULL, refresh_pid);
}

typedef struct {
    uint64_t seq;
    uint32_t key;
    uint32_t idx;
} order_item;

static int by_key_seq(const void *a, const void *b)
{
    const order_item *x = a, *y = b;
    if (x->key != y->key)
        return (x->key > y->key) - (x->key < y->key);
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Rebuild lanes, the free list, the done lists and the arena from the slot
 * states.  Called with the lock held after EOWNERDEAD. */
static void rebuild(fw_seg *s)
{
    fw_header *h = s->h;
    uint32_t n = h->nslots;
    order_item *items = malloc(sizeof(order_item) * (n ? n : 1));
    uint32_t m = 0;

    for (uint32_t l = 0; l < FW_LANES; l++) {
        h->lanes[l].head = h->lanes[l].tail = FW_NONE;
        h->lanes[l].count = 0;
    }
    for (uint32_t c = 0; c < h->max_clients; c++) {
        s->clients[c].done_head = s->clients[c].done_tail = FW_NONE;
        STORE(&s->clients[c].done_count, 0);
    }
    h->free_head = FW_NONE;
    h->free_count = 0;
    for (uint32_t i = n; i-- > 0;) {
        fw_slot *sl = &s->slots[i];
        if (sl->state == FW_SLOT_FREE) {
            sl->next = h->free_head;
            sl->prev = FW_NONE;
            h->free_head = i;
            h->free_count++;
        } else if (sl->state != FW_SLOT_RUNNING && sl->client < h->max_clients && !client_current(s, sl)) {
            /* its client closed: nobody will read or release it */
            sl->gen++;
            sl->block = FW_NONE; /* the arena is rebuilt below from referenced blocks */
            sl->state = FW_SLOT_FREE;
            sl->next = h->free_head;
            sl->prev = FW_NONE;
            h->free_head = i;
            h->free_count++;
        } else if (items && (sl->state == FW_SLOT_QUEUED || sl->state == FW_SLOT_DONE)) {
            /* keys: lanes 0..3, then 4 + client for done lists */
            items[m].key = sl->state == FW_SLOT_QUEUED ? (sl->lane < FW_LANES ? sl->lane : FW_LANES - 1)
                                                       : FW_LANES + sl->client;
            items[m].seq = sl->seq;
            items[m].idx = i;
            m++;
        }
    }
    if (items) {
        qsort(items, m, sizeof(order_item), by_key_seq);
        for (uint32_t k = 0; k < m; k++) {
            if (items[k].key < FW_LANES) {
                s->slots[items[k].idx].lane = (uint8_t)items[k].key;
                lane_push(s, items[k].key, items[k].idx);
            } else {
                done_push(s, items[k].key - FW_LANES, items[k].idx);
            }
        }
        free(items);
    }
    fw_arena_rebuild(s);
}

int fw_lock(fw_seg *s, uint32_t op, uint32_t slot)
{
    pthread_once(&pid_once, init_pid);
    pthread_mutex_t *m = &s->h->lock.mutex;
    int rc = pthread_mutex_trylock(m);
    if (rc == EBUSY) {
        void *st = s->block_begin ? s->block_begin() : NULL;
        rc = pthread_mutex_lock(m);
        if (s->block_end)
            s->block_end(st);
    }
    if (rc == EOWNERDEAD) {
        fw_intent *in = &s->h->intent;
        in->count++;
        in->last_op_pid = ((uint64_t)in->op << 32) | in->pid;
        rebuild(s);
        if (pthread_mutex_consistent(m) != 0) {
            pthread_mutex_unlock(m);
            return FW_E_LOCK;
        }
        rc = 0;
    }
    if (rc != 0)
        return FW_E_LOCK;
    s->h->intent.op = op;
    s->h->intent.pid = self_pid;
    s->h->intent.slot = slot;
    return FW_OK;
}

void fw_unlock(fw_seg *s)
{
    s->h->intent.op = FW_OP_NONE;
    pthread_mutex_unlock(&s->h->lock.mutex);
}

/* --------------------------------------------------------- wake-ups */

static int any_sleeping(fw_seg *s, int *count)
{
    int k = 0;
    for (uint32_t i = 0; i < FW_MAX_WORKERS / 64; i++)
        k += __builtin_popcountll(LOAD(&s->h->sleeping[i]));
    if (count)
        *count = k;
    return k > 0;
}

static void wake_workers(fw_seg *s, uint32_t n)
{
    ADD(&s->h->work_seq, 1);
    /* A spinning worker sees work_seq move and takes the work without a
     * syscall; if it has just given up, it announced its sleep before it
     * re-checked the lanes, so the sleeping bits below cover it.  The
     * deadline keeps a spinner that died (or never lets go) from silencing
     * every wake-up: past it, submitters wake sleepers as if none spun. */
    if (n == 1 && LOAD(&s->h->spinner) && fw_monotonic_ns() < LOAD(&s->h->spin_deadline))
        return;
    int sleepers;
    if (any_sleeping(s, &sleepers)) {
        int k = (int)n < sleepers ? (int)n : sleepers;
        ADD(&s->h->futex_wakes, 1);
        fw_futex_wake(&s->h->work_seq, k);
    }
}

static void set_sleeping(fw_seg *s, uint32_t widx, int on)
{
    uint64_t bit = 1ULL << (widx % 64);
    if (on)
        __atomic_fetch_or(&s->h->sleeping[widx / 64], bit, __ATOMIC_SEQ_CST);
    else
        __atomic_fetch_and(&s->h->sleeping[widx / 64], ~bit, __ATOMIC_SEQ_CST);
}

static void copy_maybe_unlocked(fw_seg *s, uint8_t *dst, const uint8_t *src, uint32_t len)
{
    if (len >= FW_BIG_COPY && s->block_begin) {
        void *st = s->block_begin();
        memcpy(dst, src, len);
        s->block_end(st);
    } else {
        memcpy(dst, src, len);
    }
}

static void copy_parts(fw_seg *s, uint8_t *dst, const fw_part *parts, uint32_t nparts, uint32_t len)
{
    for (uint32_t i = 0; i < nparts; i++)
        if (parts[i].offset + parts[i].len <= len)
            copy_maybe_unlocked(s, dst + parts[i].offset, parts[i].data, parts[i].len);
}

/* A submission's payload into place: its parts, or its one buffer. */
static void copy_submission(fw_seg *s, uint8_t *dst, const fw_submission *sub)
{
    if (sub->nparts)
        copy_parts(s, dst, sub->parts, sub->nparts, sub->len);
    else
        copy_maybe_unlocked(s, dst, sub->data, sub->len);
}

/* ----------------------------------------------------------- submit */

int fw_submit(fw_seg *s, uint32_t client, const fw_submission *subs, uint32_t n, uint64_t *handles_out)
{
    fw_header *h = s->h;
    if (n == 0)
        return FW_OK;
    if (client >= h->max_clients)
        return FW_E_ARG;
    for (uint32_t i = 0; i < n; i++)
        if (subs[i].lane >= FW_LANES)
            return FW_E_ARG;

    int rc = fw_lock(s, FW_OP_SUBMIT, FW_NONE);
    if (rc != FW_OK)
        return rc;
    if (LOAD(&h->flags) & FW_FLAG_SHUTDOWN) {
        fw_unlock(s);
        return FW_E_SHUTDOWN;
    }
    if (h->free_count < n) {
        fw_unlock(s);
        return FW_E_FULL;
    }
    /* Arena blocks first, so that running out of them changes nothing. */
    uint32_t big = 0;
    for (uint32_t i = 0; i < n; i++) {
        handles_out[i] = FW_NONE;
        if (subs[i].len <= FW_INLINE_CAP)
            continue;
        uint32_t unit;
        rc = fw_arena_alloc(s, fw_arena_order_for(subs[i].len), &unit);
        if (rc != FW_OK) {
            for (uint32_t j = 0; j < i; j++)
                if (handles_out[j] != FW_NONE)
                    fw_arena_free(s, (uint32_t)handles_out[j]);
            fw_unlock(s);
            return rc;
        }
        handles_out[i] = unit;
        big++;
    }
    for (uint32_t i = 0; i < n; i++) {
        const fw_submission *sub = &subs[i];
        uint32_t idx = h->free_head;
        fw_slot *sl = &s->slots[idx];
        h->free_head = sl->next;
        h->free_count--;
        CRASH_POINT(FW_OP_SUBMIT);
        sl->client = (uint16_t)client;
        sl->client_gen = s->clients[client].gen;
        sl->lane = (uint8_t)sub->lane;
        sl->status = FW_RESULT_NONE;
        sl->fn_id = sub->fn_id;
        sl->flags = sub->flags;
        sl->len = sub->len;
        sl->tag = sub->tag;
        sl->t_start = sl->t_end = 0;
        sl->worker = 0xffff;
        if (sub->len <= FW_INLINE_CAP) {
            sl->block = FW_NONE;
            copy_submission(s, sl->inline_data, sub);
        } else {
            sl->block = (uint32_t)handles_out[i];
            sl->block_order = (uint8_t)fw_arena_order_for(sub->len);
        }
        handles_out[i] = fw_handle(idx, sl->gen);
        if (big) {
            STORE_REL(&sl->state, FW_SLOT_RESERVED); /* published below, in input order */
        } else {
            sl->seq = h->next_seq++;
            STORE_REL(&sl->state, FW_SLOT_QUEUED);
            lane_push(s, sub->lane, idx);
        }
    }
    h->submitted += n;
    s->clients[client].submitted += n;
    fw_unlock(s);

    if (big) {
        for (uint32_t i = 0; i < n; i++) {
            fw_slot *sl = &s->slots[fw_handle_idx(handles_out[i])];
            if (sl->block != FW_NONE)
                copy_submission(s, fw_arena_ptr(s, sl->block), &subs[i]);
        }
        rc = fw_lock(s, FW_OP_PUBLISH, FW_NONE);
        if (rc != FW_OK)
            return rc;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t idx = fw_handle_idx(handles_out[i]);
            fw_slot *sl = &s->slots[idx];
            sl->seq = h->next_seq++;
            STORE_REL(&sl->state, FW_SLOT_QUEUED);
            lane_push(s, sl->lane, idx);
        }
        fw_unlock(s);
    }
    wake_workers(s, n);
    return FW_OK;
}

/* ------------------------------------------------------------- take */

/* Pop the most urgent queued task for the worker.  Lock held.  Returns 1
 * and fills *out, or 0; *left is how many stay queued. */
static int take_locked(fw_seg *s, uint32_t widx, uint32_t incarnation, fw_taken *out, uint32_t *left)
{
    fw_header *h = s->h;
    uint32_t lane = 0, idx = FW_NONE;
    if (s->workers[widx].stop == incarnation) { /* being killed: whatever it took would die with it */
        *left = 0;
        return 0;
    }
    for (; lane < FW_LANES; lane++) {
        if (h->lanes[lane].head != FW_NONE) {
            idx = h->lanes[lane].head;
            break;
        }
    }
    if (idx == FW_NONE) {
        *left = 0;
        return 0;
    }
    h->intent.op = FW_OP_TAKE;
    h->intent.slot = idx;
    lane_unlink(s, lane, idx);
    CRASH_POINT(FW_OP_TAKE);
    fw_slot *sl = &s->slots[idx];
    sl->worker = (uint16_t)widx;
    sl->incarnation = (uint16_t)incarnation;
    sl->t_start = fw_realtime_ns();
    STORE_REL(&sl->state, FW_SLOT_RUNNING);
    s->workers[widx].deadline_ns = 0; /* the worker sets its own once it knows the task's limit */
    s->workers[widx].current_slot = idx;
    s->workers[widx].state = FW_WORKER_BUSY;
    *left = h->lanes[0].count + h->lanes[1].count + h->lanes[2].count + h->lanes[3].count;

    out->handle = fw_handle(idx, sl->gen);
    out->tag = sl->tag;
    out->client = sl->client;
    out->fn_id = sl->fn_id;
    out->flags = sl->flags;
    out->lane = lane;
    out->len = sl->len;
    out->data = sl->block == FW_NONE ? sl->inline_data : fw_arena_ptr(s, sl->block);
    return 1;
}

/* After a take that left work queued: pass the wake-up on to one more
 * sleeping worker (a chain, never a herd).  The taker's own bit may still be
 * set (it announced a sleep it will not take), so it does not count. */
static void chain_wake(fw_seg *s, uint32_t widx)
{
    int k = 0;
    for (uint32_t i = 0; i < FW_MAX_WORKERS / 64; i++) {
        uint64_t bits = LOAD(&s->h->sleeping[i]);
        if (i == widx / 64)
            bits &= ~(1ULL << (widx % 64));
        k += __builtin_popcountll(bits);
    }
    if (k > 0) {
        ADD(&s->h->futex_wakes, 1);
        fw_futex_wake(&s->h->work_seq, 1);
    }
}

int fw_take(fw_seg *s, uint32_t widx, uint32_t incarnation, fw_taken *out)
{
    if (LOAD(&s->workers[widx].stop) == incarnation)
        return FW_E_SHUTDOWN; /* for this worker: its parent is killing it */
    int rc = fw_lock(s, FW_OP_TAKE, FW_NONE);
    if (rc != FW_OK)
        return rc;
    uint32_t left;
    int got = take_locked(s, widx, incarnation, out, &left);
    fw_unlock(s);
    if (got && left > 0)
        chain_wake(s, widx);
    return got;
}

/* Is a core spare for a spinner?  Busy workers and the client (counted as
 * awake) need theirs; spinning on a core somebody needs slows everyone. */
static int core_spare(fw_seg *s)
{
    uint32_t busy = 1; /* the client */
    for (uint32_t w = 0; w < s->h->max_workers; w++)
        busy += __atomic_load_n(&s->workers[w].state, __ATOMIC_RELAXED) == FW_WORKER_BUSY;
    return busy < __atomic_load_n(&s->h->ncpus, __ATOMIC_RELAXED);
}

/* Per worker process: consecutive spins that found nothing, and sleeps left
 * before spinning is tried again.  A worker that keeps spinning in vain (a
 * trickle of work) stops for a while: spinning must pay for itself. */
static __thread uint32_t spin_failures, spin_pause;

/* Spin briefly for new work instead of sleeping: one worker at a time (the
 * token), only with a core to spare, never when it keeps failing.
 * Returns 1 if work_seq moved past `seen`. */
static int spin_for_work(fw_seg *s, uint32_t widx, uint32_t seen)
{
    fw_header *h = s->h;
    uint64_t budget = __atomic_load_n(&h->spin_ns, __ATOMIC_RELAXED);
    if (budget == 0)
        return 0;
    if (spin_pause > 0) {
        spin_pause--;
        return 0;
    }
    uint32_t free_token = 0;
    if (LOAD(&h->spinner) != 0 || !core_spare(s) ||
        !__atomic_compare_exchange_n(&h->spinner, &free_token, widx + 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        return 0;
    uint64_t until = fw_monotonic_ns() + budget;
    STORE(&h->spin_deadline, until);
    int moved = 0;
    for (;;) {
        for (int i = 0; i < 32; i++) {
            if (__atomic_load_n(&h->work_seq, __ATOMIC_ACQUIRE) != seen) {
                moved = 1;
                break;
            }
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        if (moved || fw_monotonic_ns() >= until || (LOAD(&h->flags) & FW_FLAG_SHUTDOWN))
            break;
    }
    STORE(&h->spinner, 0);
    if (moved) {
        ADD(&h->spin_hits, 1);
        spin_failures = 0;
    } else {
        ADD(&h->spin_misses, 1);
        if (++spin_failures >= 4) {
            spin_failures = 0;
            spin_pause = 16;
        }
    }
    return moved;
}

#define FW_SAFETY_SLEEP (1000 * 1000000LL)

static int lanes_busy(fw_seg *s)
{
    for (uint32_t l = 0; l < FW_LANES; l++)
        if (__atomic_load_n(&s->h->lanes[l].count, __ATOMIC_RELAXED) > 0)
            return 1;
    return 0;
}

int fw_take_wait(fw_seg *s, uint32_t widx, uint32_t incarnation, int64_t timeout_ns, fw_taken *out)
{
    fw_header *h = s->h;
    if (LOAD(&s->workers[widx].stop) == incarnation)
        return FW_E_SHUTDOWN;
    uint32_t seen = LOAD(&h->work_seq);
    if (spin_for_work(s, widx, seen))
        return fw_take(s, widx, incarnation, out);
    /* Announce the sleep, then look once more: a submitter that pushed
     * before seeing our bit has also bumped work_seq past `seen`. */
    set_sleeping(s, widx, 1);
    s->workers[widx].state = FW_WORKER_SLEEPING;
    int got = fw_take(s, widx, incarnation, out);
    if (got != 0 || (LOAD(&h->flags) & FW_FLAG_SHUTDOWN)) {
        set_sleeping(s, widx, 0);
        if (got == 0)
            s->workers[widx].state = FW_WORKER_IDLE;
        return got != 0 ? got : FW_E_SHUTDOWN;
    }
    /* Never sleep unbounded: a sleep that outlasts FW_SAFETY_SLEEP re-checks
     * the lanes, and counts a rescue if work was waiting (a lost wake-up;
     * tests require none). */
    int64_t nap = (timeout_ns < 0 || timeout_ns > FW_SAFETY_SLEEP) ? FW_SAFETY_SLEEP : timeout_ns;
    void *st = s->block_begin ? s->block_begin() : NULL;
    int rc = fw_futex_wait(&h->work_seq, seen, nap);
    if (s->block_end)
        s->block_end(st);
    set_sleeping(s, widx, 0);
    s->workers[widx].state = FW_WORKER_IDLE;
    if (rc != ETIMEDOUT)
        s->workers[widx].wakeups++;
    else if (nap == FW_SAFETY_SLEEP && lanes_busy(s))
        ADD(&h->rescues, 1);
    if (LOAD(&h->flags) & FW_FLAG_SHUTDOWN)
        return FW_E_SHUTDOWN;
    return rc == EINTR ? -EINTR : 0;
}

/* --------------------------------------------------------- complete */

static int owns(fw_slot *sl, uint32_t gen, uint32_t widx, uint32_t incarnation)
{
    return sl->gen == gen && sl->state == FW_SLOT_RUNNING && sl->worker == (uint16_t)widx &&
           sl->incarnation == (uint16_t)incarnation;
}

/* Publish a finished slot to its client.  Lock held.  Returns 0 if the
 * client has closed meanwhile: the slot is freed, nobody is told. */
static int finish(fw_seg *s, uint32_t idx, uint32_t status, uint32_t flags, uint32_t len)
{
    fw_slot *sl = &s->slots[idx];
    int delivered = client_current(s, sl);
    sl->status = (uint8_t)status;
    sl->flags = flags;
    sl->len = len;
    sl->t_end = fw_realtime_ns();
    sl->seq = s->h->next_seq++;
    CRASH_POINT(FW_OP_COMPLETE);
    if (delivered) {
        STORE_REL(&sl->state, FW_SLOT_DONE);
        done_push(s, sl->client, idx);
        s->clients[sl->client].completed++;
    } else {
        uint32_t unit = sl->block;
        free_push(s, idx);
        if (unit != FW_NONE) {
            sl->block = FW_NONE;
            fw_arena_free(s, unit);
        }
    }
    s->h->completed++;
    if (status == FW_RESULT_FAILURE)
        s->h->failed++;
    else if (status == FW_RESULT_CANCELLED)
        s->h->cancelled++;
    if (sl->worker < s->h->max_workers) {
        fw_worker *w = &s->workers[sl->worker];
        if (w->current_slot == idx) {
            w->current_slot = FW_NONE;
            w->deadline_ns = 0;
            w->state = FW_WORKER_IDLE;
        }
        w->tasks_done++;
    }
    return delivered;
}

static int notify_armed(fw_seg *s, uint32_t client)
{
    if (__atomic_exchange_n(&s->clients[client].armed, 0, __ATOMIC_SEQ_CST)) {
        ADD(&s->clients[client].notifies, 1);
        return 1;
    }
    return 0;
}

/* Can an arena block ever free up for a result that found none?  Blocks are
 * freed when a client releases a result (a DONE or HELD slot) or when a
 * worker completes or drops a task.  Queued arguments keep theirs until a
 * worker takes them, and if every worker running a task is waiting here for
 * space, none ever will: with the ring full of tasks whose arguments fill the
 * arena, every worker would sleep forever beside a full queue.  Lock held;
 * the caller itself is one of the running. */
static int arena_stuck(fw_seg *s)
{
    uint32_t running = 0;
    for (uint32_t i = 0; i < s->h->nslots; i++) {
        uint32_t st = s->slots[i].state;
        if (st == FW_SLOT_DONE || st == FW_SLOT_HELD)
            return 0;
        running += st == FW_SLOT_RUNNING;
    }
    return running <= 1 + LOAD(&s->h->space_waiters);
}

int fw_complete(fw_seg *s, uint64_t handle, uint32_t widx, uint32_t incarnation, uint32_t status,
                uint32_t flags, const fw_part *parts, uint32_t nparts, uint32_t len, int *notify_out,
                uint32_t *client_out, fw_taken *next, int *took_out)
{
    uint32_t idx = fw_handle_idx(handle), gen = fw_handle_gen(handle);
    *notify_out = 0;
    if (idx >= s->h->nslots || widx >= s->h->max_workers)
        return FW_E_ARG;
    fw_slot *sl = &s->slots[idx];
    int freed = 0, rc;

    if (len > FW_INLINE_CAP) {
        uint32_t order = fw_arena_order_for(len);
        int stuck = 0; /* consecutive attempts that found the arena stuck */
        for (;;) {
            uint32_t seen = LOAD(&s->h->space_seq);
            if ((rc = fw_lock(s, FW_OP_ALLOC, idx)) != FW_OK)
                return rc;
            if (!owns(sl, gen, widx, incarnation)) {
                fw_unlock(s);
                return FW_E_STALE;
            }
            freed |= drop_block(s, sl); /* the arguments are no longer needed */
            uint32_t unit;
            rc = fw_arena_alloc(s, order, &unit);
            if (rc == FW_OK) {
                sl->block = unit;
                sl->block_order = (uint8_t)order;
            } else if (rc == FW_E_ARENA_FULL) {
                /* Twice in a row, a wait apart: a worker just woken to retry is
                 * still counted as waiting the first time. */
                stuck = arena_stuck(s) ? stuck + 1 : 0;
                if (stuck >= 2)
                    rc = FW_E_ARENA_STUCK;
            }
            fw_unlock(s);
            if (freed)
                fw_space_freed(s);
            freed = 0;
            if (rc == FW_OK)
                break;
            if (rc != FW_E_ARENA_FULL)
                return rc;
            /* Wait for a client to release results, then try again. */
            ADD(&s->h->space_waiters, 1);
            void *st = s->block_begin ? s->block_begin() : NULL;
            fw_futex_wait(&s->h->space_seq, seen, 100 * 1000000LL);
            if (s->block_end)
                s->block_end(st);
            __atomic_sub_fetch(&s->h->space_waiters, 1, __ATOMIC_SEQ_CST);
            if (LOAD(&s->h->flags) & FW_FLAG_SHUTDOWN)
                return FW_E_SHUTDOWN;
        }
        copy_parts(s, fw_arena_ptr(s, sl->block), parts, nparts, len);
    }
    if ((rc = fw_lock(s, FW_OP_COMPLETE, idx)) != FW_OK)
        return rc;
    if (!owns(sl, gen, widx, incarnation)) {
        fw_unlock(s);
        return FW_E_STALE;
    }
    if (len <= FW_INLINE_CAP) {
        freed = drop_block(s, sl);
        copy_parts(s, sl->inline_data, parts, nparts, len);
    }
    uint32_t client = sl->client;
    int delivered = finish(s, idx, status, flags, len);
    /* Take the next task under the same lock: one acquisition per task. */
    uint32_t left = 0;
    int took = next ? take_locked(s, widx, incarnation, next, &left) : 0;
    fw_unlock(s);
    if (freed)
        fw_space_freed(s);
    *client_out = client;
    *notify_out = delivered ? notify_armed(s, client) : 0;
    if (took_out)
        *took_out = took;
    if (took && left > 0)
        chain_wake(s, widx);
    return FW_OK;
}

/* ------------------------------------------------ drain and release */

uint32_t fw_drain(fw_seg *s, uint32_t client, uint32_t *idx_out, uint32_t max)
{
    if (client >= s->h->max_clients)
        return 0;
    fw_client *c = &s->clients[client];
    if (LOAD(&c->done_count) == 0)
        return 0;
    if (fw_lock(s, FW_OP_DRAIN, FW_NONE) != FW_OK)
        return 0;
    uint32_t n = 0, idx = c->done_head;
    while (idx != FW_NONE && n < max) {
        fw_slot *sl = &s->slots[idx];
        idx_out[n++] = idx;
        STORE_REL(&sl->state, FW_SLOT_HELD);
        idx = sl->next;
    }
    c->done_head = idx;
    if (idx == FW_NONE)
        c->done_tail = FW_NONE;
    __atomic_sub_fetch(&c->done_count, n, __ATOMIC_SEQ_CST);
    fw_unlock(s);
    return n;
}

int fw_release(fw_seg *s, const uint32_t *idx, uint32_t n)
{
    if (n == 0)
        return FW_OK;
    int rc = fw_lock(s, FW_OP_RELEASE, FW_NONE);
    if (rc != FW_OK)
        return rc;
    for (uint32_t i = 0; i < n; i++) {
        if (idx[i] >= s->h->nslots)
            continue;
        fw_slot *sl = &s->slots[idx[i]];
        if (sl->state != FW_SLOT_HELD)
            continue;
        uint32_t unit = sl->block;
        CRASH_POINT(FW_OP_RELEASE);
        free_push(s, idx[i]); /* as in cancel: FREE before the block goes */
        if (unit != FW_NONE) {
            sl->block = FW_NONE;
            fw_arena_free(s, unit);
        }
    }
    fw_unlock(s);
    fw_space_freed(s);
    return FW_OK;
}

int fw_arm(fw_seg *s, uint32_t client)
{
    fw_client *c = &s->clients[client];
    STORE(&c->armed, 1);
    return LOAD(&c->done_count) > 0;
}

/* ----------------------------------------------- cancel and reclaim */

int fw_cancel(fw_seg *s, uint32_t client, uint64_t handle)
{
    uint32_t idx = fw_handle_idx(handle), gen = fw_handle_gen(handle);
    if (idx >= s->h->nslots)
        return 0;
    if (fw_lock(s, FW_OP_CANCEL, idx) != FW_OK)
        return FW_E_LOCK;
    fw_slot *sl = &s->slots[idx];
    if (sl->gen != gen || sl->state != FW_SLOT_QUEUED || sl->client != client || !client_current(s, sl)) {
        fw_unlock(s);
        return 0;
    }
    lane_unlink(s, sl->lane, idx);
    CRASH_POINT(FW_OP_CANCEL);
    /* FREE first: a slot still QUEUED must never lose its block (a taker
     * would read `len` bytes from the inline area).  A FREE slot's block is
     * dropped by the rebuild if we die before the next line. */
    uint32_t unit = sl->block;
    free_push(s, idx);
    if (unit != FW_NONE) {
        sl->block = FW_NONE;
        fw_arena_free(s, unit);
    }
    s->h->cancelled++;
    fw_unlock(s);
    fw_space_freed(s);
    return 1;
}

uint32_t fw_reclaim_worker(fw_seg *s, uint32_t widx, uint32_t incarnation, uint32_t status, const uint8_t *err,
                           uint32_t errlen, uint64_t *handles_out, uint32_t *clients_out, uint32_t max)
{
    if (widx >= s->h->max_workers)
        return 0;
    if (errlen > FW_INLINE_CAP)
        errlen = FW_INLINE_CAP;
    set_sleeping(s, widx, 0);
    uint32_t token = widx + 1;
    __atomic_compare_exchange_n(&s->h->spinner, &token, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    if (fw_lock(s, FW_OP_RECLAIM, FW_NONE) != FW_OK)
        return 0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->h->nslots; i++) {
        fw_slot *sl = &s->slots[i];
        if (!owns(sl, sl->gen, widx, incarnation))
            continue;
        drop_block(s, sl);
        memcpy(sl->inline_data, err, errlen);
        s->h->reclaimed++;
        if (!finish(s, i, status, 0, errlen))
            continue; /* its client is gone: nobody to tell */
        if (n < max) {
            handles_out[n] = fw_handle(i, sl->gen);
            clients_out[n] = sl->client;
            n++;
        }
    }
    s->workers[widx].state = FW_WORKER_GONE;
    s->workers[widx].current_slot = FW_NONE;
    s->workers[widx].deadline_ns = 0;
    fw_unlock(s);
    fw_space_freed(s);
    return n;
}

/* ------------------------------------------------- stopping a running task */

/* Under the lock, so the worker cannot finish the task and take another in
 * between: from here it takes nothing more, and the parent kills it. */
int fw_stop_running(fw_seg *s, uint64_t handle, uint32_t *widx_out, uint32_t *incarnation_out)
{
    uint32_t idx = fw_handle_idx(handle), gen = fw_handle_gen(handle);
    if (idx >= s->h->nslots)
        return FW_E_ARG;
    int rc = fw_lock(s, FW_OP_NONE, idx);
    if (rc != FW_OK)
        return rc;
    fw_slot *sl = &s->slots[idx];
    int stopped = 0;
    if (sl->gen == gen && sl->state == FW_SLOT_RUNNING && sl->worker < s->h->max_workers) {
        fw_worker *w = &s->workers[sl->worker];
        if (w->current_slot == idx) {
            w->stop = sl->incarnation;
            w->deadline_ns = 0;
            *widx_out = sl->worker;
            *incarnation_out = sl->incarnation;
            stopped = 1;
        }
    }
    fw_unlock(s);
    return stopped;
}

uint32_t fw_expired(fw_seg *s, uint64_t now_ns, fw_expiry *out, uint32_t max)
{
    if (fw_lock(s, FW_OP_NONE, FW_NONE) != FW_OK)
        return 0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->h->max_workers && n < max; i++) {
        fw_worker *w = &s->workers[i];
        uint64_t deadline = LOAD(&w->deadline_ns);
        if (w->current_slot == FW_NONE || deadline == 0 || deadline > now_ns)
            continue;
        fw_slot *sl = &s->slots[w->current_slot];
        w->stop = sl->incarnation;
        w->deadline_ns = 0;
        out[n].worker = i;
        out[n].incarnation = sl->incarnation;
        out[n].handle = fw_handle(w->current_slot, sl->gen);
        out[n].timeout_ms = w->timeout_ms;
        n++;
    }
    fw_unlock(s);
    return n;
}

uint64_t fw_next_deadline(fw_seg *s)
{
    uint64_t next = 0;
    for (uint32_t i = 0; i < s->h->max_workers; i++) {
        uint64_t deadline = LOAD(&s->workers[i].deadline_ns);
        if (deadline && (next == 0 || deadline < next))
            next = deadline;
    }
    return next;
}

/* ------------------------------------------------------------ check */

int fw_check(fw_seg *s, fw_census *out)
{
    fw_header *h = s->h;
    memset(out, 0, sizeof *out);
    int rc = fw_lock(s, FW_OP_NONE, FW_NONE);
    if (rc != FW_OK)
        return rc;
    uint32_t n = h->nslots;
    int err = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t st = s->slots[i].state;
        if (st > FW_SLOT_HELD) {
            err = -1;
            break;
        }
        out->by_state[st]++;
    }
    for (uint32_t l = 0; l < FW_LANES && !err; l++) {
        uint32_t k = 0, prev = FW_NONE;
        for (uint32_t i = h->lanes[l].head; i != FW_NONE; i = s->slots[i].next) {
            fw_slot *sl = &s->slots[i];
            if (i >= n || sl->state != FW_SLOT_QUEUED || sl->lane != l || sl->prev != prev || ++k > n) {
                err = -2;
                break;
            }
            prev = i;
        }
        if (!err && (k != h->lanes[l].count || prev != h->lanes[l].tail))
            err = -3;
        out->queued_by_lane[l] = k;
    }
    if (!err) {
        uint32_t k = 0;
        for (uint32_t i = h->free_head; i != FW_NONE; i = s->slots[i].next) {
            if (i >= n || s->slots[i].state != FW_SLOT_FREE || ++k > n) {
                err = -4;
                break;
            }
        }
        out->free_listed = k;
        if (!err && (k != h->free_count || k != out->by_state[FW_SLOT_FREE]))
            err = -5;
    }
    for (uint32_t c = 0; c < h->max_clients && !err; c++) {
        uint32_t k = 0, last = FW_NONE;
        for (uint32_t i = s->clients[c].done_head; i != FW_NONE; i = s->slots[i].next) {
            if (i >= n || s->slots[i].state != FW_SLOT_DONE || s->slots[i].client != c || ++k > n) {
                err = -6;
                break;
            }
            last = i;
        }
        if (!err && (k != s->clients[c].done_count || last != s->clients[c].done_tail))
            err = -7;
        out->done_listed += k;
    }
    if (!err && out->done_listed != out->by_state[FW_SLOT_DONE])
        err = -8;
    uint32_t queued = 0;
    for (uint32_t l = 0; l < FW_LANES; l++)
        queued += out->queued_by_lane[l];
    if (!err && queued != out->by_state[FW_SLOT_QUEUED])
        err = -9;
    if (!err) {
        int a = fw_arena_check(s, &out->arena_used_units);
        if (a != 0)
            err = -100 + a;
    }
    out->error = err;
    fw_unlock(s);
    return FW_OK;
}

/* ---------------------------------------------------------- clients */

int fw_client_open(fw_seg *s, uint32_t pid, uint32_t *client_out, uint32_t *gen_out)
{
    int rc = fw_lock(s, FW_OP_CLIENT, FW_NONE);
    if (rc != FW_OK)
        return rc;
    for (uint32_t c = 0; c < s->h->max_clients; c++) {
        fw_client *cl = &s->clients[c];
        if (cl->in_use)
            continue;
        cl->gen++;
        cl->pid = pid;
        cl->in_use = 1;
        cl->submitted = cl->completed = cl->notifies = 0;
        STORE(&cl->armed, 0);
        *client_out = c;
        *gen_out = cl->gen;
        fw_unlock(s);
        return FW_OK;
    }
    fw_unlock(s);
    return FW_E_FULL;
}

int fw_client_close(fw_seg *s, uint32_t client)
{
    if (client >= s->h->max_clients)
        return FW_E_ARG;
    int rc = fw_lock(s, FW_OP_CLIENT, FW_NONE);
    if (rc != FW_OK)
        return rc;
    fw_client *c = &s->clients[client];
    /* Free every slot of this client but the running ones: those are freed
     * when their worker completes them (finish() sees the client gone). */
    int freed = 0;
    for (uint32_t i = 0; i < s->h->nslots; i++) {
        fw_slot *sl = &s->slots[i];
        uint32_t st = sl->state;
        if (st == FW_SLOT_FREE || st == FW_SLOT_RUNNING || sl->client != client || !client_current(s, sl))
            continue;
        if (st == FW_SLOT_QUEUED)
            lane_unlink(s, sl->lane, i);
        uint32_t unit = sl->block;
        free_push(s, i);
        if (unit != FW_NONE) {
            sl->block = FW_NONE;
            fw_arena_free(s, unit);
        }
        freed++;
    }
    c->done_head = c->done_tail = FW_NONE;
    STORE(&c->done_count, 0);
    c->in_use = 0;
    c->pid = 0;
    STORE(&c->armed, 0);
    fw_unlock(s);
    if (freed)
        fw_space_freed(s);
    return FW_OK;
}

int fw_client_handover(fw_seg *s, uint32_t from, uint32_t to, uint32_t mark, uint32_t *moved_out)
{
    fw_header *h = s->h;
    if (from >= h->max_clients || to >= h->max_clients || from == to || mark > 0xffff)
        return FW_E_ARG;
    int rc = fw_lock(s, FW_OP_CLIENT, FW_NONE);
    if (rc != FW_OK)
        return rc;
    fw_client *src = &s->clients[from], *dst = &s->clients[to];
    if (!dst->in_use) {
        fw_unlock(s);
        return FW_E_ARG;
    }
    uint32_t moved = 0, delivered = 0;
    int freed = 0;
    /* Done results first, in completion order, then everything else. */
    for (uint32_t i = src->done_head; i != FW_NONE;) {
        uint32_t next = s->slots[i].next;
        fw_slot *sl = &s->slots[i];
        sl->client = (uint16_t)to;
        sl->client_gen = dst->gen;
        sl->tag = ((uint64_t)mark << 48) | (sl->tag & 0xffffffffffffULL);
        done_push(s, to, i);
        moved++;
        delivered++;
        i = next;
    }
    src->done_head = src->done_tail = FW_NONE;
    STORE(&src->done_count, 0);
    for (uint32_t i = 0; i < h->nslots; i++) {
        fw_slot *sl = &s->slots[i];
        uint32_t st = sl->state;
        if (st == FW_SLOT_FREE || sl->client != from || sl->client_gen != src->gen || !src->in_use)
            continue;
        if (st == FW_SLOT_RESERVED) { /* a submit that never published: it was never queued */
            uint32_t unit = sl->block;
            free_push(s, i);
            if (unit != FW_NONE) {
                sl->block = FW_NONE;
                fw_arena_free(s, unit);
            }
            freed = 1;
            continue;
        }
        sl->client = (uint16_t)to;
        sl->client_gen = dst->gen;
        sl->tag = ((uint64_t)mark << 48) | (sl->tag & 0xffffffffffffULL);
        if (st == FW_SLOT_HELD) { /* copied out by a client that then died: deliver again */
            STORE_REL(&sl->state, FW_SLOT_DONE);
            done_push(s, to, i);
            delivered++;
        }
        moved++;
    }
    src->in_use = 0;
    src->pid = 0;
    STORE(&src->armed, 0);
    fw_unlock(s);
    if (freed)
        fw_space_freed(s);
    *moved_out = moved;
    return (int)delivered;
}

void fw_set_spin(fw_seg *s, uint64_t ns, uint32_t ncpus)
{
    __atomic_store_n(&s->h->ncpus, ncpus, __ATOMIC_RELAXED);
    __atomic_store_n(&s->h->spin_ns, ns, __ATOMIC_RELAXED);
}

void fw_shutdown(fw_seg *s)
{
    __atomic_fetch_or(&s->h->flags, FW_FLAG_SHUTDOWN, __ATOMIC_SEQ_CST);
    ADD(&s->h->work_seq, 1);
    fw_futex_wake(&s->h->work_seq, 1 << 30);
    ADD(&s->h->space_seq, 1);
    fw_futex_wake(&s->h->space_seq, 1 << 30);
}
