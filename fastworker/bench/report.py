"""What a run prints (a Markdown table) and what ``--json`` keeps (every sample).

Each workload's rows are compared with one fastworker row, the workload's
``baseline`` (the embedded Client, or the Executor where the question is a
``concurrent.futures`` one: map, cpu, payload), or with the first fastworker
row that has a number when that one failed.
"""

from __future__ import annotations

import datetime
from typing import Any

from .runner import Cell, Results
from .stats import Summary, fmt, ratio, summarize

FORMAT = "fastworker-bench/1"
ERROR_WIDTH = 60  # characters of an error shown in the table itself; the notes have all of it


def _summary(cell: Cell) -> Summary | None:
    samples = cell.samples
    return summarize(samples) if samples else None


def baseline_cell(cells: list[Cell]) -> Cell | None:
    """The fastworker row the other rows of a workload are compared with."""
    with_numbers = [c for c in cells if c.engine.family == "fastworker" and c.samples]
    preferred = [c for c in with_numbers if c.engine.name == c.workload.baseline]
    return (preferred or with_numbers or [None])[0]


def vs_baseline(cell: Cell, base: Cell | None) -> float | None:
    """This row's median divided by the baseline's (None where either has none)."""
    mine, theirs = _summary(cell), (_summary(base) if base is not None else None)
    if mine is None or theirs is None or theirs.median <= 0 or mine.median <= 0:
        return None
    return mine.median / theirs.median


def _versus(cell: Cell, base: Cell | None) -> str:
    if cell is base:
        return "baseline"
    factor = vs_baseline(cell, base)
    if factor is None:
        return ""
    w = cell.workload
    return ratio(factor, 1.0, w.higher_is_better, w.worse, w.better)


def _short(error: str) -> str:
    line = error.split(": ", 1)[-1] if error.startswith("repeat ") else error
    return line if len(line) <= ERROR_WIDTH else line[: ERROR_WIDTH - 1] + "…"


def table(results: Results) -> str:
    """The run as Markdown: one table, a legend of the workloads, then skips and failures."""
    lines = [
        "| workload | engine | median | spread (p25–p75) | p99 | n | vs fastworker |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    notes: list[str] = []
    for workload in results.workloads:
        cells = [c for c in results.cells if c.workload is workload]
        base = baseline_cell(cells)
        first = True
        for cell in cells:
            head = f"{workload.name} ({workload.unit})" if first else ""
            first = False
            summary = _summary(cell)
            if cell.not_applicable:
                lines.append(f"| {head} | {cell.engine.label} | n/a: {cell.not_applicable} | | | | |")
                continue
            if summary is None:
                lines.append(f"| {head} | {cell.engine.label} | failed: {_short(cell.errors[0])} | | | | |")
            else:
                p99 = fmt(summary.p99) if workload.per_call else ""
                spread = f"{fmt(summary.p25)}–{fmt(summary.p75)}" if summary.n > 1 else ""
                lines.append(
                    f"| {head} | {cell.engine.label} | {fmt(summary.median)} | {spread} | {p99} | "
                    f"{summary.n} | {_versus(cell, base)} |"
                )
            notes += [f"{cell.engine.label}, {workload.name}: {error}" for error in cell.errors]
    notes += [f"{engine.label}: {error}" for engine, error in results.stop_errors]
    lines += ["", "Workloads (median of every sample; spread: the middle half of them):"]
    lines += [f"- {w.name}: {w.title}; {w.unit}, {'higher' if w.higher_is_better else 'lower'} is better"
              for w in results.workloads]
    for workload, reason in results.skipped_workloads:
        lines.append(f"- {workload.name}: skipped, {reason}")
    if results.skipped_engines:
        lines += ["", "Skipped peers:"]
        lines += [f"- {engine.name}: {reason}; to measure it: {engine.pip}" for engine, reason in results.skipped_engines]
    if notes:
        lines += ["", "Failures (the run went on):"] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def header(results: Results, machine: dict[str, Any], command: str) -> str:
    """Two lines saying what was run, where and when."""
    when = datetime.datetime.fromtimestamp(results.started).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    commit = machine.get("fastworker_commit") or "unknown commit"
    return (
        f"`{command}` · {when} · {results.workers} workers · {results.repeat} repeat(s)"
        f"{' · quick' if results.quick else ''}\n"
        f"{machine.get('cpu_model')} ({machine.get('cpus_usable')} usable CPUs) · Python "
        f"{machine.get('python')} · fastworker {machine.get('fastworker_version')} ({commit}) · "
        f"load {machine.get('loadavg_at_start', [0])[0]:.2f} → {machine.get('loadavg_at_end', [0])[0]:.2f}\n"
    )


def document(results: Results, machine: dict[str, Any], command: str, options: dict[str, Any]) -> dict[str, Any]:
    """Everything ``--json`` keeps: options, machine, every engine's status and every sample."""
    rows = []
    for workload in results.workloads:
        cells = [c for c in results.cells if c.workload is workload]
        base = baseline_cell(cells)
        for cell in cells:
            summary = _summary(cell)
            rows.append({
                "workload": workload.name,
                "group": workload.group,
                "engine": cell.engine.name,
                "status": "n/a" if cell.not_applicable else ("ok" if summary else "failed"),
                "reason": cell.not_applicable,
                "summary": summary.to_dict() if summary else None,
                "baseline": cell is base,
                "median_over_baseline": vs_baseline(cell, base),
                "repeats": cell.repeats,
                "errors": cell.errors,
            })
    engines = [
        {"name": e.name, "label": e.label, "family": e.family, "version": e.version(), "status": "measured",
         "reason": None, "pip": e.pip}
        for e in results.engines
    ] + [
        {"name": e.name, "label": e.label, "family": e.family, "version": None, "status": "skipped",
         "reason": reason, "pip": e.pip}
        for e, reason in results.skipped_engines
    ]
    return {
        "format": FORMAT,
        "command": command,
        "options": options,
        "started_at": _iso(results.started),
        "finished_at": _iso(results.finished),
        "machine": machine,
        "workloads": [
            {"name": w.name, "group": w.group, "title": w.title, "unit": w.unit,
             "higher_is_better": w.higher_is_better, "baseline": w.baseline, "skipped": None}
            for w in results.workloads
        ] + [
            {"name": w.name, "group": w.group, "title": w.title, "unit": w.unit,
             "higher_is_better": w.higher_is_better, "baseline": w.baseline, "skipped": reason}
            for w, reason in results.skipped_workloads
        ],
        "engines": engines,
        "results": rows,
    }


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat()
