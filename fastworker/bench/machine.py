"""The machine a run was measured on, as ``--json`` records it: numbers from another
machine, another load or another commit do not compare."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

import psutil

# Packages whose versions move the numbers, beside the peers (whose versions each engine records).
LIBRARIES = ("fastworker", "numpy", "psutil", "orjson", "cloudpickle")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fastworker_commit() -> str | None:
    """The git commit of the fastworker being measured, '+dirty' if its tree has changes;
    None when it is not a git checkout (an installed wheel)."""
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "-C", source, "rev-parse", "--short=10", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", source, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    """Everything but the load at the end (``finish`` adds it)."""
    import fastworker

    return {
        "cpu_model": cpu_model(),
        "cpus_logical": os.cpu_count(),
        "cpus_physical": psutil.cpu_count(logical=False),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": psutil.virtual_memory().total,
        "system": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "fastworker_version": _version("fastworker"),
        "fastworker_path": os.path.dirname(fastworker.__file__),
        "fastworker_commit": fastworker_commit(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "loadavg_at_start": list(os.getloadavg()),
    }


def finish(machine: dict[str, Any]) -> dict[str, Any]:
    """The description, with the load average at the end of the run: the machine may be shared."""
    return {**machine, "loadavg_at_end": list(os.getloadavg())}
