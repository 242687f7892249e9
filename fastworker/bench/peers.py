"""The other executors, one small adapter each, in the order the table lists them.

Where a peer forks its workers as fastworker does, the adapter asks for
``fork`` explicitly, so the comparison does not move when a default changes.
Peers that cannot fork (loky and joblib start fresh interpreters; dask's
nannies spawn; Ray runs its own worker processes) use their defaults.  Every
function is pickled by reference from ``fastworker.bench.tasks``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
from collections.abc import Sequence
from typing import Any

from .engine import AsyncResultEngine, Engine, Fn, FuturesEngine, pool_chunksize
from .tasks import map_chunk

FORK = multiprocessing.get_context("fork")


class ProcessPool(FuturesEngine):
    name = "processpool"
    label = "ProcessPoolExecutor"

    def start(self) -> None:
        self.pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=FORK)

    def stop(self) -> None:
        self.pool.shutdown(wait=True)


class MpPool(AsyncResultEngine):
    name = "mp-pool"
    label = "multiprocessing.Pool"

    def start(self) -> None:
        self.pool = FORK.Pool(self.workers)

    def stop(self) -> None:
        self.pool.close()
        self.pool.join()


class Loky(FuturesEngine):
    name = "loky"
    label = "loky"
    module = distribution = "loky"
    pip = "pip install loky"

    def start(self) -> None:
        import loky

        self.pool = loky.get_reusable_executor(max_workers=self.workers)

    def stop(self) -> None:
        self.pool.shutdown(wait=True, kill_workers=True)


class Mpire(AsyncResultEngine):
    name = "mpire"
    label = "mpire WorkerPool"
    module = distribution = "mpire"
    pip = "pip install mpire"

    def start(self) -> None:
        from mpire import WorkerPool

        # keep_alive: the same workers serve every call, as in the other pools.
        self.pool = WorkerPool(n_jobs=self.workers, start_method="fork", keep_alive=True)

    def stop(self) -> None:
        self.pool.terminate()


class Joblib(Engine):
    """``joblib.Parallel`` (its default loky backend); it has no single-task call, so a round
    trip is a ``Parallel`` call of one task, on workers kept across calls."""

    name = "joblib"
    label = "joblib Parallel"
    module = distribution = "joblib"
    pip = "pip install joblib"

    def start(self) -> None:
        import joblib

        self.delayed = joblib.delayed
        self.parallel = joblib.Parallel(n_jobs=self.workers)
        self.parallel.__enter__()  # the context manager keeps one pool for every call

    def stop(self) -> None:
        # joblib keeps its loky workers alive for 300 s to reuse them; a benchmark must not
        # leave them running beside the next engine, and no public call ends them.
        workers = self.parallel._backend._workers
        self.parallel.__exit__(None, None, None)
        if workers is not None:
            workers.shutdown(wait=True, kill_workers=True)

    def call(self, fn: Fn, *args: Any) -> Any:
        return self.parallel([self.delayed(fn)(*args)])[0]

    def batch(self, fn: Fn, arglist: Sequence[tuple]) -> list[Any]:
        delayed = self.delayed(fn)
        return self.parallel(delayed(*args) for args in arglist)

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        delayed = self.delayed(fn)
        return self.parallel(delayed(item) for item in items)  # joblib batches them itself


class Dask(Engine):
    """A ``distributed.LocalCluster`` of N single-threaded worker processes and its Client."""

    name = "dask"
    label = "dask distributed"
    module = "distributed"
    distribution = "distributed"
    pip = "pip install 'dask[distributed]'"

    def start(self) -> None:
        import distributed

        self.cluster = distributed.LocalCluster(
            n_workers=self.workers, threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=logging.ERROR,
        )
        self.client = distributed.Client(self.cluster)

    def stop(self) -> None:
        try:
            self.client.close()
        finally:
            self.cluster.close()

    def call(self, fn: Fn, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False).result()

    def batch(self, fn: Fn, arglist: Sequence[tuple]) -> list[Any]:
        submit = self.client.submit
        return self.client.gather([submit(fn, *args, pure=False) for args in arglist])

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        import dask.bag

        # One task per item would take dask minutes for a million; a bag is its way to chunk.
        bag = dask.bag.from_sequence(items, npartitions=4 * self.workers)
        return bag.map(fn).compute()


class Ray(Engine):
    """A local Ray instance with N CPUs; ``map`` sends Pool-sized chunks as tasks."""

    name = "ray"
    label = "Ray"
    module = distribution = "ray"
    pip = "pip install ray"
    OBJECT_STORE_BYTES = 256 << 20  # the largest payload is 8 MiB; Ray's default takes 30 % of RAM

    def start(self) -> None:
        import ray

        self.ray = ray
        ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                 object_store_memory=self.OBJECT_STORE_BYTES, logging_level=logging.WARNING)
        self.remotes: dict[Fn, Any] = {}

    def stop(self) -> None:
        self.ray.shutdown()

    def remote(self, fn: Fn) -> Any:
        if fn not in self.remotes:
            self.remotes[fn] = self.ray.remote(fn)
        return self.remotes[fn]

    def call(self, fn: Fn, *args: Any) -> Any:
        return self.ray.get(self.remote(fn).remote(*args))

    def batch(self, fn: Fn, arglist: Sequence[tuple]) -> list[Any]:
        remote = self.remote(fn).remote
        return self.ray.get([remote(*args) for args in arglist])

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        size = pool_chunksize(len(items), self.workers)
        chunks = self.batch(map_chunk, [(fn, items[i : i + size]) for i in range(0, len(items), size)])
        return [result for chunk in chunks for result in chunk]


# --peers names, in table order
PEERS: dict[str, type[Engine]] = {cls.name: cls for cls in (ProcessPool, MpPool, Loky, Mpire, Joblib, Dask, Ray)}
