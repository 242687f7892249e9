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


# ------------------------------------------------------------- task policies (issue 5)


def _count_attempt(path):
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        return len(f.read())


@task(retries=2, retry_delay=0.01)
def flaky(path, failures):
    """Fails its first `failures` attempts, then returns the attempt number."""
    attempt = _count_attempt(path)
    if attempt <= failures:
        raise ValueError(f"attempt {attempt} fails")
    return attempt


@task(retries=1, retry_delay=0.01)
def die_first(path):
    """The first attempt kills its own worker; the retry returns its attempt number."""
    attempt = _count_attempt(path)
    if attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return attempt


@task(timeout=0.3)
def sleep_then_return(seconds, value):
    time.sleep(seconds)
    return value


@task
def whoami():
    from fastworker import current_task

    ctx = current_task()
    return {"id": ctx.id, "name": ctx.name, "attempt": ctx.attempt, "priority": ctx.priority.name}


@task(retries=1, retry_delay=0.01)
def whoami_on_retry(path):
    if _count_attempt(path) == 1:
        raise ValueError("first attempt fails")
    return whoami()


def _before(ctx):
    os.environ["FW_TEST_BEFORE"] = f"{ctx.name}:{ctx.attempt}"


def _after(ctx, value, error):
    with open(value if error is None else error.args[0], "a") as f:
        f.write(f"after {ctx.name} {'ok' if error is None else type(error).__name__}\n")


@task(before=_before, after=_after)
def hooked(path, fail=False):
    if fail:
        raise ValueError(path)
    return path if os.environ.get("FW_TEST_BEFORE") == "hooked:1" else "before did not run"


def _broken_after(ctx, value, error):
    raise RuntimeError("after hook breaks")


@task(after=_broken_after)
def with_broken_after(x):
    return x


_kept = []


@task
def grow(megabytes):
    """Keep `megabytes` of memory alive in this worker; return its pid."""
    _kept.append(bytearray(megabytes << 20))
    return os.getpid()


@task
def rss():
    import psutil

    return psutil.Process().memory_info().rss


@task(timeout=0.2)
def hold_the_ring_lock(segment_name):
    """Walk the ring under its lock, again and again, until the timeout kills this worker:
    with many slots nearly all the time is spent holding the lock."""
    segment = _native.attach(segment_name)
    while True:
        segment.check()
