"""Round trip of one trivial task, one in flight: fastworker vs the stdlib pools vs the floor.

fastworker is timed with ``loop.run_until_complete(client.submit_task(...))``
per round on a persistent loop and client.  The alternative, a loop running
in a background thread fed by ``asyncio.run_coroutine_threadsafe``, costs a
thread hand-off each way (self-pipe write, condition variable, GIL switch):
~90 µs on a 2-core VM against ~6 µs for ``run_until_complete`` of an empty
coroutine.  Both the harness's own cost and a p50/p99 timed *inside* the
running loop (no harness at all) go into ``extra_info``.
"""

from __future__ import annotations

import os
import time

import pytest

from benchutil import describe, percentiles_us, record_percentiles
from conftest import QUICK
from tasks_bench import ADD, add

ROUNDS = 200 if QUICK else 2000
WARMUP = 20 if QUICK else 200

pytestmark = pytest.mark.benchmark(group="latency")


async def _noop() -> None:
    return None


def test_fastworker_submit_task(benchmark, fastworker_engine):
    run, client = fastworker_engine.run, fastworker_engine.client
    submit = client.submit_task

    def round_trip():
        return run(submit(ADD, (1, 2)))

    result = benchmark.pedantic(round_trip, rounds=ROUNDS, warmup_rounds=WARMUP)
    assert result.result == 3
    describe(benchmark, "fastworker submit_task", "fastworker", baseline=True)
    record_percentiles(benchmark)

    # What the harness itself adds: run_until_complete of an empty coroutine.
    overhead = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        run(_noop())
        overhead.append(time.perf_counter() - t0)
    benchmark.extra_info["harness_p50_us"] = percentiles_us(overhead)["p50_us"]

    # The same round trip timed inside the running loop, as an asyncio app sees it.
    async def in_loop():
        samples = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            await submit(ADD, (1, 2))
            samples.append(time.perf_counter() - t0)
        return samples

    in_loop_stats = percentiles_us(run(in_loop()))
    benchmark.extra_info["in_loop_p50_us"] = in_loop_stats["p50_us"]
    benchmark.extra_info["in_loop_p99_us"] = in_loop_stats["p99_us"]


def test_process_pool_executor(benchmark, ppe):
    def round_trip():
        return ppe.submit(add, 1, 2).result()

    assert benchmark.pedantic(round_trip, rounds=ROUNDS, warmup_rounds=WARMUP) == 3
    describe(benchmark, "ProcessPoolExecutor submit().result()", "ProcessPoolExecutor")
    record_percentiles(benchmark)


def test_multiprocessing_pool(benchmark, mp_pool):
    def round_trip():
        return mp_pool.apply_async(add, (1, 2)).get()

    assert benchmark.pedantic(round_trip, rounds=ROUNDS, warmup_rounds=WARMUP) == 3
    describe(benchmark, "multiprocessing.Pool apply_async().get()", "multiprocessing.Pool")
    record_percentiles(benchmark)


def _cpu_pair(placement: str):
    """CPUs for (this process, the peer), or None to leave placement to the scheduler."""
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "unpinned":
        return None
    if placement == "same core":
        return cpus[0], cpus[0]
    if len(cpus) < 2:
        pytest.skip("needs two usable CPUs")
    return cpus[0], cpus[1]


@pytest.fixture(params=["unpinned", "same core", "cross core"])
def eventfd_peer(request):
    """A forked child that answers every eventfd ping with a pong: the floor of any round trip.

    The floor depends on where the scheduler puts the two processes (on this
    2-core VM ~5 µs on one core, ~30 µs across cores), so it is also measured
    pinned both ways; the unpinned row is the one comparable to the pools.
    """
    pair = _cpu_pair(request.param)
    saved = os.sched_getaffinity(0)
    ping, pong = os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if pair:
                os.sched_setaffinity(0, {pair[1]})
            while os.eventfd_read(ping) == 1:  # any other value means stop
                os.eventfd_write(pong, 1)
            code = 0
        finally:
            os._exit(code)
    if pair:
        os.sched_setaffinity(0, {pair[0]})
    try:
        yield request.param, ping, pong
    finally:
        os.sched_setaffinity(0, saved)
        os.eventfd_write(ping, 2)
        os.waitpid(pid, 0)
        os.close(ping)
        os.close(pong)


def test_eventfd_ping_pong_floor(benchmark, eventfd_peer):
    placement, ping, pong = eventfd_peer

    def round_trip():
        os.eventfd_write(ping, 1)
        return os.eventfd_read(pong)

    assert benchmark.pedantic(round_trip, rounds=ROUNDS, warmup_rounds=WARMUP) == 1
    describe(benchmark, f"floor: eventfd ping-pong, 2 processes, {placement}", "floor")
    record_percentiles(benchmark)
