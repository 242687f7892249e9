"""The asyncio Client.

Embedded mode (``Client(workers=N, task_modules=[...])``): this process
becomes the parent.  It creates the shared segment, forks the zygote that
forks the workers, and submits straight into the ring.

    delay() ──encode──▶ segment.submit ──▶ [ lanes CRITICAL..LOW ] ──take──▶ worker
                                                                             │ run
    _on_wakeup ◀── eventfd (only when armed) ◀── done list ◀──complete──────┘
        │ drain: copy results out, free slots
        ▼
    RecordTable ──▶ wait() futures, get_task_result()

One eventfd wake-up drains every result that is ready: the client re-arms
only after draining, so under load workers skip the write entirely.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any


from . import _native, eager
from .config import Config
from .errors import (
    ClientClosedError,
    ControlPlaneUnavailable,
    PayloadTooLargeError,
    SharedMemoryFullError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnknownTaskError,
)
from .engine import call_options, shm, wire
from .engine.ids import TaskIds
from .engine.link import Link
from .engine.periodic import Periodic
from .engine.records import (
    CANCELLED,
    FAILURE,
    NOT_IN_RING,
    PENDING,
    STARTED,
    SUCCESS,
    Finished,
    Record,
    RecordTable,
    ResultCodes,
    Retry,
    finished_status,
    from_ns,
    to_result,
)
from .engine.schedule import Schedule, due_time
from .engine.supervisor import Supervisor
from .engine.worker import inline_failure
from .engine.zygote import WorkerSpec
from .events import Events
from .events import call as call_handler
from .tasks.models import TaskPriority, TaskResult, TaskStatus
from .tasks.policy import DEFAULT_POLICY, TaskPolicy, make_policy
from .tasks.registry import load_task_modules, registry
from .tasks.serialization import Codec, decode_failure

log = logging.getLogger("fastworker.client")

_NORMAL = TaskPriority.NORMAL
_STATUS_OF = {_native.RESULT_SUCCESS: SUCCESS, _native.RESULT_FAILURE: FAILURE, _native.RESULT_CANCELLED: CANCELLED}
_CODES = ResultCodes(_STATUS_OF)
_EVENT_OF = {SUCCESS.value: "task.success", FAILURE.value: "task.failure", CANCELLED.value: "task.cancelled"}
_SCHEDULING = ("countdown", "eta")
# task.started: how often the client looks for tasks that started, and how many it looks at.
_STARTED_POLL = 0.02
_STARTED_SCAN = 1024
# delay()'s own keywords: a task keyword of the same name must take the other way in.
_DELAY_KEYWORDS = frozenset(("priority", *_SCHEDULING))
# The retry options a control plane tells its clients (the hard timeout is the workers' business).
_RETRY_OPTIONS = ("retries", "retry_delay", "retry_backoff", "retry_backoff_max")
_BATCH_KEYS = frozenset(("task_name", "args", "kwargs", "priority"))
# How long stop() lets running tasks finish before their workers are killed.
_STOP_GRACE = 5.0

# Started clients, held strongly: a started Client owns processes and a
# shared segment, so it must not vanish with its last reference unstopped.
_live_clients: set[Client] = set()


@atexit.register
def _stop_forgotten_clients() -> None:
    """A script that never stopped its Client still leaves nothing behind."""
    for client in list(_live_clients):
        log.warning("a fastworker Client was never stopped; stopping it at exit (use `async with Client(...)`)")
        client._teardown(grace=0.0)


class Client:
    """Submit tasks and collect their results from asyncio code.

    ``Client(workers=N, task_modules=[...])`` runs an embedded engine: this
    process owns the workers.  Every option falls back to its
    ``FASTWORKER_*`` environment variable, then to its default.
    """

    def __init__(
        self,
        workers: int | None = None,
        task_modules: str | Iterable[str] | None = None,
        *,
        name: str | None = None,
        serialization_format: str | None = None,
        timeout: float | None = None,
        result_cache_size: int | None = None,
        result_cache_ttl: float | None = None,
        slots: int | None = None,
        arena_size: int | str | None = None,
        spin_us: int | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | str | None = None,
        eager: bool | None = None,
    ) -> None:
        modules = task_modules if task_modules is None or isinstance(task_modules, str) else ",".join(task_modules)
        self.config = Config.resolve(
            workers=workers,
            task_modules=modules,
            name=name,
            serialization_format=serialization_format,
            timeout=timeout,
            result_cache_size=result_cache_size,
            result_cache_ttl=result_cache_ttl,
            slots=slots,
            arena_size=arena_size,
            spin_us=spin_us,
            max_tasks_per_child=max_tasks_per_child,
            max_memory_per_child=max_memory_per_child,
            eager=eager,
        )
        self._eager = self.config.eager
        self._embedded = workers is not None or task_modules is not None or self._eager
        self._codec = Codec.for_format(self.config.serialization_format)
        self._segment: _native.Segment | None = None
        self._supervisor: Supervisor | None = None
        self._records = RecordTable(self.config.result_cache_size, self.config.result_cache_ttl)
        self._ids = TaskIds()
        self._counter = 0
        self._fn_ids: dict[str, int] = {}
        self._client_id = 0
        self._eventfd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room_waiters: list[asyncio.Future] = []
        self._control: Link | None = None  # attached: the connection to the control plane
        self._closed = False
        self._policies: dict[str, TaskPolicy] = {}  # tasks with options (retries, ...), by name
        self._schedule: Schedule | None = None  # embedded: tasks waiting for their time
        self._periodic: Periodic | None = None
        self._by_tag: dict[int, Record] = {}  # attached: tasks the control plane places for us
        self._background: set[asyncio.Task] = set()  # placing due tasks, callbacks
        self.events = Events()
        # task.started: workers send no message when they take a task, so while somebody listens
        # the client looks at its oldest tasks in flight every _STARTED_POLL s.
        self._started_timer: asyncio.TimerHandle | None = None
        self._started_seen: set[str] = set()  # ids of tasks in flight reported started

    # ------------------------------------------------------------------ life

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Leaving on an error or Ctrl-C: do not wait for running tasks.
        self._teardown(grace=_STOP_GRACE if exc_type is None else 0.0)

    async def start(self) -> None:
        if self._segment is not None:
            return
        if self._closed:
            raise ClientClosedError("this Client was stopped; create a new one")
        if not self._embedded:
            await self._attach()
            return
        loop = asyncio.get_running_loop()
        load_task_modules(self.config.task_modules)
        names = registry.snapshot()
        tasks = tuple(registry.get(n) for n in names)
        self._fn_ids = {n: i for i, n in enumerate(names)}
        self._policies = {d.name: d.policy for d in tasks if d.policy is not DEFAULT_POLICY}
        if self._eager:
            self._loop = loop
            self._segment = eager.NO_SEGMENT
            _live_clients.add(self)
            return
        geometry = shm.Geometry(
            nslots=self.config.slots,
            arena_size=self.config.arena_size,
            max_workers=self.config.workers,
            max_clients=1,
        )
        segment = shm.create("e", geometry)
        try:
            segment.set_spin(self.config.spin_us * 1000, len(os.sched_getaffinity(0)))
            self._client_id, _gen = segment.client_open(os.getpid())
            self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            spec = WorkerSpec(
                segment, tasks, self._codec, {self._client_id: self._eventfd},
                max_tasks_per_child=self.config.max_tasks_per_child,
                max_memory_per_child=self.config.max_memory_per_child,
                id_prefixes={self._client_id: self._ids.prefix},
            )
            self._supervisor = Supervisor(
                segment, self.config.workers, spec, self._on_lost, loop, on_arena=self._on_arena,
                on_worker=self._on_worker,
            )
            self._segment = segment
            self._loop = loop
            _live_clients.add(self)
            self._supervisor.start()
            loop.add_reader(self._eventfd, self._on_wakeup)
            segment.arm(self._client_id)
            self._schedule = Schedule(loop)
            self._periodic = Periodic.start(self._schedule, tasks, self._run_periodic, self.get_status)
            self._watch_started()
        except BaseException:
            self._teardown(grace=0.0)
            raise

    async def _attach(self) -> None:
        """Attach to the running control plane of this user named ``config.name``."""
        link, welcome, eventfd = await Link.open(
            self.config.name, self.config.serialization_format.value, self._ids.prefix
        )
        try:
            segment = shm.attach(welcome["segment"])
        except BaseException:
            link.close()
            os.close(eventfd)
            raise
        self._fn_ids = {name: i for i, name in enumerate(welcome["tasks"])}
        self._policies = {
            name: make_policy(**{k: v for k, v in options.items() if k in _RETRY_OPTIONS})
            for name, options in welcome.get("policies", {}).items()
        }
        self._client_id = int(welcome["client"])
        self._eventfd = eventfd
        self._control = link
        self._segment = segment
        self._loop = loop = asyncio.get_running_loop()
        _live_clients.add(self)
        loop.add_reader(eventfd, self._on_wakeup)
        link.listen(self._answer, self._on_control_plane_gone, lambda event: self._on_worker(event["event"], event))
        segment.arm(self._client_id)
        self._watch_started()

    def _on_control_plane_gone(self) -> None:
        """The control plane stopped or died: nothing pending will ever finish."""
        log.error("control plane %r went away; failing this client's pending tasks", self.config.name)
        self._teardown(grace=0.0, reason=ControlPlaneUnavailable(
            f"the control plane {self.config.name!r} stopped before the task finished"
        ))

    def _answer(self, ask: dict) -> None:
        """Another client or the CLI asked the control plane about one of our tasks."""
        task_id = str(ask.get("task_id"))
        if ask.get("ask") == "result":
            result = self.get_result(task_id)
            self._send_answer(ask, {"result": None if result is None else result.to_dict()})
        elif ask.get("ask") == "cancel":
            self._in_background(self._answer_cancel(ask, task_id))
        else:
            self._send_answer(ask, {"error": f"unknown question {ask.get('ask')!r}"})

    async def _answer_cancel(self, ask: dict, task_id: str) -> None:
        try:
            cancelled = await self.cancel_task(task_id)
        except Exception as exc:  # noqa: BLE001 - the asker gets the reason
            self._send_answer(ask, {"error": f"could not cancel task {task_id}: {exc}"})
            return
        self._send_answer(ask, {"cancelled": cancelled, "message": f"task {task_id} " + (
            "cancelled" if cancelled else "already finished, or unknown"
        )})

    def _send_answer(self, ask: dict, reply: dict) -> None:
        if self._control is not None:
            self._control.answer(ask, reply)

    async def _query(self, message: dict) -> dict:
        assert self._control is not None
        return await self._control.query(message)

    def stop(self) -> None:
        """Stop the workers (running tasks get a few seconds), remove the segment."""
        self._teardown(grace=_STOP_GRACE)

    def _teardown(self, grace: float, reason: Exception | None = None) -> None:
        """Stop (embedded: the workers too), end what is unfinished, release everything.

        ``reason``: the control plane went away; pending waits raise it.
        """
        if self._closed:
            return
        self._closed = True
        _live_clients.discard(self)
        for task in self._background:
            task.cancel()
        if self._started_timer is not None:
            self._started_timer.cancel()
            self._started_timer = None
        if self._schedule is not None:
            self._schedule.close()  # what waited for its time ends with the rest of the unfinished
        segment, supervisor, control = self._segment, self._supervisor, self._control
        if segment is eager.NO_SEGMENT:
            self._segment = None
            self._fail_unfinished(reason)
            return
        if segment is None:
            return
        loop_open = self._loop is not None and not self._loop.is_closed()  # at exit it may be closed
        try:
            if loop_open and self._eventfd >= 0:
                self._loop.remove_reader(self._eventfd)  # type: ignore[union-attr]
            if supervisor is not None:
                supervisor.stop(grace)
            self._collect()  # results finished meanwhile (the mapping outlives the control plane)
        finally:
            retrying = [r.retry for r in self._records.pending.values() if r.retry is not None and r.retry.retries]
            self._fail_unfinished(reason)
            if control is not None:  # attached: on EOF the control plane takes over what is unfinished
                if reason is None:
                    control.keep(
                        (entry[0], finished_status(entry), entry[3], entry[4], entry[5])
                        for entry in self._records.finished_items()
                    )
                    control.hand_over_retries(  # the exhausted too: their final result counts the attempts
                        wire.RetryState(r.tag, r.fn_id, r.lane, r.flags, r.attempt, r.policy, r.timeout, r.payload)
                        for r in retrying
                    )
                control.close()
                self._control = None
                segment.close()
            else:
                name = segment.name
                segment.close()
                shm.unlink(name)
            if self._eventfd >= 0:
                os.close(self._eventfd)
                self._eventfd = -1
            self._segment = None
            for fut in self._room_waiters:
                if not fut.done():
                    fut.set_exception(reason or ClientClosedError("the client stopped"))

    def _fail_unfinished(self, reason: Exception | None = None) -> None:
        self._by_tag.clear()
        for record in list(self._records.pending.values()):
            waiters, record.waiters = record.waiters, None
            if reason is None and self._control is not None:
                # Attached: the task goes on in the control plane, which keeps its result.
                for fut in waiters or ():
                    if not fut.done():
                        fut.set_exception(ClientClosedError(
                            f"the client stopped; task {record.task_id} goes on in the control plane "
                            f"(fastworker status --task-id {record.task_id})"
                        ))
            elif reason is None:
                self._records.finish(
                    record, CANCELLED, error="ClientClosedError: the client stopped before the task finished"
                )
            else:
                self._records.finish(record, FAILURE, error=f"{type(reason).__name__}: {reason}")
                for fut in waiters or ():
                    if not fut.done():
                        fut.set_exception(reason)

    # ------------------------------------------------------------ submitting

    def _require_segment(self) -> _native.Segment:
        segment = self._segment
        if segment is None:
            raise ClientClosedError(
                "the client is stopped" if self._closed else "the client is not started: use `async with Client(...)`"
            )
        return segment

    async def delay(self, task_name: str, /, *args: Any, priority: Any = _NORMAL, **kwargs: Any) -> str:
        """Queue a task and return its id at once."""
        # The hot path of the API: _encode() and _require_segment() are inlined.
        segment = self._segment
        if segment is None:
            segment = self._require_segment()
        fn_id = self._fn_ids.get(task_name)
        if fn_id is None:
            raise UnknownTaskError(task_name, self._fn_ids)
        if (kwargs and ("countdown" in kwargs or "eta" in kwargs)) or task_name in self._policies or self._eager:
            when = {key: kwargs.pop(key) for key in _SCHEDULING if key in kwargs}
            return await self._delay_with(task_name, args, kwargs, priority, **when)
        lane = priority if priority.__class__ is TaskPriority else TaskPriority.parse(priority)
        payload, flags = self._codec.encode_args(task_name, args, kwargs)
        self._counter += 1
        tag = self._counter
        while True:
            try:
                handle = segment.submit(self._client_id, lane, fn_id, flags, tag, payload)
                break
            except _native.Full:
                await self._wait_for_room()
            except _native.TooBig:
                raise self._too_big(task_name, len(payload)) from None
            except _native.Shutdown:
                raise ClientClosedError("the client is stopping; the task was not queued") from None
            except _native.ArenaFailed:
                raise self._arena_failed() from None
        task_id = self._ids.make(tag)
        self._records.add(Record(task_id, task_name, handle))
        if self.events.active:
            self._emit_task("task.queued", task_id, task_name)
        return task_id

    async def submit_task(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        priority: Any = _NORMAL,
        countdown: float | None = None,
        eta: datetime | None = None,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> TaskResult:
        """Queue a task and wait for its final result.

        ``timeout``: the run's hard time limit (its worker is killed when it
        passes; see ``@task(timeout=)``); ``retries``: this call's own retry
        count.  The wait itself is bounded by the Client's ``timeout`` option.
        """
        task_id = await self.queue_task(task_name, args, kwargs, priority, countdown, eta, timeout, retries)
        return await self.wait(task_id, timeout=self.config.timeout)

    async def queue_task(
        self,
        task_name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        priority: Any = _NORMAL,
        countdown: float | None = None,
        eta: datetime | None = None,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> str:
        """``submit_task`` without the wait: queue a task with options, return its id."""
        if (countdown is None and eta is None and timeout is None and retries is None
                and not (kwargs and _DELAY_KEYWORDS.intersection(kwargs))):
            return await self.delay(task_name, *args, priority=priority, **(kwargs or {}))  # the fast path
        return await self._delay_with(
            task_name, tuple(args), dict(kwargs or {}), priority, countdown=countdown, eta=eta, timeout=timeout,
            retries=retries,
        )

    async def delay_with_callback(
        self, task_name: str, callback: Any, /, *args: Any, callback_data: Any = None, priority: Any = _NORMAL,
        **kwargs: Any,
    ) -> str:
        """``delay`` and, when the task ends, call ``callback`` (a function or a coroutine
        function) in this process with a dict: task_id, status, result, error, started_at,
        completed_at, callback_data.  A callback that raises is logged and ignored."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        task_id = await self.delay(task_name, *args, priority=priority, **kwargs)
        self._in_background(self._call_back(task_id, callback, callback_data))
        return task_id

    async def _call_back(self, task_id: str, callback: Any, callback_data: Any) -> None:
        try:
            result = await self.wait(task_id)
        except ClientClosedError as exc:
            result = TaskResult(task_id, CANCELLED, error=f"ClientClosedError: {exc}")
        payload = {
            "task_id": task_id, "status": result.status.value, "result": result.result, "error": result.error,
            "started_at": result.started_at, "completed_at": result.completed_at, "callback_data": callback_data,
        }
        call_handler(callback, payload, f"callback of task {task_id}", self._background)

    def on(self, event: str, handler: Any) -> Any:
        """Call ``handler(dict)`` (sync or async) on each event: task.queued, task.started,
        task.success, task.failure, task.retrying, task.cancelled, worker.started, worker.lost.
        A handler that raises is logged and ignored.  Returns the handler."""
        self.events.on(event, handler)
        self._watch_started()
        return handler

    def _watch_started(self) -> None:
        if self._started_timer is None and self._loop is not None and self.events.listens("task.started"):
            self._started_timer = self._loop.call_later(_STARTED_POLL, self._poll_started)

    def off(self, event: str, handler: Any) -> None:
        self.events.off(event, handler)

    # ------------------------------------------------- tasks with options

    async def _delay_with(
        self, task_name: str, args: tuple, kwargs: dict, priority: Any, countdown: float | None = None,
        eta: datetime | None = None, timeout: float | None = None, retries: int | None = None,
    ) -> str:
        """The way of a task with a schedule, a policy or per-call options (delay's slow path)."""
        segment = self._require_segment()
        fn_id = self._fn_ids.get(task_name)
        if fn_id is None:
            raise UnknownTaskError(task_name, self._fn_ids)
        lane = TaskPriority.parse(priority)
        now = time.time()
        due = due_time(countdown, eta, now)
        policy = self._policies.get(task_name, DEFAULT_POLICY).with_overrides(retries, timeout)
        payload, flags = self._codec.encode_args(task_name, args, kwargs)
        self._counter += 1
        tag = self._counter
        retry = Retry(tag, fn_id, lane, flags, payload, policy.retries, policy, None if timeout is None else policy.timeout)
        record = Record(self._ids.make(tag), task_name, NOT_IN_RING, retry)
        if self._eager:
            self._records.add(record)
            await self._run_eagerly(record)
            return record.task_id
        if due is not None and due > now:
            self._records.add(record)
            self._hold(record, due)
        else:
            handle = await self._place(segment, record)
            self._records.add(record)
            self._records.placed(record, handle)
        if self.events.active:
            self._emit_task("task.queued", record.task_id, task_name, attempt=1)
        return record.task_id

    def _submission(self, record: Record) -> tuple[int, int, int, int, bytes]:
        """(lane, fn_id, flags, tag, payload) of a record's next attempt."""
        retry = record.retry
        assert retry is not None
        flags, payload = retry.flags, retry.payload
        if retry.timeout is not None or retry.attempt > 1:
            flags |= call_options.CALL_OPTIONS
            payload = call_options.wrap(payload, retry.timeout, retry.attempt)
        return retry.lane, retry.fn_id, flags, retry.tag, payload

    async def _place(self, segment: _native.Segment, record: Record) -> int:
        """Put a record's next attempt in the ring (waiting for room); its handle."""
        lane, fn_id, flags, tag, payload = self._submission(record)
        while True:
            try:
                return segment.submit(self._client_id, lane, fn_id, flags, tag, payload)
            except _native.Full:
                await self._wait_for_room()
            except _native.TooBig:
                raise self._too_big(record.task_name, len(payload)) from None
            except _native.Shutdown:
                raise ClientClosedError("the client is stopping; the task was not queued") from None
            except _native.ArenaFailed:
                raise self._arena_failed() from None

    def _hold(self, record: Record, due: float) -> None:
        """Keep a task out of the ring until ``due``: in our own schedule when we own the
        engine, else in the control plane's (so it runs even if this client is gone by then)."""
        assert record.retry is not None
        if self._schedule is not None:
            self._schedule.add(record.retry.tag, due, lambda: self._in_background(self._place_due(record)))
            return
        lane, fn_id, flags, tag, payload = self._submission(record)
        assert self._control is not None
        self._by_tag[tag] = record
        try:
            self._control.hold(tag, due, fn_id, lane, flags, payload)
        except ControlPlaneUnavailable:
            del self._by_tag[tag]
            raise

    async def _place_due(self, record: Record) -> None:
        if self._records.pending.get(record.task_id) is not record or self._segment is None:
            return  # cancelled, or the client stopped
        try:
            handle = await self._place(self._segment, record)
        except Exception as exc:  # noqa: BLE001 - ends the task, with the reason
            if record.task_id in self._records.pending:
                self._records.finish(record, FAILURE, error=f"{type(exc).__name__}: {exc}")
            return
        if self._records.pending.get(record.task_id) is record:
            self._records.placed(record, handle)
        else:  # cancelled while it waited for room
            self._segment.cancel(self._client_id, handle)

    def _retry_later(self, record: Record, item: tuple) -> None:
        """A failed attempt of a task with retries left: run it again after its delay."""
        retry = record.retry
        assert retry is not None
        self._records.unplaced(record)
        delay = retry.policy.retry_delay_after(retry.attempt)
        retry.attempt += 1
        if self.events.active:
            error, _tb = decode_failure(item[4])
            self._emit_task("task.retrying", record.task_id, record.task_name, attempt=retry.attempt,
                            error=error, delay=delay)
        try:
            self._hold(record, time.time() + delay)
        except ControlPlaneUnavailable as exc:
            self._records.finish(record, FAILURE, item[4], item[5], item[6], error=str(exc))

    async def _run_eagerly(self, record: Record) -> None:
        """Eager mode: every attempt runs here and now, through the same codec."""
        retry = record.retry
        assert retry is not None
        defn = registry.get(record.task_name)
        while True:
            status, payload, t_start, t_end = await eager.run(
                defn, self._codec, retry.payload, retry.flags, record.task_id, retry.attempt, retry.lane
            )
            if status is SUCCESS or retry.exhausted:
                break
            retry.attempt += 1
        self._records.finish(record, status, payload, t_start, t_end)
        if self.events.active:
            self._emit_finished([(record.task_id, record.task_name, status.value, payload)])

    async def map(
        self,
        task_name: str,
        iterable: Iterable[Any],
        /,
        *,
        star: bool = False,
        priority: Any = _NORMAL,
        window: int | None = None,
    ) -> AsyncIterator[Any]:
        """Run a task on every item; its results in input order, as an async iterator.

        ``star=True`` unpacks each item into the task's arguments.  At most
        ``window`` tasks are in flight (default: enough to keep every worker
        busy), so a lazy or endless iterable is read only as far as needed.  A
        failed task raises ``TaskFailedError`` (its ``.result`` is the
        TaskResult); tasks still queued then are cancelled.
        """
        width = window if window is not None else max(64, 8 * self.config.workers)
        if width < 1:
            raise ValueError(f"window must be >= 1, not {width!r}")
        items = iter(iterable)
        ids: deque[str] = deque()
        exhausted = False
        try:
            while True:
                while not exhausted and len(ids) < width:
                    try:
                        item = next(items)
                    except StopIteration:
                        exhausted = True
                        break
                    args = tuple(item) if star else (item,)
                    ids.append(await self.delay(task_name, *args, priority=priority))
                if not ids:
                    return
                result = await self.wait(ids.popleft())
                if result.status is not SUCCESS:
                    raise TaskFailedError(result)
                yield result.result
        finally:
            for task_id in ids:
                if not self._closed:
                    self._cancel_local(task_id)

    async def submit_batch(self, tasks: Iterable[Mapping[str, Any]], default_priority: Any = _NORMAL) -> list[str]:
        """Queue many tasks; ids in input order.

        Every task is checked and encoded before the first is queued, so a
        bad one queues none.  A batch larger than the free room goes in as
        room appears.
        """
        segment = self._require_segment()
        default = TaskPriority.parse(default_priority)
        if self._eager:
            return [
                await self._delay_with(spec["task_name"], tuple(spec.get("args", ())), dict(spec.get("kwargs") or {}),
                                       spec.get("priority", default))
                for spec in tasks
            ]
        fn_ids, encode, client_id = self._fn_ids, self._codec.encode_args, self._client_id
        names: list[str] = []
        subs: list[tuple[int, int, int, int, bytes]] = []  # (lane, fn_id, flags, tag, payload)
        first_tag = self._counter + 1
        for position, spec in enumerate(tasks, first_tag):
            try:
                name = spec["task_name"]
                if not _BATCH_KEYS.issuperset(spec):
                    raise KeyError
            except (TypeError, KeyError, IndexError):
                raise ValueError(
                    f"submit_batch(): task #{position - first_tag} must be a mapping with 'task_name' and "
                    f"optionally 'args', 'kwargs', 'priority'; got {spec!r}"
                ) from None
            fn_id = fn_ids.get(name)
            if fn_id is None:
                raise UnknownTaskError(name, fn_ids)
            priority = spec.get("priority", default)
            lane = priority if priority.__class__ is TaskPriority else TaskPriority.parse(priority)
            payload, flags = encode(name, spec.get("args", ()), spec.get("kwargs"))
            names.append(name)
            subs.append((lane, fn_id, flags, position, payload))
        self._counter += len(subs)

        ids: list[str] = []
        make_id, add_record = self._ids.make, self._records.add
        while len(ids) < len(subs):
            room = segment.free_slots
            if room == 0:
                await self._wait_for_room()
                continue
            done = len(ids)
            part = subs[done : done + room]
            try:
                handles = segment.submit_many(client_id, part)
            except _native.Full:  # arena blocks, or slots another client took meanwhile
                await self._wait_for_room()
                continue
            except _native.TooBig:
                biggest = max(range(len(part)), key=lambda i: len(part[i][4]))
                raise self._too_big(names[done + biggest], len(part[biggest][4])) from None
            except _native.Shutdown:
                raise ClientClosedError("the client is stopping; the batch was not fully queued") from None
            except _native.ArenaFailed:
                raise self._arena_failed() from None
            # Recorded before the next await: waiting for room drains results.
            for i, handle in enumerate(handles, done):
                task_id = make_id(subs[i][3])
                add_record(Record(task_id, names[i], handle))
                ids.append(task_id)
                if self.events.active:
                    self._emit_task("task.queued", task_id, names[i])
        return ids

    def _too_big(self, task_name: str, size: int) -> PayloadTooLargeError:
        limit = self._segment.arena_max_block if self._segment else 0
        return PayloadTooLargeError(
            f"the arguments of task {task_name!r} take {size} bytes, more than the shared arena's largest "
            f"block ({limit} bytes); raise FASTWORKER_ARENA_SIZE (arena_size=) or pass the data another way"
        )

    def _arena_failed(self) -> SharedMemoryFullError:
        return SharedMemoryFullError(
            "the shared arena for payloads over 176 bytes could not be reserved in /dev/shm (it filled up "
            "after the start); free some /dev/shm or lower FASTWORKER_ARENA_SIZE and restart"
        )

    async def _wait_for_room(self) -> None:
        """Back-pressure: the ring is full, so wait until results free some of it."""
        if self._collect():
            return
        fut = asyncio.get_running_loop().create_future()
        self._room_waiters.append(fut)
        await fut

    # ------------------------------------------------------------- results

    def _on_wakeup(self) -> None:
        try:
            os.eventfd_read(self._eventfd)
        except BlockingIOError:
            pass
        self._collect()

    def _on_lost(self, lost: list[tuple[int, int]]) -> None:
        self._collect()

    def _on_worker(self, event: str, payload: dict) -> None:
        if self.events.active:
            self.events.emit(event, payload)

    def _on_arena(self) -> None:
        self._collect()  # wakes submitters that waited for arena room

    def _collect(self) -> int:
        """Drain every finished task of this client, then re-arm the wake-up."""
        segment = self._segment
        if segment is None:
            return 0
        finish_drained = self._records.finish_drained
        collected = 0
        while True:
            items = segment.drain(self._client_id)
            if items:
                if self.events.active:
                    self._emit_drained(items)
                for record, item in finish_drained(items, _CODES, self._by_tag):
                    self._retry_later(record, item)
            collected += len(items)
            if not segment.arm(self._client_id):
                break
        if self._room_waiters:  # woken: results freed room, or the arena opened
            waiters, self._room_waiters = self._room_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        return collected

    # ------------------------------------------------------------- events

    def _emit_task(self, event: str, task_id: str, task_name: str, **extra: Any) -> None:
        self.events.emit(event, {"event": event, "task_id": task_id, "task_name": task_name, **extra})

    def _emit_drained(self, items: list[tuple]) -> None:
        """Events of drained results (before they are filed: a retried failure is not final)."""
        by_handle, finished = self._records.in_flight, []
        for handle, status, _flags, tag, payload, t_start, _t_end in items:
            record = by_handle.get(handle) or self._by_tag.get(tag)
            if record is None:
                continue
            if t_start and self.events.listens("task.started") and record.task_id not in self._started_seen:
                self._emit_task("task.started", record.task_id, record.task_name, attempt=record.attempt,
                                started_at=from_ns(t_start))
            self._started_seen.discard(record.task_id)  # a retry's next attempt starts anew
            if status == _native.RESULT_FAILURE and record.retry is not None and not record.retry.exhausted:
                continue  # task.retrying follows
            finished.append((record.task_id, record.task_name, _STATUS_OF[status].value, payload))
        self._emit_finished(finished)

    def _emit_finished(self, finished: list[tuple[str, str, str, Any]]) -> None:
        for task_id, task_name, status, payload in finished:
            event = _EVENT_OF[status]
            if not self.events.listens(event):
                continue
            extra: dict[str, Any] = {"status": status}
            if status == SUCCESS.value:
                try:
                    extra["result"] = self._codec.decode_result(payload)
                except Exception as exc:  # noqa: BLE001
                    extra["error"] = f"{type(exc).__name__}: {exc}"
            elif payload:
                extra["error"] = decode_failure(payload)[0]
            self._emit_task(event, task_id, task_name, **extra)

    def _poll_started(self) -> None:
        """Report the tasks in flight that started since the last look (oldest first, at most
        _STARTED_SCAN of them a look: the ring runs each lane in order)."""
        self._started_timer = None
        segment = self._segment
        if segment is None or segment is eager.NO_SEGMENT or not self.events.listens("task.started"):
            return
        seen = self._started_seen
        started = []
        for record in list(itertools.islice(self._records.in_flight.values(), _STARTED_SCAN)):
            if record.task_id not in seen:
                state, t_start = segment.handle_state(record.handle)
                if state == _native.SLOT_RUNNING:
                    seen.add(record.task_id)
                    started.append((record, t_start))
        for record, t_start in started:  # handlers may submit tasks: not while iterating those
            self._emit_task("task.started", record.task_id, record.task_name, attempt=record.attempt,
                            started_at=from_ns(t_start))
        if len(seen) > 2 * len(self._records.in_flight) + 64:  # tasks cancelled or failed meanwhile
            seen.intersection_update(self._records.in_flight_ids())
        if self._loop is not None and not self._closed:
            self._started_timer = self._loop.call_later(_STARTED_POLL, self._poll_started)

    def _in_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ----------------------------------------------------------- periodic

    def _run_periodic(self, task_name: str) -> str | None:
        """A periodic task's tick (the Periodic runner decided it is due and not running)."""
        segment = self._segment
        if segment is None:
            return None
        self._counter += 1
        tag = self._counter
        fn_id = self._fn_ids[task_name]
        payload, flags = self._codec.encode_args(task_name, (), {})
        policy = self._policies.get(task_name, DEFAULT_POLICY)
        record = Record(self._ids.make(tag), task_name, NOT_IN_RING,
                        Retry(tag, fn_id, _NORMAL, flags, payload, policy.retries, policy, None))
        self._records.add(record)
        try:
            self._records.placed(record, segment.submit(self._client_id, _NORMAL, fn_id, flags, tag, payload))
        except (_native.Full, _native.Shutdown, _native.ArenaFailed) as exc:
            self._records.finish(record, FAILURE, error=f"the periodic run could not be queued: {type(exc).__name__}")
        return record.task_id

    def _entry(self, task_id: str) -> Record | Finished:
        entry = self._records.get(task_id)
        if entry is None:
            raise TaskNotFoundError(
                f"unknown task id {task_id!r}: not submitted by this client, or its result expired "
                f"(results are kept for {self.config.result_cache_ttl:g} s, at most {self.config.result_cache_size})"
            )
        return entry

    def _snapshot(self, entry: Record | Finished) -> TaskResult:
        if entry.__class__ is tuple:
            return to_result(entry, self._codec)  # type: ignore[arg-type]
        record: Record = entry  # type: ignore[assignment]
        status, t_start = PENDING, 0
        if self._segment is not None and self._segment is not eager.NO_SEGMENT:
            handle = record.handle
            if handle == NOT_IN_RING and record.task_id and record.retry is not None and self._schedule is None:
                # Attached: the control plane may have placed it in the ring by now.
                handle = self._segment.find_task(self._client_id, record.retry.tag) or NOT_IN_RING
            state, t_start = self._segment.handle_state(handle) if handle != NOT_IN_RING else (-1, 0)
            if state == _native.SLOT_RUNNING:
                status = STARTED
        snapshot = TaskResult(task_id=record.task_id, status=status, task_name=record.task_name)
        if status is STARTED:
            snapshot.started_at = from_ns(t_start)
        return snapshot

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskResult:
        """Wait for a task's final status and return its result."""
        entry = self._entry(task_id)
        if entry.__class__ is Record:
            record: Record = entry  # type: ignore[assignment]
            fut = asyncio.get_running_loop().create_future()
            if record.waiters is None:
                record.waiters = []
            record.waiters.append(fut)
            try:
                entry = await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise TaskTimeoutError(
                    f"task {task_id} ({record.task_name!r}) did not finish within {timeout:g} s; "
                    f"it is still {self._snapshot(record).status.value} and keeps running"
                ) from None
            finally:
                if record.waiters and fut in record.waiters:
                    record.waiters.remove(fut)
        return to_result(entry, self._codec)  # type: ignore[arg-type]

    async def get_task_result(self, task_id: str) -> TaskResult | None:
        """The task's result or current status; None if unknown or expired.

        Attached, a task of another client (or of one that left) is looked up
        in the control plane.
        """
        result = self.get_result(task_id)
        if result is None and self._control is not None and not self._closed:
            found = (await self._query({"query": "result", "task_id": task_id}))["result"]
            result = None if found is None else TaskResult.from_dict(found)
        return result

    def get_result(self, task_id: str) -> TaskResult | None:
        entry = self._records.get(task_id)
        return None if entry is None else self._snapshot(entry)

    def get_status(self, task_id: str) -> TaskStatus | None:
        entry = self._records.get(task_id)
        if entry is None:
            return None
        return finished_status(entry) if entry.__class__ is tuple else self._snapshot(entry).status  # type: ignore[arg-type]

    async def cancel_task(self, task_id: str) -> bool:
        """Cancel a task: a queued or scheduled one never runs; a running one's worker is
        killed (and replaced).  True if the task ends CANCELLED, False if it had finished."""
        entry = self._records.get(task_id)
        if entry is None and self._control is not None and not self._closed:
            return bool((await self._query({"query": "cancel", "task_id": task_id}))["cancelled"])
        if entry.__class__ is not Record or self._segment is None:
            return False
        record: Record = entry  # type: ignore[assignment]
        if self._cancel_local(task_id):
            return True
        if record.handle == NOT_IN_RING and self._control is not None:  # held by the control plane
            assert record.retry is not None
            reply = await self._query({"query": "unschedule", "client": self._client_id, "tag": record.retry.tag})
            if reply.get("cancelled") and self._records.pending.get(task_id) is record:
                self._by_tag.pop(record.retry.tag, None)
                self._records.finish(record, CANCELLED, error="cancelled before it started")
                return True
            handle = self._segment.find_task(self._client_id, record.retry.tag)
            if handle is None or self._records.pending.get(task_id) is not record:
                return False
            self._by_tag.pop(record.retry.tag, None)
            self._records.placed(record, handle)
        return await self._stop_running(record)

    async def _stop_running(self, record: Record) -> bool:
        """Kill the worker running the task: it ends CANCELLED (a race with its completion
        is decided in the ring: if it finished first, False)."""
        error = inline_failure(TaskCancelledError(f"task {record.task_id} was cancelled while running"))
        if self._supervisor is not None:
            stopped = self._supervisor.stop_task(record.handle, _native.RESULT_CANCELLED, error)
        elif self._control is not None:
            reply = await self._query({"query": "stop", "client": self._client_id,
                                       "generation": self._segment.client_gen(self._client_id) if self._segment else 0,
                                       "handle": record.handle})
            stopped = bool(reply.get("stopped"))
        else:
            stopped = False
        if not stopped:
            return False
        if self._records.pending.get(record.task_id) is record:  # else its CANCELLED result came in meanwhile
            self._records.finish(record, CANCELLED, error="TaskCancelledError: cancelled while running; its worker "
                                                          "was killed and replaced")
        return True

    def _cancel_local(self, task_id: str) -> bool:
        """Cancel a task that has not started: queued in the ring, or waiting in our schedule."""
        entry = self._records.get(task_id)
        if entry.__class__ is not Record or self._segment is None:
            return False
        record: Record = entry  # type: ignore[assignment]
        if record.handle == NOT_IN_RING:
            if self._schedule is None or record.retry is None or not self._schedule.cancel(record.retry.tag):
                return False
        elif not self._segment.cancel(self._client_id, record.handle):
            return False
        self._records.finish(record, CANCELLED, error="cancelled before it started")
        if self.events.active:
            self._emit_task("task.cancelled", task_id, record.task_name, status=CANCELLED.value)
        return True

    # ------------------------------------------------------------ inspection

    @property
    def workers(self) -> int:
        return self.config.workers

    def periodic(self) -> list[dict[str, Any]]:
        """The periodic tasks this client runs (embedded), with their next run time."""
        return self._periodic.describe() if self._periodic is not None else []

    def stats(self) -> dict[str, Any]:
        segment = self._require_segment()
        if segment is eager.NO_SEGMENT:
            return {"eager": True, "in_flight": len(self._records.in_flight)}
        stats: dict[str, Any] = dict(segment.stats())
        stats["in_flight"] = len(self._records.in_flight)
        stats["workers_lost"] = self._supervisor.workers_lost if self._supervisor else 0
        stats["worker_pids"] = dict(self._supervisor.pids) if self._supervisor else {}
        return stats
