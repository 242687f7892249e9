"""The table and the JSON document of `fastworker bench`, from made-up results (no processes)."""

from __future__ import annotations

import json

from fastworker.bench import report
from fastworker.bench.engine import Engine
from fastworker.bench.runner import Cell, Results
from fastworker.bench.workloads import FULL, Latency, Measured, Throughput


class Ours(Engine):
    name, label, family = "fastworker", "fastworker Client", "fastworker"


class Peer(Engine):
    name, label = "peer", "Some Pool"


class Broken(Engine):
    name, label = "broken", "Broken Pool"


class Absent(Engine):
    name, label, pip = "absent", "Absent Pool", "pip install absent"


def results() -> Results:
    latency, throughput = Latency(FULL, 2), Throughput(FULL, 2)
    cells = []
    for workload, samples in ((latency, {Ours: [10.0, 12.0, 11.0], Peer: [30.0, 33.0, 36.0]}),
                              (throughput, {Ours: [1000.0], Peer: [250.0]})):
        for engine, values in samples.items():
            cell = Cell(workload, engine)
            cell.add(1, Measured(values, {"calls": len(values)}))
            cells.append(cell)
        broken = Cell(workload, Broken)
        broken.fail(1, "start", RuntimeError("no workers today"))
        cells.append(broken)
    return Results([latency, throughput], [Ours, Peer, Broken], [(Absent, "not installed (No module named 'absent')")],
                   [], cells, workers=2, repeat=1, quick=False, started=0.0, finished=1.0)


def test_the_table_has_a_row_per_engine_and_workload_with_ratios():
    text = report.table(results())
    assert "| latency (µs) | fastworker Client | 11.0 | 10.5–11.5 | 12.0 | 3 | baseline |" in text
    assert "|  | Some Pool | 33.0 | 31.5–34.5 | 35.9 | 3 | 3.00× slower |" in text
    assert "| throughput (tasks/s) | fastworker Client | 1,000 |  |  | 1 | baseline |" in text
    assert "|  | Some Pool | 250 |  |  | 1 | 4.00× slower |" in text
    assert "|  | Broken Pool | failed: start: RuntimeError: no workers today | | | | |" in text
    assert "- absent: not installed (No module named 'absent'); to measure it: pip install absent" in text
    assert "- Broken Pool, latency: repeat 1: start: RuntimeError: no workers today" in text


def test_without_fastworkers_number_there_is_no_ratio():
    res = results()
    for cell in res.cells:
        if cell.engine is Ours:
            cell.repeats.clear()
            cell.fail(1, "measure", OSError("gone"))
    text = report.table(res)
    assert "|  | Some Pool | 33.0 | 31.5–34.5 | 35.9 | 3 |  |" in text
    assert "baseline" not in text.split("Workloads")[0]


def test_the_document_is_json_and_keeps_every_sample():
    doc = json.loads(json.dumps(report.document(results(), {"cpu_model": "x"}, "fastworker bench", {"repeat": 1})))
    rows = {(r["workload"], r["engine"]): r for r in doc["results"]}
    assert rows[("latency", "peer")]["repeats"] == [{"repeat": 1, "samples": [30.0, 33.0, 36.0], "info": {"calls": 3}}]
    assert rows[("latency", "peer")]["median_over_baseline"] == 3.0
    assert rows[("latency", "fastworker")]["baseline"] is True
    assert rows[("throughput", "broken")]["status"] == "failed"
    assert [e["status"] for e in doc["engines"]] == ["measured", "measured", "measured", "skipped"]
    assert doc["machine"] == {"cpu_model": "x"}
