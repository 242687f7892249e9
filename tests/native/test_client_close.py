"""Closing a client entry frees everything it held, and nobody who reuses the
entry sees its tasks; a task still running when its client closed is freed
when it completes (shared-memory-engine.md §3, test 7)."""

from __future__ import annotations

import os

from fastworker import _native

SUCCESS = _native.RESULT_SUCCESS


def test_close_frees_queued_done_and_held_slots_and_their_blocks(make_segment):
    seg = make_segment(nslots=16)
    c, _ = seg.client_open(os.getpid())
    other, _ = seg.client_open(os.getpid())
    done = seg.submit(c, 2, 0, 0, 1, b"d" * 2000)  # arena payload
    running = seg.submit(c, 2, 0, 0, 2, b"r")
    seg.submit(c, 3, 0, 0, 3, b"q" * 3000)
    keep = seg.submit(other, 2, 0, 0, 4, b"theirs")
    assert seg.take(0, 1, 0)[0] == done
    assert seg.complete(done, 0, 1, SUCCESS, 0, b"x" * 5000, -1)
    assert seg.take(1, 1, 0)[0] == running

    seg.client_close(c)
    census = seg.check()
    assert census["error"] == 0
    assert (census["queued"], census["running"], census["done"]) == (1, 1, 0)  # the other client's, and the running one
    assert census["arena_used_bytes"] == 0

    # The running task completes after its client left: freed, not delivered to anyone.
    assert seg.complete(running, 1, 1, SUCCESS, 0, b"late", -1) is True
    c2, _ = seg.client_open(os.getpid())
    assert c2 == c
    assert seg.drain(c2) == []
    census = seg.check()
    assert census["error"] == 0 and census["running"] == 0 and census["free"] == 15
    assert seg.take(0, 1, 0)[0] == keep


def test_a_closed_clients_task_cannot_be_cancelled_by_the_next_user_of_the_entry(make_segment):
    seg = make_segment()
    c, _ = seg.client_open(os.getpid())
    seg.client_open(os.getpid())  # a second entry, so c is reused below
    handle = seg.submit(c, 2, 0, 0, 1, b"a")
    seg.client_close(c)
    c2, _ = seg.client_open(os.getpid())
    assert c2 == c
    assert seg.cancel(c2, handle) is False
    assert seg.check()["error"] == 0


def test_a_reclaimed_task_of_a_closed_client_is_freed_not_reported(make_segment):
    seg = make_segment()
    c, _ = seg.client_open(os.getpid())
    seg.submit(c, 2, 0, 0, 1, b"a")
    seg.take(0, 1, 0)
    seg.client_close(c)
    assert seg.reclaim_worker(0, 1, b'{"type":"WorkerLostError","message":"x","traceback":""}') == []
    census = seg.check()
    assert census["error"] == 0 and census["free"] == seg.nslots
