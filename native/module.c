/*
 * fastworker._native: the CPython binding of the shared-memory ring.
 *
 * This file only parses arguments, releases the GIL around anything that can
 * block (a contended lock, a futex sleep, a big copy) and turns status codes
 * into exceptions through one table (raise_status).  Naming, sizing,
 * serialization and supervision live in the Python package.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "arena.h"
#include "layout.h"
#include "ring.h"
#include "segment.h"
#include "wake.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#define DRAIN_BATCH 512u
#define MAX_PARTS 64

static PyObject *FullError, *TooBigError, *ShutdownError, *SegmentErrorBase, *ForeignError, *VersionError,
    *CorruptError, *NotReadyError, *NoSpaceError, *LockError, *ArenaFailedError, *ArenaStuckError;

static PyObject *raise_status(int status, const char *what)
{
    switch (status) {
    case FW_E_SYS:
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, what);
    case FW_E_FOREIGN:
        return PyErr_Format(ForeignError, "%s is not a fastworker segment (wrong magic number)", what);
    case FW_E_VERSION:
        return PyErr_Format(VersionError, "%s was made by another fastworker version (layout %u expected)", what,
                            FW_LAYOUT_VERSION);
    case FW_E_CORRUPT:
        return PyErr_Format(CorruptError, "%s has a header that does not match its size or geometry", what);
    case FW_E_NOT_READY:
        return PyErr_Format(NotReadyError, "%s is still being initialised by its creator", what);
    case FW_E_NOSPACE_SHM:
        return PyErr_Format(NoSpaceError, "no space left in /dev/shm for %s", what);
    case FW_E_FULL:
    case FW_E_ARENA_FULL:
        return PyErr_Format(FullError, "%s", status == FW_E_FULL ? "no free slot" : "no free arena block");
    case FW_E_TOOBIG:
        return PyErr_Format(TooBigError, "%s: payload larger than the shared arena's largest block", what);
    case FW_E_SHUTDOWN:
        return PyErr_Format(ShutdownError, "%s: the segment is shutting down", what);
    case FW_E_ARENA_FAILED:
        return PyErr_Format(ArenaFailedError, "%s: the shared arena's pages could not be reserved", what);
    case FW_E_ARENA_STUCK:
        return PyErr_Format(ArenaStuckError,
                            "no room in the shared arena for the result, and none can free up: the arguments of "
                            "queued tasks hold all of it; raise FASTWORKER_ARENA_SIZE (arena_size=) or queue fewer "
                            "big tasks at once");
    case FW_E_LOCK:
        return PyErr_Format(LockError, "%s: the ring lock is unrecoverable", what);
    case FW_E_ARG:
        return PyErr_Format(PyExc_ValueError, "%s: argument out of range", what);
    default:
        return PyErr_Format(PyExc_RuntimeError, "%s: native status %d", what, status);
    }
}

/* ------------------------------------------------------------ Segment */

typedef struct {
    PyObject_HEAD
    fw_seg seg;
    PyObject *name;
    int owner;
    Py_ssize_t live_buffers; /* SlotBuffers not yet released: the mapping must outlive them */
    int closing;             /* close() was asked while buffers lived: unmap with the last one */
} SegmentObject;

/* Result flag a worker sets on a payload that should be lent, not copied:
 * drain() returns a SlotBuffer over the slot's arena block, and the slot
 * stays HELD until that buffer (and every view of it) is released. */
#define FW_RESULT_KEEP 0x10000u

static void *gil_release(void) { return PyEval_SaveThread(); }
static void gil_acquire(void *st) { PyEval_RestoreThread((PyThreadState *)st); }

static PyTypeObject SegmentType;

static SegmentObject *segment_new(PyObject *name)
{
    SegmentObject *o = PyObject_New(SegmentObject, &SegmentType);
    if (!o)
        return NULL;
    memset(&o->seg, 0, sizeof o->seg);
    o->live_buffers = 0;
    o->closing = 0;
    o->seg.block_begin = gil_release;
    o->seg.block_end = gil_acquire;
    Py_INCREF(name);
    o->name = name;
    o->owner = 0;
    return o;
}

static void segment_dealloc(SegmentObject *self)
{
    fw_seg_close(&self->seg);
    Py_XDECREF(self->name);
    PyObject_Free(self);
}

/* ------------------------------------------------------------ SlotBuffer */

/* A finished task's payload lent in place: the bytes stay in the arena, the
 * slot stays HELD, and both go back to the ring when this object goes. */
typedef struct {
    PyObject_HEAD
    SegmentObject *owner;
    uint32_t idx;
    uint8_t *data;
    Py_ssize_t len;
} SlotBufferObject;

static PyTypeObject SlotBufferType;

static int slotbuffer_getbuffer(SlotBufferObject *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->len, 0, flags);
}

static void slotbuffer_dealloc(SlotBufferObject *self)
{
    SegmentObject *seg = self->owner;
    if (seg->seg.base)
        fw_release(&seg->seg, &self->idx, 1);
    if (--seg->live_buffers == 0 && seg->closing)
        fw_seg_close(&seg->seg); /* the close() that was waiting for us */
    Py_DECREF(seg);
    PyObject_Free(self);
}

static PyObject *slotbuffer_len(SlotBufferObject *self, void *c) { return PyLong_FromSsize_t(self->len); }

static PyObject *slotbuffer_address(SlotBufferObject *self, void *c)
{
    return PyLong_FromVoidPtr(self->data);
}

static PyGetSetDef slotbuffer_getset[] = {
    {"nbytes", (getter)slotbuffer_len, NULL, "payload length", NULL},
    {"address", (getter)slotbuffer_address, NULL, "where the payload lies (inside the segment's mapping)", NULL},
    {NULL},
};

static PyBufferProcs slotbuffer_as_buffer = {(getbufferproc)slotbuffer_getbuffer, NULL};

static PyTypeObject SlotBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fastworker._native.SlotBuffer",
    .tp_basicsize = sizeof(SlotBufferObject),
    .tp_dealloc = (destructor)slotbuffer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A task's result lent from the shared arena; the slot is freed when this is released.",
    .tp_as_buffer = &slotbuffer_as_buffer,
    .tp_getset = slotbuffer_getset,
};

/* Lend a block only while the arena keeps a quarter of itself, and twice this
 * block, free: results held by the caller must never starve the workers of
 * room for the next ones (a worker waits for arena room; a caller waiting
 * for that result would never release what it holds).  Otherwise the result
 * is copied out and its block freed at once. */
static int arena_can_lend(fw_seg *s, const fw_slot *sl)
{
    uint64_t free_bytes = __atomic_load_n(&s->h->arena_free_units, __ATOMIC_RELAXED) << FW_ARENA_MIN_ORDER;
    uint64_t block = 1ULL << sl->block_order;
    uint64_t keep = s->h->arena_size / 4 > 2 * block ? s->h->arena_size / 4 : 2 * block;
    return free_bytes >= keep + block;
}

