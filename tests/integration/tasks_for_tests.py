"""Tasks the integration tests run.  Imported before any Client starts, so
the forked workers have them."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time

from fastworker import _native, task


@task
def add(x, y):
    return x + y


@task
async def async_add(x, y):
    await asyncio.sleep(0.001)
    return x + y


@task
def echo(value):
    return value


@task
def fail(message):
    raise ValueError(message)


@task
def wait_for_file(path, timeout=10.0):
    """Block until `path` exists: lets a test hold a worker busy without sleeping."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.001)
    return os.getpid()


@task
def touch(path):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return time.monotonic_ns()


@task
def pid():
    return os.getpid()


@task
def unserializable_result():
    return {1, 2, 3}


@task
def crash_inside_ring(op):
    """Make this worker SIGKILL itself inside its next ring operation `op`, holding the lock."""
    _native._set_crash_point(op)
    return op


# --- the crash matrix: how a task dies ------------------------------------------------------


def misbehave(how):
    if how == "raise":
        raise RuntimeError("raised on purpose")
    if how == "sys.exit":
        sys.exit(3)
    if how == "os._exit":
        os._exit(7)
    if how == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        ctypes.string_at(0)
    raise AssertionError(how)


class ExplodesOnLoad:
    """Pickles fine; misbehaves when the worker unpickles it (decoding the arguments)."""

    def __init__(self, how):
        self.how = how

    def __reduce__(self):
        return (misbehave, (self.how,))


class ExplodesOnDump:
    """Built in the worker; misbehaves when the worker pickles it (encoding the result)."""

    def __init__(self, how):
        self.how = how

    def __reduce__(self):
        misbehave(self.how)


@task
def run_and(how):
    misbehave(how)


@task
def take_anything(value):
    return "decoded"


@task
def return_exploding(how):
    return ExplodesOnDump(how)


@task
def busy_for(microseconds):
    """Burn the CPU for a while (a sleep would let the scheduler in differently)."""
    deadline = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < deadline:
        pass
    return microseconds


@task
def fail_on_two(x):
    if x == 2:
        raise ValueError("no 2")
    return x
