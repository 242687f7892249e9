"""Many trivial tasks queued at once, then every result collected: tasks per second.

Each round queues all its tasks first and only then collects, so the queue,
not the caller's pacing, sets the rate.  fastworker's headline rows start a
fresh Client for every round (in pedantic's setup, untimed), so its result
cache never reaches ``result_cache_size`` and nothing is evicted; a third
row keeps one Client across rounds, as a long-running service does, so from
the second round on every finished task evicts the oldest record.  ProcessPoolExecutor moves about ten
times fewer tasks per second, so its rounds hold 20k tasks instead of 100k;
``extra_info["tasks_per_s"]`` (tasks / median round time) is what compares.
"""

from __future__ import annotations

import pytest

from benchutil import describe
from conftest import QUICK, Engine
from tasks_bench import ADD, add

N = 10_000 if QUICK else 100_000
N_PPE = 2_000 if QUICK else 20_000
ROUNDS = 2 if QUICK else 5
WARMUP = 1

pytestmark = pytest.mark.benchmark(group="throughput")


def _record_rate(benchmark, tasks: int) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(tasks=tasks, tasks_per_s=round(tasks / median))


async def _delay_all_then_wait_all(client):
    delay, wait = client.delay, client.wait
    ids = [await delay(ADD, i, i) for i in range(N)]
    for task_id in ids:
        await wait(task_id)
    return ids


async def _batch_then_wait_all(client):
    ids = await client.submit_batch([{"task_name": ADD, "args": (i, i)} for i in range(N)])
    wait = client.wait
    for task_id in ids:
        await wait(task_id)
    return ids


def _fresh_client_rounds(benchmark, body):
    """Run `body(client)` once per round, each round on a new started Client; checks the last round."""
    cache = N + 1_000
    rescues = []

    def setup():
        return (Engine(result_cache_size=cache), {}), {}

    def target(engine, out):
        out["ids"] = engine.run(body(engine.client))

    def teardown(engine, out):
        client = engine.client
        out["ok"] = all(client.get_result(t).result == 2 * i for i, t in enumerate(out["ids"]))
        rescues.append(client.stats()["rescues"])  # lost wake-ups a worker's safety timeout caught
        engine.close()
        assert out["ok"], "a task returned a wrong result"

    benchmark.pedantic(target, setup=setup, teardown=teardown, rounds=ROUNDS, warmup_rounds=WARMUP)
    benchmark.extra_info["result_cache_size"] = cache
    benchmark.extra_info["rescues"] = sum(rescues)
    assert sum(rescues) == 0, "a worker slept with work queued until its safety timeout (a lost wake-up)"


def test_fastworker_delay(benchmark):
    _fresh_client_rounds(benchmark, _delay_all_then_wait_all)
    describe(benchmark, f"fastworker delay() x{N}, then wait() each", "fastworker", baseline=True)
    _record_rate(benchmark, N)


def test_fastworker_submit_batch(benchmark):
    _fresh_client_rounds(benchmark, _batch_then_wait_all)
    describe(benchmark, f"fastworker submit_batch({N}), then wait() each", "fastworker")
    _record_rate(benchmark, N)


def test_fastworker_delay_persistent_client(benchmark, fastworker_engine):
    """One Client for all rounds (result_cache_size=200k): its result cache is full and evicting."""
    run, client = fastworker_engine.run, fastworker_engine.client
    ids = benchmark.pedantic(lambda: run(_delay_all_then_wait_all(client)), rounds=ROUNDS, warmup_rounds=WARMUP)
    assert all(client.get_result(t).result == 2 * i for i, t in enumerate(ids))
    describe(
        benchmark,
        f"fastworker delay() x{N}, then wait() each; one Client for all rounds, cache full (evicting)",
        "fastworker",
        result_cache_size=client.config.result_cache_size,
        round_s=[round(x, 3) for x in benchmark.stats.stats.data],
    )
    _record_rate(benchmark, N)


def test_multiprocessing_pool(benchmark, mp_pool):
    def apply_all_then_get_all():
        apply_async = mp_pool.apply_async
        pending = [apply_async(add, (i, i)) for i in range(N)]
        return [r.get() for r in pending]

    results = benchmark.pedantic(apply_all_then_get_all, rounds=ROUNDS, warmup_rounds=WARMUP)
    assert results == [2 * i for i in range(N)]
    describe(benchmark, f"multiprocessing.Pool apply_async() x{N}, then get() each", "multiprocessing.Pool")
    _record_rate(benchmark, N)


def test_process_pool_executor(benchmark, ppe):
    def submit_all_then_result_all():
        submit = ppe.submit
        futures = [submit(add, i, i) for i in range(N_PPE)]
        return [f.result() for f in futures]

    results = benchmark.pedantic(submit_all_then_result_all, rounds=ROUNDS, warmup_rounds=WARMUP)
    assert results == [2 * i for i in range(N_PPE)]
    describe(benchmark, f"ProcessPoolExecutor submit() x{N_PPE}, then result() each", "ProcessPoolExecutor")
    _record_rate(benchmark, N_PPE)
