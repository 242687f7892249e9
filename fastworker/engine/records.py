"""A client's record of its tasks: in flight, then finished and kept for a while.

A task in flight is a ``Record`` (mutable: it gathers waiters).  When it
finishes it becomes a ``Finished`` tuple of strings, ints and bytes, and the
Record is dropped.  That is for the garbage collector: a kept result that is
a tuple of untracked objects is itself untracked after one collection, while
an object per result would be re-scanned by every full collection; with
100k results kept that cost more than the rest of the bookkeeping together.

Finished results are kept for ``get_task_result``, least recently used
first: at most ``size`` of them, none older than ``ttl`` seconds.  They are
decoded only when somebody asks; a fire-and-forget task's payload never is.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..tasks.models import TaskResult, TaskStatus
from ..tasks.serialization import Codec, decode_failure

PENDING, STARTED, SUCCESS, FAILURE, CANCELLED = (
    TaskStatus.PENDING,
    TaskStatus.STARTED,
    TaskStatus.SUCCESS,
    TaskStatus.FAILURE,
    TaskStatus.CANCELLED,
)
_STATUS = {s.value: s for s in TaskStatus}
# Outcomes whose payload is an encoded failure: a failure, or a task stopped while running.
_DECODED_FAILURES = (FAILURE, CANCELLED)

_fromtimestamp = datetime.fromtimestamp
_UTC = timezone.utc


def from_ns(ns: int) -> datetime | None:
    return _fromtimestamp(ns / 1e9, _UTC) if ns else None


class ResultCodes:
    """The ring's result codes as statuses, worked out once (drains run for every result)."""

    __slots__ = ("status_of", "values", "failure")

    def __init__(self, status_of: dict[int, TaskStatus]) -> None:
        self.status_of = status_of
        self.values = {code: status.value for code, status in status_of.items()}
        self.failure = next((code for code, status in status_of.items() if status is FAILURE), None)


NOT_IN_RING = -1  # the handle of a task waiting for its time (countdown, eta, a retry's delay)


class Record:
    """A task in flight, as this client knows it."""

    __slots__ = ("task_id", "task_name", "handle", "waiters", "retry")

    def __init__(self, task_id: str, task_name: str, handle: int, retry: Retry | None = None) -> None:
        self.task_id = task_id
        self.task_name = task_name
        self.handle = handle  # NOT_IN_RING while it waits for its time
        self.waiters: list[Any] | None = None  # futures of wait()
        self.retry = retry  # kept to run it again: only tasks with a policy have one

    @property
    def attempt(self) -> int:
        return 1 if self.retry is None else self.retry.attempt


class Retry:
    """What a task with a policy needs to be submitted again: its encoded call and how it goes."""

    __slots__ = ("tag", "fn_id", "lane", "flags", "payload", "retries", "policy", "timeout", "attempt")

    def __init__(self, tag: int, fn_id: int, lane: int, flags: int, payload: bytes, retries: int, policy: Any,
                 timeout: float | None) -> None:
        self.tag = tag
        self.fn_id = fn_id
        self.lane = lane
        self.flags = flags
        self.payload = payload  # the arguments as the codec encoded them, without call options
        self.retries = retries  # further attempts allowed after a failure
        self.policy = policy  # the TaskPolicy: its retry delays
        self.timeout = timeout  # the call's own hard timeout (None: the task's)
        self.attempt = 1

    @property
    def exhausted(self) -> bool:
        return self.attempt > self.retries


# A finished task is a plain tuple, not a NamedTuple: the collector untracks
# only exact tuples.  Its fields, by index:
TASK_ID, TASK_NAME, STATUS, PAYLOAD, T_START, T_END, ERROR, FINISHED_AT, ATTEMPTS = range(9)
# task_id: str; task_name: str; status: a TaskStatus value (str); payload: the
# result or failure as the worker encoded it (bytes or None); t_start, t_end:
# ns since the epoch (0 if never started); error: str or None, for outcomes
# decided in this process (cancelled, client stopped); finished_at: the
# table's clock; attempts: how many times it ran (1 without retries).
Finished = tuple


def finished_status(entry: Finished) -> TaskStatus:
    return _STATUS[entry[STATUS]]


def to_result(entry: Finished, codec: Codec) -> TaskResult:
    """The TaskResult of a finished task (decoded now: results are read once, mostly)."""
    task_id, task_name, status_value, payload, t_start, t_end, error, _, attempts = entry
    status = _STATUS[status_value]
    value = tb = None
    if status is SUCCESS:
        try:
            value = codec.decode_result(payload)
        except Exception as exc:  # noqa: BLE001 - a result that cannot be read is a failure to report
            status, error = FAILURE, f"{type(exc).__name__}: {exc}"
    elif status in _DECODED_FAILURES and payload is not None:
        error, tb = decode_failure(payload)
    # Positional: this runs once per task, and keywords cost more.
    return TaskResult(
        task_id,
        status,
        value,
        error,
        _fromtimestamp(t_start / 1e9, _UTC) if t_start else None,
        _fromtimestamp(t_end / 1e9, _UTC) if t_end else None,
        tb or None,
        task_name,
        attempts,
    )


