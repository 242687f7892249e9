"""The ``fastworker`` command line (click): thin, the engine does the work."""

from __future__ import annotations

import asyncio

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fastworker")
def main() -> None:
    """Run @task functions on forked worker processes of this host."""


@main.command()
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Worker processes (default: usable cores).")
@click.option("--limit", type=click.IntRange(1000, None), default=2_000_000, show_default=True, help="Count primes below this.")
def demo(workers: int | None, limit: int) -> None:
    """Fan CPU-bound work out over the workers and time it against one process."""
    from .demo import run_demo

    asyncio.run(run_demo(workers=workers, limit=limit))
