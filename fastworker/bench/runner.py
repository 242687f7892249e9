"""Runs every selected workload on every engine, round-robin, and keeps every sample.

    for each repeat r:                       (the engine order rotates by one each repeat)
        for each engine:
            launch (untimed) → start + first result (the startup sample) → memory
            → latency → throughput → map → cpu → payload → stop

Only one engine is alive at a time, so no pool's idle threads or heartbeats
(dask's, Ray's) run beside another's measurement, and a drift of the machine
over the run hits every engine in every repeat alike.  An engine that fails to
start, a measurement that raises and a stop that fails are recorded in their
rows; the run goes on.  So is one that hangs: each step (start, a measurement,
stop) has ``time_limit`` seconds, enforced with SIGALRM, which interrupts a
blocked wait in Python code (a peer stuck inside C code that never returns to
the interpreter is beyond it).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .engine import Engine
from .workloads import Measured, Startup, Workload

Progress = Callable[[str], None]


@dataclass
class Cell:
    """One engine on one workload: a sample list per repeat, and what went wrong."""

    workload: Workload
    engine: type[Engine]
    repeats: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    not_applicable: str | None = None

    @property
    def samples(self) -> list[float]:
        return [s for r in self.repeats for s in r["samples"]]

    def add(self, repeat: int, measured: Measured) -> None:
        self.repeats.append({"repeat": repeat, "samples": measured.samples, "info": measured.info})

    def fail(self, repeat: int, what: str, exc: BaseException) -> None:
        self.errors.append(f"repeat {repeat}: {what}: {describe_error(exc)}")


class TimeLimitExceeded(Exception):
    """A step of an engine took longer than the run's time limit."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TimeLimitExceeded in this (the main) thread if the block runs past `seconds`."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeLimitExceeded(f"no answer within the time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def describe_error(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


@dataclass
class Results:
    workloads: list[Workload]
    engines: list[type[Engine]]
    skipped_engines: list[tuple[type[Engine], str]]
    skipped_workloads: list[tuple[Workload, str]]
    cells: list[Cell]
    workers: int
    repeat: int
    quick: bool
    stop_errors: list[tuple[type[Engine], str]] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    def cell(self, workload: Workload, engine: type[Engine]) -> Cell:
        return next(c for c in self.cells if c.workload is workload and c.engine is engine)


def run(
    workloads: Sequence[Workload],
    engines: Sequence[type[Engine]],
    workers: int,
    repeat: int,
    quick: bool = False,
    progress: Progress = lambda line: None,
    step_limit: float | None = None,
) -> Results:
    started = time.time()
    ready, skipped_workloads = [], []
    for workload in workloads:
        reason = workload.prepare()
        if reason:
            skipped_workloads.append((workload, reason))
        else:
            ready.append(workload)
    available, skipped_engines = [], []
    for engine in engines:
        reason = engine.missing()
        if reason:
            skipped_engines.append((engine, reason))
        else:
            available.append(engine)
    cells = [
        Cell(w, e, not_applicable=e.applies(w.name, w.group))
        for w in ready for e in available if e.takes_part(w.group)
    ]
    results = Results(list(ready), available, skipped_engines, skipped_workloads, cells, workers, repeat, quick,
                      started=started)
    for r in range(1, repeat + 1):
        shift = (r - 1) % len(available) if available else 0
        for engine in available[shift:] + available[:shift]:
            mine = [c for c in cells if c.engine is engine and c.not_applicable is None]
            if mine:
                t0 = time.perf_counter()
                stop_error = _session(engine(workers), r, mine, step_limit)
                if stop_error:
                    results.stop_errors.append((engine, stop_error))
                progress(f"repeat {r}/{repeat}: {engine.label} ({time.perf_counter() - t0:.1f} s)")
    results.finished = time.time()
    return results


def _session(engine: Engine, repeat: int, cells: list[Cell], step_limit: float | None = None) -> str | None:
    """Start `engine`, measure each of its cells once, stop it.  A failure to start or to
    measure lands in the cells; a failure to stop is returned, to be reported once."""
    startup = next((c for c in cells if isinstance(c.workload, Startup)), None)
    try:
        with time_limit(step_limit):
            engine.launch()  # cleans up after itself if it fails: there is nothing to stop then
    except Exception as exc:  # noqa: BLE001 - a peer that cannot start fails its rows, not the run
        for cell in cells:
            cell.fail(repeat, "start", exc)
        return None
    started = False
    try:
        with time_limit(step_limit):
            if startup is not None:
                startup.add(repeat, startup.workload.measure_start(engine))
            else:
                engine.start()
        started = True
        for cell in cells:
            if cell is startup:
                continue
            try:
                with time_limit(step_limit):
                    cell.add(repeat, cell.workload.measure(engine))
            except Exception as exc:  # noqa: BLE001 - one failing measurement, not the run
                cell.fail(repeat, "measure", exc)
    except Exception as exc:  # noqa: BLE001
        for cell in cells:
            cell.fail(repeat, "start", exc)
    finally:
        try:
            with time_limit(step_limit):
                engine.stop()
        except Exception as exc:  # noqa: BLE001
            # A half-started engine may fail to stop for the reason it failed to start,
            # which its rows report already.
            if started:
                return f"repeat {repeat}: stop: {describe_error(exc)}"
    return None
