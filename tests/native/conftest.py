"""Fixtures for the native ring tests: segments that are always unlinked, children that never
outlive their test, and a check that nothing is left in /dev/shm."""

from __future__ import annotations

import _posixshmem
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest

from fastworker import _native

SHM_DIR = "/dev/shm"
PREFIX = f"fastworker-test-{os.getpid()}-"

# A geometry small enough to create in well under a millisecond.
DEFAULT_GEOMETRY = {
    "nslots": 8,
    "arena_size": 1 << 20,
    "max_workers": 8,
    "max_clients": 4,
}


def unique_name() -> str:
    """A POSIX shared-memory name (leading slash) no other test or run uses."""
    return f"/{PREFIX}{uuid4().hex[:8]}"


def shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, name.lstrip("/"))


def unlink_quietly(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _posixshmem.shm_unlink(name)


def create_segment(name: str | None = None, **geometry: int) -> _native.Segment:
    g = {**DEFAULT_GEOMETRY, **geometry}
    return _native.create(
        name or unique_name(),
        g["nslots"],
        g["arena_size"],
        g["max_workers"],
        g["max_clients"],
        os.getpid(),
        12345,
        0x0123456789ABCDEF,
    )


@contextlib.contextmanager
def owned_segment(**geometry: int) -> Iterator[_native.Segment]:
    """A fresh segment, closed and unlinked on the way out whatever happens."""
    name = unique_name()
    seg = None
    try:
        seg = create_segment(name, **geometry)
        yield seg
    finally:
        if seg is not None:
            seg.close()
        unlink_quietly(name)


@pytest.fixture(autouse=True)
def _no_leftover_segments() -> Iterator[None]:
    """Fail a test that leaves one of this process's test segments in /dev/shm."""
    yield
    left = sorted(f for f in os.listdir(SHM_DIR) if f.startswith(PREFIX))
    for f in left:
        unlink_quietly("/" + f)
    assert not left, f"segments left behind in {SHM_DIR}: {left}"


@pytest.fixture
def make_segment() -> Iterator[Callable[..., _native.Segment]]:
    """Factory of segments; every one is closed and unlinked at teardown."""
    made: list[tuple[str, _native.Segment]] = []

    def make(**geometry: int) -> _native.Segment:
        name = unique_name()
        try:
            seg = create_segment(name, **geometry)
        except BaseException:
            unlink_quietly(name)
            raise
        made.append((name, seg))
        return seg

    yield make
    for name, seg in made:
        seg.close()
        unlink_quietly(name)


@pytest.fixture
def segment(make_segment: Callable[..., _native.Segment]) -> _native.Segment:
    return make_segment()


@pytest.fixture
def children() -> Iterator[list[int]]:
    """Pids of forked children.  The test reaps them; any it did not is killed and fails it."""
    pids: list[int] = []
    yield pids
    survivors = []
    for pid in pids:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue  # already reaped by the test
        if done == 0:
            survivors.append(pid)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert not survivors, f"child processes outlived the test: {survivors}"
