"""Statistics of a row's samples, and how a row reads against fastworker's.

Plain ``statistics`` from the standard library: a run keeps a few thousand
samples per row at most.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p25: float
    p75: float
    p99: float
    min: float
    max: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(samples: Sequence[float]) -> Summary:
    """Median, quartiles, p99 and range; quantiles interpolate between the samples (inclusive)."""
    if not samples:
        raise ValueError("no samples to summarize")
    if len(samples) == 1:
        (only,) = samples
        return Summary(1, only, only, only, only, only, only)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return Summary(len(samples), statistics.median(samples), cuts[24], cuts[74], cuts[98], min(samples), max(samples))


def percentiles_us(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 and p99 of durations in seconds, as microseconds rounded to 0.01."""
    summary = summarize(samples_s)
    return {"p50_us": round(summary.median * 1e6, 2), "p99_us": round(summary.p99 * 1e6, 2)}


def fmt(value: float) -> str:
    """A number with as many digits as its size deserves: 1,234 · 12.3 · 1.23."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value: float, base: float, higher_is_better: bool, worse: str = "slower", better: str = "faster") -> str:
    """How `value` compares with fastworker's `base`, from the row's point of view: '2.10× slower'."""
    if value == base:
        return "same"
    factor = (base / value) if higher_is_better else (value / base)  # > 1: this row is worse
    if factor >= 1:
        return f"{factor:.2f}× {worse}"
    return f"{1 / factor:.2f}× {better}"
