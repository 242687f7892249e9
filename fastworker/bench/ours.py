"""fastworker as the harness measures it: the embedded Client, a Client attached to a
control plane the harness starts (and stops), and the Executor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from ..client import Client
from ..engine import runtime
from ..executor import Executor
from ..tasks.models import TaskResult, TaskStatus
from .engine import Engine, Fn, FuturesEngine
from .tasks import MODULE, task_name

# Big enough that no round of the throughput or map workloads evicts a result it still awaits.
RESULT_CACHE_SIZE = 2_000_000
CONTROL_PLANE_READY_S = 30.0
CONTROL_PLANE_STOP_S = 15.0


def _value(result: TaskResult) -> Any:
    if result.status is not TaskStatus.SUCCESS:
        raise RuntimeError(f"task {result.task_name} ended {result.status.value}: {result.error}")
    return result.result


class EmbeddedClient(Engine):
    """``Client(workers=N)``: this process owns the workers; timed inside its event loop."""

    name = "fastworker"
    label = "fastworker Client"
    family = "fastworker"
    distribution = "fastworker"
    not_applicable: ClassVar[dict[str, str]] = {
        "payload": "JSON by default: bytes and arrays go through the Executor",
    }

    client: Client

    def launch(self) -> None:
        self.loop = asyncio.new_event_loop()

    def make_client(self) -> Client:
        return Client(workers=self.workers, result_cache_size=RESULT_CACHE_SIZE)

    def start(self) -> None:
        self.client = self.make_client()
        self.loop.run_until_complete(self.client.start())

    def stop(self) -> None:
        try:
            if getattr(self, "client", None) is not None:
                self.loop.run_until_complete(self.client.__aexit__(None, None, None))
        finally:
            self.loop.close()

    def call(self, fn: Fn, *args: Any) -> Any:
        return _value(self.loop.run_until_complete(self.client.submit_task(task_name(fn), args)))

    def batch(self, fn: Fn, arglist: Sequence[tuple]) -> list[Any]:
        async def delay_all_then_wait_all() -> list[Any]:
            name, delay, wait = task_name(fn), self.client.delay, self.client.wait
            ids = [await delay(name, *args) for args in arglist]
            return [_value(await wait(task_id)) for task_id in ids]

        return self.loop.run_until_complete(delay_all_then_wait_all())

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        async def collect() -> list[Any]:
            return [result async for result in self.client.map(task_name(fn), items)]

        return self.loop.run_until_complete(collect())

    def round_trips(self, fn: Fn, args: tuple, count: int) -> list[float]:
        """Timed inside the running loop, as an asyncio application sees it: driving the loop
        once per call from outside (``run_until_complete``) would add ~6 µs of harness."""

        async def timed() -> list[float]:
            submit, name, clock = self.client.submit_task, task_name(fn), time.perf_counter
            samples = []
            for _ in range(count):
                t0 = clock()
                _value(await submit(name, args))
                samples.append(clock() - t0)
            return samples

        return self.loop.run_until_complete(timed())


class AttachedClient(EmbeddedClient):
    """``Client()`` attached to ``fastworker control-plane --workers N``, which the harness starts
    before the timed start (so startup here is attach + first result) and stops afterwards."""

    name = "fastworker-attached"
    label = "fastworker Client (attached)"

    def launch(self) -> None:
        self.control_plane = f"bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - open until stop(): the output of a failure
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fastworker", "control-plane", "--workers", str(self.workers),
             "--task-modules", MODULE, "--name", self.control_plane, "--log-level", "WARNING",
             "--result-cache-size", str(RESULT_CACHE_SIZE)],
            stdout=self.log, stderr=subprocess.STDOUT, env=_env_importing_this_fastworker(),
        )
        try:
            self._wait_ready()
        except BaseException:
            self._stop_control_plane()
            raise
        super().launch()

    def _wait_ready(self) -> None:
        place = runtime.place(self.control_plane)
        deadline = time.monotonic() + CONTROL_PLANE_READY_S
        while not (place.owner() == self.process.pid and os.path.exists(place.socket)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the control plane did not start: {self._output()}")
            time.sleep(0.01)

    def _output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace").strip()[-2000:] or "(no output)"

    def make_client(self) -> Client:
        return Client(name=self.control_plane, result_cache_size=RESULT_CACHE_SIZE)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self._stop_control_plane()

    def _stop_control_plane(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(CONTROL_PLANE_STOP_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.returncode != 0:
                raise RuntimeError(f"the control plane exited with {self.process.returncode}: {self._output()}")
        finally:
            self.log.close()


def _env_importing_this_fastworker() -> dict[str, str]:
    """The environment for a child that must import the fastworker being measured, wherever it is."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here + (os.pathsep + path if path else "")}


class ExecutorEngine(FuturesEngine):
    """``fastworker.Executor(workers=N)``, a ``concurrent.futures.Executor``."""

    name = "fastworker-executor"
    label = "fastworker Executor"
    family = "fastworker"
    distribution = "fastworker"

    def start(self) -> None:
        self.pool = Executor(workers=self.workers)

    def stop(self) -> None:
        if getattr(self, "pool", None) is not None:
            self.pool.shutdown(wait=True)

    def map_chunksize(self, items: int) -> int | None:
        return None  # the Executor chooses


OURS: tuple[type[Engine], ...] = (EmbeddedClient, AttachedClient, ExecutorEngine)
