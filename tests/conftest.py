"""Checks every test against leaks: a child process, a shared segment or a
file descriptor that outlives the test fails it (and is cleaned up, so one
leak does not cascade into the next test's failure)."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time

import psutil
import pytest

from fastworker.engine import shm

# A hung test dumps every thread's stack before pytest-timeout kills it.
faulthandler.enable(file=sys.stderr, all_threads=True)

_SETTLE = 3.0  # how long a test's processes may take to exit after it returns


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here, not in tests/reliability/conftest.py: pytest reads options only from the
    # conftest files of the paths it was given, and `pytest tests` names this one.
    parser.addoption(
        "--reliability-scale",
        default=os.environ.get("FASTWORKER_RELIABILITY_SCALE", "ci"),
        help="iteration counts of tests/reliability: 'ci' (default), 'full' (the counts "
        "docs/RELIABILITY.md reports) or a number multiplying the CI counts",
    )
    parser.addoption(
        "--reliability-report",
        default=os.environ.get("FASTWORKER_RELIABILITY_REPORT"),
        help="write the figures tests/reliability measured to this JSON file",
    )


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def _segments() -> set[str]:
    """This user's segments that this test run owns (its own process or a descendant made
    them) or that nobody owns any more: another run of the suite may share the machine."""
    prefix = shm.user_prefix()
    ours = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    found = set()
    for entry in os.listdir(shm.SHM_DIR):
        if not entry.startswith(prefix):
            continue
        owner = shm._read_owner(os.path.join(shm.SHM_DIR, entry))
        if owner is None or owner[0] in ours or not psutil.pid_exists(owner[0]):
            found.add(entry)
    return found


def _fds() -> dict[int, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the fd listing itself, closed by now
    return out


@pytest.fixture(autouse=True)
def no_leaks():
    children, segments, fds = _children(), _segments(), _fds()
    yield
    deadline = time.monotonic() + _SETTLE
    while True:
        new_children = _children() - children
        new_segments = _segments() - segments
        new_fds = {fd: target for fd, target in _fds().items() if fds.get(fd) != target}
        if not (new_children or new_segments or new_fds) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    for pid in new_children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for entry in new_segments:
        try:
            os.unlink(os.path.join(shm.SHM_DIR, entry))
        except FileNotFoundError:
            pass
    problems = []
    if new_children:
        problems.append(f"child processes left running: {sorted(new_children)}")
    if new_segments:
        problems.append(f"shared segments left in {shm.SHM_DIR}: {sorted(new_segments)}")
    if new_fds:
        problems.append(f"file descriptors left open: {new_fds}")
    if problems:
        pytest.fail("test leaked resources: " + "; ".join(problems), pytrace=False)