static PyObject *slotbuffer_new(SegmentObject *seg, uint32_t idx, uint8_t *data, Py_ssize_t len)
{
    SlotBufferObject *o = PyObject_New(SlotBufferObject, &SlotBufferType);
    if (!o)
        return NULL;
    Py_INCREF(seg);
    o->owner = seg;
    o->idx = idx;
    o->data = data;
    o->len = len;
    seg->live_buffers++;
    return (PyObject *)o;
}

#define CHECK_OPEN(self)                                                              \
    do {                                                                              \
        if (!(self)->seg.base || (self)->closing) {                                   \
            PyErr_SetString(PyExc_ValueError, "operation on a closed fastworker segment"); \
            return NULL;                                                              \
        }                                                                             \
    } while (0)

/* The name as a C string for shm_open, or NULL with an exception: a name that
 * is not valid UTF-8 (PyUnicode_AsUTF8 fails) or holds a NUL (shm_open would
 * silently use the shorter name before it). */
static const char *segment_cname(PyObject *name)
{
    Py_ssize_t len;
    const char *cname = PyUnicode_AsUTF8AndSize(name, &len);
    if (cname && strlen(cname) != (size_t)len) {
        PyErr_SetString(PyExc_ValueError, "segment name contains a NUL character");
        return NULL;
    }
    return cname;
}

static PyObject *py_create(PyObject *mod, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "nslots", "arena_size", "max_workers", "max_clients", "owner_pid",
                             "owner_start_time", "epoch", "reserve_arena", NULL};
    PyObject *name;
    unsigned int nslots, max_workers, max_clients, owner_pid;
    unsigned long long arena_size, start_time, epoch;
    int reserve_arena = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UIKIIIKK|p", kwlist, &name, &nslots, &arena_size, &max_workers,
                                     &max_clients, &owner_pid, &start_time, &epoch, &reserve_arena))
        return NULL;
    fw_geometry g = {nslots, arena_size, max_workers, max_clients, owner_pid, start_time, epoch};
    const char *cname = segment_cname(name);
    if (!cname)
        return NULL;
    SegmentObject *o = segment_new(name);
    if (!o)
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fw_seg_create(cname, &g, reserve_arena, &o->seg);
    Py_END_ALLOW_THREADS
    if (rc != FW_OK) {
        Py_DECREF(o);
        return raise_status(rc, cname);
    }
    o->owner = 1;
    return (PyObject *)o;
}

static PyObject *py_attach(PyObject *mod, PyObject *arg)
{
    if (!PyUnicode_Check(arg))
        return PyErr_Format(PyExc_TypeError, "attach() takes the segment name as str");
    const char *cname = segment_cname(arg);
    if (!cname)
        return NULL;
    SegmentObject *o = segment_new(arg);
    if (!o)
        return NULL;
    int rc = fw_seg_attach(cname, &o->seg);
    if (rc != FW_OK) {
        Py_DECREF(o);
        return raise_status(rc, cname);
    }
    return (PyObject *)o;
}

static PyObject *py_segment_size(PyObject *mod, PyObject *args)
{
    unsigned int nslots, max_workers, max_clients;
    unsigned long long arena_size;
    if (!PyArg_ParseTuple(args, "IKII", &nslots, &arena_size, &max_workers, &max_clients))
        return NULL;
    fw_geometry g = {nslots, arena_size, max_workers, max_clients, 0, 0, 0};
    uint64_t size = fw_segment_size(&g);
    if (size == 0)
        return raise_status(FW_E_ARG, "segment_size");
    return PyLong_FromUnsignedLongLong(size);
}

/* reserve_arena(): reserve the arena's pages now and open it (the owner's
 * fork server calls it once, right after start). */
static PyObject *seg_reserve_arena(SegmentObject *self, PyObject *unused)
{
    CHECK_OPEN(self);
    const char *cname = PyUnicode_AsUTF8(self->name);
    if (!cname)
        return NULL;
    if (__atomic_load_n(&self->seg.h->arena_state, __ATOMIC_ACQUIRE) != FW_ARENA_PENDING)
        Py_RETURN_NONE;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = fw_seg_fallocate_arena(&self->seg, cname);
    Py_END_ALLOW_THREADS
    /* With the GIL again: taking a contended ring lock releases it itself. */
    int rc = fw_seg_open_arena(&self->seg, err);
    if (rc != FW_OK)
        return raise_status(rc, cname);
    Py_RETURN_NONE;
}

static PyObject *seg_close(SegmentObject *self, PyObject *unused)
{
    if (self->live_buffers > 0) {
        self->closing = 1; /* unmapped when the last lent result is released */
        Py_RETURN_NONE;
    }
    fw_seg_close(&self->seg);
    Py_RETURN_NONE;
}

static int parse_payload(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) != 0)
        return -1;
    if (view->len > UINT32_MAX) {
        PyBuffer_Release(view);
        PyErr_SetString(TooBigError, "payload larger than 4 GiB");
        return -1;
    }
    return 0;
}

/* A payload: a buffer (one part at offset 0), or (total length, [(offset,
 * buffer), ...]) laid out by the caller.  Fills views/parts; 0 or -1. */
static int parse_layout(PyObject *payload, Py_buffer *views, fw_part *parts, uint32_t *nparts_out,
                        uint32_t *total_out)
{
    uint32_t nparts = 0;
    if (!PyTuple_Check(payload)) {
        if (parse_payload(payload, &views[0]) != 0)
            return -1;
        parts[0] = (fw_part){0, views[0].buf, (uint32_t)views[0].len};
        *nparts_out = 1;
        *total_out = (uint32_t)views[0].len;
        return 0;
    }
    unsigned long long length;
    PyObject *pieces;
    if (!PyArg_ParseTuple(payload, "KO", &length, &pieces))
        return -1;
    PyObject *fast = PySequence_Fast(pieces, "a laid-out payload needs a list of (offset, buffer)");
    if (!fast)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > MAX_PARTS || length > UINT32_MAX) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "a laid-out payload has at most %d parts and 4 GiB", MAX_PARTS);
        return -1;
    }
    for (; nparts < (uint32_t)n; nparts++) {
        unsigned long long offset;
        PyObject *buf;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, nparts), "KO", &offset, &buf) ||
            PyObject_GetBuffer(buf, &views[nparts], PyBUF_SIMPLE) != 0)
            break;
        if (offset + (unsigned long long)views[nparts].len > length) {
            PyBuffer_Release(&views[nparts]);
            PyErr_SetString(PyExc_ValueError, "a part ends past the payload's length");
            break;
        }
        parts[nparts] = (fw_part){offset, views[nparts].buf, (uint32_t)views[nparts].len};
    }
    Py_DECREF(fast);
    if (nparts < (uint32_t)n) {
        for (uint32_t i = 0; i < nparts; i++)
            PyBuffer_Release(&views[i]);
        return -1;
    }
    *nparts_out = nparts;
    *total_out = (uint32_t)length;
    return 0;
}

