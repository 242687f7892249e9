"""Runs every selected workload on every engine, round-robin, and keeps every sample.

    for each repeat r:                       (the engine order rotates by one each repeat)
        for each engine:
            launch (untimed) → start + first result (the startup sample) → memory
            → latency → throughput → map → cpu → payload → stop

Only one engine is alive at a time, so no pool's idle threads or heartbeats
(dask's, Ray's) run beside another's measurement, and a drift of the machine
over the run hits every engine in every repeat alike.  An engine that fails to
start, a measurement that raises and a stop that fails are recorded in their
rows; the run goes on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
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
                stop_error = _session(engine(workers), r, mine)
                if stop_error:
                    results.stop_errors.append((engine, stop_error))
                progress(f"repeat {r}/{repeat}: {engine.label} ({time.perf_counter() - t0:.1f} s)")
    results.finished = time.time()
    return results


def _session(engine: Engine, repeat: int, cells: list[Cell]) -> str | None:
    """Start `engine`, measure each of its cells once, stop it.  A failure to start or to
    measure lands in the cells; a failure to stop is returned, to be reported once."""
    startup = next((c for c in cells if isinstance(c.workload, Startup)), None)
    try:
        engine.launch()  # cleans up after itself if it fails: there is nothing to stop then
    except Exception as exc:  # noqa: BLE001 - a peer that cannot start fails its rows, not the run
        for cell in cells:
            cell.fail(repeat, "start", exc)
        return None
    started = False
    try:
        if startup is not None:
            startup.add(repeat, startup.workload.measure_start(engine))
        else:
            engine.start()
        started = True
        for cell in cells:
            if cell is startup:
                continue
            try:
                cell.add(repeat, cell.workload.measure(engine))
            except Exception as exc:  # noqa: BLE001 - one failing measurement, not the run
                cell.fail(repeat, "measure", exc)
    except Exception as exc:  # noqa: BLE001
        for cell in cells:
            cell.fail(repeat, "start", exc)
    finally:
        try:
            engine.stop()
        except Exception as exc:  # noqa: BLE001
            # A half-started engine may fail to stop for the reason it failed to start,
            # which its rows report already.
            if started:
                return f"repeat {repeat}: stop: {describe_error(exc)}"
    return None
