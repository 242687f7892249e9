"""Type stub of ``fastworker._native``, the CPython binding in ``native/module.c``.

Every Segment method is METH_O / METH_VARARGS / METH_FASTCALL, so its parameters are
positional-only; only the module function ``create`` takes keywords.  Handles are
``(gen << 32) | slot index``.  The dicts returned by the inspection calls have fixed keys:
they are spelled out as TypedDicts (stub-only names, underscored).
"""

from collections.abc import Iterable
from typing import Protocol, Final, Literal, TypedDict, final

from _typeshed import ReadableBuffer

# ------------------------------------------------------------------ constants

INLINE_CAPACITY: Final = 176  # FW_INLINE_CAP: payload bytes held in the slot itself
LAYOUT_VERSION: Final = 3  # FW_LAYOUT_VERSION
MAX_WORKERS: Final = 256  # FW_MAX_WORKERS
MAX_CLIENTS: Final = 1024  # FW_MAX_CLIENTS
RESULT_SUCCESS: Final = 1  # enum fw_result_status
RESULT_KEEP: Final = 65536  # result flag: drain() lends the payload as a SlotBuffer
RESULT_FAILURE: Final = 2
RESULT_CANCELLED: Final = 3  # stopped while running: its worker was killed on purpose
SLOT_QUEUED: Final = 2  # enum fw_slot_state (as handle_state() reports it)
SLOT_RUNNING: Final = 3
WORKER_EMPTY: Final = 0  # enum fw_worker_state (set_worker(), worker()["state"])
WORKER_IDLE: Final = 1
WORKER_BUSY: Final = 2
WORKER_SLEEPING: Final = 3
WORKER_GONE: Final = 4

# ----------------------------------------------------------------- exceptions

class Full(Exception):
    """No free slot, no free arena block, or no free client entry: try again later."""

class TooBig(ValueError):
    """A payload larger than the arena's largest block (or than 4 GiB)."""

class Shutdown(Exception):
    """The segment is shutting down: nothing more is queued."""

class SegmentInvalid(OSError):
    """attach() refused the segment (base of the four below)."""

class Foreign(SegmentInvalid):
    """Wrong magic number, or smaller than a header."""

class VersionMismatch(SegmentInvalid):
    """Made by another layout version."""

class Corrupt(SegmentInvalid):
    """The header does not match the segment's size or geometry."""

class NotReady(SegmentInvalid):
    """The creator has not finished initialising it."""

class NoSpace(OSError):
    """/dev/shm cannot back the segment (posix_fallocate: ENOSPC)."""

class LockBroken(OSError):
    """The robust ring lock could not be made consistent."""

class ArenaFailed(OSError):
    """The arena's pages could not be reserved after start: big payloads cannot cross."""

class ArenaStuck(ArenaFailed):
    """complete(): no arena block for the result, and none can ever free up (queued tasks'
    arguments hold the whole arena and every running worker waits for space)."""

# ------------------------------------------------------- result dicts (stub only)

class _Layout(TypedDict):
    magic: int
    layout_version: int
    header_size: int
    slot_size: int
    inline_capacity: int
    lanes: int
    max_workers: int
    max_clients: int
    max_slots: int
    arena_unit: int
    off_magic: int
    off_layout_version: int
    off_total_size: int
    off_owner_pid: int
    off_owner_start_time: int
    off_epoch: int
    off_ready: int

class _Census(TypedDict):
    free: int
    reserved: int
    queued: int
    running: int
    done: int
    held: int
    queued_by_lane: tuple[int, int, int, int]
    free_listed: int
    done_listed: int
    arena_used_bytes: int
    error: int  # 0 when every index agrees with the slot table

class _FdLookup(Protocol):
    def get(self, client: int, default: int, /) -> int: ...

class _Stats(TypedDict):
    submitted: int
    completed: int
    cancelled: int
    reclaimed: int
    futex_wakes: int
    recoveries: int  # lock recoveries after EOWNERDEAD
    work_seq: int
    free_slots: int
    arena_free_bytes: int
    spin_hits: int
    spin_misses: int
    last_recovered_op: int  # the interrupted operation (enum fw_op) of the last recovery, 0 if none
    last_recovered_pid: int  # the process that died holding the lock then
    spinner: int  # 0, or the index + 1 of the worker spinning for work
    sleeping_mask: int  # sleeping bits of workers 0..63
    rescues: int  # sleeps ended by the 1 s safety timeout with work queued (lost wake-ups): must stay 0
    failed: int  # tasks completed with FAILURE

