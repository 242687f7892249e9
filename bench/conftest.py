"""Fixtures shared by the benchmarks: one engine of each kind, 2 workers each.

Every competitor forks its workers from this process (``fork`` start method,
pinned explicitly so the comparison does not change when CPython's default
does).  Each fixture is function-scoped and shuts its pool down, so no pool's
threads or children are alive while another benchmark is measured.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import time

import pytest

import tasks_bench  # noqa: F401 - registers the tasks before any Client forks

WORKERS = 2
# FWBENCH_QUICK=1: a smoke run (few rounds, small batches) to check the suite works.
QUICK = os.environ.get("FWBENCH_QUICK", "") not in ("", "0")
FORK = multiprocessing.get_context("fork")


_LOAD_AT_START = os.getloadavg()


def pytest_configure(config: pytest.Config) -> None:
    # The repository's pytest settings turn warnings into errors; on 3.12+
    # forking a pool from a process that has threads warns, and that is the
    # situation being measured, not a defect of the benchmark.
    config.addinivalue_line("filterwarnings", "ignore:This process .* is multi-threaded:DeprecationWarning")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The repository's 60 s per-test timeout is for tests; a throughput
    # benchmark of several 100k-task rounds may need longer.
    if config.pluginmanager.hasplugin("timeout"):
        for item in items:
            item.add_marker(pytest.mark.timeout(900))


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    # The machine is shared: record what else was running, and which fastworker was measured.
    # pytest-benchmark gathers machine_info when the session ends.
    import fastworker

    machine_info["loadavg_at_start"] = _LOAD_AT_START
    machine_info["loadavg_at_end"] = os.getloadavg()
    machine_info["fastworker_path"] = os.path.dirname(fastworker.__file__)
    machine_info["cpus_usable"] = len(os.sched_getaffinity(0))


class Engine:
    """A started fastworker Client and the event loop it lives on."""

    def __init__(self, **options) -> None:
        from fastworker import Client

        self.loop = asyncio.new_event_loop()
        self.client = Client(workers=WORKERS, **options)
        self.run = self.loop.run_until_complete
        self.run(self.client.start())
        self.run(self.wait_ready())

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Until every worker has run a task (workers are forked asynchronously)."""
        deadline = time.monotonic() + timeout
        while len(self.client.stats()["worker_pids"]) < WORKERS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fastworker workers did not start within {timeout} s")
            await asyncio.sleep(0.005)
        for _ in range(50):
            assert (await self.client.submit_task(tasks_bench.ADD, (1, 2))).result == 3

    def close(self) -> None:
        try:
            self.run(self.client.__aexit__(None, None, None))
        finally:
            self.loop.close()


@pytest.fixture
def fastworker_engine():
    engine = Engine(result_cache_size=200_000)
    yield engine
    engine.close()


@pytest.fixture
def mp_pool():
    pool = FORK.Pool(WORKERS)
    for _ in range(50):
        pool.apply(tasks_bench.add, (1, 2))
    yield pool
    pool.close()
    pool.join()


@pytest.fixture
def ppe():
    executor = concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=FORK)
    for _ in range(50):
        executor.submit(tasks_bench.add, 1, 2).result()
    yield executor
    executor.shutdown(wait=True)
