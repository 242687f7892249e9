"""Estimate pi by Monte Carlo on every core, with NumPy: the kind of fan-out a
data-science script does.

    python examples/monte_carlo_pi.py [samples, default 200_000_000]

Each task draws a batch of random points in the unit square with its own
seed and counts those inside the quarter circle; the batches run on the
workers and the counts come back as plain ints.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from fastworker import Executor

BATCH = 5_000_000


def inside_quarter_circle(seed: int, samples: int) -> int:
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, samples, 1_000_000):  # bounded memory per worker
        n = min(1_000_000, samples - start)
        x, y = rng.random(n), rng.random(n)
        hits += int(np.count_nonzero(x * x + y * y <= 1.0))
    return hits


def estimate(samples: int, workers: int | None = None) -> float:
    batches = [(seed, min(BATCH, samples - start)) for seed, start in enumerate(range(0, samples, BATCH))]
    with Executor(workers=workers) as ex:
        hits = sum(ex.map(inside_quarter_circle, *zip(*batches)))
    return 4.0 * hits / samples


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000_000
    started = time.perf_counter()
    pi = estimate(samples)
    elapsed = time.perf_counter() - started
    print(f"pi ~ {pi:.6f} (error {abs(pi - np.pi):.2e}) from {samples:,} samples in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
