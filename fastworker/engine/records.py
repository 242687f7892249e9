"""A client's record of its tasks: in flight, then finished and kept for a while.

Finished records are kept for ``get_task_result`` in insertion order, least
recently used first: at most ``size`` of them, none older than ``ttl``
seconds.  Results are decoded only when somebody asks for them; a
fire-and-forget task's payload is never decoded.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone
from ..tasks.models import TaskResult, TaskStatus
from ..tasks.serialization import Codec, decode_failure

PENDING, STARTED, SUCCESS, FAILURE, CANCELLED = (
    TaskStatus.PENDING,
    TaskStatus.STARTED,
    TaskStatus.SUCCESS,
    TaskStatus.FAILURE,
    TaskStatus.CANCELLED,
)
_FINAL = frozenset((SUCCESS, FAILURE, CANCELLED))


_fromtimestamp = datetime.fromtimestamp
_UTC = timezone.utc


def from_ns(ns: int) -> datetime | None:
    return _fromtimestamp(ns / 1e9, _UTC) if ns else None


class Record:
    """One task as this client knows it."""

    __slots__ = (
        "task_id",
        "task_name",
        "handle",
        "status",
        "payload",
        "t_start",
        "t_end",
        "finished_at",
        "waiters",
        "error",
        "_result",
    )

    def __init__(self, task_id: str, task_name: str, handle: int) -> None:
        self.task_id = task_id
        self.task_name = task_name
        self.handle = handle
        self.status = PENDING
        self.payload: bytes | None = None
        self.t_start = 0
        self.t_end = 0
        self.finished_at = 0.0
        self.waiters: list | None = None  # futures of wait()
        self.error: str | None = None  # set directly for outcomes decided in this process
        self._result: TaskResult | None = None

    def to_result(self, codec: Codec) -> TaskResult:
        if self._result is not None:
            return self._result
        value = error = tb = None
        status = self.status
        if status is SUCCESS and self.payload is not None:
            try:
                value = codec.decode_result(self.payload)
            except Exception as exc:  # noqa: BLE001 - a result that cannot be read is a failure to report
                status, error = FAILURE, f"{type(exc).__name__}: {exc}"
        elif status is FAILURE and self.payload is not None:
            error, tb = decode_failure(self.payload)
        else:
            error = self.error
        # Positional: this runs once per task, and keywords cost more.
        result = TaskResult(
            self.task_id,
            status,
            value,
            error,
            _fromtimestamp(self.t_start / 1e9, _UTC) if self.t_start else None,
            _fromtimestamp(self.t_end / 1e9, _UTC) if self.t_end else None,
            tb or None,
            self.task_name,
        )
        if status in _FINAL:
            self._result = result  # final: decode once
            self.payload = None
        return result


class RecordTable:
    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self.by_id: dict[str, Record] = {}
        self.in_flight: dict[int, Record] = {}  # by ring handle
        # Oldest (least recently used) first.  An OrderedDict, not a dict:
        # removing from the front of a plain dict leaves holes that every
        # later next(iter(...)) steps over, until the dict happens to resize.
        self.finished: OrderedDict[str, Record] = OrderedDict()
        self._next_expiry = 0.0  # when _expire() next has work to do

    def add(self, record: Record) -> None:
        self.by_id[record.task_id] = record
        self.in_flight[record.handle] = record

    def get(self, task_id: str) -> Record | None:
        record = self.by_id.get(task_id)
        if record is not None and record.status in _FINAL:
            if self.clock() - record.finished_at > self.ttl:
                del self.finished[task_id]
                del self.by_id[task_id]
                return None
            self.finished.move_to_end(task_id)  # least recently used goes first
        return record

    def finish(self, record: Record, status: TaskStatus) -> None:
        """Mark final, wake waiters, and keep the finished records within bounds."""
        record.status = status
        record.finished_at = now = self.clock()
        self.finished[record.task_id] = record
        waiters = record.waiters
        if waiters:
            record.waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(record)
        if len(self.finished) > self.size:
            self._evict_over_size()
        if now >= self._next_expiry:
            self._expire()

    def finish_drained(self, items: list[tuple], status_of: dict[int, TaskStatus]) -> None:
        """``finish`` for every result a drain returned, in one pass.

        The per-result work of the client's hottest loop: one clock read and
        one bounds check per batch, not per result.
        """
        now = self.clock()
        pop, finished = self.in_flight.pop, self.finished
        for handle, status, _flags, _tag, payload, t_start, t_end in items:
            record = pop(handle, None)
            if record is None:
                continue  # cancelled meanwhile
            record.payload = payload
            record.t_start = t_start
            record.t_end = t_end
            record.status = status_of[status]
            record.finished_at = now
            finished[record.task_id] = record
            waiters = record.waiters
            if waiters:
                record.waiters = None
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(record)
        if len(finished) > self.size:
            self._evict_over_size()
        if now >= self._next_expiry:
            self._expire()

    def _evict_over_size(self) -> None:
        while len(self.finished) > self.size:
            task_id, _ = self.finished.popitem(last=False)
            del self.by_id[task_id]

    def _expire(self) -> None:
        now = self.clock()
        limit = now - self.ttl
        while self.finished:
            task_id, record = next(iter(self.finished.items()))
            if record.finished_at >= limit:
                break
            self.finished.popitem(last=False)
            del self.by_id[task_id]
        # Nothing can expire before the oldest kept record does; look again then
        # (at least every 1/64 of the TTL, as reads reorder the records).
        oldest = next(iter(self.finished.values())).finished_at if self.finished else now
        self._next_expiry = min(oldest + self.ttl, now + self.ttl / 64)

    def pending(self) -> list[Record]:
        return list(self.in_flight.values())
