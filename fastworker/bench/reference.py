"""What the machine allows, measured in the same run as everything else.

- The floor of a round trip: two processes passing one eventfd count back and
  forth, no queue, no serialization.  No executor can answer faster.
- The ceiling of CPU-bound work: N plain ``os.fork()``ed processes, each
  running its share of the calls in a loop.  No executor can finish sooner.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from .engine import Engine, Fn

_STOP = 2  # any eventfd count but 1 tells the floor's child to exit


class EventfdFloor(Engine):
    name = "floor"
    label = "floor: eventfd ping-pong, 2 processes"
    family = "reference"
    workloads = frozenset({"latency"})

    def start(self) -> None:
        self.ping = os.eventfd(0, os.EFD_CLOEXEC)
        self.pong = os.eventfd(0, os.EFD_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                while os.eventfd_read(self.ping) == 1:
                    os.eventfd_write(self.pong, 1)
                code = 0
            finally:
                os._exit(code)

    def stop(self) -> None:
        try:
            os.eventfd_write(self.ping, _STOP)
            os.waitpid(self.pid, 0)
        finally:
            os.close(self.ping)
            os.close(self.pong)

    def call(self, fn: Fn, *args: Any) -> None:
        """One ping and its pong; the floor runs no function, so `fn` is not called."""
        os.eventfd_write(self.ping, 1)
        os.eventfd_read(self.pong)


class ForkedCeiling(Engine):
    name = "ceiling"
    label = "ceiling: plain forked busy loops, one per worker"
    family = "reference"
    workloads = frozenset({"cpu"})

    def start(self) -> None:
        """Nothing to start: every batch forks its own processes."""

    def stop(self) -> None:
        """Every batch has reaped its processes."""

    def timed_batch(self, fn: Fn, arglist: Sequence[tuple]) -> tuple[float, None]:
        """One forked child per worker, each with its share of the calls."""
        return forked_calls([arglist[i :: self.workers] for i in range(self.workers)], fn), None


def forked_calls(shares: Sequence[Sequence[tuple]], fn: Fn) -> float:
    """Fork one child per share of the calls, blocked on a pipe; seconds from releasing them to
    the last exit, so fork's own cost is not charged (a pool's workers are forked before its
    work starts too).  A fresh process also keeps the parent's own threads (an executor's
    leftovers) out of the timing.  Children return no results."""
    release, go = os.pipe()
    pids = []
    try:
        try:
            for share in shares:
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child
                    code = 1
                    try:
                        os.close(go)
                        if os.read(release, 1) == b"g":
                            for args in share:
                                fn(*args)
                            code = 0
                    finally:
                        os._exit(code)
                pids.append(pid)
        finally:
            os.close(release)
        t0 = time.perf_counter()
        os.write(go, b"g" * len(pids))
    finally:
        os.close(go)  # a child not released (a fork or the write failed) reads EOF and exits
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    seconds = time.perf_counter() - t0
    if any(codes):
        raise RuntimeError(f"a forked busy loop failed (exit codes {codes})")
    return seconds


REFERENCES: tuple[type[Engine], ...] = (EventfdFloor, ForkedCeiling)