class RecordTable:
    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self.pending: dict[str, Record] = {}  # by task id
        self.in_flight: dict[int, Record] = {}  # the same records, by ring handle
        # Oldest (least recently used) first.  An OrderedDict, not a dict:
        # removing from the front of a plain dict leaves holes that every
        # later next(iter(...)) steps over, until the dict happens to resize.
        self.finished: OrderedDict[str, Finished] = OrderedDict()
        self._next_expiry = 0.0  # when _expire() next has work to do

    def add(self, record: Record) -> None:
        self.pending[record.task_id] = record
        if record.handle != NOT_IN_RING:
            self.in_flight[record.handle] = record

    def in_flight_ids(self) -> set[str]:
        return {record.task_id for record in self.in_flight.values()}

    def placed(self, record: Record, handle: int) -> None:
        """A task that waited for its time is in the ring now."""
        record.handle = handle
        self.in_flight[handle] = record

    def unplaced(self, record: Record) -> None:
        """A task leaves the ring to wait for its time again (a retry's delay)."""
        self.in_flight.pop(record.handle, None)
        record.handle = NOT_IN_RING

    def get(self, task_id: str) -> Record | Finished | None:
        """The task in flight (a Record), finished (a Finished), or None if unknown or expired."""
        record = self.pending.get(task_id)
        if record is not None:
            return record
        entry = self.finished.get(task_id)
        if entry is not None:
            if self.clock() - entry[FINISHED_AT] > self.ttl:
                del self.finished[task_id]
                return None
            self.finished.move_to_end(task_id)  # least recently used goes first
        return entry

    def finish(
        self, record: Record, status: TaskStatus, payload: bytes | None = None, t_start: int = 0, t_end: int = 0,
        error: str | None = None,
    ) -> Finished:
        """Turn a record in flight into a finished entry and wake its waiters."""
        self.in_flight.pop(record.handle, None)
        del self.pending[record.task_id]
        now = self.clock()
        entry = (record.task_id, record.task_name, status.value, payload, t_start, t_end, error, now, record.attempt)
        self._keep(entry, now)
        if record.waiters:
            _wake(record.waiters, entry)
        return entry

    def store(
        self, task_id: str, task_name: str | None, status: TaskStatus, payload: bytes | None,
        t_start: int, t_end: int, error: str | None = None, attempts: int = 1,
    ) -> None:
        """Keep a finished result that arrived from elsewhere (the control plane's cache)."""
        now = self.clock()
        self._keep((task_id, task_name, status.value, payload, t_start, t_end, error, now, attempts), now)

    def finished_items(self) -> list[Finished]:
        return list(self.finished.values())

    def finish_drained(
        self, items: list[tuple], codes: ResultCodes, by_tag: dict[int, Record] | None = None
    ) -> list[tuple[Record, tuple]]:
        """``finish`` for every result a drain returned, in one pass.

        The per-result work of the client's hottest loop: one clock read and
        one bounds check per batch, not per result.  A task that may be retried
        is not finished here: (record, drained item) of each failed one is
        returned for the caller to decide.  ``by_tag`` finds tasks the ring was
        given by someone else (the control plane submits scheduled ones).
        """
        now = self.clock()
        pop, pending, finished = self.in_flight.pop, self.pending, self.finished
        values, failure = codes.values, codes.failure
        held: list[tuple[Record, tuple]] = []
        for item in items:
            handle, status, _flags, tag, payload, t_start, t_end = item
            record = pop(handle, None)
            if record is None:
                record = by_tag.pop(tag, None) if by_tag else None
                if record is None:
                    continue  # cancelled meanwhile
            if record.retry is not None:
                if status == failure and not record.retry.exhausted:
                    held.append((record, item))
                    continue
                attempts = record.retry.attempt
            else:
                attempts = 1
            task_id = record.task_id
            del pending[task_id]
            entry = (task_id, record.task_name, values[status], payload, t_start, t_end, None, now, attempts)
            finished[task_id] = entry
            if record.waiters:
                _wake(record.waiters, entry)
        self._bound(now)
        return held

    def _keep(self, entry: Finished, now: float) -> None:
        self.finished[entry[TASK_ID]] = entry
        self._bound(now)

    def _bound(self, now: float) -> None:
        finished = self.finished
        while len(finished) > self.size:
            finished.popitem(last=False)
        if now >= self._next_expiry:
            self._expire(now)

    def _expire(self, now: float) -> None:
        limit = now - self.ttl
        finished = self.finished
        while finished:
            entry = next(iter(finished.values()))
            if entry[FINISHED_AT] >= limit:
                break
            finished.popitem(last=False)
        # Nothing can expire before the oldest kept entry does; look again then
        # (at least every 1/64 of the TTL, as reads reorder the entries).
        oldest = next(iter(finished.values()))[FINISHED_AT] if finished else now
        self._next_expiry = min(oldest + self.ttl, now + self.ttl / 64)


def _wake(waiters: list[Any], entry: Finished) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(entry)
