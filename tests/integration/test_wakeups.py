"""Lost wake-ups: many submit/complete cycles with random pauses on both sides,
one task in flight, and with bursts; every task completes without a stall, and
no worker ever needed its safety timeout to find waiting work."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from .conftest import run

pytestmark = pytest.mark.timeout(120)


def busy_wait(microseconds: float) -> None:
    deadline = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < deadline:
        pass


@pytest.mark.parametrize("spin_us", [0, 50])
def test_one_in_flight_with_random_pauses_never_stalls(client_factory, spin_us):
    rng = random.Random(spin_us)

    async def main():
        async with client_factory(spin_us=spin_us) as client:
            worst = 0.0
            for _ in range(4000):
                busy_wait(rng.choice((0, 0, 5, 20, 60, 200)))  # the caller's pause
                started = time.perf_counter()
                result = await client.submit_task("busy_for", (rng.choice((0, 0, 10, 50, 100)),))
                worst = max(worst, time.perf_counter() - started)
                assert result.error is None
            return worst, client.stats()

    worst, stats = run(main())
    assert stats["rescues"] == 0
    assert worst < 1.0, f"a round trip took {worst:.3f} s"


def test_bursts_and_pauses_mixed_never_lose_a_wake_up(client_factory):
    rng = random.Random(7)

    async def main():
        async with client_factory(slots=64, result_cache_size=10_000) as client:
            for _ in range(300):
                ids = [await client.delay("add", i, i) for i in range(rng.choice((1, 2, 3, 70, 200)))]
                if rng.random() < 0.5:
                    await asyncio.sleep(rng.random() / 2000)
                for task_id in ids:
                    assert (await client.wait(task_id, timeout=5)).error is None
            return client.stats()

    assert run(main())["rescues"] == 0
