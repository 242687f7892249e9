"""Soak: many mixed tasks (bytes to MiB, every priority) through a small ring, end to end through
the Client and its forked workers.  Every result must be its own task's (each argument carries
the task's serial number in every byte run, and the echo must come back equal), and the memory
of every process and the arena must be back at the baseline at the end.

The baseline is taken after a warm-up that already moved MiB payloads, so it includes what
the allocators keep on purpose; growth past it (a leak per task) is what the test looks for."""

from __future__ import annotations

import asyncio
import random

import psutil
import pytest

from integration.conftest import client_factory  # noqa: F401 - the fixture
from integration.tasks_for_tests import echo  # noqa: F401 - registers the tasks before the Client forks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

MiB = 1 << 20
RSS_GROWTH = 16 * MiB  # allowed per process past the warmed-up baseline: allocator noise, not a leak
WINDOW = 200  # tasks in flight at once


def argument(serial: int, rng: random.Random) -> bytes:
    r = rng.random()
    size = rng.randrange(1, 176) if r < 0.6 else rng.randrange(177, 64 << 10) if r < 0.999 else rng.randrange(MiB, 2 * MiB)
    unit = serial.to_bytes(8, "little")
    return (unit * (size // 8 + 1))[:size]


def rss(pids) -> dict[int, int]:
    return {pid: psutil.Process(pid).memory_info().rss for pid in pids}


async def run_tasks(client, first: int, n: int, rng: random.Random) -> int:
    """Tasks first .. first+n-1; returns how many came back wrong."""
    wrong = 0
    for start in range(first, first + n, WINDOW):
        sent = {}
        for serial in range(start, min(start + WINDOW, first + n)):
            arg = argument(serial, rng)
            sent[await client.delay("echo", arg, priority=rng.randrange(4))] = arg
        for task_id, arg in sent.items():
            result = await client.wait(task_id, timeout=60)
            wrong += result.error is not None or result.result != arg
    return wrong


def test_a_million_mixed_tasks_leave_memory_and_the_arena_as_they_found_them(client_factory, count, figures):  # noqa: F811
    total = count(100_000, 1_000_000)
    warm_up = max(2_000, total // 20)
    rng = random.Random(total)

    async def main():
        async with client_factory(
            workers=2, slots=64, arena_size="8MiB", serialization_format="pickle", result_cache_size=WINDOW
        ) as client:
            wrong = await run_tasks(client, 0, warm_up, rng)
            pids = [psutil.Process().pid, *client.stats()["worker_pids"].values()]
            before, arena_before = rss(pids), client.stats()["arena_free_bytes"]
            wrong += await run_tasks(client, warm_up, total - warm_up, rng)
            after, stats = rss(pids), client.stats()
            return wrong, before, after, arena_before, stats, client._segment.check()

    wrong, before, after, arena_before, stats, census = asyncio.run(main())
    figures.update(
        tasks=total,
        wrong_results=wrong,
        rss_mib_before={str(pid): round(v / MiB, 1) for pid, v in before.items()},
        rss_mib_after={str(pid): round(v / MiB, 1) for pid, v in after.items()},
        arena_free_before=arena_before,
        arena_free_after=stats["arena_free_bytes"],
        workers_lost=stats["workers_lost"],
        rescues=stats["rescues"],
    )
    assert wrong == 0
    assert stats["completed"] == total and stats["workers_lost"] == 0 and stats["rescues"] == 0
    assert stats["arena_free_bytes"] == arena_before
    assert census["error"] == 0 and census["free"] == 64 and census["arena_used_bytes"] == 0
    grown = {pid: (after[pid] - before[pid]) / MiB for pid in before if after[pid] - before[pid] > RSS_GROWTH}
    assert not grown, f"RSS grew past the baseline (MiB): {grown}"
