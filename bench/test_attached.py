"""A client attached to `fastworker control-plane` against the embedded Client.

Both submit straight into the shared ring, so an attached client should cost
about the same: this group measures the round trip (p50 inside the loop),
throughput of 100k delays then waits, and the time to attach.  The control
plane is a real subprocess with the same 2 workers; it imports
``tasks_bench`` from this directory.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import pytest

from benchutil import describe, percentiles_us
from conftest import QUICK, WORKERS, Engine
from tasks_bench import ADD

ROUNDS = 200 if QUICK else 3000
N = 10_000 if QUICK else 100_000

pytestmark = pytest.mark.benchmark(group="attached")

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def control_plane():
    from fastworker.engine import runtime

    name = f"bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from fastworker.cli import main; main()", "control-plane",
         "--workers", str(WORKERS), "--task-modules", "tasks_bench", "--name", name, "--log-level", "WARNING"],
        env=env,
    )
    socket_path = runtime.place(name).socket
    deadline = time.monotonic() + 20
    while not os.path.exists(socket_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the control plane did not start")
        time.sleep(0.01)
    yield name
    proc.terminate()
    proc.wait(timeout=20)


async def _round_trips(client, rounds):
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await client.submit_task(ADD, (1, 2))
        samples.append(time.perf_counter() - t0)
    return samples


async def _throughput(client, n):
    t0 = time.perf_counter()
    ids = [await client.delay(ADD, i, i) for i in range(n)]
    for task_id in ids:
        await client.wait(task_id)
    return n / (time.perf_counter() - t0)


def _measure(benchmark, client, run, label, baseline):
    run(_round_trips(client, 200))  # warm-up
    samples = benchmark.pedantic(lambda: run(_round_trips(client, ROUNDS)), rounds=1, iterations=1)
    stats = percentiles_us(samples)
    rate = run(_throughput(client, N))
    describe(benchmark, label, "fastworker", baseline=baseline, in_loop_p50_us=stats["p50_us"],
             in_loop_p99_us=stats["p99_us"], tasks_per_s=round(rate))


def test_embedded_client(benchmark):
    engine = Engine(result_cache_size=N + 1000)
    try:
        _measure(benchmark, engine.client, engine.run, "embedded Client: round trips, then 100k delays", True)
    finally:
        engine.close()


def test_attached_client(benchmark, control_plane):
    from fastworker import Client

    loop = asyncio.new_event_loop()
    client = Client(name=control_plane, result_cache_size=N + 1000)
    attach = []
    try:
        t0 = time.perf_counter()
        loop.run_until_complete(client.start())
        attach.append(time.perf_counter() - t0)
        _measure(benchmark, client, loop.run_until_complete, "attached Client: round trips, then 100k delays", False)
        for _ in range(20):  # attach (connect to the first submit possible), again and again
            other = Client(name=control_plane)
            t0 = time.perf_counter()
            loop.run_until_complete(other.start())
            attach.append(time.perf_counter() - t0)
            other.stop()
        benchmark.extra_info["attach_p50_ms"] = round(sorted(attach)[len(attach) // 2] * 1000, 3)
    finally:
        client.stop()
        loop.close()
