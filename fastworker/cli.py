"""The ``fastworker`` command line (click): thin, the engine does the work.

Options map onto ``Config``; one left out falls back to its ``FASTWORKER_*``
environment variable, then to its default (explicit > environment > default),
and ``Config.validate`` states the allowed range of a bad value.

Exit codes: 0 success; 1 failure (the task failed, an unknown task or id, a
task that cannot be cancelled, no control plane); 2 usage.  A failure is one
line on stderr starting ``Error:``, never a traceback; ``--json`` prints one
JSON object on stdout for scripts (errors stay on stderr).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NoReturn

import click
import orjson

from .config import Config
from .errors import ConfigError, FastWorkerError
from .tasks.models import TaskPriority, TaskStatus


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fastworker")
def main() -> None:
    """Run @task functions on forked worker processes of this host."""


def _resolve(**options) -> Config:
    try:
        return Config.resolve(**options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@main.command("control-plane")
@click.option("--workers", "--concurrency", "workers", type=int, default=None,
              help="Worker processes (default: usable cores; FASTWORKER_WORKERS). --concurrency is the same.")
@click.option("--task-modules", "task_modules", multiple=True,
              help="Modules whose @task functions to serve: 'a,b' or the option repeated (FASTWORKER_TASK_MODULES).")
@click.option("--name", default=None, help="Which control plane, per user (default 'default'; FASTWORKER_NAME).")
@click.option("--serialization-format", default=None, help="json (default) or pickle (FASTWORKER_SERIALIZATION_FORMAT).")
@click.option("--result-cache-size", type=int, default=None,
              help="Finished results kept for status queries (default 10000; FASTWORKER_RESULT_CACHE_SIZE).")
@click.option("--result-cache-ttl", type=float, default=None,
              help="Seconds a kept result lives (default 3600; FASTWORKER_RESULT_CACHE_TTL).")
@click.option("--log-level", default=None, help="DEBUG, INFO (default here), WARNING, ERROR (FASTWORKER_LOG_LEVEL).")
@click.option("--max-tasks-per-child", default=None,
              help="Replace a worker after this many tasks (FASTWORKER_MAX_TASKS_PER_CHILD; default: never).")
@click.option("--max-memory-per-child", default=None,
              help="Replace a worker once its RSS passes this, e.g. 512MiB; checked between tasks "
              "(FASTWORKER_MAX_MEMORY_PER_CHILD; default: never).")
def control_plane(workers, task_modules, name, serialization_format, result_cache_size, result_cache_ttl, log_level,
                  max_tasks_per_child, max_memory_per_child):
    """Serve tasks to every client of this user that attaches (Client() with no workers)."""
    from . import control_plane as service

    config = _resolve(
        workers=workers,
        task_modules=",".join(task_modules) if task_modules else None,
        name=name,
        serialization_format=serialization_format,
        result_cache_size=result_cache_size,
        result_cache_ttl=result_cache_ttl,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
        # A service logs its start and its workers' fates: INFO unless told otherwise.
        log_level=log_level or os.environ.get("FASTWORKER_LOG_LEVEL") or "INFO",
    )
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = service.run(config)
    except FastWorkerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


@main.command()
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Worker processes (default: usable cores).")
@click.option("--limit", type=click.IntRange(1000, None), default=2_000_000, show_default=True, help="Count primes below this.")
def demo(workers: int | None, limit: int) -> None:
    """Fan CPU-bound work out over the workers and time it against one process."""
    from .demo import run_demo

    asyncio.run(run_demo(workers=workers, limit=limit))


# ------------------------------------------------------------------ helpers of the task commands

_NAME_HELP = "Which control plane, per user (default 'default'; FASTWORKER_NAME)."
_JSON_HELP = "Print one JSON object for scripts."
# Keywords delay() takes for itself: task keyword arguments with these names go in through
# submit_batch, which takes them as a mapping and cannot confuse them.


def _name_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--name", default=None, help=_NAME_HELP)(func)


def _json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)(func)


def _fail(message: object, code: int = 1) -> NoReturn:
    """One line on stderr, then exit: what every command does with an error it understands."""
    click.echo(f"Error: {' '.join(str(message).splitlines())}", err=True)
    sys.exit(code)


def _jsonable(value: Any) -> Any:
    """orjson's fallback for what a pickle-format task may return: sets as lists, else repr."""
    if isinstance(value, (set, frozenset)):
        return list(value)
    return repr(value)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=_jsonable, option=orjson.OPT_NON_STR_KEYS).decode()


