"""A pure-Python model of the native priority ring: the oracle of test_ring_model.py.

It knows nothing of slot indexes, links or the buddy allocator's free lists.  It keeps only
what the ring promises to its users:

* ``nslots`` slots; a task holds one from submit until its result is drained or it is
  cancelled;
* four FIFO lanes, lane 0 the most urgent; take() serves the lowest non-empty lane's oldest task;
* the running tasks, each owned by one (worker, incarnation);
* per client, a FIFO of finished tasks in completion order;
* the arena: a payload longer than INLINE_CAPACITY holds one power-of-two block of at least
  ARENA_UNIT bytes, from submit until the task completes (then the result's block, if the
  result is big, until it is drained).

Arena fullness is only approximated: the model cannot see fragmentation, so ``arena_room``
answers "no" (not enough bytes even unfragmented), "yes" (an untouched aligned region of the
right size must exist whatever the placement of the live blocks) or "maybe".
"""

from __future__ import annotations

import dataclasses
from collections import deque

INLINE_CAPACITY = 176
ARENA_UNIT = 1024
LANES = 4

SUCCESS = 1
FAILURE = 2


def block_size(length: int) -> int:
    """Bytes of arena a payload of ``length`` bytes holds (0: it is stored in the slot)."""
    if length <= INLINE_CAPACITY:
        return 0
    return max(ARENA_UNIT, 1 << (length - 1).bit_length())


@dataclasses.dataclass
class Task:
    handle: int
    client: int
    lane: int
    fn_id: int
    flags: int
    tag: int
    payload: bytes
    state: str = "queued"  # queued -> running -> done -> (drained: gone)
    worker: tuple[int, int] | None = None
    status: int = 0
    result: bytes = b""
    block: int = 0  # arena bytes held now

    @property
    def index(self) -> int:
        return self.handle & 0xFFFFFFFF


class RingModel:
    def __init__(self, nslots: int, arena_size: int) -> None:
        assert arena_size & (arena_size - 1) == 0, (
            "the model assumes a power-of-two arena"
        )
        self.nslots = nslots
        self.arena_size = arena_size
        self.lanes: list[deque[Task]] = [deque() for _ in range(LANES)]
        self.running: dict[int, Task] = {}
        self.done: dict[int, deque[Task]] = {}
        self.armed: dict[int, bool] = {}
        self.client_submitted: dict[int, int] = {}
        self.client_completed: dict[int, int] = {}
        self.tasks_done: dict[int, int] = {}  # per worker index, reclaims included
        self.submitted = self.completed = self.cancelled = self.reclaimed = 0

    # ----------------------------------------------------------------- views

    def queued(self) -> list[Task]:
        return [t for lane in self.lanes for t in lane]

    def live(self) -> list[Task]:
        done = [t for q in self.done.values() for t in q]
        return self.queued() + list(self.running.values()) + done

    @property
    def free_slots(self) -> int:
        return self.nslots - len(self.live())

    @property
    def arena_used(self) -> int:
        return sum(t.block for t in self.live())

    def counts(self) -> dict[str, object]:
        """What Segment.check() must report."""
        return {
            "free": self.free_slots,
            "reserved": 0,
            "queued": len(self.queued()),
            "running": len(self.running),
            "done": sum(len(q) for q in self.done.values()),
            "held": 0,
            "queued_by_lane": tuple(len(lane) for lane in self.lanes),
            "free_listed": self.free_slots,
            "done_listed": sum(len(q) for q in self.done.values()),
            "arena_used_bytes": self.arena_used,
            "error": 0,
        }

    def find(self, handle: int) -> Task | None:
        return next((t for t in self.live() if t.handle == handle), None)

    # ----------------------------------------------------------------- room

    def arena_room(self, sizes: list[int], release: int = 0) -> str:
        """Can blocks for payloads of these lengths be had, all at once, now?

        ``release`` is a live block freed just before (complete drops the arguments' block
        before it allocates the result's).
        """
        wanted = [b for b in (block_size(n) for n in sizes) if b]
        if not wanted:
            return "yes"
        used = [t.block for t in self.live() if t.block]
        if release:
            used.remove(release)
        if sum(used) + sum(wanted) > self.arena_size:
            return "no"
        for b in wanted:
            if b > self.arena_size:
                return "no"
            # Each live block smaller than b lies inside one b-aligned region; a bigger one
            # covers exactly size/b of them.  If fewer regions are touched than exist, one is
            # wholly free, and a buddy allocator then has a free block of size >= b.
            touched = sum(max(1, u // b) for u in used)
            if touched >= self.arena_size // b:
                return "maybe"
            used.append(b)
        return "yes"

    def room(self, sizes: list[int]) -> str:
        """'no' if submit must raise Full, 'yes' if it must succeed, else 'maybe'."""
        if self.free_slots < len(sizes):
            return "no"
        return self.arena_room(sizes)

    # ------------------------------------------------------------ operations

    def open_client(self, c: int) -> None:
        self.done[c] = deque()
        self.armed[c] = False
        self.client_submitted[c] = self.client_completed[c] = 0

    def submit(self, client: int, tasks: list[Task]) -> None:
        assert self.free_slots >= len(tasks)
        for t in tasks:
            t.block = block_size(len(t.payload))
            self.lanes[t.lane].append(t)
        self.submitted += len(tasks)
        self.client_submitted[client] += len(tasks)

    def take(self, worker: tuple[int, int]) -> Task | None:
        for lane in self.lanes:
            if lane:
                t = lane.popleft()
                t.state = "running"
                t.worker = worker
                self.running[t.handle] = t
                return t
        return None

    def _finish(self, t: Task, status: int, flags: int, result: bytes) -> None:
        del self.running[t.handle]
        t.state = "done"
        t.status = status
        t.flags = flags
        t.result = result
        t.block = block_size(len(result))
        self.done[t.client].append(t)
        self.completed += 1
        self.client_completed[t.client] += 1
        assert t.worker is not None
        self.tasks_done[t.worker[0]] = self.tasks_done.get(t.worker[0], 0) + 1

    def complete(
        self,
        handle: int,
        worker: tuple[int, int],
        status: int,
        flags: int,
        result: bytes,
    ) -> tuple[bool, bool]:
        """(accepted, notify): notify when the client had armed its wake-up."""
        t = self.running.get(handle)
        if t is None or t.worker != worker:
            return False, False
        self._finish(t, status, flags, result)
        notify = self.armed[t.client]
        self.armed[t.client] = False
        return True, notify

    def arm(self, client: int) -> bool:
        self.armed[client] = True
        return bool(self.done[client])

    def drain(self, client: int, limit: int | None = None) -> list[Task]:
        q = self.done[client]
        n = len(q) if limit is None else min(limit, len(q))
        return [q.popleft() for _ in range(n)]

    def cancel(self, client: int, handle: int) -> bool:
        for lane in self.lanes:
            for t in lane:
                if t.handle == handle and t.client == client:
                    lane.remove(t)
                    self.cancelled += 1
                    return True
        return False

    def reclaim(self, worker: tuple[int, int], error: bytes) -> list[Task]:
        """Fail every task (worker, incarnation) was running, in slot order."""
        mine = sorted(
            (t for t in self.running.values() if t.worker == worker),
            key=lambda t: t.index,
        )
        for t in mine:
            self._finish(t, FAILURE, 0, error[:INLINE_CAPACITY])
            self.reclaimed += 1
        return mine