/* submit(client, lane, fn_id, flags, tag, payload) -> handle */
static PyObject *seg_submit(SegmentObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_OPEN(self);
    if (nargs != 6)
        return PyErr_Format(PyExc_TypeError, "submit() takes 6 arguments (%zd given)", nargs);
    fw_submission sub;
    unsigned long client = PyLong_AsUnsignedLong(args[0]);
    sub.lane = (uint32_t)PyLong_AsUnsignedLong(args[1]);
    sub.fn_id = (uint32_t)PyLong_AsUnsignedLong(args[2]);
    sub.flags = (uint32_t)PyLong_AsUnsignedLong(args[3]);
    sub.tag = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer views[MAX_PARTS];
    fw_part parts[MAX_PARTS];
    uint32_t nparts = 0, total = 0;
    if (parse_layout(args[5], views, parts, &nparts, &total) != 0)
        return NULL;
    sub.data = parts[0].data;
    sub.len = total;
    sub.parts = PyTuple_Check(args[5]) ? parts : NULL;
    sub.nparts = PyTuple_Check(args[5]) ? nparts : 0;
    uint64_t handle;
    int rc = fw_submit(&self->seg, (uint32_t)client, &sub, 1, &handle);
    for (uint32_t i = 0; i < nparts; i++)
        PyBuffer_Release(&views[i]);
    if (rc != FW_OK)
        return raise_status(rc, "submit");
    return PyLong_FromUnsignedLongLong(handle);
}

/* submit_many(client, [(lane, fn_id, flags, tag, payload), ...]) -> [handle, ...]; all or none */
static PyObject *seg_submit_many(SegmentObject *self, PyObject *args)
{
    CHECK_OPEN(self);
    unsigned int client;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "IO", &client, &seq))
        return NULL;
    PyObject *fast = PySequence_Fast(seq, "submit_many() takes a sequence of tuples");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > (Py_ssize_t)self->seg.h->nslots) {
        Py_DECREF(fast);
        return PyErr_Format(PyExc_ValueError, "a batch of %zd tasks cannot fit in a ring of %u slots", n,
                            self->seg.h->nslots);
    }
    fw_submission *subs = PyMem_Calloc((size_t)(n ? n : 1), sizeof *subs);
    Py_buffer *views = PyMem_Calloc((size_t)(n ? n : 1), sizeof *views);
    uint64_t *handles = PyMem_Calloc((size_t)(n ? n : 1), sizeof *handles);
    PyObject *result = NULL;
    Py_ssize_t got = 0;
    if (!subs || !views || !handles) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, got);
        unsigned int lane, fn_id, flags;
        unsigned long long tag;
        PyObject *payload;
        if (!PyArg_ParseTuple(item, "IIIKO", &lane, &fn_id, &flags, &tag, &payload))
            goto done;
        if (parse_payload(payload, &views[got]) != 0)
            goto done;
        subs[got] = (fw_submission){lane, fn_id, flags, tag, views[got].buf, (uint32_t)views[got].len, NULL, 0};
    }
    int rc = fw_submit(&self->seg, client, subs, (uint32_t)n, handles);
    if (rc != FW_OK) {
        raise_status(rc, "submit_many");
        goto done;
    }
    result = PyList_New(n);
    if (!result)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *h = PyLong_FromUnsignedLongLong(handles[i]);
        if (!h) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, h);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(subs);
    PyMem_Free(views);
    PyMem_Free(handles);
    Py_DECREF(fast);
    return result;
}

static PyObject *copy_bytes(fw_seg *s, const uint8_t *data, uint32_t len)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, len);
    if (!b)
        return NULL;
    if (len >= 64u * 1024u) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(PyBytes_AS_STRING(b), data, len);
        Py_END_ALLOW_THREADS
    } else {
        memcpy(PyBytes_AS_STRING(b), data, len);
    }
    return b;
}

/* A tuple of n items, each a new reference or NULL (then everything is
 * released and NULL returned).  Faster than Py_BuildValue on hot paths. */
static PyObject *tuple_of(Py_ssize_t n, PyObject **items)
{
    PyObject *t = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!items[i])
            goto fail;
    t = PyTuple_New(n);
    if (!t)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, items[i]);
    return t;
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

static PyObject *taken_tuple(fw_seg *s, const fw_taken *t)
{
    PyObject *items[7] = {
        PyLong_FromUnsignedLongLong(t->handle), PyLong_FromUnsignedLong(t->client),
        PyLong_FromUnsignedLong(t->fn_id),      PyLong_FromUnsignedLong(t->flags),
        PyLong_FromUnsignedLongLong(t->tag),    PyLong_FromUnsignedLong(t->lane),
        copy_bytes(s, t->data, t->len),
    };
    return tuple_of(7, items);
}

/* take(worker, incarnation, timeout=None) -> (handle, client, fn_id, flags, tag, lane, payload) or None */
static PyObject *seg_take(SegmentObject *self, PyObject *args)
{
    CHECK_OPEN(self);
    unsigned int widx, inc;
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTuple(args, "II|O", &widx, &inc, &timeout_obj))
        return NULL;
    if (widx >= self->seg.h->max_workers)
        return raise_status(FW_E_ARG, "take");
    int64_t deadline = -1;
    if (timeout_obj != Py_None) {
        double t = PyFloat_AsDouble(timeout_obj);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        deadline = (int64_t)fw_monotonic_ns() + (int64_t)(t * 1e9);
    }
    fw_taken t;
    for (;;) {
        int rc = fw_take(&self->seg, widx, inc, &t);
        if (rc == 1)
            return taken_tuple(&self->seg, &t);
        if (rc == FW_E_SHUTDOWN)
            Py_RETURN_NONE;
        if (rc < 0)
            return raise_status(rc, "take");
        int64_t wait_ns = -1;
        if (deadline >= 0) {
            wait_ns = deadline - (int64_t)fw_monotonic_ns();
            if (wait_ns <= 0)
                Py_RETURN_NONE;
        }
        rc = fw_take_wait(&self->seg, widx, inc, wait_ns, &t);
        if (rc == 1)
            return taken_tuple(&self->seg, &t);
        if (rc == FW_E_SHUTDOWN)
            Py_RETURN_NONE;
        if (rc < 0 && rc != -EINTR)
            return raise_status(rc, "take");
        if (PyErr_CheckSignals() != 0)
            return NULL;
    }
}

/* complete(handle, worker, incarnation, status, flags, payload, notify_fd) -> bool
 * False when the slot was reclaimed meanwhile (the result is dropped). */
/* complete(handle, worker, incarnation, status, flags, payload, notify_fd)
 * payload: a buffer, or (total length, [(offset, buffer), ...]) for a result
 * laid out by the caller, whose pieces are copied straight into place.
 * -> bool: False when the slot was reclaimed meanwhile (the result is dropped). */
