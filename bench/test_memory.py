"""Idle memory of each worker process: USS (pages only that process holds).

Not a timing: the numbers go to ``extra_info`` and the benchmark body is
empty.  Every pool first runs a few hundred tasks, so each worker has done
its imports and first calls, then idles briefly before it is measured.
fastworker's fork server (zygote), an extra process the stdlib pools do
not have, is reported next to its workers.
"""

from __future__ import annotations

import time

import psutil
import pytest

from benchutil import describe
from tasks_bench import ADD

pytestmark = pytest.mark.benchmark(group="memory")

MIB = 1 << 20


def _memory(pids) -> tuple[list[float], list[float]]:
    """USS and PSS in MiB; PSS also charges each process its share of shared pages (the segment)."""
    infos = [psutil.Process(pid).memory_full_info() for pid in pids]
    return [round(i.uss / MIB, 2) for i in infos], [round(i.pss / MIB, 2) for i in infos]


def _record(benchmark, pids) -> None:
    time.sleep(0.2)
    uss, pss = _memory(pids)
    benchmark.extra_info.update(
        workers=len(uss),
        uss_mib=uss,
        pss_mib=pss,
        uss_mib_per_worker=round(sum(uss) / len(uss), 2),
        pss_mib_per_worker=round(sum(pss) / len(pss), 2),
    )
    benchmark.pedantic(lambda: None, rounds=1)


def test_fastworker_workers(benchmark, fastworker_engine):
    run, client = fastworker_engine.run, fastworker_engine.client

    async def warm():
        for i in range(500):
            await client.submit_task(ADD, (i, i))

    run(warm())
    pids = sorted(client.stats()["worker_pids"].values())
    describe(benchmark, "fastworker worker (idle)", "fastworker", baseline=True)
    zygote = getattr(getattr(client, "_supervisor", None), "zygote", None)  # private: best effort
    if zygote is not None:
        uss, pss = _memory([zygote.pid])
        benchmark.extra_info.update(zygote_uss_mib=uss[0], zygote_pss_mib=pss[0])
    _record(benchmark, pids)


def test_multiprocessing_pool_workers(benchmark, mp_pool):
    from tasks_bench import add

    for i in range(500):
        mp_pool.apply(add, (i, i))
    describe(benchmark, "multiprocessing.Pool worker (idle)", "multiprocessing.Pool")
    _record(benchmark, sorted(p.pid for p in mp_pool._pool))


def test_process_pool_executor_workers(benchmark, ppe):
    from tasks_bench import add

    for i in range(500):
        ppe.submit(add, i, i).result()
    describe(benchmark, "ProcessPoolExecutor worker (idle)", "ProcessPoolExecutor")
    _record(benchmark, sorted(ppe._processes))