class _ClientStats(TypedDict):
    pid: int
    gen: int
    in_use: int
    submitted: int
    completed: int
    notifies: int
    done_waiting: int

class _WorkerInfo(TypedDict):
    pid: int
    incarnation: int
    state: int  # WORKER_*
    current_slot: int | None
    tasks_done: int
    wakeups: int
    started_ns: int
    deadline_ns: int  # time.monotonic_ns() when the running task's time is up; 0: no limit
    stop: int  # the incarnation being killed on purpose, 0: none

class _SlotState(TypedDict):
    state: int
    gen: int
    lane: int
    client: int
    worker: int
    len: int
    fn_id: int
    tag: int

# take(): (handle, client, fn_id, flags, tag, lane, payload)
_Taken = tuple[int, int, int, int, int, int, bytes]
# drain(): (handle, status, flags, tag, payload, t_start_ns, t_end_ns)
_Drained = tuple[int, int, int, int, bytes, int, int]
# submit_many() items: (lane, fn_id, flags, tag, payload)
_Submission = tuple[int, int, int, int, ReadableBuffer]

# -------------------------------------------------------------------- Segment

@final
class SlotBuffer:
    """A finished task's payload lent from the arena (buffer protocol); its slot is released
    when this and every view of it are gone."""

    @property
    def nbytes(self) -> int: ...
    @property
    def address(self) -> int: ...
    # Exposes the buffer protocol (memoryview(buf), numpy.frombuffer, pickle.loads(buffers=)).

