"""README.md stays true: its usage example runs, and so does the demo it advertises."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fastworker.cli import main

pytestmark = pytest.mark.timeout(60)

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_the_usage_example_runs(tmp_path):
    example = re.search(r"## Use it\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert example, "README.md lost its usage example"
    script = tmp_path / "example.py"
    script.write_text(example.group(1) + "\nprint('example finished')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("example finished")


def test_the_demo_fans_out_and_reports_times():
    result = CliRunner().invoke(main, ["demo", "--workers", "2", "--limit", "20000"])
    assert result.exit_code == 0, result.output
    assert "2262 primes below 20,000" in result.output
    assert "speed-up" in result.output and "on 2 workers" in result.output


def test_a_bad_cli_option_is_a_usage_error():
    result = CliRunner().invoke(main, ["demo", "--workers", "0"])
    assert result.exit_code == 2
    assert "--workers" in result.output
