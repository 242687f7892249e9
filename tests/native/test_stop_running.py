"""Stopping a running task (cancel, hard timeout): under the ring lock the
worker running it is told to take nothing more, so the kill that follows can
only ever hit that task; deadlines are set by the worker and found by the
parent."""

from __future__ import annotations

import os
import time

import pytest

from fastworker import _native

ERROR = b'{"type":"TaskCancelledError","message":"x","traceback":""}'


def test_stop_running_names_the_worker_and_that_worker_takes_nothing_more(segment):
    client, _ = segment.client_open(os.getpid())
    first = segment.submit(client, 2, 0, 0, 1, b"a")
    segment.submit(client, 2, 0, 0, 2, b"b")
    handle = segment.take(0, 7, 0)[0]
    assert handle == first
    assert segment.stop_running(handle) == (0, 7)
    assert segment.worker(0)["stop"] == 7
    # Neither a plain take nor a complete-and-take-next hands it more work.
    assert segment.take(0, 7, 0) is None
    assert segment.take(0, 7, 0.01) is None
    assert segment.complete_take(handle, 0, 7, _native.RESULT_SUCCESS, 0, b"done", -1) is None
    assert segment.check()["queued"] == 1
    # Its successor (the next incarnation) works as usual.
    assert segment.take(0, 8, 0)[4] == 2


def test_a_stopped_task_reclaimed_ends_cancelled(segment):
    client, _ = segment.client_open(os.getpid())
    handle = segment.submit(client, 2, 0, 0, 1, b"a")
    segment.take(1, 3, 0)
    assert segment.stop_running(handle) == (1, 3)
    assert segment.reclaim_worker(1, 3, ERROR, _native.RESULT_CANCELLED) == [(handle, client)]
    [(got, status, _flags, tag, payload, _t0, _t1)] = segment.drain(client)
    assert (got, status, tag, payload) == (handle, _native.RESULT_CANCELLED, 1, ERROR)
    assert segment.stats()["cancelled"] == 1 and segment.stats()["failed"] == 0


def test_stop_running_of_a_queued_or_finished_task_is_none(segment):
    client, _ = segment.client_open(os.getpid())
    queued = segment.submit(client, 2, 0, 0, 1, b"a")
    assert segment.stop_running(queued) is None
    handle = segment.take(0, 1, 0)[0]
    segment.complete(handle, 0, 1, _native.RESULT_SUCCESS, 0, b"r", -1)
    assert segment.stop_running(handle) is None
    assert segment.worker(0)["stop"] == 0


def test_reclaim_refuses_a_status_other_than_failure_or_cancelled(segment):
    with pytest.raises(ValueError, match="RESULT_FAILURE or RESULT_CANCELLED"):
        segment.reclaim_worker(0, 1, ERROR, _native.RESULT_SUCCESS)


def test_a_deadline_passed_is_reported_once_and_stops_the_worker(segment):
    client, _ = segment.client_open(os.getpid())
    handle = segment.submit(client, 2, 0, 0, 1, b"a")
    segment.take(2, 5, 0)
    assert segment.next_deadline() is None
    segment.set_deadline(2, 5, 0.005)
    deadline = segment.next_deadline()
    assert deadline is not None and deadline > time.monotonic_ns()
    assert segment.expired() == [] or time.monotonic_ns() >= deadline
    time.sleep(0.01)
    assert segment.expired() == [(2, 5, handle, 5)]
    assert segment.expired() == []  # stopped once; the parent kills it once
    assert segment.next_deadline() is None
    assert segment.take(2, 5, 0) is None


def test_completing_clears_the_deadline(segment):
    client, _ = segment.client_open(os.getpid())
    segment.submit(client, 2, 0, 0, 1, b"a")
    handle = segment.take(0, 1, 0)[0]
    segment.set_deadline(0, 1, 0.001)
    segment.complete(handle, 0, 1, _native.RESULT_SUCCESS, 0, b"r", -1)
    time.sleep(0.005)
    assert segment.expired() == [] and segment.next_deadline() is None


def test_a_deadline_set_after_the_stop_is_ignored(segment):
    client, _ = segment.client_open(os.getpid())
    handle = segment.submit(client, 2, 0, 0, 1, b"a")
    segment.take(0, 4, 0)
    segment.stop_running(handle)
    segment.set_deadline(0, 4, 0.001)  # the worker learned its limit after the parent stopped it
    time.sleep(0.005)
    assert segment.expired() == []


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), 1e7])
def test_set_deadline_refuses_a_timeout_out_of_range(segment, timeout):
    with pytest.raises(ValueError, match="timeout"):
        segment.set_deadline(0, 1, timeout)
