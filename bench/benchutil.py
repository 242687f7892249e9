"""Small helpers to put percentiles and labels into ``benchmark.extra_info``."""

from __future__ import annotations

import numpy as np


def percentiles_us(samples_s) -> dict[str, float]:
    data = np.asarray(samples_s, dtype=float) * 1e6
    p50, p99 = np.percentile(data, [50, 99])
    return {"p50_us": round(float(p50), 2), "p99_us": round(float(p99), 2)}


def describe(benchmark, label: str, impl: str, baseline: bool = False, **extra) -> None:
    """Name the competitor for bench/summarize.py; `baseline` is the row ratios refer to."""
    benchmark.extra_info.update(label=label, impl=impl, baseline=baseline, **extra)


def record_percentiles(benchmark) -> None:
    """p50/p99 of the rounds pytest-benchmark collected (warmup excluded)."""
    benchmark.extra_info.update(percentiles_us(benchmark.stats.stats.data))
