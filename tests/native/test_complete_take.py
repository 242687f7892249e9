"""complete_take(): completing a task and taking the next under one lock
behaves exactly like complete() followed by take()."""

from __future__ import annotations

import os

from fastworker import _native


def test_complete_take_publishes_the_result_and_returns_the_next_most_urgent_task(segment):
    client, _ = segment.client_open(os.getpid())
    for tag, lane in [(1, 3), (2, 2), (3, 0), (4, 2)]:
        segment.submit(client, lane, 0, 0, tag, b"args-%d" % tag)
    item = segment.take(0, 1, 0)
    order = []
    while item is not None:
        handle, _client, _fn, _flags, tag, lane, payload = item
        order.append((tag, lane, payload))
        item = segment.complete_take(handle, 0, 1, _native.RESULT_SUCCESS, 0, b"r%d" % tag, -1)
    assert order == [(3, 0, b"args-3"), (2, 2, b"args-2"), (4, 2, b"args-4"), (1, 3, b"args-1")]
    results = segment.drain(client)
    assert [(r[3], r[4]) for r in results] == [(3, b"r3"), (2, b"r2"), (4, b"r4"), (1, b"r1")]
    census = segment.check()
    assert census["error"] == 0 and census["free"] == segment.nslots


def test_complete_take_with_a_stale_handle_takes_nothing_and_changes_nothing(segment):
    client, _ = segment.client_open(os.getpid())
    segment.submit(client, 2, 0, 0, 1, b"a")
    segment.submit(client, 2, 0, 0, 2, b"b")
    handle = segment.take(0, 1, 0)[0]
    assert segment.reclaim_worker(0, 1, b'{"type":"WorkerLostError","message":"x","traceback":""}')
    # The worker (incarnation 1) was declared dead: its late completion is refused.
    assert segment.complete_take(handle, 0, 1, _native.RESULT_SUCCESS, 0, b"late", -1) is None
    assert segment.check()["queued"] == 1
    [failed] = segment.drain(client)
    assert failed[1] == _native.RESULT_FAILURE
