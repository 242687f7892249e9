"""The workloads: what is run, how big, and what one sample means.

Each ``measure`` warms its engine with a small run of the same work first,
and sizes the timed run from it: as many calls or items as fill the time
budget, capped at the workload's size, so a peer a hundred times slower is
still measured in seconds (its rate per call or item is what compares).

    group        sample                                   unit        better
    startup      start to first result (the runner times it)    ms     lower
    memory       USS of each worker, idle after trivial tasks   MiB    lower
    latency      one round trip of add(1, 2), one in flight     µs     lower
    throughput   N add() queued, then every result collected   tasks/s higher
    map          map(square, list of ints)                      items/s higher
    cpu          speedup of N×5 ms busy loops over this process ×      higher
    payload      round trip of 1 MiB bytes / an 8 MiB ndarray   ms     lower
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psutil

from .engine import Engine
from .reference import forked_calls
from .tasks import add, burn, double, identity, square

MIB = 1 << 20


@dataclass(frozen=True)
class Sizes:
    """How big each workload's timed run may get, and the time one measurement aims for."""

    budget_s: float
    latency_calls: int
    throughput_tasks: int
    map_items: int
    cpu_tasks_per_worker: int
    payload_calls: int
    memory_warm_tasks: int


FULL = Sizes(budget_s=1.0, latency_calls=2000, throughput_tasks=100_000, map_items=1_000_000,
             cpu_tasks_per_worker=100, payload_calls=100, memory_warm_tasks=500)
QUICK = Sizes(budget_s=0.05, latency_calls=200, throughput_tasks=5_000, map_items=50_000,
              cpu_tasks_per_worker=4, payload_calls=10, memory_warm_tasks=100)


def fit(seconds_each: float, budget_s: float, most: int, least: int) -> int:
    """How many of something taking `seconds_each` fill `budget_s`, within [least, most]."""
    if seconds_each <= 0:
        return most
    return max(least, min(most, int(budget_s / seconds_each)))


@dataclass
class Measured:
    samples: list[float]
    info: dict[str, Any] = field(default_factory=dict)


class WrongResult(AssertionError):
    """An engine returned something other than what the function computes."""


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise WrongResult(f"wrong result: {what}")


class Workload:
    name: ClassVar[str]  # its row label in the table
    group: ClassVar[str]  # what --workloads calls it
    title: ClassVar[str]
    unit: ClassVar[str]
    higher_is_better: ClassVar[bool] = False
    per_call: ClassVar[bool] = False  # samples are single calls: p99 means something
    baseline: ClassVar[str] = "fastworker"  # the engine every other row is compared with
    worse: ClassVar[str] = "slower"  # how a row that does worse than the baseline reads
    better: ClassVar[str] = "faster"

    def __init__(self, sizes: Sizes, workers: int) -> None:
        self.sizes, self.workers = sizes, workers

    def prepare(self) -> str | None:
        """Once per run, before any engine starts; returns why the workload cannot run here."""
        return None

    def measure(self, engine: Engine) -> Measured:
        raise NotImplementedError


class Startup(Workload):
    name = group = "startup"
    title = "start to first result: the executor created, one add(1, 2) answered (attached: attach)"
    unit = "ms"

    def measure_start(self, engine: Engine) -> Measured:
        """Start `engine` (after its untimed launch) and time it up to its first result."""
        t0 = time.perf_counter()
        engine.start()
        result = engine.call(add, 1, 2)
        seconds = time.perf_counter() - t0
        expect(result == 3, f"add(1, 2) returned {result!r}")
        return Measured([seconds * 1e3])


class Memory(Workload):
    name = group = "memory"
    title = "idle memory per worker: unique set size (USS) after a few hundred trivial tasks"
    unit = "MiB"
    worse, better = "more", "less"
    IDLE_S = 0.2

    def measure(self, engine: Engine) -> Measured:
        engine.batch(add, [(i, i) for i in range(self.sizes.memory_warm_tasks)])
        pids = sorted(engine.worker_pids())
        time.sleep(self.IDLE_S)
        uss = [psutil.Process(pid).memory_full_info().uss / MIB for pid in pids]
        return Measured(uss, {"pids": pids})


class RoundTrip(Workload):
    """One call at a time; a sample is one call's time."""

    per_call = True
    scale: ClassVar[float]  # seconds -> unit
    WARM_CALLS: ClassVar[int] = 20
    LEAST_CALLS: ClassVar[int] = 5

    def call(self) -> tuple[Callable[..., Any], tuple]:
        raise NotImplementedError

    def check(self, result: Any) -> None:
        raise NotImplementedError

    def most_calls(self) -> int:
        raise NotImplementedError

    def measure(self, engine: Engine) -> Measured:
        fn, args = self.call()
        if engine.family != "reference":  # the floor runs no function
            self.check(engine.call(fn, *args))
        warm = engine.round_trips(fn, args, self.WARM_CALLS)
        calls = fit(statistics.median(warm), self.sizes.budget_s, self.most_calls(), self.LEAST_CALLS)
        samples = engine.round_trips(fn, args, calls)
        return Measured([s * self.scale for s in samples], {"calls": calls})


