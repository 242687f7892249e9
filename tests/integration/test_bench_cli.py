"""`fastworker bench` as a user runs it, in quick mode on the stdlib pools, plus test-only peers
that are missing, cannot start, or fail a measurement: the table has every row, skips and
failures are reported without ending the run, `--json` keeps every sample, bad options exit 2.

No timing is asserted: the machine is shared and noisy; only the shape of what is reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from fastworker.bench import peers
from fastworker.bench.engine import Engine
from fastworker.cli import main

pytestmark = pytest.mark.timeout(120)

OURS = ("fastworker Client", "fastworker Client (attached)", "fastworker Executor")
WORKLOAD_ROWS = ("startup (ms)", "memory (MiB)", "latency (µs)", "throughput (tasks/s)", "map (items/s)",
                 "cpu (× speedup)", "payload 1 MiB bytes (ms)", "payload 8 MiB ndarray (ms)")


class NotInstalled(Engine):
    name = "not-installed"
    label = "a peer nobody installed"
    module = "fastworker_bench_no_such_module"
    pip = "pip install no-such-peer"


class CannotStart(peers.ProcessPool):
    name = "cannot-start"
    label = "a peer that cannot start"

    def start(self) -> None:
        raise RuntimeError("no workers today")


class FailsBatches(peers.MpPool):
    """Starts and answers single calls, but every batch raises: some rows fail, others do not."""

    name = "fails-batches"
    label = "a peer whose batches fail"

    def batch(self, fn, arglist):
        raise OSError("the batch went missing")


class HangsOnBatches(peers.MpPool):
    """Answers single calls; a batch never comes back (a deadlocked pool, say)."""

    name = "hangs-on-batches"
    label = "a peer whose batches hang"

    def batch(self, fn, arglist):
        time.sleep(3600)


def test_a_hanging_peer_fails_its_row_at_the_time_limit_and_the_run_goes_on(monkeypatch):
    monkeypatch.setitem(peers.PEERS, HangsOnBatches.name, HangsOnBatches)
    started = time.monotonic()
    result = bench("--quick", "--workers", "1", "--workloads", "throughput,latency", "--peers",
                   "hangs-on-batches,mp-pool", "--time-limit", "2")
    assert result.exit_code == 0, result.output
    table = {(r[0], r[1]): r for r in rows(result.stdout)}
    assert "time limit of 2 s" in result.stdout
    assert table[("throughput (tasks/s)", "a peer whose batches hang")][2].startswith("failed")
    assert table[("latency (µs)", "a peer whose batches hang")][2][0].isdigit()  # its other rows ran
    assert table[("throughput (tasks/s)", "multiprocessing.Pool")][2][0].isdigit()
    assert time.monotonic() - started < 60


@pytest.fixture
def test_peers(monkeypatch):
    for cls in (NotInstalled, CannotStart, FailsBatches):
        monkeypatch.setitem(peers.PEERS, cls.name, cls)


def bench(*args: str):
    return CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)


def rows(output: str) -> list[list[str]]:
    """The table's body: its cells, the workload carried down to the rows that leave it blank."""
    out, workload = [], ""
    for line in output.splitlines():
        if not line.startswith("| ") or line.startswith("| workload") :
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        workload = cells[0] or workload
        out.append([workload, *cells[1:]])
    return out


