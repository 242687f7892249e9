"""Periodic tasks: ``@task(repeat_interval=60)`` and ``@task(cron="*/5 * * * *")``.

Run by the parent while it runs (an embedded Client, or the control plane),
through its Schedule.  An interval task runs first at start, then every
interval; a cron task at each time its expression names (local time, 5
fields, day of week 0 = Sunday, evaluated by croniter).  A tick is skipped
while the previous run is still queued or running, so a slow task never
piles up; ``repeat_count`` and ``repeat_until`` end the series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from ..tasks.models import TaskStatus
from ..tasks.policy import TaskPolicy
from ..tasks.registry import TaskDefinition
from .schedule import Schedule

log = logging.getLogger("fastworker.periodic")


@dataclass
class Series:
    """One periodic task's runs so far."""

    name: str
    policy: TaskPolicy
    next_due: float | None
    runs: int = 0
    skipped: int = 0
    last_task_id: str | None = None

    @classmethod
    def first(cls, defn: TaskDefinition, now: float) -> Series:
        """A periodic task's series before its first run: an interval task runs at start, a cron
        task at the next time its expression names."""
        policy = defn.policy
        return cls(defn.name, policy, now if policy.cron is None else next_cron_time(policy.cron, now))

    @property
    def schedule(self) -> str:
        if self.policy.cron is not None:
            return f"cron {self.policy.cron}"
        return f"every {self.policy.repeat_interval:g} s"

    def row(self) -> dict:
        """What `fastworker list --list-periodic` shows of it (next_run in ISO 8601, UTC)."""
        return {
            "task_name": self.name,
            "schedule": self.schedule,
            "next_run": None if self.next_due is None else datetime.fromtimestamp(self.next_due, timezone.utc).isoformat(),
            "runs": self.runs,
            "skipped": self.skipped,
            "last_task_id": self.last_task_id,
        }


def next_cron_time(expression: str, after: float) -> float:
    from croniter import croniter

    start = datetime.fromtimestamp(after)  # naive local time: cron's own convention
    return float(croniter(expression, start).get_next(float))


class Periodic:
    def __init__(
        self,
        schedule: Schedule,
        run: Callable[[str], str | None],
        status_of: Callable[[str], TaskStatus | None],
    ) -> None:
        self.schedule = schedule
        self.run = run  # queue one run of the task now; its task id (None if it could not)
        self.status_of = status_of  # a run's status, to tell whether it still goes on
        self.series: dict[str, Series] = {}

    @classmethod
    def start(
        cls,
        schedule: Schedule,
        tasks: Iterable[TaskDefinition],
        run: Callable[[str], str | None],
        status_of: Callable[[str], TaskStatus | None],
    ) -> Periodic | None:
        periodic = [defn for defn in tasks if defn.policy.periodic]
        if not periodic:
            return None
        runner = cls(schedule, run, status_of)
        now = schedule.clock()
        for defn in periodic:
            series = runner.series[defn.name] = Series.first(defn, now)
            runner._plan(series, series.next_due or now)
        return runner

    def _plan(self, series: Series, due: float) -> None:
        until = series.policy.repeat_until
        count = series.policy.repeat_count
        if (count is not None and series.runs >= count) or (until is not None and due > _timestamp(until)):
            series.next_due = None
            log.info("periodic task %r: done after %d run(s)", series.name, series.runs)
            return
        series.next_due = due
        self.schedule.add(("periodic", series.name), due, lambda: self._tick(series))

    def _tick(self, series: Series) -> None:
        last = series.last_task_id
        status = self.status_of(last) if last is not None else None
        if status is not None and not status.is_final:
            series.skipped += 1
            log.warning("periodic task %r: tick skipped, the previous run (%s) is still %s",
                        series.name, last, status.value)
        else:
            series.last_task_id = self.run(series.name)
            series.runs += 1
        due = series.next_due or self.schedule.clock()
        now = self.schedule.clock()
        if series.policy.cron is not None:
            following = next_cron_time(series.policy.cron, max(due, now))
        else:
            interval = series.policy.repeat_interval or 1.0
            following = due + interval
            if following <= now:  # the parent was busy or asleep: no burst of missed ticks
                following = now + interval - (now - due) % interval
        self._plan(series, following)

    def describe(self) -> list[dict]:
        return [s.row() for s in sorted(self.series.values(), key=lambda s: s.name)]


def _timestamp(moment: datetime) -> float:
    return moment.timestamp()  # naive: local time


__all__ = ["Periodic", "Series", "next_cron_time"]
