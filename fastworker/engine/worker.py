"""The worker: take a task from the ring, run it, write its outcome back.

``Worker.step`` is one whole iteration and knows the ring only through
``take`` and ``complete``, so unit tests drive it on an in-process fake ring
without forking (the shape of huey's consumer).  ``Worker.run`` is the loop a
forked worker process spends its life in.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .. import _native, context
from ..errors import PayloadTooLargeError, SharedMemoryFullError, UnknownTaskError
from ..tasks.registry import TaskDefinition
from ..tasks.serialization import PICKLE_CODEC, Codec, encode_failure
from . import call_options, oob

SUCCESS = _native.RESULT_SUCCESS
FAILURE = _native.RESULT_FAILURE
# Submission flag (the codec uses bit 0): lay a pickled result's big buffers
# out of band and lend them to the submitter instead of copying them back.
WANT_LENT = 2
# Submission flag: the arguments are an out-of-band layout (oob.py), not a plain pickle.
ARGS_LAID_OUT = 4
_CALL_OPTIONS = call_options.CALL_OPTIONS


def payload_size(out: Any) -> int:
    """A result's length: bytes, or an out-of-band layout (length, pieces)."""
    return out[0] if isinstance(out, tuple) else len(out)


def inline_failure(error: BaseException) -> bytes:
    """A failure payload that fits in a slot: it must not need the arena."""
    message = str(error)
    while True:
        payload = encode_failure(type(error)(message), "")
        if len(payload) <= _native.INLINE_CAPACITY:
            return payload
        message = message[: len(message) - (len(payload) - _native.INLINE_CAPACITY) - 1]


class FdLookup(Protocol):
    """Client index -> eventfd: a dict for the embedded owner, fdchannel.ClientFds when clients attach."""

    def get(self, client: int, default: int = -1, /) -> int: ...


def no_task_ids(client: int, tag: int) -> str | None:
    return None


class MemoryGuard:
    """max_memory_per_child: is this worker's RSS (psutil, ~9 µs a look) over the limit?

    Looked at after every task that ran 1 ms or more (where memory grows) and
    at least every 10 ms among quicker ones, so a stream of trivial tasks
    pays under 1 % for it."""

    SLOW_TASK = 0.001
    INTERVAL = 0.01

    def __init__(self, limit: int) -> None:
        import psutil  # imported only by workers that have a limit

        self.limit = limit
        self._process = psutil.Process()
        self._checked = self._began = 0.0

    def task_begins(self) -> None:
        self._began = time.monotonic()

    def over(self) -> bool:
        now = time.monotonic()
        if now - self._began < self.SLOW_TASK and now - self._checked < self.INTERVAL:
            return False
        self._checked = now
        return self._process.memory_info().rss > self.limit


class Ring(Protocol):
    def take(self, worker: int, incarnation: int, timeout: float | None = None, /) -> tuple | None: ...

    def complete(
        self, handle: int, worker: int, incarnation: int, status: int, flags: int, payload: Any, notify_fd: Any, /
    ) -> bool: ...

    def complete_take(
        self, handle: int, worker: int, incarnation: int, status: int, flags: int, payload: Any, notify_fd: Any, /
    ) -> tuple | None: ...

    def set_deadline(self, worker: int, incarnation: int, timeout: float, /) -> None: ...


