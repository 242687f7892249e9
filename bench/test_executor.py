"""``fastworker.Executor`` against the stdlib pools (and loky) as a ``concurrent.futures.Executor``.

Three groups, every competitor with 2 forked workers, each created once per
test outside the timing and warmed up:

- ``map``: ``list(ex.map(square, data))`` over a list of 1M ints and over
  ``range(1_000_000)``; items/s.  ProcessPoolExecutor is run with Pool's
  default chunksize (len / (4 * workers)) and with its own default
  chunksize=1, the latter on 20k items only (it moves ~15k items/s):
  ``items_per_s`` normalises.
- ``cpu``: 200 tasks of ~5 ms of CPU (``burn(n)``, n calibrated at the start
  of the run); the speedup over the same 200 calls run serially in this
  process, timed in each round's setup so serial and parallel interleave.
  The ceiling is two plain forked processes running 100 calls each, also
  timed in every test's setup; ``of_ceiling`` = ceiling time / this time.
- ``payload``: round trip of one task with a large argument and result:
  1 MiB of bytes through an identity function, and an 8 MiB float64 array
  returned doubled; p50/p99, and the caller's minor page faults per round
  (glibc handing large buffers back to the kernel and faulting them in
  again moves a 1 MiB round trip by ~0.7 ms, depending on the heap's state).

Rows that answer different questions inside a group carry
``extra_info["case"]``; bench/summarize.py prints one table per case, each
with its own fastworker baseline.
"""

from __future__ import annotations

import os
import resource
import statistics
import time

import numpy as np
import pytest

from benchutil import describe, record_percentiles
from conftest import QUICK, WORKERS
from tasks_bench import add, burn, double, identity, square

# -------------------------------------------------------------------- sizes

MAP_N = 100_000 if QUICK else 1_000_000
MAP_N_CHUNK1 = 2_000 if QUICK else 20_000  # ProcessPoolExecutor.map(chunksize=1): ~15k items/s
MAP_ROUNDS = 2 if QUICK else 5

CPU_TASKS = 40 if QUICK else 200
CPU_TASK_S = 0.005
CPU_ROUNDS = 2 if QUICK else 5

PAYLOAD_BYTES = 1 << 20
PAYLOAD_ARRAY_BYTES = 8 << 20
PAYLOAD_ROUNDS_BYTES = 20 if QUICK else 100
PAYLOAD_ROUNDS_ARRAY = 10 if QUICK else 30


# ----------------------------------------------------------------- fixtures


def _fastworker_executor(**options):
    from fastworker import Executor

    executor = Executor(workers=WORKERS, **options)
    # Workers are forked asynchronously: 50 round trips make sure both are up.
    for _ in range(50):
        assert executor.submit(add, 1, 2).result() == 3
    return executor


@pytest.fixture
def fw_executor():
    executor = _fastworker_executor()
    yield executor
    executor.shutdown(wait=True)


@pytest.fixture
def fw_executor_64mib():
    executor = _fastworker_executor(arena_size="64MiB")
    yield executor
    executor.shutdown(wait=True)


@pytest.fixture
def loky_executor():
    loky = pytest.importorskip("loky", reason="loky is not installed (pip install loky)")
    # loky starts workers with fork+exec; plain fork it refuses (older loky) or warns against
    # (loky 3.5+, a warning the suite's filterwarnings turns into an error), so its default it is.
    executor = loky.get_reusable_executor(max_workers=WORKERS)
    for _ in range(50):
        assert executor.submit(add, 1, 2).result() == 3
    yield executor
    executor.shutdown(wait=True)


# ---------------------------------------------------------------------- map


MAP_DATA = {
    "list": lambda n: list(range(n)),
    "range": lambda n: range(n),
}


def _case_map(kind: str) -> str:
    return f"{kind} of {MAP_N:,} ints" if kind == "list" else f"range({MAP_N:,})"


def _bench_map(benchmark, map_call, kind: str, n: int, label: str, impl: str, baseline: bool = False, **extra):
    data = MAP_DATA[kind](n)
    expected_sum = sum(x * x for x in range(n))

    def run():
        return list(map_call(data))

    results = benchmark.pedantic(run, rounds=MAP_ROUNDS, warmup_rounds=1)
    assert len(results) == n and results[-1] == (n - 1) ** 2 and sum(results) == expected_sum
    median = benchmark.stats.stats.median
    describe(benchmark, label, impl, baseline=baseline, case=_case_map(kind), items=n,
             items_per_s=round(n / median), **extra)