@final
class Segment:
    """A mapped shared segment.  Made only by create() or attach(); unmapped by close()."""

    # submitting (any process with the mapping)
    def submit(
        self,
        client: int,
        lane: int,
        fn_id: int,
        flags: int,
        tag: int,
        payload: ReadableBuffer | tuple[int, list[tuple[int, ReadableBuffer]]],
        /,
    ) -> int:
        """Queue one task; its handle.  A payload may be laid out as (length, [(offset, buffer),
        ...]), each piece copied straight into place.  Raises Full, TooBig, Shutdown, ArenaFailed."""

    def submit_many(self, client: int, tasks: Iterable[_Submission], /) -> list[int]:
        """Queue all or none; handles in input order.  ValueError if more than nslots."""

    def cancel(self, client: int, handle: int, /) -> bool:
        """True if the task was still queued (it never runs)."""

    # working
    def take(self, worker: int, incarnation: int, timeout: float | None = None, /) -> _Taken | None:
        """Next task by lane, then FIFO; sleeps (GIL released) until one comes.
        None on timeout or shutdown."""

    def complete(
        self,
        handle: int,
        worker: int,
        incarnation: int,
        status: int,
        flags: int,
        payload: ReadableBuffer | tuple[int, list[tuple[int, ReadableBuffer]]],
        notify_fd: int | _FdLookup,
        /,
    ) -> bool:
        """Publish a result and write notify_fd if the client was armed (-1: never); given a
        mapping, its .get(client, -1) names the fd of the client actually delivered to.
        False if the slot was reclaimed meanwhile (the result is dropped)."""

    def complete_take(
        self,
        handle: int,
        worker: int,
        incarnation: int,
        status: int,
        flags: int,
        payload: ReadableBuffer | tuple[int, list[tuple[int, ReadableBuffer]]],
        notify_fd: int | _FdLookup,
        /,
    ) -> _Taken | None:
        """complete(), then take this worker's next task under the same lock, without
        waiting: the task as take() returns it, or None (nothing queued, or slot reclaimed)."""

    # collecting
    def drain(self, client: int, max: int = ..., /) -> list[_Drained]:
        """Copy out up to max finished results of this client and free their slots."""

    def arm(self, client: int, /) -> bool:
        """Ask for an eventfd write on the next result; True if results already wait."""

    # the owner's bookkeeping
    def client_open(self, pid: int, /) -> tuple[int, int]:
        """A free client entry: (index, generation).  Full when the table is full."""

    def client_handover(self, source: int, target: int, mark: int, /) -> tuple[int, int]:
        """Give every task of client `source` to `target` (queued and running ones keep going);
        `mark` (< 65536) goes into the top 16 bits of their tags.  Closes `source`.
        -> (results delivered to `target` now, tasks moved)."""
    def find_task(self, client: int, tag: int, /) -> int | None:
        """The handle of the client's unfinished task with that tag (a scan of the slots)."""
    def client_gen(self, client: int, /) -> int:
        """The entry's current generation; 0 while it is not in use."""
    def client_close(self, client: int, /) -> None: ...
    def set_worker(self, worker: int, pid: int, incarnation: int, state: int, /) -> None: ...
    def reclaim_worker(
        self, worker: int, incarnation: int, error: ReadableBuffer, status: int = ..., /
    ) -> list[tuple[int, int]]:
        """End every task this worker incarnation was running with the error payload
        (truncated to INLINE_CAPACITY) and status RESULT_FAILURE (default) or
        RESULT_CANCELLED; [(handle, client), ...]."""
    def stop_running(self, handle: int, /) -> tuple[int, int] | None:
        """If the task is running: its worker takes nothing more from now on;
        (worker, incarnation) for the caller to kill.  None if it is not running."""
    def expired(self) -> list[tuple[int, int, int, int]]:
        """Workers whose running task passed its deadline, each stopped as by
        stop_running: [(worker, incarnation, handle, timeout_ms), ...]."""
    def next_deadline(self) -> int | None:
        """The earliest deadline of a running task, in time.monotonic_ns() terms; None if none."""
    def set_deadline(self, worker: int, incarnation: int, timeout: float, /) -> None:
        """By a worker, right after take: the task it runs must end within `timeout` s."""

    def set_spin(self, ns: int, ncpus: int, /) -> None:
        """Spin budget of an idle worker (0: never) and the cores the engine may use."""

    def shutdown(self) -> None:
        """Refuse new work and wake every sleeper."""

    def reserve_arena(self) -> None:
        """posix_fallocate the arena and open it (once, by the fork server).
        NoSpace or OSError if that fails."""

    def close(self) -> None:
        """Unmap (idempotent).  Never unlinks."""

    # inspection
    def stats(self) -> _Stats: ...
    def check(self) -> _Census:
        """Walk every index under the lock and count slots by state."""

    def client_stats(self, client: int, /) -> _ClientStats: ...
    def worker(self, worker: int, /) -> _WorkerInfo: ...
    def slot_state(self, index: int, /) -> _SlotState:
        """Tests only: a slot's fields, read without the lock."""

    def handle_state(self, handle: int, /) -> tuple[int, int]:
        """(slot state, t_start_ns), state -1 if the handle's slot has moved on."""

    @property
    def name(self) -> str: ...
    @property
    def base_address(self) -> int:
        """Where this process maps the segment."""
    @property
    def closed(self) -> bool: ...
    @property
    def nslots(self) -> int: ...
    @property
    def max_workers(self) -> int: ...
    @property
    def max_clients(self) -> int: ...
    @property
    def arena_size(self) -> int: ...
    @property
    def arena_max_block(self) -> int:
        """The largest payload the arena can hold."""

    @property
    def size(self) -> int:
        """Total bytes of the segment."""

    @property
    def epoch(self) -> int: ...
    @property
    def owner_pid(self) -> int: ...
    @property
    def owner_start_time(self) -> int: ...
    @property
    def layout_version(self) -> int: ...
    @property
    def is_shutdown(self) -> bool: ...
    @property
    def arena_state(self) -> Literal["pending", "ready", "failed", "unknown"]: ...
    @property
    def free_slots(self) -> int:
        """Free slots now (a hint: others may take them)."""

# ------------------------------------------------------------ module functions

def create(
    name: str,
    nslots: int,
    arena_size: int,
    max_workers: int,
    max_clients: int,
    owner_pid: int,
    owner_start_time: int,
    epoch: int,
    reserve_arena: bool = True,
) -> Segment:
    """shm_open(O_EXCL, 0600) + ftruncate + posix_fallocate + mmap, then initialise.
    FileExistsError if the name is taken, NoSpace if /dev/shm is too small,
    ValueError for a geometry out of range."""

def attach(name: str, /) -> Segment:
    """Map an existing segment after checking magic, version and geometry."""

def segment_size(nslots: int, arena_size: int, max_workers: int, max_clients: int, /) -> int: ...
def set_pdeathsig(sig: int, /) -> None:
    """prctl(PR_SET_PDEATHSIG, sig)."""

def retain_heap(mmap_threshold: int, trim_threshold: int, /) -> bool:
    """mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD) in this process: allocations
    below the first come from the heap, and up to the second of freed heap is
    kept rather than returned to the kernel.  False where the C library is not
    glibc (nothing changed)."""

def _set_crash_point(op: str, /) -> None:
    """Tests only: SIGKILL this process inside the next such ring operation
    ("none" disarms; "submit", "take", "complete", "release", "cancel", ...)."""

def layout() -> _Layout:
    """Constants and header offsets of native/layout.h."""
