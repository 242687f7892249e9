"""Shared by the reliability suite: iteration counts that scale, and figures that are written down.

Every test here proves its property with a count CI can afford (hundreds of kills, ~100k
wake-up cycles) and takes the counts docs/RELIABILITY.md reports with
``--reliability-scale full`` (or ``FASTWORKER_RELIABILITY_SCALE=full``).  What a test measured
(kills survived, tasks lost, stalls, RSS before and after...) goes to ``figures``: it is shown
in the terminal summary and, with ``--reliability-report PATH``, written to a JSON file.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

_FIGURES: dict[str, dict[str, object]] = {}


@pytest.fixture(scope="session")
def count(pytestconfig: pytest.Config) -> Callable[[int, int], int]:
    """count(ci, full): the iteration count for this run's --reliability-scale."""
    scale = pytestconfig.getoption("--reliability-scale")

    def pick(ci: int, full: int) -> int:
        if scale == "ci":
            return ci
        if scale == "full":
            return full
        try:
            factor = float(scale)
        except ValueError:
            raise pytest.UsageError(f"--reliability-scale must be ci, full or a number, not {scale!r}") from None
        return max(1, round(ci * factor))

    return pick


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, object]:
    """A dict this test fills with what it measured; kept under the test's name."""
    found: dict[str, object] = {"scale": request.config.getoption("--reliability-scale")}
    _FIGURES[request.node.name] = found
    return found


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - hook signature
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for test, found in _FIGURES.items():
        terminalreporter.write_line(f"{test}: {json.dumps(found, sort_keys=True)}")
    path = config.getoption("--reliability-report")
    if path:
        with open(path, "w") as out:
            json.dump(_FIGURES, out, indent=2, sort_keys=True)
