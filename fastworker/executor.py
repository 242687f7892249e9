"""``fastworker.Executor``: a ``concurrent.futures.Executor`` on the same engine.

    caller thread                                    collector thread (private asyncio loop)
    ─────────────                                    ───────────────────────────────────────
    submit(fn, *args) ─ pickle (fn, args) ─▶ ring ─▶ workers run fastworker.executor.call
    map(fn, items)    ─ chunks ───────────▶ ring        │ results into their slots
    Future.result() ◀── set_result / set_exception ◀── drain ◀── eventfd (armed) ◀┘
                                                     supervisor: pidfds, fork server
    a full ring: the caller waits on `_room` until the collector frees slots

The caller's thread submits straight into the ring; one thread collects
results and supervises the workers.  The fork server is forked before that
thread starts ("fork before threads"), and replacements come from it.

Like ``ProcessPoolExecutor`` it pickles functions by reference (protocol 5),
so a lambda or a closure is refused with a clear error, unless
``serialization_format="cloudpickle"`` sends them by value; an exception raised
in a worker is re-raised by ``Future.result()`` with the worker's traceback
as its ``__cause__``.  Unlike it, a worker that dies fails only the futures
of the tasks it was running, and the executor keeps working.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import itertools
import os
import pickle
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import _native
from .config import Config
from .engine import oob, shm
from .engine.supervisor import Supervisor
from .engine.worker import ARGS_LAID_OUT, WANT_LENT, payload_size
from .engine.zygote import WorkerSpec
from .errors import ClientClosedError, FastWorkerError, PayloadTooLargeError, SerializationError
from .tasks.models import TaskPriority
from .tasks.registry import TaskDefinition
from .tasks.serialization import PICKLE_CODEC, decode_failure

CALL = "fastworker.executor.call"
CALL_CHUNK = "fastworker.executor.call_chunk"
_NORMAL = int(TaskPriority.NORMAL)


# Executors not shut down yet: one a script forgets is shut down at exit.
_live_executors: set[Executor] = set()


@atexit.register
def _shut_down_forgotten_executors() -> None:
    for executor in list(_live_executors):
        executor.shutdown(wait=False, cancel_futures=True)


class RemoteTraceback(FastWorkerError):
    """The worker's traceback, attached as ``__cause__`` of an exception it raised."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class BrokenExecutor(FastWorkerError, concurrent.futures.BrokenExecutor):
    """The executor cannot run tasks any more (its initializer failed in a worker)."""


class _Raised:
    """What a worker returns when the function raised: the exception and its traceback."""

    __slots__ = ("exc", "tb")

    def __init__(self, exc: BaseException, tb: str) -> None:
        self.exc, self.tb = exc, tb

    def __reduce__(self) -> tuple:
        try:
            pickle.dumps(self.exc, 5)
            return (_Raised, (self.exc, self.tb))
        except Exception:  # noqa: BLE001 - an exception that does not pickle still reaches the caller
            summary = RuntimeError(f"{type(self.exc).__name__}: {self.exc} (the exception could not be pickled)")
            return (_Raised, (summary, self.tb))


def _format(exc: BaseException) -> str:
    """The traceback from the user's function down (this module's frame dropped)."""
    tb = exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb is not None else None))


