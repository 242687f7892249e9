"""The once-seen hang, "both workers asleep with the ring full of queued tasks": the arguments
of queued tasks filled the arena, so a worker whose result needed a bigger block than the
argument it freed waited for space forever, and so did every other worker after it, while the
client waited for a result.  No block could ever free up.  A worker that finds the arena stuck
that way now gets ArenaStuck (the task fails with a clear error) instead of sleeping forever."""

from __future__ import annotations

import os

import pytest

from fastworker import _native

from .test_crash import fork, payload, reap

pytestmark = pytest.mark.timeout(30)


def test_a_result_that_can_never_get_a_block_fails_instead_of_hanging(make_segment, children):
    seg = make_segment(nslots=64, arena_size=64 << 10, max_workers=2, max_clients=2)
    c, _ = seg.client_open(os.getpid())
    seg.set_worker(0, os.getpid(), 1, _native.WORKER_IDLE)
    for tag in range(64):  # 1000-byte arguments: one 1 KiB block each, the whole arena
        seg.submit(c, 2, 0, 0, tag, payload(tag, 1000))
    assert seg.stats()["arena_free_bytes"] == 0

    def worker() -> None:
        s = _native.attach(seg.name)
        handle = s.take(0, 1, 0)[0]  # frees its 1 KiB argument, needs 2 KiB for its result
        with pytest.raises(_native.ArenaStuck, match="arguments of queued tasks hold all of it"):
            s.complete(handle, 0, 1, _native.RESULT_SUCCESS, 0, b"r" * 1500, -1)
        assert s.complete(handle, 0, 1, _native.RESULT_FAILURE, 0, b"no room", -1)

    assert reap(fork(children, worker)) == 0  # before the fix: still asleep at the watchdog
    ((_, status, _, tag, data, _, _),) = seg.drain(c)
    assert (status, tag, data) == (_native.RESULT_FAILURE, 0, b"no room")
    assert seg.check()["queued"] == 63


def test_a_result_waits_for_space_while_a_client_still_holds_results(make_segment, children):
    """Not stuck while a DONE result holds a block: its client will release it."""
    seg = make_segment(nslots=64, arena_size=64 << 10, max_workers=2, max_clients=2)
    c, _ = seg.client_open(os.getpid())
    seg.set_worker(0, os.getpid(), 1, _native.WORKER_IDLE)
    seg.submit(c, 0, 0, 0, 100, b"small")
    first = seg.take(0, 1, 0)[0]
    assert seg.complete(first, 0, 1, _native.RESULT_SUCCESS, 0, b"R" * 2000, -1)  # a 2 KiB block, DONE
    for tag in range(62):
        seg.submit(c, 2, 0, 0, tag, payload(tag, 1000))
    assert seg.stats()["arena_free_bytes"] == 0
    r, w = os.pipe()

    def worker() -> None:
        s = _native.attach(seg.name)
        handle = s.take(0, 1, 0)[0]
        os.write(w, b"taken")
        assert s.complete(handle, 0, 1, _native.RESULT_SUCCESS, 0, b"r" * 1500, -1)

    pid = fork(children, worker)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        assert pipe.read(5) == b"taken"
    ((_, status, _, tag, _, _, _),) = seg.drain(c)  # releasing it frees the 2 KiB the worker waits for
    assert (status, tag) == (_native.RESULT_SUCCESS, 100)
    assert reap(pid) == 0
    ((_, status, _, tag, data, _, _),) = seg.drain(c)
    assert (status, tag, data) == (_native.RESULT_SUCCESS, 0, b"r" * 1500)
