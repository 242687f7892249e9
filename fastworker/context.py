"""``current_task()``: what a running task knows about itself.

The worker records the task it is about to run in one module global (a
tuple: a few tens of nanoseconds per task) and ``current_task()`` builds the
``TaskContext`` only when the task asks.  The task id is looked up then too:
an attached client's id prefix lives in the control plane, and most tasks
never ask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .tasks.models import TaskPriority

__all__ = ["TaskContext", "current_task"]

# (id lookup, client, tag, task name, attempt, lane) of the task running in
# this process, or None between tasks.
_running: tuple[Callable[[int, int], str | None], int, int, str, int, int] | None = None


@dataclass(frozen=True, slots=True)
class TaskContext:
    id: str | None  # None only if the task's client could not be asked (it left)
    name: str
    attempt: int  # 1 for the first run, 2 for the first retry, ...
    priority: TaskPriority


def current_task() -> TaskContext | None:
    """The task running in this process (inside a task, in a worker or in eager
    mode); None anywhere else."""
    running = _running
    if running is None:
        return None
    lookup, client, tag, name, attempt, lane = running
    return TaskContext(lookup(client, tag), name, attempt, TaskPriority(lane))


def enter(lookup: Callable[[int, int], str | None], client: int, tag: int, name: str, attempt: int,
          lane: int) -> None:
    """(The worker's hot path assigns ``_running`` itself, to save the call.)"""
    global _running
    _running = (lookup, client, tag, name, attempt, lane)


def leave() -> None:
    global _running
    _running = None
