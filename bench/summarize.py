"""Print a Markdown summary of a pytest-benchmark JSON file written by this suite.

    python -m pytest bench --benchmark-only --benchmark-json=out.json
    python bench/summarize.py out.json [more.json ...]

Per group, one row per benchmark: its headline number (median µs, tasks/s,
ms, or MiB for memory), p50/p99 where recorded, and the ratio against the
fastworker row of the *same* run (``extra_info["baseline"]``), so machine
speed cancels out.  Rows with ``extra_info["case"]`` (the Executor groups:
list vs range, bytes vs ndarray) get one table per case, each against its
own baseline.  Several files give one section each, to check stability.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from fastworker.bench.stats import fmt as _fmt
from fastworker.bench.stats import ratio

GROUP_ORDER = ("latency", "throughput", "startup", "memory", "attached", "map", "cpu", "payload", "ring", "codec")


def _ratio(value: float, base: float, higher_is_better: bool, worse: str, better: str) -> str:
    """How `value` compares with fastworker's `base`, phrased from the row's point of view."""
    phrase = ratio(value, base, higher_is_better, worse, better)
    return "—" if phrase == "same" else f"{phrase} than fastworker"


class Column:
    def __init__(self, title: str, get: Callable[[dict], float | None]) -> None:
        self.title, self.get = title, get


def _median_s(b: dict) -> float:
    return b["stats"]["median"]


def _extra(key: str) -> Callable[[dict], float | None]:
    return lambda b: b["extra_info"].get(key)


# group -> (headline column, higher is better, worse word, better word, other columns)
LAYOUT: dict[str, tuple[Column, bool, str, str, list[Column]]] = {
    "latency": (
        Column("median µs", lambda b: _median_s(b) * 1e6),
        False, "slower", "faster",
        [Column("p50 µs", _extra("p50_us")), Column("p99 µs", _extra("p99_us"))],
    ),
    "throughput": (
        Column("tasks/s", lambda b: b["extra_info"]["tasks"] / _median_s(b)),
        True, "slower", "faster",
        [Column("tasks/round", _extra("tasks")), Column("median s/round", _median_s)],
    ),
    "startup": (
        Column("median ms", lambda b: _median_s(b) * 1e3),
        False, "slower", "faster",
        [Column("min ms", lambda b: b["stats"]["min"] * 1e3), Column("max ms", lambda b: b["stats"]["max"] * 1e3)],
    ),
    "memory": (
        Column("USS MiB/worker", _extra("uss_mib_per_worker")),
        False, "more", "less",
        [Column("PSS MiB/worker", _extra("pss_mib_per_worker"))],
    ),
    # an attached client against the embedded one (the baseline): p50 round trip inside the loop
    "attached": (
        Column("p50 µs in the loop", _extra("in_loop_p50_us")),
        False, "slower", "faster",
        [Column("p99 µs", _extra("in_loop_p99_us")), Column("tasks/s", _extra("tasks_per_s")),
         Column("attach p50 ms", _extra("attach_p50_ms"))],
    ),
    # fastworker.Executor (bench/test_executor.py); one table per extra_info["case"]
    "map": (
        Column("items/s", _extra("items_per_s")),
        True, "slower", "faster",
        [Column("items/round", _extra("items")), Column("median s/round", _median_s)],
    ),
    # speedup = serial median / parallel median, serial timed in the same test; "of ceiling" =
    # the median over rounds of (the ceiling's time, two plain forked processes timed just before
    # and just after the round, averaged) / the round's time
    # (the headline: speedups compare across rows only to ~15 %, the serial run's speed varies by process)
    "cpu": (
        Column("of ceiling", _extra("of_ceiling")),
        True, "lower", "higher",
        [Column("speedup", _extra("speedup")), Column("parallel s", _extra("parallel_s")),
         Column("ceiling s", _extra("ceiling_parallel_s")),
         Column("serial s", _extra("serial_s")), Column("ms/task", _extra("task_ms"))],
    ),
    # the native ring alone, one process (bench/test_ring.py); the codecs (bench/test_codec.py)
    "ring": (
        Column("median µs", lambda b: _median_s(b) * 1e6),
        False, "slower", "faster",
        [Column("tasks/round", _extra("tasks")), Column("min µs", lambda b: b["stats"]["min"] * 1e6)],
    ),
    "codec": (
        Column("median µs", lambda b: _median_s(b) * 1e6),
        False, "slower", "faster",
        [Column("min µs", lambda b: b["stats"]["min"] * 1e6)],
    ),
    "payload": (
        Column("p50 ms", lambda b: b["extra_info"]["p50_us"] / 1e3),
        False, "slower", "faster",
        [Column("p99 ms", lambda b: b["extra_info"]["p99_us"] / 1e3),
         Column("min ms", lambda b: b["stats"]["min"] * 1e3),
         Column("caller faults/round", _extra("caller_minflt_per_round"))],
    ),
}


def _notes(group: str, b: dict) -> list[str]:
    info = b["extra_info"]
    label = info.get("label", b["name"])
    if group == "latency" and "in_loop_p50_us" in info:
        return [
            f"{label}: timed inside the running loop p50 {_fmt(info['in_loop_p50_us'])} µs, "
            f"p99 {_fmt(info['in_loop_p99_us'])} µs; the run_until_complete harness alone costs "
            f"p50 {_fmt(info['harness_p50_us'])} µs."
        ]
    if group == "memory" and "zygote_uss_mib" in info:
        return [f"{label}: plus fastworker's fork server (zygote), USS {_fmt(info['zygote_uss_mib'])} MiB."]
    return []


def _commit(commit: dict) -> str:
    ident = str(commit.get("id") or "?")
    if len(ident) == 40:
        ident = ident[:10]
    return ident + (" (dirty)" if commit.get("dirty") else "")


def _load(machine: dict) -> str:
    """The 1-minute load average at start and end: the machine may be shared."""
    start, end = machine.get("loadavg_at_start"), machine.get("loadavg_at_end")
    if not start or not end:
        return "not recorded"
    return f"{start[0]:.2f} → {end[0]:.2f}"


def summarize(data: dict, source: str) -> str:
    groups: dict[str, list[dict]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b.get("group") or "(no group)", []).append(b)
    machine = data.get("machine_info", {})
    commit = data.get("commit_info", {})
    lines = [
        f"### {source}",
        "",
        f"{data.get('datetime', '')} · {machine.get('python_implementation', '')} "
        f"{machine.get('python_version', '')} · {machine.get('cpu', {}).get('brand_raw', '')} · "
        f"commit {_commit(commit)} · load {_load(machine)}",
    ]
    order = [g for g in GROUP_ORDER if g in groups] + sorted(g for g in groups if g not in GROUP_ORDER)
    tables: list[tuple[str, str | None, list[dict]]] = []
    for group in order:
        cases: dict[str | None, list[dict]] = {}
        for b in groups[group]:
            cases.setdefault(b["extra_info"].get("case"), []).append(b)
        tables += [(group, case, rows) for case, rows in cases.items()]
    for group, case, rows in tables:
        if group not in LAYOUT:
            layout = (Column("median s", _median_s), False, "slower", "faster", [])
        else:
            layout = LAYOUT[group]
        head, higher_is_better, worse, better, others = layout
        base_rows = [b for b in rows if b["extra_info"].get("baseline")]
        base = head.get(base_rows[0]) if base_rows else None
        rows.sort(key=lambda b: (not b["extra_info"].get("baseline"), b["extra_info"].get("impl") != "fastworker",
                                 (-1 if higher_is_better else 1) * (head.get(b) or 0)))
        lines += ["", f"**{group}**" + (f" — {case}" if case else ""), ""]
        lines.append("| " + " | ".join(["benchmark", head.title, *(c.title for c in others), "vs fastworker"]) + " |")
        lines.append("|" + "---|" * (len(others) + 3))
        notes = []
        for b in rows:
            value = head.get(b)
            cells = [b["extra_info"].get("label", b["name"]), _fmt(value) if value is not None else "n/a"]
            for c in others:
                v = c.get(b)
                cells.append(_fmt(v) if isinstance(v, (int, float)) else "n/a")
            if b["extra_info"].get("baseline"):
                cells.append("baseline")
            elif base and value:
                cells.append(_ratio(value, base, higher_is_better, worse, better))
            else:
                cells.append("n/a")
            lines.append("| " + " | ".join(cells) + " |")
            notes += _notes(group, b)
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="JSON files written by --benchmark-json")
    args = parser.parse_args(argv)
    for i, path in enumerate(args.files):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if i:
            print()
        print(summarize(data, path), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