def _run(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    try:
        return fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the caller re-raises it
        return _Raised(exc, _format(exc))


def call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Run one submitted function in a worker."""
    return _run(fn, args, kwargs)


def call_chunk(fn: Callable[..., Any], items: Iterable[Any], star: bool) -> Any:
    """Run a chunk of a map; stops at the first exception (map raises it there too)."""
    out: list[Any] = []
    append = out.append
    try:
        if star:
            for item in items:
                append(fn(*item))
        else:
            for item in items:
                append(fn(item))
    except BaseException as exc:  # noqa: BLE001
        return (out, _Raised(exc, _format(exc)))
    return (out, None)


# The only tasks an Executor's workers run, by fn id: kept out of the @task
# registry, so no Client, control plane or `fastworker list` sees them.
_TASKS = (
    TaskDefinition(CALL, call, False, __name__, "call"),
    TaskDefinition(CALL_CHUNK, call_chunk, False, __name__, "call_chunk"),
)
_FN_CALL, _FN_CHUNK = 0, 1


def _pickler_for(serialization_format: str | None) -> type[pickle.Pickler]:
    """The Executor pickles: functions by reference ('pickle', the default), or by value
    ('cloudpickle': lambdas and closures too).  JSON cannot carry a function."""
    fmt = serialization_format.strip().lower() if isinstance(serialization_format, str) else serialization_format
    if fmt in (None, "pickle"):
        return pickle.Pickler
    if fmt == "cloudpickle":
        try:
            import cloudpickle
        except ImportError:
            raise ImportError(
                "Executor(serialization_format='cloudpickle') needs cloudpickle: pip install 'fastworker[cloudpickle]'"
            ) from None
        return cloudpickle.Pickler
    raise ValueError(
        f"Executor serialization_format must be 'pickle' (functions by reference, the default) or "
        f"'cloudpickle' (lambdas and closures too), not {serialization_format!r}: an Executor sends Python "
        "functions and objects, which JSON cannot carry (JSON is for Client tasks)"
    )


def _unpickle(payload: bytes) -> Any:
    return PICKLE_CODEC.decode_result(payload)


class Executor(concurrent.futures.Executor):
    """Run functions on forked workers of this host; a drop-in for ``ProcessPoolExecutor``."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple = (),
        max_tasks_per_child: int | None = None,
        slots: int | None = None,
        arena_size: int | str | None = None,
        spin_us: int | None = None,
        serialization_format: str | None = None,
    ) -> None:
        self._pickler = _pickler_for(serialization_format)
        if max_tasks_per_child is not None and (
            type(max_tasks_per_child) is not int or max_tasks_per_child < 1  # noqa: E721 - bool is not a count
        ):
            raise ValueError(f"max_tasks_per_child must be a positive int or None, not {max_tasks_per_child!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, not {type(initializer).__name__}")
        self.config = Config.resolve(workers=workers, slots=slots, arena_size=arena_size, spin_us=spin_us)
        self._fn_call, self._fn_chunk = _FN_CALL, _FN_CHUNK
        geometry = shm.Geometry(self.config.slots, self.config.arena_size, self.config.workers, 1)
        self._segment = segment = shm.create("x", geometry)
        self._lock = threading.Lock()  # guards _pending and the counter, with the GIL's help
        self._room = threading.Condition(self._lock)
        self._pending: dict[int, concurrent.futures.Future] = {}  # ring handle -> future
        self._counter = itertools.count(1)
        self._broken: BaseException | None = None
        self._shutdown = False
        self._loop = asyncio.new_event_loop()
        try:
            segment.set_spin(self.config.spin_us * 1000, len(os.sched_getaffinity(0)))
            self._client, _ = segment.client_open(os.getpid())
            self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            spec = WorkerSpec(
                segment, _TASKS, PICKLE_CODEC, {self._client: self._eventfd},
                initializer=initializer, initargs=tuple(initargs), max_tasks_per_child=max_tasks_per_child,
            )
            self._supervisor = Supervisor(
                segment, self.config.workers, spec, self._on_lost, self._loop,
                on_arena=self._collect, on_initializer_failed=self._on_initializer_failed,
                watch_deadlines=False,  # its tasks have no time limits: no timer in its loop
            )
            self._supervisor.start()  # forks the fork server: before the collector thread exists
            self._loop.add_reader(self._eventfd, self._on_wakeup)
            segment.arm(self._client)
        except BaseException:
            self._close_resources()
            raise
        self._thread = threading.Thread(target=self._loop.run_forever, name="fastworker-executor", daemon=True)
        self._thread.start()
        _live_executors.add(self)

    # ------------------------------------------------------------ submitting

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        payload = self._encode(fn, (fn, args, kwargs))
        return self._queue(self._fn_call, payload)

    def _encode(self, fn: Callable[..., Any], call_args: tuple) -> Any:
        """The pickled call: bytes, or a layout whose big buffers (NumPy arrays, bytearrays)
        the ring copies straight into the arena (oob.py); pass it to _queue as is."""
        try:
            payload, _laid_out = oob.encode(call_args, self._pickler)
            return payload  # a plain protocol-5 pickle when not laid out: the codec's very bytes
        except Exception as exc:  # noqa: BLE001 - the codec below names what cannot be pickled
            failure: BaseException = exc
        name = getattr(fn, "__qualname__", repr(fn))
        if self._pickler is not pickle.Pickler:  # cloudpickle: its own message says what failed
            raise SerializationError(f"cannot send {name!r} or its arguments to a worker: {failure}") from failure
        try:
            payload, _flags = PICKLE_CODEC.encode_args(CALL, call_args, None)
        except SerializationError as exc:
            raise SerializationError(
                f"cannot send {name!r} or its arguments to a worker: {exc}. Functions are sent by reference, "
                "like ProcessPoolExecutor does: define it at module level (a lambda or a nested function "
                "cannot be found by name in the worker), or send them by value with "
                "Executor(serialization_format='cloudpickle') (pip install 'fastworker[cloudpickle]')"
            ) from exc
        return payload

    def _queue(self, fn_id: int, payload: Any) -> concurrent.futures.Future:
        future = _TaskFuture(self)
        flags = WANT_LENT | (ARGS_LAID_OUT if isinstance(payload, tuple) else 0)
        with self._room:
            while True:
                if self._shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown")
                if self._broken is not None:
                    raise BrokenExecutor(str(self._broken))
                try:
                    handle = self._segment.submit(self._client, _NORMAL, fn_id, flags, next(self._counter), payload)
                except _native.Full:
                    self._room.wait(0.1)  # the collector notifies when it frees slots
                    continue
                except _native.TooBig:
                    size = payload_size(payload)
                    raise PayloadTooLargeError(
                        f"a task's arguments take {size} bytes, more than the shared arena's largest "
                        f"block ({self._segment.arena_max_block} bytes); raise arena_size="
                    ) from None
                self._pending[handle] = future
                future.handle = handle
                return future

    def _cancel(self, future: _TaskFuture) -> bool:
        """Cancel in the ring: True only if the task was still queued (it will never run)."""
        with self._room:
            if future.handle is None or self._pending.get(future.handle) is not future:
                return False
            if self._segment.closed or not self._segment.cancel(self._client, future.handle):
                return False
            del self._pending[future.handle]
            self._room.notify_all()
            return True

    # -------------------------------------------------------------------- map

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        buffersize: int | None = None,
        progress: bool = False,
    ) -> Iterator[Any]:
        """Results in input order.  ``chunksize=None`` sizes chunks from timing; ``buffersize``
        bounds how many chunks are in flight (so a lazy or endless iterable is not all read)."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, not {chunksize!r}")
        if buffersize is not None and buffersize < 1:
            raise ValueError(f"buffersize must be >= 1, not {buffersize!r}")
        star = len(iterables) > 1
        total = None if star else _length(iterables[0])
        if chunksize is None and total is not None:
            # As multiprocessing.Pool: about four chunks per worker, so none waits long at the end.
            chunksize = max(1, -(-total // (4 * self.config.workers)))
        if not star and isinstance(iterables[0], (range, list, tuple)) and chunksize is not None:
            # Slices: of a range they pickle to a few bytes, of a list they are cut in C.
            items: Iterator[Any] = _slices(iterables[0], chunksize)
            chunked = True
        else:
            items = zip(*iterables) if star else iter(iterables[0])
            chunked = False
        run = _MapRun(self, fn, items, star, chunksize, buffersize or 4 * self.config.workers, chunked)
        run.deadline = None if timeout is None else time.monotonic() + timeout
        run.bar = _progress_bar(total) if progress else None
        run.fill()  # like concurrent.futures: work starts at the call, not at the first next()
        # Items are handed out by itertools.chain, in C: a Python generator
        # yielding each of a million results would cost more than computing them.
        return itertools.chain.from_iterable(run.results())

    # ---------------------------------------------------------------- results

    def _on_wakeup(self) -> None:
        try:
            os.eventfd_read(self._eventfd)
        except BlockingIOError:
            pass
        self._collect()

    def _on_lost(self, lost: list[tuple[int, int]]) -> None:
        self._collect()

    def _collect(self) -> None:
        segment, client = self._segment, self._client
        while True:
            items = segment.drain(client)
            if items:
                with self._room:
                    futures = [(self._pending.pop(item[0], None), item) for item in items]
                    self._room.notify_all()
                for future, (_handle, status, flags, _tag, payload, _t0, _t1) in futures:
                    if future is not None and future.set_running_or_notify_cancel():
                        self._settle(future, status, payload, flags)
            if not segment.arm(client):
                return

    @staticmethod
    def _settle(future: concurrent.futures.Future, status: int, payload: Any, flags: int = 0) -> None:
        if status != _native.RESULT_SUCCESS:
            error, tb = decode_failure(payload)
            exc: BaseException = _failure_exception(error)
            if tb:
                exc.__cause__ = RemoteTraceback(tb)
            future.set_exception(exc)
            return
        try:
            # A lent result (a SlotBuffer): its arrays are views of the arena.
            value = oob.decode(payload) if flags & _native.RESULT_KEEP else _unpickle(payload)
        except BaseException as exc:  # noqa: BLE001
            future.set_exception(exc)
            return
        if isinstance(value, _Raised):
            value.exc.__cause__ = RemoteTraceback(value.tb)
            future.set_exception(value.exc)
        else:
            future.set_result(value)

    def _on_initializer_failed(self) -> None:
        error = BrokenExecutor(
            "the initializer failed in a worker (its traceback is on stderr); this executor cannot run tasks"
        )
        with self._room:
            self._broken = error
            pending, self._pending = self._pending, {}
            self._room.notify_all()
        for future in pending.values():
            if future.set_running_or_notify_cancel():
                future.set_exception(error)

    # ---------------------------------------------------------------- shutdown

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._room:
            if self._shutdown:
                return
            self._shutdown = True
            _live_executors.discard(self)
            self._room.notify_all()
            pending = list(self._pending.items())
        if cancel_futures:
            for _handle, future in pending:
                future.cancel()  # queued ones only: a running task finishes
        if wait:
            concurrent.futures.wait([f for _, f in pending])
        done = threading.Event()

        def stop() -> None:
            try:
                self._loop.remove_reader(self._eventfd)
                self._supervisor.stop(grace=0.0 if not wait else 5.0)
                self._collect()
            finally:
                self._loop.stop()
                done.set()

        self._loop.call_soon_threadsafe(stop)
        done.wait()
        self._thread.join()
        self._close_resources()
        with self._room:
            left, self._pending = self._pending, {}
        for future in left.values():
            if future.set_running_or_notify_cancel():
                future.set_exception(ClientClosedError("the executor shut down before the task finished"))

    def _close_resources(self) -> None:
        if not self._loop.is_closed():
            self._loop.close()
        if getattr(self, "_eventfd", -1) >= 0:
            os.close(self._eventfd)
            self._eventfd = -1
        if not self._segment.closed:
            name = self._segment.name
            self._segment.close()
            shm.unlink(name)


class _TaskFuture(concurrent.futures.Future):
    """A Future whose cancel() takes the task out of the ring, and fails once it runs."""

    def __init__(self, executor: Executor) -> None:
        super().__init__()
        self._executor = executor
        self.handle: int | None = None

    def cancel(self) -> bool:
        if self.done():
            return self.cancelled()
        if not self._executor._cancel(self):
            return False
        cancelled = super().cancel()
        self.set_running_or_notify_cancel()  # wakes wait() and as_completed() on it
        return cancelled


class _MapRun:
    """One map(): chunks submitted ahead, at most `window` in flight, results in order."""

    # A chunk's pickled size is kept under this share of the arena's largest block.
    ARENA_SHARE = 8

    def __init__(self, executor: Executor, fn: Callable[..., Any], items: Iterator[Any], star: bool,
                 chunksize: int | None, window: int, chunked: bool) -> None:
        self.executor, self.fn, self.items, self.star = executor, fn, items, star
        self.fixed = chunksize  # None: grown from timing
        self.size = chunksize or 1
        self.window, self.chunked = window, chunked
        self.inflight: deque[tuple[concurrent.futures.Future, int, int]] = deque()  # future, items, bytes
        self.split: list[Any] = []  # chunks halved because their payload was too big
        self.exhausted = False
        self.deadline: float | None = None
        self.bar: Any = None
        self.limit = max(1 << 16, executor._segment.arena_max_block // self.ARENA_SHARE)

    def _next_chunk(self) -> Any:
        if self.split:
            return self.split.pop()
        if self.chunked:
            return next(self.items, None)
        return list(itertools.islice(self.items, self.size))

    def fill(self) -> None:
        while not self.exhausted and len(self.inflight) < self.window:
            chunk = self._next_chunk()
            if not chunk:
                self.exhausted = True
                return
            payload = self.executor._encode(self.fn, (self.fn, chunk, self.star))
            nbytes = payload_size(payload)
            if nbytes > self.limit and len(chunk) > 1:
                half = len(chunk) // 2  # too big for the arena to hold many: halve it
                self.split += [chunk[half:], chunk[:half]]
                self.size = max(1, self.size // 2)
                continue
            future = self.executor._queue(self.executor._fn_chunk, payload)
            self.inflight.append((future, len(chunk), nbytes))

    def results(self) -> Iterator[list]:
        try:
            while True:
                self.fill()
                if not self.inflight:
                    return
                future, count, nbytes = self.inflight.popleft()
                sent = time.monotonic()
                left = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
                try:
                    values, raised = future.result(left)
                except concurrent.futures.TimeoutError:
                    future.cancel()  # as the stdlib does: a timed-out map leaves nothing queued
                    raise
                if self.fixed is None:
                    self._grow(count, nbytes, time.monotonic() - sent)
                if self.bar is not None:
                    self.bar.update(len(values))
                yield values
                if raised is not None:
                    raise raised.exc from RemoteTraceback(raised.tb)
        finally:
            for future, _, _ in self.inflight:
                future.cancel()
            if self.bar is not None:
                self.bar.close()

    def _grow(self, count: int, nbytes: int, waited: float) -> None:
        """Chunks of cheap items grow (x4) until a chunk is waited on for ~20 ms, and never
        past what keeps their payload under the arena share."""
        grown = self.size * 4 if waited < 0.02 else self.size
        by_bytes = max(1, count * self.limit // max(nbytes, 1))
        self.size = max(1, min(grown, by_bytes, 1 << 20))


def _failure_exception(error: str) -> BaseException:
    """A worker-side failure outside the function (a lost worker, an unpicklable result)."""
    from . import errors

    kind, _, message = error.partition(": ")
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, FastWorkerError):
        try:
            return cls(message)
        except TypeError:
            pass
    return FastWorkerError(error)


def _slices(whole: range | list | tuple, size: int) -> Iterator[Any]:
    for start in range(0, len(whole), size):
        yield whole[start : start + size]


def _length(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


def _progress_bar(total: int | None) -> Any:
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]
    except ImportError:
        raise ImportError("map(progress=True) draws its bar with tqdm: pip install tqdm") from None
    return tqdm(total=total, unit="item")