class Worker:
    """Runs tasks for one worker slot (index, incarnation) of the ring."""

    def __init__(
        self,
        ring: Ring,
        index: int,
        incarnation: int,
        tasks: Sequence[TaskDefinition],
        codec: Codec,
        notify_fds: FdLookup | Mapping[int, int],
        max_tasks: int | None = None,
        task_ids: Callable[[int, int], str | None] = no_task_ids,
        max_memory: int | None = None,
    ) -> None:
        self.ring = ring
        self.max_tasks = max_tasks  # leave after this many tasks (the owner forks a fresh worker)
        self.max_memory = max_memory  # leave once RSS is over this many bytes, checked between tasks
        self.task_ids = task_ids  # (client, tag) -> task id, asked only by current_task()
        self.over_memory = False
        # Per fn_id: (definition, its own time limit, the function to call straight when it is
        # a plain sync function without hooks, else None).
        self._plans = [
            (d, d.policy.timeout,
             d.func if not d.is_async and d.policy.before is None and d.policy.after is None else None)
            for d in tasks
        ]
        self.index = index
        self.incarnation = incarnation
        self.tasks = tasks  # indexed by fn_id: the registry snapshot taken when the engine started
        self.codec = codec
        self.notify_fds = notify_fds
        self.tasks_run = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        """Serve until the ring shuts down.

        Completing a task and taking the next happen under one lock
        (``complete_take``) while work is queued; the worker goes back to
        ``take`` (spin, then sleep) only when the lanes are empty.
        """
        ring = self.ring
        index, incarnation, notify_fds = self.index, self.incarnation, self.notify_fds
        left = self.max_tasks if self.max_tasks else -1
        guard = MemoryGuard(self.max_memory) if self.max_memory is not None else None
        try:
            item = ring.take(index, incarnation, None)
            while item is not None:
                left -= 1
                handle, client, fn_id, flags, tag, lane, payload = item
                if guard is not None:
                    guard.task_begins()
                status, out_flags, out = self.execute(fn_id, flags, payload, client, tag, lane)
                self.tasks_run += 1
                if guard is not None:
                    self.over_memory = guard.over()
                if left == 0 or self.over_memory:  # recycled: publish this result, take nothing more
                    self._complete(handle, status, out_flags, out)
                    return
                try:
                    # The ring asks notify_fds for the fd of the client it delivers to,
                    # only when that client must be woken.
                    item = ring.complete_take(handle, index, incarnation, status, out_flags, out, notify_fds)
                except (_native.TooBig, _native.ArenaFailed) as exc:
                    self._complete_oversized(handle, exc, payload_size(out), notify_fds)
                    item = None
                if item is None:
                    item = ring.take(index, incarnation, None)
        finally:
            if self._loop is not None:
                self._loop.close()

    def step(self, timeout: float | None = None) -> bool:
        """Take one task, run it, publish its outcome.

        Returns False when there was nothing to take: the ring is shutting
        down, or ``timeout`` passed.
        """
        item = self.ring.take(self.index, self.incarnation, timeout)
        if item is None:
            return False
        handle, client, fn_id, flags, tag, lane, payload = item
        status, out_flags, out = self.execute(fn_id, flags, payload, client, tag, lane)
        self._complete(handle, status, out_flags, out)
        self.tasks_run += 1
        return True

    def _complete(self, handle: int, status: int, flags: int, out: Any) -> None:
        try:
            self.ring.complete(handle, self.index, self.incarnation, status, flags, out, self.notify_fds)
        except (_native.TooBig, _native.ArenaFailed) as exc:
            self._complete_oversized(handle, exc, payload_size(out), self.notify_fds)

    def _complete_oversized(self, handle: int, exc: Exception, size: int, fd: Any) -> None:
        """The result did not fit in the arena: fail the task, inline, saying why."""
        if isinstance(exc, _native.TooBig):
            error: Exception = PayloadTooLargeError(
                f"the task's result takes {size} bytes, more than the shared arena's largest block; "
                "raise FASTWORKER_ARENA_SIZE (arena_size=) or return less"
            )
        elif isinstance(exc, _native.ArenaStuck):  # queued arguments hold the whole arena
            error = SharedMemoryFullError(f"the task's result takes {size} bytes: {exc}")
        else:
            error = SharedMemoryFullError("the shared arena could not be reserved in /dev/shm; the result was dropped")
        self.ring.complete(handle, self.index, self.incarnation, FAILURE, 0, inline_failure(error), fd)

    def execute(
        self, fn_id: int, flags: int, payload: Any, client: int = 0, tag: int = 0, lane: int = 2
    ) -> tuple[int, int, Any]:
        """Decode, call, encode: (status, flags, payload), never raising.

        Everything the task raises, SystemExit and KeyboardInterrupt
        included, becomes a FAILURE: the worker process outlives its task.
        """
        try:
            defn, timeout, plain = self._plans[fn_id]
        except IndexError:
            known = [t.name for t in self.tasks]
            return self._failure(UnknownTaskError(f"#{fn_id}", known))
        attempt = 1
        if flags & _CALL_OPTIONS:
            own_timeout, attempt, payload = call_options.unwrap(payload)
            timeout = own_timeout or timeout
        if timeout is not None:
            # The owner kills this worker once the deadline passes (Supervisor._check_deadlines).
            self.ring.set_deadline(self.index, self.incarnation, timeout)
        try:
            kwargs: dict[str, Any]
            # Laid-out arguments are a pickle: only a PICKLE engine reads them (a JSON control
            # plane promises never to unpickle what a client wrote into the ring).
            if flags & ARGS_LAID_OUT and self.codec is PICKLE_CODEC:  # views into this worker's copy
                args, kwargs = oob.decode(payload), {}
            else:
                args, kwargs = self.codec.decode_args(payload, flags)
            # What current_task() reads (context.py): set here, not through a call, on the hot path.
            context._running = (self.task_ids, client, tag, defn.name, attempt, lane)
            try:
                value = plain(*args, **kwargs) if plain is not None else self._call_hooked(defn, args, kwargs)
            finally:
                context._running = None
            if flags & WANT_LENT and self.codec is PICKLE_CODEC:
                # The submitter takes big buffers as views of the arena (oob.py).
                out, lent = oob.encode(value)
                return SUCCESS, _native.RESULT_KEEP if lent else 0, out
            return SUCCESS, 0, self.codec.encode_result(defn.name, value)
        except BaseException as exc:  # noqa: BLE001 - the caller gets every failure
            return self._failure(exc)

    def _call_hooked(self, defn: TaskDefinition, args: Any, kwargs: dict[str, Any]) -> Any:
        """The task, between its hooks: ``before`` raising fails the task (it did not
        run); ``after`` raising is reported on stderr and changes nothing."""
        policy = defn.policy
        if policy.before is None and policy.after is None:
            return self._call(defn, args, kwargs)
        if policy.before is not None:
            policy.before(context.current_task())
        try:
            value = self._call(defn, args, kwargs)
        except BaseException as exc:
            self._after(defn, None, exc)
            raise
        self._after(defn, value, None)
        return value

    @staticmethod
    def _after(defn: TaskDefinition, value: Any, error: BaseException | None) -> None:
        if defn.policy.after is None:
            return
        try:
            defn.policy.after(context.current_task(), value, error)
        except Exception:  # noqa: BLE001 - a hook must not change the task's outcome
            print(f"fastworker: the after= hook of task {defn.name!r} raised:", file=sys.stderr)
            traceback.print_exc()

    def _call(self, defn: TaskDefinition, args: Any, kwargs: dict[str, Any]) -> Any:
        if not defn.is_async:
            return defn.func(*args, **kwargs)
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(defn.func(*args, **kwargs))

    @staticmethod
    def _failure(exc: BaseException) -> tuple[int, int, bytes]:
        # Drop this module's own frames: the traceback starts in the task.
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        return FAILURE, 0, encode_failure(exc, text)
