"""What ``@task(...)`` says about running a task: retries, a hard timeout,
a repeat schedule, hooks.

A ``TaskPolicy`` is checked once, when the decorator runs, so a bad option
fails at import with its name and value, never later inside a worker.
Per-call options (``submit_task(..., retries=, timeout=)``) override the
task's own through ``TaskPolicy.with_overrides``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

__all__ = ["DEFAULT_POLICY", "TaskPolicy", "check_cron", "check_retries", "check_timeout", "make_policy"]


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    retries: int = 0  # further attempts after a failure (0: none)
    retry_delay: float = 1.0  # seconds before the first retry
    retry_backoff: float = 1.0  # each further retry waits this many times longer
    retry_backoff_max: float = 300.0  # ... but never longer than this
    timeout: float | None = None  # seconds a run may take before its worker is killed
    repeat_interval: float | None = None  # periodic: every so many seconds while the parent runs
    cron: str | None = None  # periodic: a 5-field cron expression (croniter)
    repeat_count: int | None = None  # periodic: at most this many runs
    repeat_until: datetime | None = None  # periodic: no run after this moment
    before: Callable[..., Any] | None = None  # hooks, called in the worker around each run
    after: Callable[..., Any] | None = None

    @property
    def periodic(self) -> bool:
        return self.repeat_interval is not None or self.cron is not None

    def retry_delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 is the first run)."""
        delay = self.retry_delay * self.retry_backoff ** (attempt - 1)
        return min(delay, self.retry_backoff_max)

    def with_overrides(self, retries: int | None = None, timeout: float | None = None) -> TaskPolicy:
        """This policy with a call's own ``retries=`` / ``timeout=`` (None keeps the task's)."""
        if retries is None and timeout is None:
            return self
        return replace(
            self,
            retries=self.retries if retries is None else check_retries(retries),
            timeout=self.timeout if timeout is None else check_timeout(timeout),
        )


DEFAULT_POLICY = TaskPolicy()


def _seconds(option: str, value: Any, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{option} must be a number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{option} must be {'>= 0' if allow_zero else '> 0'} seconds, not {value!r}")
    return float(value)


def _count(option: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{option} must be >= {minimum}, not {value!r}")
    return value


def check_retries(value: Any) -> int:
    return _count("retries", value, 0)


def check_timeout(value: Any) -> float:
    return _seconds("timeout", value, allow_zero=False)


def check_cron(expression: Any) -> str:
    """A 5-field cron expression croniter accepts (minute hour day month day-of-week, 0 = Sunday)."""
    from croniter import croniter  # imported when a task is periodic only

    if not isinstance(expression, str) or len(expression.split()) != 5:
        raise ValueError(
            f"cron must be 5 fields 'minute hour day-of-month month day-of-week' (e.g. '*/5 * * * *'), "
            f"not {expression!r}"
        )
    if not croniter.is_valid(expression):
        raise ValueError(f"cron expression {expression!r} is not valid (see `man 5 crontab`)")
    return expression


def make_policy(
    *,
    retries: int = 0,
    retry_delay: float = 1.0,
    retry_backoff: float = 1.0,
    retry_backoff_max: float = 300.0,
    timeout: float | None = None,
    repeat_interval: float | None = None,
    cron: str | None = None,
    repeat_count: int | None = None,
    repeat_until: datetime | None = None,
    before: Callable[..., Any] | None = None,
    after: Callable[..., Any] | None = None,
) -> TaskPolicy:
    """Check every option of ``@task(...)`` and build its policy."""
    if repeat_interval is not None and cron is not None:
        raise ValueError("a task repeats either every repeat_interval seconds or on a cron schedule, not both")
    if (repeat_count is not None or repeat_until is not None) and repeat_interval is None and cron is None:
        raise ValueError("repeat_count and repeat_until need repeat_interval= or cron=")
    if repeat_until is not None and not isinstance(repeat_until, datetime):
        raise TypeError(f"repeat_until must be a datetime, not {repeat_until!r}")
    for hook_name, hook in (("before", before), ("after", after)):
        if hook is not None and not callable(hook):
            raise TypeError(f"{hook_name}= must be callable, not {hook!r}")
    backoff = _seconds("retry_backoff", retry_backoff, allow_zero=False)
    if backoff < 1:
        raise ValueError(f"retry_backoff must be >= 1 (1: a constant delay), not {retry_backoff!r}")
    return TaskPolicy(
        retries=check_retries(retries),
        retry_delay=_seconds("retry_delay", retry_delay, allow_zero=True),
        retry_backoff=backoff,
        retry_backoff_max=_seconds("retry_backoff_max", retry_backoff_max, allow_zero=True),
        timeout=None if timeout is None else check_timeout(timeout),
        repeat_interval=None if repeat_interval is None else _seconds(
            "repeat_interval", repeat_interval, allow_zero=False
        ),
        cron=None if cron is None else check_cron(cron),
        repeat_count=None if repeat_count is None else _count("repeat_count", repeat_count, 1),
        repeat_until=repeat_until,
        before=before,
        after=after,
    )