class Latency(RoundTrip):
    name = group = "latency"
    title = "round trip of add(1, 2), one in flight (p50 = median)"
    unit = "µs"
    scale = 1e6
    WARM_CALLS = 50
    LEAST_CALLS = 20

    def call(self) -> tuple[Callable[..., Any], tuple]:
        return add, (1, 2)

    def check(self, result: Any) -> None:
        expect(result == 3, f"add(1, 2) returned {result!r}")

    def most_calls(self) -> int:
        return self.sizes.latency_calls


class PayloadBytes(RoundTrip):
    name = "payload 1 MiB bytes"
    group = "payload"
    title = "round trip of 1 MiB of random bytes through identity(x)"
    unit = "ms"
    scale = 1e3
    WARM_CALLS = 3
    baseline = "fastworker-executor"

    def prepare(self) -> str | None:
        self.value = os.urandom(MIB)
        return None

    def call(self) -> tuple[Callable[..., Any], tuple]:
        return identity, (self.value,)

    def check(self, result: Any) -> None:
        expect(bytes(result) == self.value, "identity(x) did not return the same bytes")

    def most_calls(self) -> int:
        return self.sizes.payload_calls


class PayloadArray(PayloadBytes):
    name = "payload 8 MiB ndarray"
    title = "round trip of an 8 MiB float64 NumPy array through double(a) = a * 2"

    def prepare(self) -> str | None:
        try:
            import numpy
        except ImportError:
            return "numpy is not installed (pip install numpy)"
        self.numpy = numpy
        self.value = numpy.random.default_rng(0).random(8 * MIB // 8)
        return None

    def call(self) -> tuple[Callable[..., Any], tuple]:
        return double, (self.value,)

    def check(self, result: Any) -> None:
        expect(self.numpy.array_equal(result, self.value * 2), "double(a) is not a * 2")


class Throughput(Workload):
    name = group = "throughput"
    title = "add(i, i) queued N times (delay / submit / apply_async), then every result collected"
    unit = "tasks/s"
    higher_is_better = True

    def measure(self, engine: Engine) -> Measured:
        most = self.sizes.throughput_tasks
        warm = max(100, most // 50)
        seconds, _ = engine.timed_batch(add, [(i, i) for i in range(warm)])
        tasks = fit(seconds / warm, self.sizes.budget_s, most, 100)
        seconds, results = engine.timed_batch(add, [(i, i) for i in range(tasks)])
        expect(results == [2 * i for i in range(tasks)], "add(i, i) != 2 * i")
        return Measured([tasks / seconds], {"tasks": tasks, "seconds": seconds})


class Map(Workload):
    name = group = "map"
    title = "map(square, a list of N ints), every result back in order"
    unit = "items/s"
    higher_is_better = True
    baseline = "fastworker-executor"

    def measure(self, engine: Engine) -> Measured:
        most = self.sizes.map_items
        warm = max(1000, most // 50)
        seconds, _ = engine.timed_map(square, list(range(warm)))
        items = fit(seconds / warm, self.sizes.budget_s, most, 1000)
        data = list(range(items))
        seconds, results = engine.timed_map(square, data)
        expect(list(results) == [x * x for x in data], "map(square) != x * x")
        return Measured([items / seconds], {"items": items, "seconds": seconds})


class Cpu(Workload):
    name = group = "cpu"
    title = ("speedup of N×workers busy loops of ~5 ms over the same calls run one after another in a forked "
             "process; the ceiling row is what plain forked processes reach")
    unit = "× speedup"
    higher_is_better = True
    worse, better = "lower", "higher"
    baseline = "fastworker-executor"
    TASK_S = 0.005

    def prepare(self) -> str | None:
        """Calibrate burn(n) to TASK_S on this machine: the best of a few timings, scaled."""
        probe = 100_000
        burn(probe)
        best = min(_timed(burn, probe) for _ in range(5))
        self.n = max(1, round(probe * self.TASK_S / best))
        self.tasks = self.sizes.cpu_tasks_per_worker * self.workers
        self.expected = burn(self.n)
        return None

    def measure(self, engine: Engine) -> Measured:
        """The same calls one after another in a forked process, then on the engine: timed
        back to back, so a machine whose load changes over the run (a shared one) changes both
        alike.  Not in this process: threads an executor left here would slow the reference."""
        engine.timed_batch(burn, [(self.n,)] * self.workers)
        serial_s = forked_calls([[(self.n,)] * self.tasks], burn)
        seconds, results = engine.timed_batch(burn, [(self.n,)] * self.tasks)
        expect(results is None or results == [self.expected] * self.tasks, "burn(n) returned another sum")
        info = {"tasks": self.tasks, "burn_n": self.n, "serial_s": serial_s, "parallel_s": seconds}
        return Measured([serial_s / seconds], info)


def _timed(fn: Callable[..., Any], *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


# --workloads names -> their workloads, in the order a session runs them (startup comes first,
# as the session starts; memory next, before big payloads have touched the workers' heaps)
GROUPS: dict[str, tuple[type[Workload], ...]] = {
    "startup": (Startup,),
    "memory": (Memory,),
    "latency": (Latency,),
    "throughput": (Throughput,),
    "map": (Map,),
    "cpu": (Cpu,),
    "payload": (PayloadBytes, PayloadArray),
}
