"""The embedded demo: fan CPU-bound work out over every core and gather it.

    python -m fastworker.demo            (or: fastworker demo)

Counts the primes below 2,000,000 in 32 chunks, once on the workers and once
in this process, and prints both results and times.
"""

from __future__ import annotations

import asyncio
import math
import time

from .client import Client
from .config import default_workers
from .tasks.registry import task


@task(name="demo.count_primes")
def count_primes(start: int, stop: int) -> int:
    """Primes in [start, stop), by trial division: deliberately CPU-bound."""
    count = 0
    for n in range(max(start, 2), stop):
        if n % 2 == 0:
            count += n == 2
            continue
        for d in range(3, math.isqrt(n) + 1, 2):
            if n % d == 0:
                break
        else:
            count += 1
    return count


async def run_demo(workers: int | None = None, limit: int = 2_000_000, chunks: int = 32) -> int:
    bounds = [(i * limit // chunks, (i + 1) * limit // chunks) for i in range(chunks)]
    started = time.perf_counter()
    async with Client(workers=workers or default_workers(), arena_size="8MiB") as client:
        ready = time.perf_counter()
        ids = await client.submit_batch([{"task_name": "demo.count_primes", "args": b} for b in bounds])
        results = [await client.wait(task_id) for task_id in ids]
        done = time.perf_counter()
        nworkers = client.workers
    for (lo, hi), result in zip(bounds, results):
        if result.error:
            raise SystemExit(f"chunk [{lo}, {hi}) failed: {result.error}")
    total = sum(r.result for r in results)
    print(f"{chunks} chunks on {nworkers} workers: {total} primes below {limit:,}")
    print(f"  engine start {1000 * (ready - started):.1f} ms, work {done - ready:.3f} s")

    serial_start = time.perf_counter()
    serial = sum(count_primes(lo, hi) for lo, hi in bounds)
    serial_time = time.perf_counter() - serial_start
    assert serial == total, (serial, total)
    print(f"  the same in this process: {serial_time:.3f} s -> speed-up {serial_time / (done - ready):.2f}x on {nworkers} workers")
    return total


def main() -> None:
    asyncio.run(run_demo())


if __name__ == "__main__":
    main()
