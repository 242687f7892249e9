"""Processes that die: a lock holder SIGKILLed inside each ring operation, a worker that dies
mid-task without the lock, and the wake-up of exactly one of many sleeping workers.

Every test forks.  A child attaches by name, does its part and leaves with os._exit; the parent
reaps it (waiting on a pidfd, never longer than the watchdog) and checks what the ring holds."""

from __future__ import annotations

import os
import select
import signal
import time
import traceback
from collections.abc import Callable

import pytest

from fastworker import _native

pytestmark = pytest.mark.timeout(30)

SUCCESS = _native.RESULT_SUCCESS
FAILURE = _native.RESULT_FAILURE
NSLOTS = 8
WATCHDOG = (
    10.0  # seconds any single wait in these tests may take before it is a failure
)
CHILD_EXIT_REACHED = (
    17  # a child that should have died on its crash point exits with this
)


def payload(tag: int, size: int, kind: bytes = b"A") -> bytes:
    unit = kind + tag.to_bytes(7, "little")
    return (unit * (size // 8 + 1))[:size]


def fork(children: list[int], body: Callable[[], object], exit_code: int = 0) -> int:
    """Run body in a child that dies with its parent; exit_code if body returns, 3 if it raises."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 3
        try:
            _native.set_pdeathsig(signal.SIGKILL)
            body()
            code = exit_code
        except BaseException:  # noqa: BLE001 - reported through the exit code
            traceback.print_exc()
        finally:
            os._exit(code)
    children.append(pid)
    return pid


def reap(pid: int, timeout: float = WATCHDOG) -> int:
    """Wait for a child (at most timeout) and return its exit code (-signal if killed)."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"child {pid} still running after {timeout} s")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def crash_in(
    children: list[int], name: str, op: str, action: Callable[[_native.Segment], object]
) -> None:
    """Fork a child that attaches, arms the crash point for op, and runs action; it must die of
    SIGKILL inside the operation, holding the ring lock."""

    def body() -> None:
        seg = _native.attach(name)
        _native._set_crash_point(op)
        action(seg)

    code = reap(fork(children, body, exit_code=CHILD_EXIT_REACHED))
    assert code == -signal.SIGKILL, (
        f"the child was not killed inside {op!r} (exit code {code})"
    )


def run_to_end(
    seg: _native.Segment, client: int, worker: int = 1
) -> list[tuple[int, int, bytes]]:
    """Take, complete (echoing the task's tag) and drain everything: [(tag, status, payload)]."""
    while (t := seg.take(worker, 1, 0)) is not None:
        handle, data = t[0], t[6]
        assert seg.complete(handle, worker, 1, SUCCESS, 0, b"ok:" + data[:8], -1)
    return [(tag, status, data) for _, status, _, tag, data, _, _ in seg.drain(client)]


def assert_clean(seg: _native.Segment) -> None:
    census = seg.check()
    assert census["error"] == 0, census
    assert census["free"] == census["free_listed"] == seg.nslots, census
    assert census["arena_used_bytes"] == 0, census
    assert seg.stats()["arena_free_bytes"] == seg.arena_size


@pytest.fixture
def ring(make_segment: Callable[..., _native.Segment]) -> tuple[_native.Segment, int]:
    seg = make_segment(nslots=NSLOTS, arena_size=1 << 20, max_workers=8, max_clients=4)
    for w in range(8):
        seg.set_worker(w, os.getpid(), 1, _native.WORKER_IDLE)
    c, _ = seg.client_open(os.getpid())
    return seg, c


SIZES = pytest.mark.parametrize("size", [10, 5000], ids=["inline", "arena"])


# --------------------------------------------------- death while holding the lock


@SIZES
def test_crash_in_submit(
    ring: tuple[_native.Segment, int], children: list[int], size: int
) -> None:
    """Killed before the submit committed: the task was never queued and its slot (and arena
    block) are free again."""
    seg, c = ring
    seg.submit(c, 1, 0, 0, 1, payload(1, size))
    seg.submit(c, 1, 0, 0, 2, payload(2, size))
    recoveries = seg.stats()["recoveries"]
    crash_in(
        children,
        seg.name,
        "submit",
        lambda s: s.submit(c, 1, 0, 0, 3, payload(3, size)),
    )
    assert seg.stats()["recoveries"] == recoveries

    seg.submit(c, 1, 0, 0, 4, payload(4, size))  # the next operation recovers the lock

    assert seg.stats()["recoveries"] == recoveries + 1
    census = seg.check()
    assert census["error"] == 0
    assert (census["queued"], census["free"], census["reserved"]) == (3, NSLOTS - 3, 0)
    assert census["arena_used_bytes"] == (3 * 8192 if size > 176 else 0)
    assert seg.stats()["submitted"] == 3
    assert run_to_end(seg, c) == [
        (t, SUCCESS, b"ok:" + payload(t, size)[:8]) for t in (1, 2, 4)
    ]
    assert_clean(seg)


@SIZES
def test_crash_in_take(
    ring: tuple[_native.Segment, int], children: list[int], size: int
) -> None:
    """Killed after unlinking the task from its lane, before it was RUNNING: it is still QUEUED,
    back at the head of its lane, and the next take gets it."""
    seg, c = ring
    handles = [seg.submit(c, 2, 5, 6, tag, payload(tag, size)) for tag in (1, 2)]
    seg.submit(c, 3, 5, 6, 3, payload(3, size))
    recoveries = seg.stats()["recoveries"]
    crash_in(children, seg.name, "take", lambda s: s.take(0, 1, 0))

    got = seg.take(1, 1, 0)

    assert got == (handles[0], c, 5, 6, 1, 2, payload(1, size))
    assert seg.stats()["recoveries"] == recoveries + 1
    census = seg.check()
    assert census["error"] == 0
    assert (census["queued_by_lane"], census["running"]) == ((0, 0, 1, 1), 1)
    assert seg.complete(handles[0], 1, 1, SUCCESS, 0, b"ok:" + payload(1, size)[:8], -1)
    assert run_to_end(seg, c) == [
        (t, SUCCESS, b"ok:" + payload(t, size)[:8]) for t in (1, 2, 3)
    ]
    assert_clean(seg)


@SIZES
def test_crash_in_complete(
    ring: tuple[_native.Segment, int], children: list[int], size: int
) -> None:
    """Killed before the result was published: the task is still RUNNING for the dead worker,
    and reclaiming that worker fails it, once."""
    seg, c = ring
    h1 = seg.submit(c, 0, 0, 0, 1, payload(1, size))
    seg.submit(c, 0, 0, 0, 2, payload(2, size))
    recoveries = seg.stats()["recoveries"]

    def take_then_complete(s: _native.Segment) -> None:
        handle = s.take(0, 1, 0)[0]  # the crash point is in complete, not here
        s.complete(handle, 0, 1, SUCCESS, 0, payload(1, size, b"R"), -1)

    crash_in(children, seg.name, "complete", take_then_complete)
    assert (
        seg.slot_state(h1 & 0xFFFFFFFF)["state"] == 3
    )  # RUNNING, read without the lock

    h2, _, _, _, tag2, _, _ = seg.take(1, 1, 0)  # the next operation recovers the lock

    assert tag2 == 2
    assert seg.stats()["recoveries"] == recoveries + 1
    census = seg.check()
    assert census["error"] == 0
    assert (census["running"], census["done"], census["queued"]) == (2, 0, 0)
    assert seg.stats()["completed"] == 0
    assert seg.reclaim_worker(0, 1, b"WorkerDied: SIGKILL") == [(h1, c)]
    assert seg.complete(h1, 0, 1, SUCCESS, 0, b"too late", -1) is False
    assert seg.complete(h2, 1, 1, SUCCESS, 0, b"ok", -1) is True
    results = [(tag, status, data) for _, status, _, tag, data, _, _ in seg.drain(c)]
    assert results == [(1, FAILURE, b"WorkerDied: SIGKILL"), (2, SUCCESS, b"ok")]
    assert_clean(seg)


@SIZES
def test_crash_in_release(
    ring: tuple[_native.Segment, int], children: list[int], size: int
) -> None:
    """Killed while freeing the results it drained: the client got them (they were copied out
    before the release), the slots stay HELD by that dead client and are never delivered again."""
    seg, c = ring
    for tag in (1, 2):
        seg.submit(c, 0, 0, 0, tag, payload(tag, 10))
        handle = seg.take(0, 1, 0)[0]
        assert seg.complete(handle, 0, 1, SUCCESS, 0, payload(tag, size, b"R"), -1)
    recoveries = seg.stats()["recoveries"]
    crash_in(children, seg.name, "release", lambda s: s.drain(c))

    seg.submit(c, 0, 0, 0, 3, payload(3, size))  # the next operation recovers the lock

    assert seg.stats()["recoveries"] == recoveries + 1
    census = seg.check()
    assert census["error"] == 0
    assert (census["held"], census["done"], census["queued"], census["free"]) == (
        2,
        0,
        1,
        NSLOTS - 3,
    )
    # In use: both results' blocks (their slots are HELD: a slot turns FREE before its block
    # is freed, and the kill came before the first one turned) and task 3's arguments.
    block = 8192 if size > 176 else 0
    assert census["arena_used_bytes"] == 3 * block
    assert seg.drain(c) == []  # nothing is delivered twice
    assert run_to_end(seg, c) == [(3, SUCCESS, b"ok:" + payload(3, size)[:8])]
    # No call frees a dead client's HELD slots: they stay until the segment is recreated.
    assert seg.check()["held"] == 2


@SIZES
def test_crash_in_cancel(
    ring: tuple[_native.Segment, int], children: list[int], size: int
) -> None:
    """Killed before the cancel committed: the task is still queued, in its place, and runs."""
    seg, c = ring
    handles = [seg.submit(c, 0, 0, 0, tag, payload(tag, size)) for tag in (1, 2, 3)]
    recoveries = seg.stats()["recoveries"]
    crash_in(children, seg.name, "cancel", lambda s: s.cancel(c, handles[1]))

    assert seg.take(1, 1, 0)[0] == handles[0]  # the next operation recovers the lock

    assert seg.stats()["recoveries"] == recoveries + 1
    census = seg.check()
    assert census["error"] == 0
    assert census["queued_by_lane"] == (2, 0, 0, 0)
    assert seg.stats()["cancelled"] == 0
    assert seg.complete(handles[0], 1, 1, SUCCESS, 0, b"ok:" + payload(1, size)[:8], -1)
    assert run_to_end(seg, c) == [
        (t, SUCCESS, b"ok:" + payload(t, size)[:8]) for t in (1, 2, 3)
    ]
    assert_clean(seg)


def test_crash_point_names() -> None:
    with pytest.raises(ValueError, match="unknown ring operation"):
        _native._set_crash_point("no such op")
    _native._set_crash_point("none")  # disarms; nothing below may die


# ------------------------------------------------- a worker dies mid-task, no lock held


@SIZES
@pytest.mark.parametrize("death", ["os._exit", "SIGKILL"])
def test_worker_dies_mid_task(
    ring: tuple[_native.Segment, int], children: list[int], size: int, death: str
) -> None:
    """The supervisor's path: reclaim_worker fails the dead worker's task with the error payload,
    a late completion by the old incarnation is refused, and the lock was never recovered."""
    seg, c = ring
    h = seg.submit(c, 1, 3, 4, 42, payload(42, size))
    seg.submit(c, 2, 3, 4, 43, payload(43, size))
    r, w = os.pipe()

    def worker() -> None:
        task = _native.attach(seg.name).take(0, 1, 0)
        os.write(w, b"%d" % task[4])
        if death == "SIGKILL":
            os.kill(os.getpid(), signal.SIGKILL)

    code = reap(fork(children, worker))
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read() == b"42"
    assert code == (-signal.SIGKILL if death == "SIGKILL" else 0)
    assert seg.worker(0)["current_slot"] == h & 0xFFFFFFFF
    assert seg.worker(0)["state"] == _native.WORKER_BUSY

    error = (
        b"WorkerDied: " + bytes(range(256)) * 2
    )  # longer than a slot holds: truncated
    assert seg.reclaim_worker(0, 1, error) == [(h, c)]
    assert seg.reclaim_worker(0, 1, error) == []  # once only
    assert seg.worker(0)["state"] == _native.WORKER_GONE
    assert seg.worker(0)["current_slot"] is None
    assert seg.complete(h, 0, 1, SUCCESS, 0, b"late", -1) is False

    ((handle, status, flags, tag, data, t_start, t_end),) = seg.drain(c)
    assert (handle, status, flags, tag) == (h, FAILURE, 0, 42)
    assert data == error[: _native.INLINE_CAPACITY]
    assert 0 < t_start <= t_end
    stats = seg.stats()
    assert (stats["reclaimed"], stats["completed"], stats["recoveries"]) == (1, 1, 0)
    assert run_to_end(seg, c) == [
        (43, SUCCESS, b"ok:" + payload(43, size)[:8])
    ]  # the other task is intact
    assert_clean(seg)


# ---------------------------------------------------------------- no thundering herd


def in_futex_wait(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    with open(f"/proc/{pid}/wchan") as f:
        wchan = f.read()
    return state == "S" and (wchan in ("", "0") or "futex" in wchan)


class LineReader:
    """Lines from a pipe, each waited for at most WATCHDOG seconds."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def lines(self, want: int) -> list[str]:
        deadline = time.monotonic() + WATCHDOG
        while self.buf.count(b"\n") < want:
            ready, _, _ = select.select(
                [self.fd], [], [], max(deadline - time.monotonic(), 0)
            )
            if not ready:
                pytest.fail(f"waited {WATCHDOG} s for {want} lines, got {self.buf!r}")
            chunk = os.read(self.fd, 4096)
            if not chunk:
                break  # every writer is gone
            self.buf += chunk
        parts = self.buf.split(b"\n")
        got, self.buf = parts[:want], b"\n".join(parts[want:])
        return [line.decode() for line in got if line]


def test_one_submit_wakes_exactly_one_of_eight_sleepers(
    ring: tuple[_native.Segment, int], children: list[int]
) -> None:
    seg, c = ring
    nworkers = 8
    r, w = os.pipe()

    def worker(i: int) -> None:
        s = _native.attach(seg.name)
        s.set_worker(i, os.getpid(), 1, _native.WORKER_IDLE)
        got = s.take(i, 1, 10.0)
        if got is None:
            os.write(w, b"%d none\n" % i)
            return
        os.write(w, b"%d took %d\n" % (i, got[4]))
        assert s.complete(got[0], i, 1, SUCCESS, 0, b"done by %d" % i, -1)
        again = s.take(i, 1, 10.0)  # back to sleep until shutdown
        os.write(w, b"%d then %s\n" % (i, b"none" if again is None else b"a task"))

    pids = []
    for i in range(nworkers):
        seg.set_worker(i, 0, 1, _native.WORKER_EMPTY)
        pids.append(fork(children, lambda i=i: worker(i)))
    os.close(w)
    reader = LineReader(r)
    try:
        # Setup: wait until every child is asleep in the futex.
        deadline = time.monotonic() + WATCHDOG
        while not all(
            seg.worker(i)["state"] == _native.WORKER_SLEEPING and in_futex_wait(pids[i])
            for i in range(nworkers)
        ):
            assert time.monotonic() < deadline, [seg.worker(i) for i in range(nworkers)]
            time.sleep(0.005)
        wakes = seg.stats()["futex_wakes"]
        assert sum(seg.worker(i)["wakeups"] for i in range(nworkers)) == 0

        h = seg.submit(c, 0, 1, 0, 99, b"the only task")

        (first,) = reader.lines(1)
        winner, verb, tag = first.split()
        assert (verb, tag) == ("took", "99")
        winner_i = int(winner)
        assert seg.stats()["futex_wakes"] == wakes + 1
        # The winner completes and goes back to sleep; no one else has moved.
        deadline = time.monotonic() + WATCHDOG
        while not (
            seg.worker(winner_i)["state"] == _native.WORKER_SLEEPING
            and in_futex_wait(pids[winner_i])
        ):
            assert time.monotonic() < deadline, seg.worker(winner_i)
            time.sleep(0.005)
        assert [seg.worker(i)["wakeups"] for i in range(nworkers)] == [
            int(i == winner_i) for i in range(nworkers)
        ]
        assert all(
            seg.worker(i)["state"] == _native.WORKER_SLEEPING for i in range(nworkers)
        )
        assert seg.stats()["futex_wakes"] == wakes + 1

        seg.shutdown()  # wakes every sleeper; each sees the flag and leaves

        rest = reader.lines(nworkers)
    finally:
        os.close(r)
    assert sorted(rest) == sorted(
        [f"{i} none" for i in range(nworkers) if i != winner_i]
        + [f"{winner} then none"]
    )
    assert [reap(pid) for pid in pids] == [0] * nworkers
    ((handle, status, _, tag_, data, _, _),) = seg.drain(c)
    assert (handle, status, tag_, data) == (h, SUCCESS, 99, b"done by %d" % winner_i)
    assert (
        seg.stats()["futex_wakes"] == wakes + 1
    )  # shutdown's broadcast is not a submitter's wake
    assert_clean(seg)
