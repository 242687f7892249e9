"""What every executor the harness measures looks like to it: one small adapter class each.

An adapter starts and stops its executor and knows three ways of running a
function: one round trip (``call``), many queued at once and then collected
(``batch``), and the executor's own ``map``.  The timing wrappers around
them live here; an adapter overrides one only where its executor needs to be
timed differently (an asyncio Client times inside its event loop; the CPU
ceiling leaves its fork out of the time).

Adding a peer: subclass ``Engine`` in ``peers.py``, set ``name``, ``label``,
``module`` and ``pip``, write ``start``/``stop``/``call``/``batch``/``map``,
and list it in ``peers.PEERS``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, ClassVar

from .tasks import pid_after

Fn = Callable[..., Any]


class Engine:
    name: ClassVar[str]  # what --peers calls it
    label: ClassVar[str]  # what the table calls it
    family: ClassVar[str] = "peer"  # "fastworker", "peer" or "reference" (the floor, the ceiling)
    module: ClassVar[str | None] = None  # must import for the engine to run
    distribution: ClassVar[str | None] = None  # whose version the report records
    pip: ClassVar[str | None] = None  # the command that installs it
    workloads: ClassVar[frozenset[str] | None] = None  # the workload groups it takes part in; None: all
    # Why a workload does not apply, per workload name (shown in the table instead of a number).
    not_applicable: ClassVar[dict[str, str]] = {}

    def __init__(self, workers: int) -> None:
        self.workers = workers

    # ------------------------------------------------------------------ availability

    @classmethod
    def missing(cls) -> str | None:
        """Why this engine cannot run here (its package does not import), or None."""
        if cls.module is None:
            return None
        try:
            importlib.import_module(cls.module)
        except ImportError as exc:
            return f"not installed ({exc.msg})"
        return None

    @classmethod
    def version(cls) -> str | None:
        if cls.distribution is None:
            return None
        try:
            return metadata.version(cls.distribution)
        except metadata.PackageNotFoundError:
            return None

    @classmethod
    def takes_part(cls, group: str) -> bool:
        return cls.workloads is None or group in cls.workloads

    @classmethod
    def applies(cls, workload: str, group: str) -> str | None:
        """None if the engine can run `workload` (of `group`), else why not (shown in its row)."""
        return cls.not_applicable.get(workload) or cls.not_applicable.get(group)

    # ------------------------------------------------------------------ life

    def launch(self) -> None:
        """What must run before the start is timed (a control plane to attach to, an event loop)."""

    def start(self) -> None:
        """Create the executor; the harness times this plus one first result."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ running functions

    def call(self, fn: Fn, *args: Any) -> Any:
        """One round trip: run fn(*args) on a worker and return its result."""
        raise NotImplementedError

    def batch(self, fn: Fn, arglist: Sequence[tuple]) -> list[Any]:
        """Queue fn(*args) for every args, then collect every result, in order."""
        raise NotImplementedError

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        """The executor's own map, with its default or recommended chunking."""
        raise NotImplementedError

    # ------------------------------------------------------------------ timed

    def round_trips(self, fn: Fn, args: tuple, count: int) -> list[float]:
        """Seconds of each of `count` round trips, one in flight."""
        call, clock = self.call, time.perf_counter
        samples = []
        for _ in range(count):
            t0 = clock()
            call(fn, *args)
            samples.append(clock() - t0)
        return samples

    def timed_batch(self, fn: Fn, arglist: Sequence[tuple]) -> tuple[float, list[Any] | None]:
        """Seconds for ``batch`` and its results (None where the engine cannot return them)."""
        t0 = time.perf_counter()
        results = self.batch(fn, arglist)
        return time.perf_counter() - t0, results

    def timed_map(self, fn: Fn, items: list[Any]) -> tuple[float, list[Any]]:
        t0 = time.perf_counter()
        results = self.map(fn, items)
        return time.perf_counter() - t0, results

    def worker_pids(self, rounds: int = 10) -> set[int]:
        """The processes that run tasks: whoever answers calls that each nap 20 ms, 4 per
        worker at a time, until every worker has answered (some executors fork or start
        their workers lazily) or `rounds` batches have gone by.

        Works the same on every executor, whatever it calls its workers inside.
        """
        pids: set[int] = set()
        for _ in range(rounds):
            pids.update(self.batch(pid_after, [(0.02,)] * (4 * self.workers)))
            if len(pids) >= self.workers:
                break
        return pids


def pool_chunksize(items: int, workers: int) -> int:
    """What ``multiprocessing.Pool.map`` picks: about four chunks per worker."""
    return max(1, -(-items // (4 * workers)))


class FuturesEngine(Engine):
    """An engine whose executor is a ``concurrent.futures.Executor`` (``self.pool``)."""

    pool: Any

    def map_chunksize(self, items: int) -> int | None:
        """Chunks for ``map``: Pool's, since a default of 1 costs a pipe round trip per item."""
        return pool_chunksize(items, self.workers)

    def call(self, fn: Fn, *args: Any) -> Any:
        return self.pool.submit(fn, *args).result()

    def batch(self, fn: Fn, arglist: Sequence[tuple]) -> list[Any]:
        submit = self.pool.submit
        futures = [submit(fn, *args) for args in arglist]
        return [f.result() for f in futures]

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        return list(self.pool.map(fn, items, chunksize=self.map_chunksize(len(items))))


class AsyncResultEngine(Engine):
    """An engine whose pool has ``apply_async(fn, args).get()`` and ``map`` (multiprocessing's shape)."""

    pool: Any

    def call(self, fn: Fn, *args: Any) -> Any:
        return self.pool.apply_async(fn, args).get()

    def batch(self, fn: Fn, arglist: Sequence[tuple]) -> list[Any]:
        apply_async = self.pool.apply_async
        pending = [apply_async(fn, args) for args in arglist]
        return [r.get() for r in pending]

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        return self.pool.map(fn, items)
