"""Small helpers to put percentiles and labels into ``benchmark.extra_info``."""

from __future__ import annotations

from fastworker.bench.stats import percentiles_us

__all__ = ["describe", "percentiles_us", "record_percentiles"]


def describe(benchmark, label: str, impl: str, baseline: bool = False, **extra) -> None:
    """Name the competitor for bench/summarize.py; `baseline` is the row ratios refer to."""
    benchmark.extra_info.update(label=label, impl=impl, baseline=baseline, **extra)


def record_percentiles(benchmark) -> None:
    """p50/p99 of the rounds pytest-benchmark collected (warmup excluded)."""
    benchmark.extra_info.update(percentiles_us(benchmark.stats.stats.data))