static PyObject *complete_impl(SegmentObject *self, PyObject *const *args, Py_ssize_t nargs, int take_next)
{
    CHECK_OPEN(self);
    if (nargs != 7)
        return PyErr_Format(PyExc_TypeError, "complete() takes 7 arguments (%zd given)", nargs);
    unsigned long long handle = PyLong_AsUnsignedLongLong(args[0]);
    unsigned long widx = PyLong_AsUnsignedLong(args[1]);
    unsigned long inc = PyLong_AsUnsignedLong(args[2]);
    unsigned long status = PyLong_AsUnsignedLong(args[3]);
    unsigned long flags = PyLong_AsUnsignedLong(args[4]);
    /* args[6]: the eventfd to write, or a mapping (.get(client, -1)) asked
     * for the fd of the client the result is actually delivered to, only
     * when that client must be woken: the task may have changed hands
     * (a client that left hands its tasks to the control plane). */
    PyObject *notify_to = args[6];
    long fd = -1;
    if (PyLong_Check(notify_to))
        fd = PyLong_AsLong(notify_to);
    if (PyErr_Occurred())
        return NULL;

    Py_buffer views[MAX_PARTS];
    fw_part parts[MAX_PARTS];
    uint32_t nparts = 0, total = 0;
    if (parse_layout(args[5], views, parts, &nparts, &total) != 0)
        return NULL;
    int notify = 0, took = 0;
    uint32_t client = 0;
    fw_taken next;
    int rc = fw_complete(&self->seg, handle, (uint32_t)widx, (uint32_t)inc, (uint32_t)status, (uint32_t)flags,
                         parts, nparts, total, &notify, &client, take_next ? &next : NULL, &took);
    for (uint32_t i = 0; i < nparts; i++)
        PyBuffer_Release(&views[i]);
    if (rc != FW_OK && rc != FW_E_STALE)
        return raise_status(rc, "complete");
    if (notify && !PyLong_Check(notify_to)) {
        PyObject *got = PyObject_CallMethod(notify_to, "get", "Ii", client, -1);
        if (!got)
            return NULL;
        fd = PyLong_AsLong(got);
        Py_DECREF(got);
        if (fd == -1 && PyErr_Occurred())
            return NULL;
    }
    if (notify && fd >= 0)
        fw_eventfd_signal((int)fd);
    if (take_next)
        return took ? taken_tuple(&self->seg, &next) : Py_NewRef(Py_None);
    return PyBool_FromLong(rc == FW_OK);
}

/* complete(...) then take the worker's next task under the same lock:
 * -> the next task (as take() returns it) or None when none is queued. */
static PyObject *seg_complete_take(SegmentObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return complete_impl(self, args, nargs, 1);
}

static PyObject *seg_complete(SegmentObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return complete_impl(self, args, nargs, 0);
}

/* drain(client, max=...) -> [(handle, status, flags, tag, payload, t_start_ns, t_end_ns), ...]
 * Results are copied out and their slots freed. */
static PyObject *seg_drain(SegmentObject *self, PyObject *args)
{
    CHECK_OPEN(self);
    unsigned int client, max = 1u << 30;
    if (!PyArg_ParseTuple(args, "I|I", &client, &max))
        return NULL;
    if (client >= self->seg.h->max_clients)
        return raise_status(FW_E_ARG, "drain");
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    uint32_t idx[DRAIN_BATCH];
    uint32_t total = 0;
    while (total < max) {
        uint32_t want = max - total < DRAIN_BATCH ? max - total : DRAIN_BATCH;
        uint32_t n = fw_drain(&self->seg, client, idx, want);
        if (n == 0)
            break;
        int failed = 0;
        uint32_t release[DRAIN_BATCH], nrelease = 0;
        for (uint32_t i = 0; i < n; i++) {
            fw_slot *sl = &self->seg.slots[idx[i]];
            int lend = (sl->flags & FW_RESULT_KEEP) && sl->block != FW_NONE && !failed && arena_can_lend(&self->seg, sl);
            if (!lend)
                release[nrelease++] = idx[i];
            if (failed)
                continue;
            uint8_t *data = sl->block == FW_NONE ? sl->inline_data : fw_arena_ptr(&self->seg, sl->block);
            PyObject *payload = lend ? slotbuffer_new(self, idx[i], data, sl->len) : copy_bytes(&self->seg, data, sl->len);
            if (lend && !payload)
                release[nrelease++] = idx[i]; /* not lent after all */
            PyObject *items[7] = {
                PyLong_FromUnsignedLongLong(fw_handle(idx[i], sl->gen)), PyLong_FromUnsignedLong(sl->status),
                PyLong_FromUnsignedLong(sl->flags), PyLong_FromUnsignedLongLong(sl->tag),
                payload, PyLong_FromUnsignedLongLong(sl->t_start),
                PyLong_FromUnsignedLongLong(sl->t_end),
            };
            PyObject *item = tuple_of(7, items);
            if (!item || PyList_Append(list, item) != 0)
                failed = 1;
            Py_XDECREF(item);
        }
        fw_release(&self->seg, release, nrelease);
        if (failed) {
            Py_DECREF(list);
            return NULL;
        }
        total += n;
        if (n < want)
            break;
    }
    return list;
}

static PyObject *seg_arm(SegmentObject *self, PyObject *arg)
{
    CHECK_OPEN(self);
    unsigned long client = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (client >= self->seg.h->max_clients)
        return raise_status(FW_E_ARG, "arm");
    return PyBool_FromLong(fw_arm(&self->seg, (uint32_t)client));
}

static PyObject *seg_cancel(SegmentObject *self, PyObject *args)
{
    CHECK_OPEN(self);
    unsigned int client;
    unsigned long long handle;
    if (!PyArg_ParseTuple(args, "IK", &client, &handle))
        return NULL;
    int rc = fw_cancel(&self->seg, client, handle);
    if (rc < 0)
        return raise_status(rc, "cancel");
    return PyBool_FromLong(rc);
}

/* reclaim_worker(worker, incarnation, error_payload, status=RESULT_FAILURE) -> [(handle, client), ...] */
static PyObject *seg_reclaim_worker(SegmentObject *self, PyObject *args)
{
    CHECK_OPEN(self);
    unsigned int widx, inc, status = FW_RESULT_FAILURE;
    Py_buffer err;
    if (!PyArg_ParseTuple(args, "IIy*|I", &widx, &inc, &err, &status))
        return NULL;
    if (status != FW_RESULT_FAILURE && status != FW_RESULT_CANCELLED) {
        PyBuffer_Release(&err);
        return PyErr_Format(PyExc_ValueError, "a reclaimed task ends RESULT_FAILURE or RESULT_CANCELLED, not %u",
                            status);
    }
    uint64_t handles[64];
    uint32_t clients[64];
    uint32_t n =
        fw_reclaim_worker(&self->seg, widx, inc, status, err.buf, (uint32_t)err.len, handles, clients, 64);
    PyBuffer_Release(&err);
    PyObject *list = PyList_New(n);
    if (!list)
        return NULL;
    for (uint32_t i = 0; i < n; i++)
        PyList_SET_ITEM(list, i, Py_BuildValue("KI", (unsigned long long)handles[i], clients[i]));
    return list;
}

