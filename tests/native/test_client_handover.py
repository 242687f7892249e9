"""A client that leaves hands its tasks to the control plane's own entry: queued
and running ones keep going and complete there, finished ones move there, each
marked with whose it was."""

from __future__ import annotations

import os

from fastworker import _native

SUCCESS = _native.RESULT_SUCCESS


def test_handover_moves_done_running_and_queued_tasks_and_marks_them(make_segment):
    seg = make_segment(nslots=16)
    owner, _ = seg.client_open(os.getpid())  # the control plane's own entry
    c, _ = seg.client_open(os.getpid())
    done = seg.submit(c, 2, 0, 0, 1, b"d")
    running = seg.submit(c, 2, 0, 0, 2, b"r")
    queued = seg.submit(c, 2, 0, 0, 3, b"q" * 3000)
    assert seg.take(0, 1, 0)[0] == done
    assert seg.complete(done, 0, 1, SUCCESS, 0, b"D", -1)
    assert seg.take(1, 1, 0)[0] == running

    delivered, moved = seg.client_handover(c, owner, 7)
    assert (delivered, moved) == (1, 3)
    assert seg.client_gen(c) == 0  # the entry is closed
    assert seg.complete(running, 1, 1, SUCCESS, 0, b"R", -1) is True
    item = seg.take(0, 1, 0)
    assert item[0] == queued and item[4] == (7 << 48) | 3
    assert seg.complete(queued, 0, 1, SUCCESS, 0, b"Q" * 2000, -1)

    results = {(tag >> 48, tag & 0xFFFF): payload for _h, _s, _f, tag, payload, _a, _b in seg.drain(owner)}
    assert results == {(7, 1): b"D", (7, 2): b"R", (7, 3): b"Q" * 2000}
    census = seg.check()
    assert census["error"] == 0 and census["free"] == 16 and census["arena_used_bytes"] == 0


def test_handover_to_a_closed_entry_is_refused(make_segment):
    seg = make_segment()
    c, _ = seg.client_open(os.getpid())
    try:
        seg.client_handover(c, 1, 1)
    except ValueError:
        pass
    else:
        raise AssertionError("handover to an entry nobody holds must fail")