def _echo_json(value: Any) -> None:
    click.echo(_dumps(value))


def _query(call: Callable[..., Any], *args: Any) -> Any:
    """A query through fastworker.queries; an unreachable control plane fails the command."""
    try:
        return call(*args)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except FastWorkerError as exc:
        _fail(exc)


def _json_value(text: str) -> Any:
    """A task argument: JSON where it parses (``5`` an int, ``'"Q1"'`` a str), else the text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _parse_kwargs(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc}); expected a JSON object such as '{{\"x\": 1}}'") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(
            f"expected a JSON object such as '{{\"x\": 1}}', got {type(parsed).__name__} {value!r}"
        )
    return parsed


def _parse_priority(ctx: click.Context, param: click.Parameter, value: str | None) -> TaskPriority:
    if value is None:
        return TaskPriority.NORMAL
    try:
        return TaskPriority.parse(int(value) if value.strip().isdigit() else value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_eta(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time such as 2030-01-31T09:30:00+01:00") from None


def _task_args(ctx: click.Context, given: Sequence[str], more: Sequence[str]) -> list[Any]:
    """``--args 5 3``: click gives --args one value; the rest arrive as extra arguments.

    The command ignores unknown options so that ``--args -1 -2`` keeps its negative numbers;
    anything else that looks like an option is then refused here, as click would have.
    """
    if more and not given:
        raise click.UsageError(
            f"Got unexpected extra argument(s): {' '.join(more)}. Task arguments go after --args: --args 5 3"
        )
    for token in more:
        if token.startswith("-") and len(token) > 1 and not isinstance(_json_value(token), (int, float)):
            option = token.split("=", 1)[0]
            close = difflib.get_close_matches(option, [o for p in ctx.command.params for o in p.opts], n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise click.UsageError(
                f"No such option: {option}.{hint} (A task argument starting with '-' is given as a JSON "
                f"string: '\"{token}\"'.)"
            )
    return [_json_value(token) for token in (*given, *more)]


def _iso(value: Any) -> str:
    return str(value) if value is not None else ""


def _print_result(found: dict[str, Any]) -> None:
    """``fastworker status`` output, in FastWorker's shape."""
    click.echo(f"Task ID: {found.get('task_id')}")
    click.echo(f"Status: {found.get('status')}")
    if found.get("status") == TaskStatus.SUCCESS.value:
        click.echo(f"Result: {_dumps(found.get('result'))}")
    if found.get("error"):
        click.echo(f"Error: {found['error']}")
    if found.get("started_at"):
        click.echo(f"Started: {_iso(found['started_at'])}")
    if found.get("completed_at"):
        click.echo(f"Completed: {_iso(found['completed_at'])}")


# ------------------------------------------------------------------------------- task commands


