#include "segment.h"
#include "arena.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

typedef struct {
    uint64_t workers_off, clients_off, slots_off, arena_map_off, arena_off, total;
    uint32_t arena_units;
} fw_offsets;

static int compute(const fw_geometry *g, fw_offsets *o)
{
    if (g->nslots < 1 || g->nslots > FW_MAX_SLOTS)
        return FW_E_ARG;
    if (g->max_workers < 1 || g->max_workers > FW_MAX_WORKERS)
        return FW_E_ARG;
    if (g->max_clients < 1 || g->max_clients > FW_MAX_CLIENTS)
        return FW_E_ARG;
    uint64_t unit = 1ULL << FW_ARENA_MIN_ORDER;
    if (g->arena_size < unit || g->arena_size / unit > UINT32_MAX - 1)
        return FW_E_ARG;
    o->arena_units = (uint32_t)(g->arena_size / unit);
    o->workers_off = FW_HEADER_SIZE;
    o->clients_off = align_up(o->workers_off + (uint64_t)g->max_workers * sizeof(fw_worker), FW_CACHE_LINE);
    o->slots_off = align_up(o->clients_off + (uint64_t)g->max_clients * sizeof(fw_client), FW_CACHE_LINE);
    o->arena_map_off = align_up(o->slots_off + (uint64_t)g->nslots * sizeof(fw_slot), FW_CACHE_LINE);
    o->arena_off = align_up(o->arena_map_off + o->arena_units, FW_PAGE);
    o->total = align_up(o->arena_off + (uint64_t)o->arena_units * unit, FW_PAGE);
    return FW_OK;
}

uint64_t fw_segment_size(const fw_geometry *g)
{
    fw_offsets o;
    return compute(g, &o) == FW_OK ? o.total : 0;
}

static void bind(fw_seg *s, uint8_t *base, uint64_t size)
{
    s->base = base;
    s->size = size;
    s->h = (fw_header *)base;
    s->workers = (fw_worker *)(base + s->h->workers_off);
    s->clients = (fw_client *)(base + s->h->clients_off);
    s->slots = (fw_slot *)(base + s->h->slots_off);
    s->arena_map = base + s->h->arena_map_off;
    s->arena = base + s->h->arena_off;
    s->pid = (uint32_t)getpid();
}

static int init_mutex(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc == 0)
        rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

static void init_contents(fw_seg *s, const fw_geometry *g)
{
    fw_header *h = s->h;
    h->intent.op = FW_OP_NONE;
    h->intent.slot = FW_NONE;
    for (uint32_t l = 0; l < FW_LANES; l++)
        h->lanes[l].head = h->lanes[l].tail = FW_NONE;
    for (uint32_t i = 0; i < g->nslots; i++) {
        fw_slot *sl = &s->slots[i];
        sl->state = FW_SLOT_FREE;
        sl->next = (i + 1 < g->nslots) ? i + 1 : FW_NONE;
        sl->prev = FW_NONE;
        sl->block = FW_NONE;
    }
    h->free_head = 0;
    h->free_count = g->nslots;
    for (uint32_t w = 0; w < g->max_workers; w++)
        s->workers[w].current_slot = FW_NONE;
    for (uint32_t c = 0; c < g->max_clients; c++)
        s->clients[c].done_head = s->clients[c].done_tail = FW_NONE;
}