def test_a_quick_run_reports_every_row_keeps_every_sample_and_survives_failing_peers(tmp_path, test_peers):
    out = tmp_path / "run.json"
    result = bench("--quick", "--workers", "2", "--peers", "processpool,mp-pool,not-installed,cannot-start,fails-batches",
                   "--json", str(out))
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    by_row = {(r[0], r[1]): r for r in table}

    measured = (*OURS, "ProcessPoolExecutor", "multiprocessing.Pool")
    for workload in WORKLOAD_ROWS:
        for engine in measured + ("a peer that cannot start", "a peer whose batches fail"):
            assert (workload, engine) in by_row, f"no row for {engine} in {workload}:\n{result.stdout}"
    assert ("latency (µs)", "floor: eventfd ping-pong, 2 processes") in by_row
    assert ("cpu (× speedup)", "ceiling: plain forked busy loops, one per worker") in by_row
    assert not any(r[1] == "a peer nobody installed" for r in table)

    # A number in every row of every engine that works (the Clients' payload rows say why not).
    for (workload, engine), row in by_row.items():
        if engine in ("ProcessPoolExecutor", "multiprocessing.Pool", "fastworker Executor"):
            float(row[2].replace(",", ""))
    assert by_row[("payload 1 MiB bytes (ms)", "fastworker Client")][2].startswith("n/a: JSON")
    # Each workload compares with exactly one fastworker row.
    for workload in WORKLOAD_ROWS:
        assert [r[6] for r in table if r[0] == workload].count("baseline") == 1

    # Failures are reported in their rows and the run went on past them.
    assert all(by_row[(w, "a peer that cannot start")][2] == "failed: start: RuntimeError: no workers today"
               for w in WORKLOAD_ROWS)
    assert by_row[("throughput (tasks/s)", "a peer whose batches fail")][2].startswith("failed: measure: OSError")
    float(by_row[("latency (µs)", "a peer whose batches fail")][2].replace(",", ""))
    assert "Failures (the run went on):" in result.stdout

    # The skipped peer, with the command that adds it.
    assert "Skipped peers:" in result.stdout
    assert "- not-installed: not installed (No module named 'fastworker_bench_no_such_module'); " \
           "to measure it: pip install no-such-peer" in result.stdout

    doc = json.loads(out.read_text())
    assert doc["format"] == "fastworker-bench/1"
    assert doc["options"] == {"workloads": ["latency", "throughput", "map", "cpu", "payload", "startup", "memory"],
                              "peers": ["processpool", "mp-pool", "not-installed", "cannot-start", "fails-batches"],
                              "workers": 2, "quick": True, "repeat": 1, "time_limit": 300.0}
    for key in ("cpu_model", "cpus_logical", "cpus_usable", "python", "fastworker_version", "fastworker_commit",
                "libraries", "loadavg_at_start", "loadavg_at_end"):
        assert key in doc["machine"]
    engines = {e["name"]: e for e in doc["engines"]}
    assert engines["not-installed"]["status"] == "skipped"
    assert engines["not-installed"]["pip"] == "pip install no-such-peer"
    assert engines["processpool"]["status"] == "measured"
    assert {w["name"] for w in doc["workloads"]} == {r.split(" (")[0] for r in WORKLOAD_ROWS}
    results = doc["results"]
    assert len({(r["workload"], r["engine"]) for r in results}) == len(results)
    for r in results:
        samples = [s for rep in r["repeats"] for s in rep["samples"]]
        if r["status"] == "ok":
            assert r["summary"]["n"] == len(samples) > 0  # every sample kept, none summarized away
            assert all(isinstance(s, float) for s in samples)
            assert [rep["repeat"] for rep in r["repeats"]] == [1]
        elif r["status"] == "failed":
            assert r["summary"] is None and r["errors"]
        else:
            assert r["status"] == "n/a" and r["reason"]
    latency = next(r for r in results if r["workload"] == "latency" and r["engine"] == "processpool")
    assert len(latency["repeats"][0]["samples"]) == latency["repeats"][0]["info"]["calls"]
    assert sum(r["baseline"] for r in results if r["workload"] == "latency") == 1


def test_repeats_alternate_the_engines_and_each_keeps_its_samples(tmp_path):
    out = tmp_path / "run.json"
    result = bench("--quick", "--workers", "2", "--repeat", "2", "--workloads", "latency,throughput",
                   "--peers", "mp-pool", "--json", str(out))
    assert result.exit_code == 0, result.output
    order = [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in result.stderr.splitlines()
             if line.startswith("repeat ")]
    first, second = order[: len(order) // 2], order[len(order) // 2 :]
    assert sorted(first) == sorted(second) and first != second and second[-1] == first[0]
    for r in json.loads(out.read_text())["results"]:
        assert [rep["repeat"] for rep in r["repeats"]] == [1, 2], r


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--workloads", "latency,warp"], "'warp'"),
        (["--workloads", ","], "no workload given"),
        (["--peers", "processpool,celery"], "'celery'"),
        (["--workers", "0"], "--workers"),
        (["--repeat", "0"], "--repeat"),
        (["--quick", "--surprise"], "--surprise"),
    ],
)
def test_a_bad_option_is_a_usage_error_naming_the_value(args, named):
    result = bench(*args)
    assert result.exit_code == 2, result.output
    assert named in result.output


def test_plot_without_matplotlib_says_how_to_get_it_before_running(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    result = bench("--quick", "--workloads", "latency", "--peers", "mp-pool", "--plot", str(tmp_path / "b.png"))
    assert result.exit_code == 2
    assert "pip install 'fastworker[plot]'" in result.output
    assert "repeat 1/1" not in result.output  # nothing was run


@pytest.fixture(scope="module")
def matplotlib_fonts_loaded():
    """matplotlib keeps the font files it has drawn with open for the life of the process (a
    cache): load them before the leak check takes its census (module scope runs first)."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'fastworker[plot]')")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_title("warm-up: µs, × speedup, p25–p75")  # the glyphs the chart draws
    fig.canvas.draw()
    plt.close(fig)


def test_plot_draws_a_png(tmp_path, matplotlib_fonts_loaded):
    chart = tmp_path / "bench.png"
    result = bench("--quick", "--workers", "2", "--workloads", "latency,cpu", "--peers", "mp-pool", "--plot", str(chart))
    assert result.exit_code == 0, result.output
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_command_runs_as_installed():
    out = subprocess.run(
        [sys.executable, "-m", "fastworker", "bench", "--quick", "--workers", "2", "--workloads", "latency",
         "--peers", "processpool"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("`fastworker bench --quick --workers 2 --workloads latency --peers processpool`")
    assert "| latency (µs) | fastworker Client |" in out.stdout