@main.command(
    context_settings={"ignore_unknown_options": True},
    options_metavar="--task-name NAME [--args VALUE...] [OPTIONS]",
)
@click.option("--task-name", required=True, help="The registered name of the task.")
@click.option(
    "--args", "given_args", multiple=True, metavar="VALUE...",
    help="Positional arguments, each JSON where it parses (5 is an int, '\"Q1\"' a str), else a str.",
)
@click.argument("more_args", nargs=-1, type=click.UNPROCESSED, metavar="")
@click.option("--kwargs", callback=_parse_kwargs, metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option(
    "--priority", callback=_parse_priority, metavar="NAME",
    help="critical, high, normal (default) or low; or 0..3.",
)
@click.option("--countdown", type=click.FloatRange(min=0), default=None, help="Run it this many seconds from now.")
@click.option("--eta", callback=_parse_eta, metavar="ISO",
              help="Run it at this time (ISO 8601; without a zone: local time; in the past: now).")
@click.option("--retries", type=click.IntRange(min=0), default=None, help="Retries after a failure (default: the task's own).")
@click.option("--task-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Hard time limit of the run in seconds: its worker is killed when it passes (default: the task's own).")
@click.option("--non-blocking", is_flag=True, help="Print the task id at once instead of waiting for the result.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the result (FASTWORKER_TIMEOUT; default: no limit).")
@_name_option
@_json_option
@click.pass_context
def submit(ctx, task_name, given_args, more_args, kwargs, priority, countdown, eta, retries, task_timeout,
           non_blocking, timeout, name, as_json):
    """Queue a task on the control plane and print its result (or, --non-blocking, its id)."""
    from .client import Client

    args = _task_args(ctx, given_args, more_args)
    config = _resolve(name=name, timeout=timeout)
    if countdown is not None and eta is not None:
        raise click.UsageError("give --countdown or --eta, not both")

    async def run() -> tuple[str, Any]:
        async with Client(name=config.name, timeout=config.timeout) as client:
            task_id = await client.queue_task(
                task_name, args, kwargs, priority, countdown=countdown, eta=eta, timeout=task_timeout,
                retries=retries,
            )
            if non_blocking:
                return task_id, None
            return task_id, await client.wait(task_id, timeout=config.timeout)

    try:
        task_id, result = asyncio.run(run())
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except (FastWorkerError, OSError) as exc:  # OSError: a socket we could not reach, say
        _fail(exc)
    if result is None:  # --non-blocking
        if as_json:
            _echo_json({"task_id": task_id})
        else:
            click.echo(task_id)
        return
    if as_json:
        _echo_json(result.to_dict())
    elif result.status is TaskStatus.SUCCESS:
        click.echo(_dumps(result.result))
    if result.status is not TaskStatus.SUCCESS:
        _fail(result.error or f"task {task_id} ended {result.status.value}")


@main.command()
@click.option("--task-id", required=True, help="The id `fastworker submit` printed.")
@_name_option
@_json_option
def status(task_id, name, as_json):
    """Show a task's status and result (exit 1 if it failed or is unknown)."""
    from . import queries

    config = _resolve(name=name)
    found = _query(queries.result, config.name, task_id)
    if found is None:
        _fail(f"Task {task_id} not found (unknown, or its result expired)")
    if as_json:
        _echo_json(found)
    else:
        _print_result(found)
    if found.get("status") == TaskStatus.FAILURE.value:
        sys.exit(1)


@main.command()
@click.option("--task-id", required=True, help="The id `fastworker submit` printed.")
@_name_option
@_json_option
def cancel(task_id, name, as_json):
    """Cancel a task: queued or scheduled, it never runs; running, its worker is stopped (exit 1 if it had finished)."""
    from . import queries

    config = _resolve(name=name)
    cancelled, message = _query(queries.cancel, config.name, task_id)
    if as_json:
        _echo_json({"task_id": task_id, "cancelled": cancelled, "message": message})
    elif cancelled:
        click.echo(f"Task {task_id} cancelled")
    if not cancelled:
        _fail(message or f"Task {task_id} could not be cancelled")


@main.command("list")
@click.option(
    "--task-modules", "task_modules", multiple=True,
    help="Import these modules here and list their tasks: 'a,b' or repeated (FASTWORKER_TASK_MODULES). "
    "Without: the names the control plane serves.",
)
@click.option("--list-periodic", is_flag=True,
              help="List the periodic tasks instead: schedule and next run (from the running control plane).")
@_name_option
@_json_option
def list_tasks(task_modules, list_periodic, name, as_json):
    """List tasks: name, module and signature of each."""
    from .tasks.registry import load_task_modules, registry

    config = _resolve(name=name, task_modules=",".join(task_modules) if task_modules else None)
    if list_periodic:
        _list_periodic(config, as_json)
        return
    if not config.task_modules:
        from . import queries

        rows = [{"name": n, "module": None, "signature": None} for n in _query(queries.task_names, config.name)]
    else:
        before = registry._snapshot_state()
        try:
            modules = load_task_modules(config.task_modules)
        except FastWorkerError as exc:
            _fail(exc)
        # Tasks these imports registered, and those of the modules themselves when this
        # process had imported them already (a fresh `fastworker list` has nothing before).
        defs = [
            d for n, d in registry._snapshot_state().items()
            if before.get(n) is not d or d.module in modules
        ]
        rows = [{"name": d.name, "module": d.module, "signature": d.signature} for d in defs]
    rows.sort(key=lambda row: row["name"])
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("No tasks.")
        return
    if rows[0]["module"] is None:
        click.echo("\n".join(row["name"] for row in rows))
        return
    _echo_columns([("NAME", "MODULE", "SIGNATURE")] + [(r["name"], r["module"], r["signature"]) for r in rows])


def _list_periodic(config: Config, as_json: bool) -> None:
    """The running control plane's periodic tasks, or (with --task-modules) those the modules
    define, with the next run each would have if started now."""
    if config.task_modules:
        from .engine.periodic import Series
        from .tasks.registry import load_task_modules, registry

        try:
            load_task_modules(config.task_modules)
        except FastWorkerError as exc:
            _fail(exc)
        now = time.time()
        rows = [Series.first(d, now).row() for d in registry._snapshot_state().values() if d.policy.periodic]
    else:
        from . import queries

        rows = _query(queries.periodic, config.name)
    rows.sort(key=lambda row: row["task_name"])
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("No periodic tasks.")
        return
    _echo_columns([("NAME", "SCHEDULE", "NEXT RUN", "RUNS")] + [
        (r["task_name"], r["schedule"], _iso(r["next_run"]) if r["next_run"] else "done", str(r["runs"])) for r in rows
    ])


def _echo_columns(table: list[tuple[str, ...]]) -> None:
    """Rows of text in left-aligned columns (the last one ragged)."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]) - 1)]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])


def _duration(seconds: Any) -> str:
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(days or hours) + [f"{minutes}m", f"{secs}s"]
    return " ".join(parts)


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "?"


def _format_stats(stats: dict[str, Any]) -> str:
    queued = stats.get("queued_by_priority") or {}
    lines = [
        f"Control plane {stats.get('name')!r} (pid {stats.get('pid')}), up {_duration(stats.get('uptime_s'))}",
        "Queued: " + ", ".join(f"{p.name.lower()} {queued.get(p.name.lower(), 0)}" for p in TaskPriority),
        f"Submitted: {stats.get('submitted')}, completed: {stats.get('completed')}, "
        f"failed: {stats.get('failed')}, clients: {stats.get('clients')}",
    ]
    workers = stats.get("workers") or []
    table = [("WORKER", "PID", "STATE", "TASK", "TASKS", "CPU %", "RSS MiB")] + [
        (
            str(w.get("index")),
            str(w.get("pid")),
            str(w.get("state")),
            str(w.get("current_task") or "-"),
            str(w.get("tasks_done")),
            _number(w.get("cpu_percent"), ".1f"),
            _number(w.get("rss_bytes", 0) / (1 << 20) if isinstance(w.get("rss_bytes"), int) else None, ".1f"),
        )
        for w in workers
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines)


@main.command()
@click.option("--watch", is_flag=True, help="Repeat every --interval seconds until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="Seconds between --watch updates.")
@_name_option
@_json_option
def stats(watch, interval, name, as_json):
    """Show the control plane's workers, queues and counters."""
    from . import queries

    config = _resolve(name=name)
    clear = watch and not as_json and sys.stdout.isatty()
    try:
        while True:
            current = _query(queries.stats, config.name)
            if as_json:
                _echo_json(current)
            else:
                if clear:
                    click.clear()
                click.echo(_format_stats(current))
            if not watch:
                return
            if not clear and not as_json:
                click.echo()
            time.sleep(interval)
    except KeyboardInterrupt:  # how --watch ends
        return


from .bench.command import bench  # noqa: E402 - beside the commands above; its work is imported lazily

main.add_command(bench)
