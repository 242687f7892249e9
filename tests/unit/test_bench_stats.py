"""The numbers `fastworker bench` prints: summaries, ratios against fastworker, run sizes."""

from __future__ import annotations

import pytest

from fastworker.bench.stats import fmt, percentiles_us, ratio, summarize
from fastworker.bench.workloads import fit


def test_summary_of_a_known_sample():
    s = summarize([float(x) for x in range(1, 102)])  # 1..101
    assert (s.n, s.median, s.min, s.max) == (101, 51.0, 1.0, 101.0)
    assert (s.p25, s.p75, s.p99) == (26.0, 76.0, 100.0)


def test_summary_of_one_sample_is_that_sample():
    s = summarize([7.5])
    assert (s.n, s.median, s.p25, s.p75, s.p99, s.min, s.max) == (1, 7.5, 7.5, 7.5, 7.5, 7.5, 7.5)


def test_summary_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_percentiles_in_microseconds():
    assert percentiles_us([0.00001] * 99 + [0.001]) == {"p50_us": 10.0, "p99_us": 19.9}


@pytest.mark.parametrize(
    ("value", "base", "higher_is_better", "expected"),
    [
        (20.0, 10.0, False, "2.00× slower"),  # a latency twice fastworker's
        (5.0, 10.0, False, "2.00× faster"),
        (50.0, 200.0, True, "4.00× slower"),  # a quarter of fastworker's throughput
        (300.0, 200.0, True, "1.50× faster"),
        (10.0, 10.0, True, "same"),
    ],
)
def test_ratio_reads_from_the_rows_point_of_view(value, base, higher_is_better, expected):
    assert ratio(value, base, higher_is_better) == expected


def test_ratio_words_are_the_workloads():
    assert ratio(4.0, 2.0, False, worse="more", better="less") == "2.00× more"


@pytest.mark.parametrize(("value", "text"), [(1234.5, "1,234"), (12.34, "12.3"), (1.234, "1.23"), (0.0123, "0.01")])
def test_numbers_get_the_digits_their_size_deserves(value, text):
    assert fmt(value) == text


@pytest.mark.parametrize(
    ("seconds_each", "expected"),
    [(0.001, 1000), (0.1, 10), (10.0, 5), (1e-9, 5000), (0.0, 5000)],
)
def test_a_run_is_sized_to_its_budget_within_bounds(seconds_each, expected):
    assert fit(seconds_each, budget_s=1.0, most=5000, least=5) == expected
