"""Start to first result: create the engine with 2 workers and get one task's result back.

Teardown (stopping workers, joining threads, removing the shared segment)
runs in pedantic's ``teardown``, outside the timing.  fastworker's event
loop is created in ``setup``: it belongs to the application, not the engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from benchutil import describe
from conftest import FORK, QUICK, WORKERS
from tasks_bench import ADD, add

ROUNDS = 3 if QUICK else 20
WARMUP = 1 if QUICK else 2

pytestmark = pytest.mark.benchmark(group="startup")


def test_fastworker_client(benchmark):
    from fastworker import Client

    def setup():
        return (asyncio.new_event_loop(), {}), {}

    def start_and_first_result(loop, held):
        async def go():
            client = Client(workers=WORKERS)
            await client.start()
            held["client"] = client
            return await client.submit_task(ADD, (1, 2))

        return loop.run_until_complete(go())

    def teardown(loop, held):
        try:
            if "client" in held:
                loop.run_until_complete(held["client"].__aexit__(None, None, None))
        finally:
            loop.close()

    result = benchmark.pedantic(
        start_and_first_result, setup=setup, teardown=teardown, rounds=ROUNDS, warmup_rounds=WARMUP
    )
    assert result.result == 3
    describe(benchmark, "fastworker Client(workers=2) start + submit_task", "fastworker", baseline=True)


def test_multiprocessing_pool(benchmark):
    def setup():
        return ({},), {}

    def start_and_first_result(held):
        held["pool"] = pool = FORK.Pool(WORKERS)
        return pool.apply(add, (1, 2))

    def teardown(held):
        if "pool" in held:
            held["pool"].close()
            held["pool"].join()

    result = benchmark.pedantic(
        start_and_first_result, setup=setup, teardown=teardown, rounds=ROUNDS, warmup_rounds=WARMUP
    )
    assert result == 3
    describe(benchmark, "multiprocessing.Pool(2) + apply()", "multiprocessing.Pool")


def test_process_pool_executor(benchmark):
    def setup():
        return ({},), {}

    def start_and_first_result(held):
        held["ppe"] = ppe = concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=FORK)
        return ppe.submit(add, 1, 2).result()

    def teardown(held):
        if "ppe" in held:
            held["ppe"].shutdown(wait=True)

    result = benchmark.pedantic(
        start_and_first_result, setup=setup, teardown=teardown, rounds=ROUNDS, warmup_rounds=WARMUP
    )
    assert result == 3
    describe(benchmark, "ProcessPoolExecutor(2) + submit().result()", "ProcessPoolExecutor")
