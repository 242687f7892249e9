"""The parent's schedule and the periodic runner, on a clock moved by hand."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from fastworker.engine.periodic import Periodic, next_cron_time
from fastworker.engine.schedule import Schedule, due_time
from fastworker.tasks.models import TaskStatus
from fastworker.tasks.policy import make_policy
from fastworker.tasks.registry import TaskDefinition


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_entries_run_in_time_order_once_due(loop):
    clock, ran = Clock(), []
    schedule = Schedule(loop, clock)
    schedule.add("b", clock.now + 20, lambda: ran.append("b"))
    schedule.add("a", clock.now + 10, lambda: ran.append("a"))
    schedule.add("c", clock.now + 30, lambda: ran.append("c"))
    assert schedule.run_due() == 0
    clock.now += 25
    assert schedule.run_due() == 2 and ran == ["a", "b"]
    assert schedule.items() == [("c", clock.now + 5)]
    schedule.close()


def test_cancel_and_replace(loop):
    clock, ran = Clock(), []
    schedule = Schedule(loop, clock)
    schedule.add("x", clock.now + 1, lambda: ran.append("x1"))
    schedule.add("x", clock.now + 2, lambda: ran.append("x2"))  # replaces
    schedule.add("y", clock.now + 1, lambda: ran.append("y"))
    assert schedule.cancel("y") is True and schedule.cancel("y") is False
    clock.now += 5
    schedule.run_due()
    assert ran == ["x2"] and len(schedule) == 0
    schedule.close()


def test_a_failing_action_does_not_stop_the_others(loop, caplog):
    clock, ran = Clock(), []
    schedule = Schedule(loop, clock)
    schedule.add("bad", clock.now, lambda: 1 / 0)
    schedule.add("good", clock.now, lambda: ran.append("good"))
    assert schedule.run_due() == 2 and ran == ["good"]
    assert "ZeroDivisionError" in caplog.text
    schedule.close()


def test_close_returns_what_never_ran(loop):
    schedule = Schedule(loop, Clock())
    schedule.add("later", 2e9, lambda: None)
    assert schedule.close() == ["later"] and schedule.closed


def test_the_timer_fires_on_the_loop(loop):
    ran = []
    schedule = Schedule(loop)
    schedule.add("soon", schedule.clock() + 0.01, lambda: (ran.append(1), loop.stop()))
    loop.call_later(5, loop.stop)
    loop.run_forever()
    assert ran == [1]
    schedule.close()


def test_due_time():
    now = 1000.0
    assert due_time(None, None, now) is None
    assert due_time(2.5, None, now) == 1002.5
    aware = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert due_time(None, aware, now) == aware.timestamp()
    naive = datetime(2030, 1, 1, 12, 0)
    assert due_time(None, naive, now) == naive.astimezone().timestamp()  # local time
    with pytest.raises(ValueError, match="countdown must be >= 0"):
        due_time(-1, None, now)
    with pytest.raises(ValueError, match="not both"):
        due_time(1, aware, now)
    with pytest.raises(TypeError, match="eta must be a datetime"):
        due_time(None, "2030-01-01", now)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="countdown must be a number"):
        due_time(True, None, now)
    for huge in (float("inf"), 10**400):
        with pytest.raises(ValueError, match="at most"):
            due_time(huge, None, now)


# ----------------------------------------------------------------------------- periodic


def definition(name: str, **options) -> TaskDefinition:
    return TaskDefinition(name, lambda: None, False, "tests", name, make_policy(**options))


class Runs:
    """The parent's side: queue a run, tell its status."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.status: dict[str, TaskStatus] = {}

    def run(self, name: str) -> str:
        task_id = f"{name}-{len(self.started)}"
        self.started.append(task_id)
        self.status[task_id] = TaskStatus.PENDING
        return task_id

    def finish_all(self) -> None:
        for task_id in self.status:
            self.status[task_id] = TaskStatus.SUCCESS


