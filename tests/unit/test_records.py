"""The client's record table: size bound (least recently used first), TTL with an
injected clock, waiters woken on finish, finished results kept as untracked tuples."""

from __future__ import annotations

import gc

from fastworker.engine.records import STATUS, Record, RecordTable, ResultCodes, to_result
from fastworker.tasks.models import TaskStatus
from fastworker.tasks.serialization import JSON_CODEC


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def finished(table: RecordTable, task_id: str, handle: int, payload: bytes = b"3"):
    record = Record(task_id, "add", handle)
    table.add(record)
    return table.finish(record, TaskStatus.SUCCESS, payload, 1_700_000_000_000_000_000, 1_700_000_000_000_001_000)


def test_a_finished_task_reads_back_as_a_task_result():
    table = RecordTable(size=10, ttl=3600, clock=Clock())
    entry = finished(table, "t0", 0)
    result = to_result(table.get("t0"), JSON_CODEC)
    assert (result.task_id, result.status, result.result, result.task_name) == ("t0", TaskStatus.SUCCESS, 3, "add")
    assert result.started_at.tzinfo is not None and result.started_at < result.completed_at
    assert entry[STATUS] == "success"


def test_the_least_recently_used_finished_record_goes_first():
    table = RecordTable(size=3, ttl=3600, clock=Clock())
    for i in range(3):
        finished(table, f"t{i}", i)
    assert table.get("t0") is not None  # read: now the most recently used
    finished(table, "t3", 3)
    assert table.get("t1") is None
    assert [table.get(t) is not None for t in ("t0", "t2", "t3")] == [True, True, True]


def test_records_expire_after_the_ttl():
    clock = Clock()
    table = RecordTable(size=100, ttl=10, clock=clock)
    finished(table, "old", 1)
    clock.now += 11
    finished(table, "new", 2)
    assert table.get("old") is None
    assert table.get("new") is not None
    clock.now += 11
    assert table.get("new") is None


def test_in_flight_records_are_never_evicted_and_waiters_are_woken():
    table = RecordTable(size=1, ttl=10, clock=Clock())
    pending = Record("pending", "add", 99)
    table.add(pending)
    for i in range(5):
        finished(table, f"t{i}", i)
    assert table.get("pending") is pending

    class Waiter:
        def __init__(self) -> None:
            self.value = None

        def done(self) -> bool:
            return self.value is not None

        def set_result(self, value) -> None:
            self.value = value

    waiter = Waiter()
    pending.waiters = [waiter]
    entry = table.finish(pending, TaskStatus.FAILURE, error="x")
    assert waiter.value is entry and table.get("pending") == entry


def test_drained_results_finish_their_records_in_one_pass():
    table = RecordTable(size=10, ttl=3600, clock=Clock())
    for i in range(3):
        table.add(Record(f"t{i}", "add", 100 + i))
    items = [(100 + i, 1, 0, i, b"%d" % i, 1, 2) for i in range(3)] + [(999, 1, 0, 9, b"0", 1, 2)]
    table.finish_drained(items, ResultCodes({1: TaskStatus.SUCCESS}))
    assert not table.in_flight and not table.pending
    assert [to_result(table.get(f"t{i}"), JSON_CODEC).result for i in range(3)] == [0, 1, 2]


def test_kept_results_are_not_tracked_by_the_garbage_collector():
    table = RecordTable(size=100, ttl=3600, clock=Clock())
    entry = finished(table, "t0", 0)
    gc.collect()
    assert not gc.is_tracked(entry)


def test_many_rounds_through_a_full_table_stay_bounded():
    table = RecordTable(size=1000, ttl=3600, clock=Clock())
    for i in range(20_000):
        finished(table, f"t{i}", i)
    assert len(table.finished) == 1000 and not table.pending


def test_a_failed_task_with_retries_left_is_held_back_for_the_caller():
    from fastworker.engine.records import NOT_IN_RING, Retry
    from fastworker.tasks.policy import make_policy

    table = RecordTable(size=10, ttl=3600, clock=Clock())
    retry = Retry(1, 0, 2, 0, b"[]", 1, make_policy(retries=1), None)
    record = Record("t0", "add", 100, retry)
    table.add(record)
    failure = (100, 2, 0, 1, b'{"type":"ValueError","message":"x","traceback":""}', 1, 2)
    codes = ResultCodes({1: TaskStatus.SUCCESS, 2: TaskStatus.FAILURE})
    held = table.finish_drained([failure], codes)
    assert held == [(record, failure)] and table.get("t0") is record and not table.in_flight
    # The second attempt is placed by the control plane (so found by its tag) and fails too:
    # no retry is left, so it finishes, telling how many attempts ran.
    table.unplaced(record)
    assert record.handle == NOT_IN_RING
    retry.attempt = 2
    table.add(record)
    again = (200, 2, 0, 1, failure[4], 3, 4)
    assert table.finish_drained([again], codes, {1: record}) == []
    result = to_result(table.get("t0"), JSON_CODEC)
    assert (result.status, result.error, result.attempts) == (TaskStatus.FAILURE, "ValueError: x", 2)
