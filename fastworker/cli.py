"""The ``fastworker`` command line (click): thin, the engine does the work.

Options map onto ``Config``; one left out falls back to its ``FASTWORKER_*``
environment variable, then to its default (explicit > environment > default),
and ``Config.validate`` states the allowed range of a bad value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from .config import Config
from .errors import ConfigError, FastWorkerError


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
@click.option("--log-level", default=None, help="DEBUG, INFO (default here), WARNING, ERROR (FASTWORKER_LOG_LEVEL).")
def control_plane(workers, task_modules, name, serialization_format, log_level):
    """Serve tasks to every client of this user that attaches (Client() with no workers)."""
    from . import control_plane as service

    config = _resolve(
        workers=workers,
        task_modules=",".join(task_modules) if task_modules else None,
        name=name,
        serialization_format=serialization_format,
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
