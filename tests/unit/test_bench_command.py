"""`fastworker bench`'s option names stay those of the harness, and loading the CLI registers
no bench task (every `fastworker` command, a control plane too, loads the CLI)."""

from __future__ import annotations

import subprocess
import sys

from fastworker.bench import command, peers, workloads


def test_the_options_name_every_workload_and_peer():
    assert sorted(command.WORKLOAD_NAMES) == sorted(workloads.GROUPS)
    assert command.PEER_NAMES == tuple(peers.PEERS)


def test_loading_the_cli_registers_no_bench_task():
    probe = ("import fastworker.cli; from fastworker.tasks.registry import registry; "
             "print(sorted(n for n in registry._snapshot_state() if n.startswith('bench.')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
