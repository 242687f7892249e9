"""The examples under examples/ run and say something true."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_monte_carlo_pi_estimates_pi():
    pytest.importorskip("numpy")
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "monte_carlo_pi.py"), "20000000"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    estimate = float(re.search(r"pi ~ ([0-9.]+)", out.stdout).group(1))
    assert abs(estimate - 3.14159) < 0.01
