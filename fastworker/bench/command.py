"""``fastworker bench``: the click command, registered by ``fastworker/cli.py``.

Parsing and checking options only; the run is ``runner.run``, the output ``report``.
This module imports nothing of the harness at import time: every ``fastworker``
command loads it, and importing the workloads would register the bench tasks
in each of them (a control plane would serve them).
"""

from __future__ import annotations

import json
import os
import shlex
import sys

import click

# What --workloads and --peers accept, in the order the help lists them (the issue's);
# tests/unit/test_bench_command.py holds them against workloads.GROUPS and peers.PEERS.
WORKLOAD_NAMES = ("latency", "throughput", "map", "cpu", "payload", "startup", "memory")
PEER_NAMES = ("processpool", "mp-pool", "loky", "mpire", "joblib", "dask", "ray")


def _names(kind: str, known: tuple[str, ...]):
    """A click callback turning 'a,b' into a list of known names; anything else is a usage error."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
        if value is None:
            return None
        names = [n.strip() for n in value.split(",") if n.strip()]
        if not names:
            raise click.BadParameter(f"no {kind} given; choose from {', '.join(known)}")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise click.BadParameter(
                f"unknown {kind} {', '.join(repr(n) for n in unknown)}; choose from {', '.join(known)}"
            )
        return list(dict.fromkeys(names))  # in the order given, once each

    return parse


def _known_peers() -> tuple[str, ...]:
    from .peers import PEERS

    return tuple(PEERS)


def _parse_peers(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    return _names("peer", _known_peers())(ctx, param, value)


@click.command()
@click.option("--workloads", callback=_names("workload", WORKLOAD_NAMES), metavar="LIST",
              help=f"Comma-separated, from {','.join(WORKLOAD_NAMES)} (default: all).")
@click.option("--peers", callback=_parse_peers, metavar="LIST",
              help=f"Comma-separated, from {','.join(PEER_NAMES)} (default: all; those not installed "
              "are listed as skipped, with the pip command that adds them).")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Worker processes of every executor (default: usable cores).")
@click.option("--quick", is_flag=True, help="Small sizes and one repeat: a check in seconds, not numbers to quote.")
@click.option("--repeat", type=click.IntRange(1, 100), default=None,
              help="Rounds over every engine, alternating (default 3; 1 with --quick).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write every sample, the machine and the versions to this file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Draw a bar chart to this PNG (needs matplotlib: pip install 'fastworker[plot]').")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Seconds each step of an engine (start, one workload, stop) may take; past it, the step "
              "fails in its rows and the run goes on.")
def bench(workloads, peers, workers, quick, repeat, json_path, plot_path, time_limit):
    """Measure fastworker against other executors on this machine and print a table."""
    from . import machine, report, runner
    from .ours import OURS
    from .peers import PEERS
    from .plot import PlotUnavailable, draw, require_matplotlib
    from .reference import REFERENCES
    from .workloads import FULL, GROUPS, QUICK

    if plot_path:
        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            raise click.UsageError(str(exc)) from None
    workers = workers or len(os.sched_getaffinity(0))
    repeat = repeat or (1 if quick else 3)
    groups = workloads or list(WORKLOAD_NAMES)
    sizes = QUICK if quick else FULL
    chosen = [cls(sizes, workers) for group in GROUPS if group in groups for cls in GROUPS[group]]
    engines = [*OURS, *REFERENCES, *(PEERS[name] for name in (peers or PEERS))]
    command = shlex.join(["fastworker", "bench", *sys.argv[2:]]) if _invoked_as_bench() else "fastworker bench"
    described = machine.describe()
    results = runner.run(chosen, engines, workers, repeat, quick=quick,
                         progress=lambda line: click.echo(line, err=True), step_limit=time_limit)
    described = machine.finish(described)
    click.echo(report.header(results, described, command))
    click.echo(report.table(results), nl=False)
    if json_path:
        options = {"workloads": groups, "peers": peers or list(PEERS), "workers": workers, "quick": quick,
                   "repeat": repeat, "time_limit": time_limit}
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(report.document(results, described, command, options), f, indent=1)
        click.echo(f"\nEvery sample: {json_path}")
    if plot_path:
        draw(results, plot_path, report.header(results, described, command).splitlines()[0])
        click.echo(f"Chart: {plot_path}")


def _invoked_as_bench() -> bool:
    """Whether sys.argv is this command's (not a test runner's or another program's)."""
    return len(sys.argv) > 1 and sys.argv[1] == "bench"