/* stop_running(handle) -> (worker, incarnation) of the worker to kill, or None if not running */
static PyObject *seg_stop_running(SegmentObject *self, PyObject *arg)
{
    CHECK_OPEN(self);
    unsigned long long handle = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    uint32_t widx, inc;
    int rc = fw_stop_running(&self->seg, handle, &widx, &inc);
    if (rc < 0)
        return raise_status(rc, "stop_running");
    if (rc == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("II", widx, inc);
}

/* expired() -> [(worker, incarnation, handle, timeout_ms), ...]: stopped, to be killed */
static PyObject *seg_expired(SegmentObject *self, PyObject *unused)
{
    CHECK_OPEN(self);
    fw_expiry out[64];
    uint32_t n = fw_expired(&self->seg, fw_monotonic_ns(), out, 64);
    PyObject *list = PyList_New(n);
    if (!list)
        return NULL;
    for (uint32_t i = 0; i < n; i++) {
        PyObject *item = Py_BuildValue("IIKI", out[i].worker, out[i].incarnation,
                                       (unsigned long long)out[i].handle, out[i].timeout_ms);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* next_deadline() -> CLOCK_MONOTONIC ns (time.monotonic_ns()) of the earliest running deadline, or None */
static PyObject *seg_next_deadline(SegmentObject *self, PyObject *unused)
{
    CHECK_OPEN(self);
    uint64_t next = fw_next_deadline(&self->seg);
    if (next == 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(next);
}

/* set_deadline(worker, incarnation, timeout_s): the running task's time limit, set by its worker */
static PyObject *seg_set_deadline(SegmentObject *self, PyObject *args)
{
    CHECK_OPEN(self);
    unsigned int widx, inc;
    double timeout;
    if (!PyArg_ParseTuple(args, "IId", &widx, &inc, &timeout))
        return NULL;
    if (widx >= self->seg.h->max_workers)
        return raise_status(FW_E_ARG, "set_deadline");
    if (!(timeout > 0) || timeout > 4e6)
        return PyErr_Format(PyExc_ValueError, "a task's timeout must be within (0, 4e6] s, not %g", timeout);
    fw_worker *w = &self->seg.workers[widx];
    if (__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE) == inc)
        Py_RETURN_NONE; /* already being killed */
    w->timeout_ms = (uint32_t)(timeout * 1000.0 + 0.5);
    __atomic_store_n(&w->deadline_ns, fw_monotonic_ns() + (uint64_t)(timeout * 1e9), __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyObject *seg_client_open(SegmentObject *self, PyObject *arg)
{
    CHECK_OPEN(self);
    unsigned long pid = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    uint32_t c, gen;
    int rc = fw_client_open(&self->seg, (uint32_t)pid, &c, &gen);
    if (rc != FW_OK)
        return raise_status(rc, "client_open");
    return Py_BuildValue("II", c, gen);
}

/* client_handover(from, to, mark) -> (results delivered to `to`, tasks moved) */
static PyObject *seg_client_handover(SegmentObject *self, PyObject *args)
{
    CHECK_OPEN(self);
    unsigned int from, to, mark, moved = 0;
    if (!PyArg_ParseTuple(args, "III", &from, &to, &mark))
        return NULL;
    int rc = fw_client_handover(&self->seg, from, to, mark, &moved);
    if (rc < 0)
        return raise_status(rc, "client_handover");
    return Py_BuildValue("iI", rc, moved);
}

/* find_task(client, tag) -> the handle of the client's unfinished task with that tag, or None */
static PyObject *seg_find_task(SegmentObject *self, PyObject *args)
{
    CHECK_OPEN(self);
    unsigned int client;
    unsigned long long tag;
    if (!PyArg_ParseTuple(args, "IK", &client, &tag))
        return NULL;
    if (fw_lock(&self->seg, FW_OP_NONE, FW_NONE) != FW_OK)
        return raise_status(FW_E_LOCK, "find_task");
    uint64_t handle = 0;
    int found = 0;
    for (uint32_t i = 0; i < self->seg.h->nslots && !found; i++) {
        fw_slot *sl = &self->seg.slots[i];
        if (sl->state != FW_SLOT_FREE && sl->client == client && sl->tag == tag) {
            handle = fw_handle(i, sl->gen);
            found = 1;
        }
    }
    fw_unlock(&self->seg);
    if (!found)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(handle);
}

/* client_gen(client) -> the entry's current generation (0 if never used) */
static PyObject *seg_client_gen(SegmentObject *self, PyObject *arg)
{
    CHECK_OPEN(self);
    unsigned long c = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (c >= self->seg.h->max_clients)
        return raise_status(FW_E_ARG, "client_gen");
    fw_client *cl = &self->seg.clients[c];
    return PyLong_FromUnsignedLong(__atomic_load_n(&cl->in_use, __ATOMIC_ACQUIRE) ? cl->gen : 0);
}

static PyObject *seg_client_close(SegmentObject *self, PyObject *arg)
{
    CHECK_OPEN(self);
    unsigned long c = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    int rc = fw_client_close(&self->seg, (uint32_t)c);
    if (rc != FW_OK)
        return raise_status(rc, "client_close");
    Py_RETURN_NONE;
}

/* set_worker(worker, pid, incarnation, state) — the parent's bookkeeping */
static PyObject *seg_set_worker(SegmentObject *self, PyObject *args)
{
    CHECK_OPEN(self);
    unsigned int widx, pid, inc, state;
    if (!PyArg_ParseTuple(args, "IIII", &widx, &pid, &inc, &state))
        return NULL;
    if (widx >= self->seg.h->max_workers)
        return raise_status(FW_E_ARG, "set_worker");
    fw_worker *w = &self->seg.workers[widx];
    w->pid = pid;
    w->incarnation = inc;
    w->state = state;
    if (state == FW_WORKER_IDLE && pid != 0)
        w->started_ns = fw_realtime_ns();
    Py_RETURN_NONE;
}

static PyObject *seg_worker(SegmentObject *self, PyObject *arg)
{
    CHECK_OPEN(self);
    unsigned long widx = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (widx >= self->seg.h->max_workers)
        return raise_status(FW_E_ARG, "worker");
    fw_worker *w = &self->seg.workers[widx];
    PyObject *cur = w->current_slot == FW_NONE ? Py_NewRef(Py_None) : PyLong_FromUnsignedLong(w->current_slot);
    if (!cur)
        return NULL;
    return Py_BuildValue("{sIsIsIsNsKsKsKsKsI}", "pid", w->pid, "incarnation", w->incarnation, "state", w->state,
                         "current_slot", cur,
                         "tasks_done", (unsigned long long)w->tasks_done, "wakeups",
                         (unsigned long long)w->wakeups, "started_ns", (unsigned long long)w->started_ns,
                         "deadline_ns", (unsigned long long)w->deadline_ns, "stop", w->stop);
}

static PyObject *seg_check(SegmentObject *self, PyObject *unused)
{
    CHECK_OPEN(self);
    fw_census c;
    int rc = fw_check(&self->seg, &c);
    if (rc != FW_OK)
        return raise_status(rc, "check");
    return Py_BuildValue("{sIsIsIsIsIsIs(IIII)sIsIsKsi}", "free", c.by_state[FW_SLOT_FREE], "reserved",
                         c.by_state[FW_SLOT_RESERVED], "queued", c.by_state[FW_SLOT_QUEUED], "running",
                         c.by_state[FW_SLOT_RUNNING], "done", c.by_state[FW_SLOT_DONE], "held",
                         c.by_state[FW_SLOT_HELD], "queued_by_lane", c.queued_by_lane[0], c.queued_by_lane[1],
                         c.queued_by_lane[2], c.queued_by_lane[3], "free_listed", c.free_listed, "done_listed",
                         c.done_listed, "arena_used_bytes",
                         (unsigned long long)(c.arena_used_units << FW_ARENA_MIN_ORDER), "error", c.error);
}

static PyObject *seg_stats(SegmentObject *self, PyObject *unused)
{
    CHECK_OPEN(self);
    fw_header *h = self->seg.h;
#define U64(x) (unsigned long long)(x)
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsK}", "submitted", U64(h->submitted), "completed", U64(h->completed),
                         "cancelled", U64(h->cancelled), "reclaimed", U64(h->reclaimed), "futex_wakes",
                         U64(__atomic_load_n(&h->futex_wakes, __ATOMIC_RELAXED)), "recoveries", U64(h->intent.count),
                         "work_seq", U64(__atomic_load_n(&h->work_seq, __ATOMIC_RELAXED)), "free_slots",
                         U64(h->free_count), "arena_free_bytes", U64(h->arena_free_units << FW_ARENA_MIN_ORDER),
                         "spin_hits", U64(h->spin_hits), "spin_misses", U64(h->spin_misses),
                         "last_recovered_op", U64(h->intent.last_op_pid >> 32), "last_recovered_pid",
                         U64(h->intent.last_op_pid & 0xffffffffu), "spinner",
                         U64(__atomic_load_n(&h->spinner, __ATOMIC_RELAXED)), "sleeping_mask",
                         U64(__atomic_load_n(&h->sleeping[0], __ATOMIC_RELAXED)), "rescues",
                         U64(__atomic_load_n(&h->rescues, __ATOMIC_RELAXED)), "failed", U64(h->failed));
#undef U64
}

static PyObject *seg_client_stats(SegmentObject *self, PyObject *arg)
{
    CHECK_OPEN(self);
    unsigned long c = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (c >= self->seg.h->max_clients)
        return raise_status(FW_E_ARG, "client_stats");
    fw_client *cl = &self->seg.clients[c];
    return Py_BuildValue("{sIsIsIsKsKsKsI}", "pid", cl->pid, "gen", cl->gen, "in_use", cl->in_use, "submitted",
                         (unsigned long long)cl->submitted, "completed", (unsigned long long)cl->completed,
                         "notifies", (unsigned long long)__atomic_load_n(&cl->notifies, __ATOMIC_RELAXED),
                         "done_waiting", __atomic_load_n(&cl->done_count, __ATOMIC_RELAXED));
}

/* set_spin(ns, ncpus) */
static PyObject *seg_set_spin(SegmentObject *self, PyObject *args)
{
    CHECK_OPEN(self);
    unsigned long long ns;
    unsigned int ncpus;
    if (!PyArg_ParseTuple(args, "KI", &ns, &ncpus))
        return NULL;
    fw_set_spin(&self->seg, ns, ncpus);
    Py_RETURN_NONE;
}

static PyObject *seg_shutdown(SegmentObject *self, PyObject *unused)
{
    CHECK_OPEN(self);
    fw_shutdown(&self->seg);
    Py_RETURN_NONE;
}

/* Tests only: the raw bytes of a slot, to prove what the segment holds. */
static PyObject *seg_slot_state(SegmentObject *self, PyObject *arg)
{
    CHECK_OPEN(self);
    unsigned long idx = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (idx >= self->seg.h->nslots)
        return raise_status(FW_E_ARG, "slot_state");
    fw_slot *sl = &self->seg.slots[idx];
    return Py_BuildValue("{sIsIsIsIsIsIsIsK}", "state", sl->state, "gen", sl->gen, "lane", sl->lane, "client",
                         sl->client, "worker", sl->worker, "len", sl->len, "fn_id", sl->fn_id, "tag",
                         (unsigned long long)sl->tag);
}

/* handle_state(handle) -> (state, t_start_ns), state -1 when the slot moved on */
static PyObject *seg_handle_state(SegmentObject *self, PyObject *arg)
{
    CHECK_OPEN(self);
    unsigned long long handle = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    uint32_t idx = fw_handle_idx(handle);
    if (idx >= self->seg.h->nslots)
        return Py_BuildValue("iK", -1, 0ULL);
    fw_slot *sl = &self->seg.slots[idx];
    uint32_t state = __atomic_load_n(&sl->state, __ATOMIC_ACQUIRE);
    uint64_t t_start = sl->t_start;
    if (__atomic_load_n(&sl->gen, __ATOMIC_ACQUIRE) != fw_handle_gen(handle))
        return Py_BuildValue("iK", -1, 0ULL);
    return Py_BuildValue("iK", (int)state, (unsigned long long)t_start);
}

static PyObject *seg_get_name(SegmentObject *self, void *c) { return Py_NewRef(self->name); }
static PyObject *seg_get_closed(SegmentObject *self, void *c)
{
    return PyBool_FromLong(self->seg.base == NULL || self->closing);
}

#define HEADER_GETTER(field, conv)                                                   \
    static PyObject *seg_get_##field(SegmentObject *self, void *c)                   \
    {                                                                                \
        CHECK_OPEN(self);                                                            \
        return conv(self->seg.h->field);                                             \
    }
HEADER_GETTER(nslots, PyLong_FromUnsignedLong)
HEADER_GETTER(max_workers, PyLong_FromUnsignedLong)
HEADER_GETTER(max_clients, PyLong_FromUnsignedLong)
HEADER_GETTER(arena_size, PyLong_FromUnsignedLongLong)
HEADER_GETTER(total_size, PyLong_FromUnsignedLongLong)
HEADER_GETTER(epoch, PyLong_FromUnsignedLongLong)
HEADER_GETTER(owner_pid, PyLong_FromUnsignedLong)
HEADER_GETTER(owner_start_time, PyLong_FromUnsignedLongLong)
HEADER_GETTER(layout_version, PyLong_FromUnsignedLong)

static PyObject *seg_get_arena_max_block(SegmentObject *self, void *c)
{
    CHECK_OPEN(self);
    return PyLong_FromUnsignedLongLong(1ULL << self->seg.h->arena_max_order);
}

static PyObject *seg_get_base_address(SegmentObject *self, void *c)
{
    CHECK_OPEN(self);
    return PyLong_FromVoidPtr(self->seg.base);
}

static PyObject *seg_get_free_slots(SegmentObject *self, void *c)
{
    CHECK_OPEN(self);
    return PyLong_FromUnsignedLong(__atomic_load_n(&self->seg.h->free_count, __ATOMIC_RELAXED));
}

static PyObject *seg_get_arena_state(SegmentObject *self, void *c)
{
    CHECK_OPEN(self);
    static const char *names[] = {"pending", "ready", "failed"};
    uint32_t st = __atomic_load_n(&self->seg.h->arena_state, __ATOMIC_ACQUIRE);
    return PyUnicode_FromString(st < 3 ? names[st] : "unknown");
}

static PyObject *seg_get_is_shutdown(SegmentObject *self, void *c)
{
    CHECK_OPEN(self);
    return PyBool_FromLong(__atomic_load_n(&self->seg.h->flags, __ATOMIC_SEQ_CST) & FW_FLAG_SHUTDOWN);
}

static PyGetSetDef seg_getset[] = {
    {"name", (getter)seg_get_name, NULL, "the POSIX shared-memory name", NULL},
    {"closed", (getter)seg_get_closed, NULL, NULL, NULL},
    {"nslots", (getter)seg_get_nslots, NULL, NULL, NULL},
    {"max_workers", (getter)seg_get_max_workers, NULL, NULL, NULL},
    {"max_clients", (getter)seg_get_max_clients, NULL, NULL, NULL},
    {"arena_size", (getter)seg_get_arena_size, NULL, NULL, NULL},
    {"arena_max_block", (getter)seg_get_arena_max_block, NULL, "the largest payload the arena can hold", NULL},
    {"size", (getter)seg_get_total_size, NULL, NULL, NULL},
    {"epoch", (getter)seg_get_epoch, NULL, NULL, NULL},
    {"owner_pid", (getter)seg_get_owner_pid, NULL, NULL, NULL},
    {"owner_start_time", (getter)seg_get_owner_start_time, NULL, NULL, NULL},
    {"layout_version", (getter)seg_get_layout_version, NULL, NULL, NULL},
    {"is_shutdown", (getter)seg_get_is_shutdown, NULL, NULL, NULL},
    {"arena_state", (getter)seg_get_arena_state, NULL, "'pending' until the arena's pages are reserved, then 'ready' (or 'failed')", NULL},
    {"free_slots", (getter)seg_get_free_slots, NULL, "free slots now (a hint: others may take them)", NULL},
    {"base_address", (getter)seg_get_base_address, NULL, "where this process maps the segment", NULL},
    {NULL},
};

static PyMethodDef seg_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))seg_submit, METH_FASTCALL, NULL},
    {"submit_many", (PyCFunction)seg_submit_many, METH_VARARGS, NULL},
    {"take", (PyCFunction)seg_take, METH_VARARGS, NULL},
    {"complete", (PyCFunction)(void (*)(void))seg_complete, METH_FASTCALL, NULL},
    {"complete_take", (PyCFunction)(void (*)(void))seg_complete_take, METH_FASTCALL, NULL},
    {"drain", (PyCFunction)seg_drain, METH_VARARGS, NULL},
    {"arm", (PyCFunction)seg_arm, METH_O, NULL},
    {"cancel", (PyCFunction)seg_cancel, METH_VARARGS, NULL},
    {"reclaim_worker", (PyCFunction)seg_reclaim_worker, METH_VARARGS, NULL},
    {"stop_running", (PyCFunction)seg_stop_running, METH_O, NULL},
    {"expired", (PyCFunction)seg_expired, METH_NOARGS, NULL},
    {"next_deadline", (PyCFunction)seg_next_deadline, METH_NOARGS, NULL},
    {"set_deadline", (PyCFunction)seg_set_deadline, METH_VARARGS, NULL},
    {"client_open", (PyCFunction)seg_client_open, METH_O, NULL},
    {"client_close", (PyCFunction)seg_client_close, METH_O, NULL},
    {"client_gen", (PyCFunction)seg_client_gen, METH_O, NULL},
    {"client_handover", (PyCFunction)seg_client_handover, METH_VARARGS, NULL},
    {"find_task", (PyCFunction)seg_find_task, METH_VARARGS, NULL},
    {"client_stats", (PyCFunction)seg_client_stats, METH_O, NULL},
    {"set_worker", (PyCFunction)seg_set_worker, METH_VARARGS, NULL},
    {"worker", (PyCFunction)seg_worker, METH_O, NULL},
    {"check", (PyCFunction)seg_check, METH_NOARGS, NULL},
    {"stats", (PyCFunction)seg_stats, METH_NOARGS, NULL},
    {"shutdown", (PyCFunction)seg_shutdown, METH_NOARGS, NULL},
    {"set_spin", (PyCFunction)seg_set_spin, METH_VARARGS, NULL},
    {"slot_state", (PyCFunction)seg_slot_state, METH_O, NULL},
    {"handle_state", (PyCFunction)seg_handle_state, METH_O, NULL},
    {"close", (PyCFunction)seg_close, METH_NOARGS, NULL},
    {"reserve_arena", (PyCFunction)seg_reserve_arena, METH_NOARGS, NULL},
    {NULL},
};