int fw_seg_create(const char *name, const fw_geometry *g, int reserve_arena, fw_seg *out)
{
    fw_offsets o;
    int rc = compute(g, &o);
    if (rc != FW_OK)
        return rc;
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return FW_E_SYS;
    /* shm_open's mode is filtered by the umask; the segment is for this user only. */
    if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)o.total) != 0)
        goto fail_errno;
    /* Reserve every page now.  On tmpfs ftruncate only sets a size: touching
     * a page that /dev/shm cannot back later kills the toucher with SIGBUS. */
    rc = posix_fallocate(fd, 0, (off_t)(reserve_arena ? o.total : o.arena_off));
    if (rc != 0) {
        errno = rc;
        if (rc == ENOSPC) {
            close(fd);
            shm_unlink(name);
            return FW_E_NOSPACE_SHM;
        }
        goto fail_errno;
    }
    void *base = mmap(NULL, o.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        goto fail_errno;
    close(fd);
#ifdef MADV_POPULATE_WRITE
    /* Fault in the header and slots in one call: this process writes them
     * all now, and faults one by one cost far more in a VM. */
    (void)madvise(base, o.arena_off, MADV_POPULATE_WRITE);
#endif

    /* tmpfs pages start zeroed, so only non-zero fields are written. */
    fw_header *h = (fw_header *)base;
    h->layout_version = FW_LAYOUT_VERSION;
    h->header_size = FW_HEADER_SIZE;
    h->total_size = o.total;
    h->owner_pid = g->owner_pid;
    h->owner_start_time = g->owner_start_time;
    h->epoch = g->epoch;
    h->nslots = g->nslots;
    h->slot_size = FW_SLOT_SIZE;
    h->max_workers = g->max_workers;
    h->max_clients = g->max_clients;
    h->workers_off = o.workers_off;
    h->clients_off = o.clients_off;
    h->slots_off = o.slots_off;
    h->arena_map_off = o.arena_map_off;
    h->arena_off = o.arena_off;
    h->arena_size = (uint64_t)o.arena_units << FW_ARENA_MIN_ORDER;
    h->arena_units = o.arena_units;
    bind(out, (uint8_t *)base, o.total);
    rc = init_mutex(&h->lock.mutex);
    if (rc != 0) {
        munmap(base, o.total);
        shm_unlink(name);
        errno = rc;
        return FW_E_SYS;
    }
    init_contents(out, g);
    h->arena_max_order = FW_ARENA_MIN_ORDER;
    while (h->arena_max_order < FW_ARENA_MAX_ORDER && (1ULL << (h->arena_max_order + 1)) <= h->arena_size)
        h->arena_max_order++;
    h->arena_state = FW_ARENA_PENDING;
    if (reserve_arena) {
        fw_arena_init(out);
        h->arena_state = FW_ARENA_READY;
    }
    h->magic = FW_MAGIC;
    atomic_store_explicit((_Atomic uint32_t *)&h->ready, 1, memory_order_release);
    return FW_OK;

fail_errno: {
        int saved = errno;
        close(fd);
        shm_unlink(name);
        errno = saved;
        return FW_E_SYS;
    }
}

int fw_seg_validate(const uint8_t *base, uint64_t size)
{
    if (size < FW_HEADER_SIZE)
        return FW_E_FOREIGN;
    const fw_header *h = (const fw_header *)base;
    if (h->magic != FW_MAGIC)
        return FW_E_FOREIGN;
    if (h->layout_version != FW_LAYOUT_VERSION)
        return FW_E_VERSION;
    if (atomic_load_explicit((_Atomic uint32_t *)&h->ready, memory_order_acquire) != 1)
        return FW_E_NOT_READY;
    fw_geometry g = {
        .nslots = h->nslots,
        .arena_size = h->arena_size,
        .max_workers = h->max_workers,
        .max_clients = h->max_clients,
    };
    fw_offsets o;
    if (h->header_size != FW_HEADER_SIZE || h->slot_size != FW_SLOT_SIZE || compute(&g, &o) != FW_OK)
        return FW_E_CORRUPT;
    if (o.total != h->total_size || h->total_size != size || o.workers_off != h->workers_off ||
        o.clients_off != h->clients_off || o.slots_off != h->slots_off ||
        o.arena_map_off != h->arena_map_off || o.arena_off != h->arena_off ||
        o.arena_units != h->arena_units)
        return FW_E_CORRUPT;
    return FW_OK;
}

int fw_seg_attach(const char *name, fw_seg *out)
{
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return FW_E_SYS;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return FW_E_SYS;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < FW_HEADER_SIZE) {
        close(fd);
        return FW_E_FOREIGN;
    }
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int saved = errno;
    close(fd);
    if (base == MAP_FAILED) {
        errno = saved;
        return FW_E_SYS;
    }
    int rc = fw_seg_validate((const uint8_t *)base, size);
    if (rc != FW_OK) {
        munmap(base, size);
        return rc;
    }
    bind(out, (uint8_t *)base, size);
    return FW_OK;
}

void fw_seg_close(fw_seg *s)
{
    if (s->base) {
        munmap(s->base, s->size);
        s->base = NULL;
    }
}

int fw_seg_fallocate_arena(fw_seg *s, const char *name)
{
    fw_header *h = s->h;
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    int err = posix_fallocate(fd, (off_t)h->arena_off, (off_t)h->arena_size);
    close(fd);
    return err;
}

int fw_seg_open_arena(fw_seg *s, int err)
{
    fw_header *h = s->h;
    int rc = fw_lock(s, FW_OP_ALLOC, FW_NONE);
    if (rc != FW_OK)
        return rc;
    if (__atomic_load_n(&h->arena_state, __ATOMIC_ACQUIRE) == FW_ARENA_PENDING) {
        if (err == 0)
            fw_arena_init(s);
        h->arena_errno = (uint32_t)err;
        __atomic_store_n(&h->arena_state, err == 0 ? FW_ARENA_READY : FW_ARENA_FAILED, __ATOMIC_RELEASE);
    }
    fw_unlock(s);
    fw_space_freed(s);
    if (err) {
        errno = err;
        return err == ENOSPC ? FW_E_NOSPACE_SHM : FW_E_SYS;
    }
    return FW_OK;
}