@pytest.mark.benchmark(group="map")
@pytest.mark.parametrize("kind", ["list", "range"])
class TestMap:
    def test_fastworker(self, benchmark, fw_executor, kind):
        _bench_map(benchmark, lambda d: fw_executor.map(square, d), kind, MAP_N,
                   "fastworker Executor.map (chunksize=None)", "fastworker", baseline=True)

    def test_multiprocessing_pool(self, benchmark, mp_pool, kind):
        _bench_map(benchmark, lambda d: mp_pool.map(square, d), kind, MAP_N,
                   "multiprocessing.Pool.map (default chunksize)", "multiprocessing.Pool")

    def test_process_pool_executor_pool_chunks(self, benchmark, ppe, kind):
        chunksize = -(-MAP_N // (4 * WORKERS))  # what Pool.map picks
        _bench_map(benchmark, lambda d: ppe.map(square, d, chunksize=chunksize), kind, MAP_N,
                   f"ProcessPoolExecutor.map (chunksize={chunksize:,}, as Pool)", "ProcessPoolExecutor",
                   chunksize=chunksize)

    def test_process_pool_executor_chunksize_1(self, benchmark, ppe, kind):
        _bench_map(benchmark, lambda d: ppe.map(square, d), kind, MAP_N_CHUNK1,
                   f"ProcessPoolExecutor.map (default chunksize=1), {MAP_N_CHUNK1:,} items",
                   "ProcessPoolExecutor", chunksize=1)

    def test_loky(self, benchmark, loky_executor, kind):
        # loky's default chunksize is 1 as ProcessPoolExecutor's: 1M items would take minutes.
        chunksize = -(-MAP_N // (4 * WORKERS))
        _bench_map(benchmark, lambda d: loky_executor.map(square, d, chunksize=chunksize), kind, MAP_N,
                   f"loky get_reusable_executor(2).map (chunksize={chunksize:,}, as Pool)", "loky",
                   chunksize=chunksize)


# ---------------------------------------------------------------------- cpu


@pytest.fixture(scope="module")
def burn_n() -> int:
    """Iterations of `burn` that take CPU_TASK_S here: the best of several timings, scaled."""
    probe = 100_000
    burn(probe)
    best = min(_timed(burn, probe) for _ in range(7))
    return max(1, round(probe * CPU_TASK_S / best))


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _serial(n: int) -> None:
    for _ in range(CPU_TASKS):
        burn(n)


def _ceiling_prepare(n: int):
    """Fork WORKERS plain children that block on a pipe, then run CPU_TASKS/WORKERS burns each."""
    r, w = os.pipe()
    pids = []
    for _ in range(WORKERS):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                os.close(w)
                if os.read(r, 1) == b"g":
                    for _ in range(CPU_TASKS // WORKERS):
                        burn(n)
                    code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(r)
    return w, pids


def _ceiling_run(ready) -> None:
    """Start the children and wait for both: the timed part of the ceiling (fork is not in it)."""
    w, pids = ready
    os.write(w, b"g" * len(pids))
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    os.close(w)
    assert codes == [0] * len(pids)


def _bench_cpu(benchmark, parallel, n: int, label: str, impl: str, baseline: bool = False, ceiling: bool = False):
    """Time `parallel(n)` per round.  Each round's (untimed) setup first times the same work
    serially in this process and then on the ceiling (two plain forked processes), so the
    three interleave round by round and a drift of the machine hits all of them alike.

    The serial time per call varies by ~5-10 % between process states (heap
    layout; seen with no pool alive at all), so a speedup measured in one test
    is not comparable to one from another to better than that; the share of
    the ceiling (ceiling time / this time, same test) is.
    """
    serial_s: list[float] = []
    ceiling_s: list[float] = []

    def setup():
        serial_s.append(_timed(_serial, n))
        if ceiling:
            return (_ceiling_prepare(n),), {}
        ready = _ceiling_prepare(n)
        t0 = time.perf_counter()
        _ceiling_run(ready)
        ceiling_s.append(time.perf_counter() - t0)
        return (n,), {}

    benchmark.pedantic(parallel, setup=setup, rounds=CPU_ROUNDS, warmup_rounds=1)
    serial = statistics.median(serial_s[1:])  # the warm-up round's serial run is dropped too
    par = benchmark.stats.stats.median
    if ceiling:
        ceil, share = par, 1.0
    else:
        # One more ceiling after the last round: each round is then bracketed by the ceilings
        # timed just before and just after it, and its share is against their mean, so a
        # machine whose speed drifts (a shared VM) does not favour whichever ran first.
        setup()
        rounds = benchmark.stats.stats.data
        shares = [(ceiling_s[k + 1] + ceiling_s[k + 2]) / 2 / p for k, p in enumerate(rounds)]
        ceil, share = statistics.median(ceiling_s[1:]), statistics.median(shares)
    describe(benchmark, label, impl, baseline=baseline, tasks=CPU_TASKS, burn_n=n,
             task_ms=round(serial / CPU_TASKS * 1e3, 2), serial_s=round(serial, 4),
             parallel_s=round(par, 4), speedup=round(serial / par, 3),
             ceiling_parallel_s=round(ceil, 4), ceiling_speedup=round(serial / ceil, 3),
             of_ceiling=round(share, 3))


@pytest.mark.benchmark(group="cpu")
class TestCpu:
    def test_fastworker(self, benchmark, fw_executor, burn_n):
        def parallel(n):
            futures = [fw_executor.submit(burn, n) for _ in range(CPU_TASKS)]
            return [f.result() for f in futures]

        _bench_cpu(benchmark, parallel, burn_n, f"fastworker Executor: submit() x{CPU_TASKS}, then result() each",
                   "fastworker", baseline=True)

    def test_multiprocessing_pool(self, benchmark, mp_pool, burn_n):
        def parallel(n):
            return mp_pool.map(burn, [n] * CPU_TASKS, chunksize=1)

        _bench_cpu(benchmark, parallel, burn_n, f"multiprocessing.Pool.map(chunksize=1), {CPU_TASKS} tasks",
                   "multiprocessing.Pool")

    def test_process_pool_executor(self, benchmark, ppe, burn_n):
        def parallel(n):
            futures = [ppe.submit(burn, n) for _ in range(CPU_TASKS)]
            return [f.result() for f in futures]

        _bench_cpu(benchmark, parallel, burn_n, f"ProcessPoolExecutor: submit() x{CPU_TASKS}, then result() each",
                   "ProcessPoolExecutor")

    def test_ceiling_two_forked_processes(self, benchmark, burn_n):
        """Two plain forked processes, CPU_TASKS/2 calls each: the best 2 cores allow.

        The children are forked in the (untimed) setup and block on a pipe; the
        timed part writes the start byte to each and waits for both to exit,
        so fork's own cost is not charged to the ceiling (the pools' workers
        are pre-forked too).
        """
        _bench_cpu(benchmark, _ceiling_run, burn_n,
                   f"ceiling: {WORKERS} plain forked processes, {CPU_TASKS // WORKERS} calls each",
                   "ceiling", ceiling=True)


# ------------------------------------------------------------------ payload


def _bytes_payload():
    return os.urandom(PAYLOAD_BYTES)


def _array_payload():
    return np.random.default_rng(0).random(PAYLOAD_ARRAY_BYTES // 8)


PAYLOADS = {
    # case -> (make the argument, task, check the result, rounds, warm-up rounds)
    "bytes": (_bytes_payload, identity, lambda x, y: y == x, PAYLOAD_ROUNDS_BYTES, 10),
    "ndarray": (_array_payload, double, lambda x, y: np.array_equal(y, x * 2), PAYLOAD_ROUNDS_ARRAY, 5),
}
PAYLOAD_CASES = {
    "bytes": "1 MiB bytes, identity(x)",
    "ndarray": "8 MiB float64 ndarray, a * 2",
}


def _bench_payload(benchmark, call, case: str, label: str, impl: str, baseline: bool = False, **extra):
    make, fn, check, rounds, warmup = PAYLOADS[case]
    x = make()
    assert check(x, call(fn, x))
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    result = benchmark.pedantic(call, args=(fn, x), rounds=rounds, warmup_rounds=warmup)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    assert check(x, result)
    # Minor page faults in this (the calling) process per round: a fresh 1 MiB buffer costs
    # ~256 of them (~0.7 ms here) whenever glibc's malloc has given the memory back to the
    # kernel, which depends on the heap's state, so a p50 can move between runs with it.
    describe(benchmark, label, impl, baseline=baseline, case=PAYLOAD_CASES[case],
             payload_bytes=PAYLOAD_BYTES if case == "bytes" else PAYLOAD_ARRAY_BYTES,
             caller_minflt_per_round=round(faults / (rounds + warmup), 1), **extra)
    record_percentiles(benchmark)


@pytest.mark.benchmark(group="payload")
@pytest.mark.parametrize("case", ["bytes", "ndarray"])
class TestPayload:
    def test_fastworker(self, benchmark, request, case):
        # The array case runs on an executor with a 64 MiB arena, the bytes case on the default one.
        executor = request.getfixturevalue("fw_executor_64mib" if case == "ndarray" else "fw_executor")
        _bench_payload(benchmark, lambda fn, x: executor.submit(fn, x).result(), case,
                       "fastworker Executor submit().result()", "fastworker", baseline=True,
                       arena_size=executor.config.arena_size)

    def test_process_pool_executor(self, benchmark, ppe, case):
        _bench_payload(benchmark, lambda fn, x: ppe.submit(fn, x).result(), case,
                       "ProcessPoolExecutor submit().result()", "ProcessPoolExecutor")

    def test_multiprocessing_pool(self, benchmark, mp_pool, case):
        _bench_payload(benchmark, lambda fn, x: mp_pool.apply_async(fn, (x,)).get(), case,
                       "multiprocessing.Pool apply_async().get()", "multiprocessing.Pool")

