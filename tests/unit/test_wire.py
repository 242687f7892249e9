"""The binary datagrams between clients and the control plane (engine/wire.py): what goes in
comes out, and a malformed datagram is dropped, never misread."""

from __future__ import annotations

import pytest

from fastworker.engine import wire
from fastworker.tasks.models import TaskStatus
from fastworker.tasks.policy import make_policy


def test_keep_datagrams_carry_every_result_and_split_under_the_size_limit():
    results = [(f"id-{i}", TaskStatus.SUCCESS, b"x" * 50_000, i, i + 1) for i in range(6)]
    datagrams = list(wire.keep_datagrams(results))
    assert len(datagrams) > 1 and all(len(d) <= wire.MAX_DATAGRAM for d in datagrams)
    assert [r for d in datagrams for r in wire.read_keep(d)] == results


def test_a_result_too_big_to_keep_is_left_out():
    big = ("big", TaskStatus.SUCCESS, b"x" * wire.MAX_DATAGRAM, 0, 0)
    assert list(wire.keep_datagrams([big])) == []


def test_schedule_datagrams_round_trip_and_refuse_oversized_arguments():
    datagram = wire.schedule_datagram(7, 1234.5, 3, 1, 8, b"[1,2]")
    assert wire.read_schedule(datagram) == (7, 1234.5, 3, 1, 8, b"[1,2]")
    assert wire.read_schedule(datagram[:5]) is None
    with pytest.raises(ValueError, match="holds at most"):
        wire.schedule_datagram(7, 0.0, 3, 1, 0, b"x" * wire.MAX_DATAGRAM)


def test_retry_datagrams_round_trip_and_refuse_a_bad_policy():
    state = wire.RetryState(9, 2, 0, 1, 2, make_policy(retries=3, retry_delay=0.5, retry_backoff=2.0), 1.5, b"{}")
    assert wire.read_retry(wire.retry_datagram(state)) == state
    assert wire.read_retry(wire.RETRY + b"short") is None
    negative_delay = wire.RETRY + wire._RETRYING.pack(9, 2, 0, 1, 2, 3, -1.0, 2.0, 300.0, 0.0) + b"{}"
    assert wire.read_retry(negative_delay) is None
