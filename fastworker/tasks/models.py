"""The data types of the public task API: priorities, statuses, formats and results.

They keep the names and values of the FastWorker task queue so code written against it keeps
working; ``parse`` classmethods accept the loose forms users type (``"high"``, ``"PICKLE"``) and
fail with a message that lists what would have been accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum, IntEnum
from typing import Any

__all__ = [
    "SerializationFormat",
    "TaskPriority",
    "TaskResult",
    "TaskStatus",
    "utc_now",
]


class TaskPriority(IntEnum):
    """Queue priority; a lower value runs first (the ring has one lane per value)."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @classmethod
    def parse(cls, value: object) -> TaskPriority:
        """Accept a ``TaskPriority``, an int 0..3, or a name in any case (``" High "``).

        ``bool`` is refused although it is an ``int``: ``priority=True`` is a bug, not ``HIGH``.
        Names must be ASCII, so that a look-alike such as the dotless i (U+0131, which upper-cases
        to "I") cannot pass for a valid name.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value <= 3:
                return cls(value)
        elif isinstance(value, str):
            key = value.strip()
            if key.isascii():
                member = cls.__members__.get(key.upper())
                if member is not None:
                    return member
        names = ", ".join(m.name.lower() for m in cls)
        numbers = ", ".join(str(m.value) for m in cls)
        raise ValueError(
            f"Invalid task priority {value!r}: expected one of {names} (any case) "
            f"or an int {numbers} (0 is critical and runs first)."
        )


class TaskStatus(str, Enum):
    """Where a task is in its life; the values are the lower-case names, as in FastWorker."""

    PENDING = "pending"
    STARTED = "started"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True once the task can no longer change status."""
        return self in _FINAL_STATUSES


_FINAL_STATUSES = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.CANCELLED})


class SerializationFormat(str, Enum):
    """How arguments and results are encoded; JSON by default, pickle only for trusted callers."""

    JSON = "json"
    PICKLE = "pickle"

    @classmethod
    def parse(cls, value: object) -> SerializationFormat:
        """Accept a ``SerializationFormat`` or its name in any case (``"PICKLE"``, ``"json"``)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ValueError(
            f"Invalid serialization format {value!r}: expected 'json' or 'pickle' (any case)."
        )


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime, the form every timestamp here uses."""
    return datetime.now(timezone.utc)


@dataclass(slots=True)  # slots=True needs Python 3.10, the oldest version supported
class TaskResult:
    """The outcome of one task as the caller sees it.

    ``error`` is ``"Type: message"`` for a failed task and ``traceback`` the worker's formatted
    traceback, so a failure is never reduced to one line.  Timestamps must be timezone-aware
    (use :func:`utc_now`): a naive datetime is ambiguous once results are written out as JSON.
    """

    task_id: str
    status: TaskStatus
    result: Any = None
    error: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    traceback: str | None = None
    task_name: str | None = None
    attempts: int = 1  # how many times the task ran: retries add one each

    def __post_init__(self) -> None:
        # One test on the common path: every result a client builds passes through here.
        started, completed = self.started_at, self.completed_at
        if (started is not None and started.tzinfo is None) or (completed is not None and completed.tzinfo is None):
            label, value = ("started_at", started) if started is not None and started.tzinfo is None else ("completed_at", completed)
            raise ValueError(
                f"TaskResult.{label} must be timezone-aware (got naive {value!r}); "
                f"use fastworker.tasks.models.utc_now() or datetime.now(timezone.utc)."
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        """The inverse of ``to_dict`` (timestamps from ISO 8601)."""
        def when(text: str | None) -> datetime | None:
            return datetime.fromisoformat(text) if text else None

        return cls(
            task_id=data["task_id"],
            status=TaskStatus(data["status"]),
            result=data.get("result"),
            error=data.get("error"),
            started_at=when(data.get("started_at")),
            completed_at=when(data.get("completed_at")),
            traceback=data.get("traceback"),
            task_name=data.get("task_name"),
            attempts=data.get("attempts", 1),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the status as its string value and timestamps in ISO 8601."""
        return {
            "task_id": self.task_id,
            "task_name": self.task_name,
            "status": TaskStatus(self.status).value,
            "result": self.result,
            "error": self.error,
            "traceback": self.traceback,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "attempts": self.attempts,
        }