def test_an_interval_task_runs_at_start_then_every_interval_up_to_its_count(loop):
    clock, runs = Clock(), Runs()
    schedule = Schedule(loop, clock)
    periodic = Periodic.start(schedule, [definition("beat", repeat_interval=60, repeat_count=3),
                                         definition("plain")], runs.run, runs.status.get)
    assert periodic is not None and list(periodic.series) == ["beat"]
    schedule.run_due()
    assert runs.started == ["beat-0"]
    for _ in range(4):
        runs.finish_all()
        clock.now += 60
        schedule.run_due()
    assert runs.started == ["beat-0", "beat-1", "beat-2"]  # repeat_count=3
    assert periodic.describe()[0]["next_run"] is None and len(schedule) == 0
    schedule.close()


def test_a_tick_is_skipped_while_the_previous_run_goes_on(loop):
    clock, runs = Clock(), Runs()
    schedule = Schedule(loop, clock)
    periodic = Periodic.start(schedule, [definition("slow", repeat_interval=10)], runs.run, runs.status.get)
    schedule.run_due()
    clock.now += 10
    schedule.run_due()  # slow-0 still pending: skipped
    assert runs.started == ["slow-0"] and periodic.series["slow"].skipped == 1
    runs.finish_all()
    clock.now += 10
    schedule.run_due()
    assert runs.started == ["slow-0", "slow-1"]
    schedule.close()


def test_a_periodic_task_that_always_fails_keeps_its_schedule(loop):
    clock, runs = Clock(), Runs()
    schedule = Schedule(loop, clock)
    Periodic.start(schedule, [definition("broken", repeat_interval=5)], runs.run, runs.status.get)
    for _ in range(4):
        schedule.run_due()
        for task_id in runs.status:
            runs.status[task_id] = TaskStatus.FAILURE
        clock.now += 5
    assert len(runs.started) == 4
    schedule.close()


def test_repeat_until_ends_the_series_and_missed_ticks_do_not_burst(loop):
    clock, runs = Clock(), Runs()
    schedule = Schedule(loop, clock)
    until = datetime.fromtimestamp(clock.now + 100, timezone.utc)
    Periodic.start(schedule, [definition("t", repeat_interval=10, repeat_until=until)], runs.run, runs.status.get)
    schedule.run_due()
    runs.finish_all()
    clock.now += 55  # the parent was busy for five intervals: one run, not five
    schedule.run_due()
    assert len(runs.started) == 2
    runs.finish_all()
    clock.now += 200
    schedule.run_due()  # the tick due at 60 (before repeat_until) runs late; none is planned after
    assert len(runs.started) == 3 and len(schedule) == 0
    schedule.close()


def test_cron_times_follow_the_expression_in_local_time_with_sunday_as_zero():
    monday_9 = datetime(2026, 11, 30, 9, 0)  # a Monday, local time
    after = monday_9.timestamp()
    assert datetime.fromtimestamp(next_cron_time("*/5 * * * *", after)) == monday_9 + timedelta(minutes=5)
    assert datetime.fromtimestamp(next_cron_time("30 8 * * 0", after)) == datetime(2026, 12, 6, 8, 30)  # Sunday
    assert datetime.fromtimestamp(next_cron_time("0 0 1 * *", after)) == datetime(2026, 12, 1, 0, 0)


def test_a_cron_task_first_runs_at_its_next_time(loop):
    start = datetime(2026, 11, 30, 9, 2).timestamp()
    clock, runs = Clock(start), Runs()
    schedule = Schedule(loop, clock)
    periodic = Periodic.start(schedule, [definition("sync", cron="*/5 * * * *", repeat_count=2)], runs.run,
                              runs.status.get)
    schedule.run_due()
    assert runs.started == []
    clock.now = datetime(2026, 11, 30, 9, 5).timestamp()
    schedule.run_due()
    assert runs.started == ["sync-0"]
    assert periodic.describe()[0]["next_run"] == datetime(2026, 11, 30, 9, 10).astimezone(timezone.utc).isoformat()
    schedule.close()
