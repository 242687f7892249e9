"""The functions every workload runs, on fastworker and on every peer.

Module-level, so each pool pickles them by reference and runs the very same
code; registered as tasks too (under ``bench.<name>``, out of the way of a
user's own ``add``), so a fastworker ``Client`` and the control plane the
harness starts (``--task-modules fastworker.bench.tasks``) run them by name.
"""

from __future__ import annotations

import os
import time

from ..tasks.registry import task

MODULE = __name__


@task(name="bench.add")
def add(x, y):
    return x + y


@task(name="bench.square")
def square(x):
    return x * x


@task(name="bench.burn")
def burn(n):
    """A busy loop of `n` iterations: pure CPU in the interpreter, no allocation, no I/O."""
    x = 0
    for i in range(n):
        x += i
    return x


@task(name="bench.identity")
def identity(x):
    return x


@task(name="bench.double")
def double(a):
    return a * 2


@task(name="bench.pid_after")
def pid_after(seconds):
    """This worker's pid, after a nap long enough that the other workers get some of the calls."""
    time.sleep(seconds)
    return os.getpid()


def task_name(fn) -> str:
    """The name a Client submits `fn` under."""
    return fn.__fastworker_task__.name


def map_chunk(fn, items):
    """`fn` over a chunk of a map, for executors that have no chunked map of their own."""
    return [fn(item) for item in items]
