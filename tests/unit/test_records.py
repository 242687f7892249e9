"""The client's record table: size bound (least recently used first), TTL with an
injected clock, waiters woken on finish."""

from __future__ import annotations

from fastworker.engine.records import Record, RecordTable
from fastworker.tasks.models import TaskStatus


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def finished(table: RecordTable, task_id: str, handle: int) -> Record:
    record = Record(task_id, "add", handle)
    table.add(record)
    del table.in_flight[handle]
    table.finish(record, TaskStatus.SUCCESS)
    return record


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
    del table.in_flight[99]
    table.finish(pending, TaskStatus.FAILURE)
    assert waiter.value is pending and pending.waiters is None


def test_many_rounds_through_a_full_table_stay_bounded():
    table = RecordTable(size=1000, ttl=3600, clock=Clock())
    for i in range(20_000):
        finished(table, f"t{i}", i)
    assert len(table.finished) == len(table.by_id) == 1000