static PyTypeObject SegmentType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fastworker._native.Segment",
    .tp_basicsize = sizeof(SegmentObject),
    .tp_dealloc = (destructor)segment_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A mapped fastworker shared segment (create() or attach() it).",
    .tp_methods = seg_methods,
    .tp_getset = seg_getset,
};

/* ------------------------------------------------------ module functions */

static PyObject *py_set_pdeathsig(PyObject *mod, PyObject *arg)
{
    long sig = PyLong_AsLong(arg);
    if (sig == -1 && PyErr_Occurred())
        return NULL;
    if (prctl(PR_SET_PDEATHSIG, sig) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* Keep freed heap memory in this process instead of handing it back to the
 * kernel after every big task.  glibc serves allocations over its mmap
 * threshold with a fresh mmap and trims the heap top above its trim
 * threshold; a worker that unpickles an 8 MiB argument and allocates an
 * 8 MiB result then pays ~2000 page faults per task (~1 ms each way). */
static PyObject *py_retain_heap(PyObject *mod, PyObject *args)
{
    Py_ssize_t mmap_threshold, trim_threshold;
    if (!PyArg_ParseTuple(args, "nn", &mmap_threshold, &trim_threshold))
        return NULL;
    if (mmap_threshold < 0 || trim_threshold < 0 || mmap_threshold > INT_MAX || trim_threshold > INT_MAX)
        return PyErr_Format(PyExc_ValueError, "thresholds must be within 0..%d bytes", INT_MAX);
#ifdef __GLIBC__
    if (!mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) || !mallopt(M_TRIM_THRESHOLD, (int)trim_threshold))
        Py_RETURN_FALSE;
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE; /* another C library: its own policy stands */
#endif
}

static const char *op_names[FW_OP_COUNT] = {"none",    "submit",  "take",  "complete", "drain",  "release",
                                            "cancel",  "reclaim", "alloc", "publish",  "client"};

static PyObject *py_set_crash_point(PyObject *mod, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    for (uint32_t i = 0; i < FW_OP_COUNT; i++) {
        if (strcmp(name, op_names[i]) == 0) {
            fw_set_crash_point(i);
            Py_RETURN_NONE;
        }
    }
    return PyErr_Format(PyExc_ValueError, "unknown ring operation %R", arg);
}

static PyObject *py_layout(PyObject *mod, PyObject *unused)
{
    return Py_BuildValue(
        "{sKsIsIsIsIsIsIsIsIsIsnsnsnsnsnsnsn}", "magic", (unsigned long long)FW_MAGIC, "layout_version",
        FW_LAYOUT_VERSION, "header_size", FW_HEADER_SIZE, "slot_size", FW_SLOT_SIZE, "inline_capacity",
        FW_INLINE_CAP, "lanes", FW_LANES, "max_workers", FW_MAX_WORKERS, "max_clients", FW_MAX_CLIENTS,
        "max_slots", FW_MAX_SLOTS, "arena_unit", 1u << FW_ARENA_MIN_ORDER, "off_magic",
        (Py_ssize_t)offsetof(fw_header, magic), "off_layout_version", (Py_ssize_t)offsetof(fw_header, layout_version),
        "off_total_size", (Py_ssize_t)offsetof(fw_header, total_size), "off_owner_pid",
        (Py_ssize_t)offsetof(fw_header, owner_pid), "off_owner_start_time",
        (Py_ssize_t)offsetof(fw_header, owner_start_time), "off_epoch", (Py_ssize_t)offsetof(fw_header, epoch),
        "off_ready", (Py_ssize_t)offsetof(fw_header, ready));
}

static PyMethodDef module_methods[] = {
    {"create", (PyCFunction)(void (*)(void))py_create, METH_VARARGS | METH_KEYWORDS,
     "create(name, nslots, arena_size, max_workers, max_clients, owner_pid, owner_start_time, epoch)"},
    {"attach", py_attach, METH_O, "attach(name): map an existing segment after checking its header"},
    {"segment_size", py_segment_size, METH_VARARGS, "segment_size(nslots, arena_size, max_workers, max_clients)"},
    {"set_pdeathsig", py_set_pdeathsig, METH_O, "prctl(PR_SET_PDEATHSIG, sig)"},
    {"retain_heap", py_retain_heap, METH_VARARGS,
     "retain_heap(mmap_threshold, trim_threshold) -> bool: glibc mallopt; False where not applied"},
    {"_set_crash_point", py_set_crash_point, METH_O, "tests only: die (SIGKILL) inside the next such ring op"},
    {"layout", py_layout, METH_NOARGS, "constants and header offsets of native/layout.h"},
    {NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "fastworker._native", "The shared-memory ring of fastworker.", -1, module_methods,
};

static int add_error(PyObject *m, PyObject **slot, const char *name, PyObject *base)
{
    char full[128];
    snprintf(full, sizeof full, "fastworker._native.%s", name);
    *slot = PyErr_NewException(full, base, NULL);
    if (!*slot)
        return -1;
    Py_INCREF(*slot);
    return PyModule_AddObject(m, name, *slot);
}

PyMODINIT_FUNC PyInit__native(void)
{
    if (PyType_Ready(&SegmentType) < 0 || PyType_Ready(&SlotBufferType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (!m)
        return NULL;
    Py_INCREF(&SegmentType);
    if (PyModule_AddObject(m, "Segment", (PyObject *)&SegmentType) < 0)
        return NULL;
    Py_INCREF(&SlotBufferType);
    if (PyModule_AddObject(m, "SlotBuffer", (PyObject *)&SlotBufferType) < 0)
        return NULL;
    if (add_error(m, &FullError, "Full", PyExc_Exception) || add_error(m, &TooBigError, "TooBig", PyExc_ValueError) ||
        add_error(m, &ShutdownError, "Shutdown", PyExc_Exception) ||
        add_error(m, &SegmentErrorBase, "SegmentInvalid", PyExc_OSError) ||
        add_error(m, &ForeignError, "Foreign", SegmentErrorBase) ||
        add_error(m, &VersionError, "VersionMismatch", SegmentErrorBase) ||
        add_error(m, &CorruptError, "Corrupt", SegmentErrorBase) ||
        add_error(m, &NotReadyError, "NotReady", SegmentErrorBase) ||
        add_error(m, &NoSpaceError, "NoSpace", PyExc_OSError) || add_error(m, &LockError, "LockBroken", PyExc_OSError) ||
        add_error(m, &ArenaFailedError, "ArenaFailed", PyExc_OSError) ||
        add_error(m, &ArenaStuckError, "ArenaStuck", ArenaFailedError))
        return NULL;
    PyModule_AddIntConstant(m, "INLINE_CAPACITY", FW_INLINE_CAP);
    PyModule_AddIntConstant(m, "LAYOUT_VERSION", FW_LAYOUT_VERSION);
    PyModule_AddIntConstant(m, "MAX_WORKERS", FW_MAX_WORKERS);
    PyModule_AddIntConstant(m, "MAX_CLIENTS", FW_MAX_CLIENTS);
    PyModule_AddIntConstant(m, "RESULT_SUCCESS", FW_RESULT_SUCCESS);
    PyModule_AddIntConstant(m, "RESULT_FAILURE", FW_RESULT_FAILURE);
    PyModule_AddIntConstant(m, "RESULT_CANCELLED", FW_RESULT_CANCELLED);
    PyModule_AddIntConstant(m, "RESULT_KEEP", FW_RESULT_KEEP);
    PyModule_AddIntConstant(m, "SLOT_QUEUED", FW_SLOT_QUEUED);
    PyModule_AddIntConstant(m, "SLOT_RUNNING", FW_SLOT_RUNNING);
    PyModule_AddIntConstant(m, "WORKER_IDLE", FW_WORKER_IDLE);
    PyModule_AddIntConstant(m, "WORKER_BUSY", FW_WORKER_BUSY);
    PyModule_AddIntConstant(m, "WORKER_SLEEPING", FW_WORKER_SLEEPING);
    PyModule_AddIntConstant(m, "WORKER_GONE", FW_WORKER_GONE);
    PyModule_AddIntConstant(m, "WORKER_EMPTY", FW_WORKER_EMPTY);
    return m;
}
