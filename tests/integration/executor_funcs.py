"""Functions test_executor.py hands to fastworker.Executor.

The executor pickles functions by reference, so they must live at module
level in a module the workers can import; test_executor.py imports this one
at its top, before any executor forks, so the forked workers already have it.
"""

from __future__ import annotations

import os
import signal
import time

# Set by `set_value` when it runs as an executor's initializer (in each worker).
INITIALIZED = None


def square(x):
    return x * x


def add(x, y):
    return x + y


def add3(x, y, z):
    return x + y + z


def echo(value):
    return value


def getpid(_=None):
    return os.getpid()


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def mark_then_sleep(path, seconds, value):
    """Create `path` (the test sees the task has started), then sleep."""
    with open(path, "w"):
        pass
    time.sleep(seconds)
    return value


def raise_value_error(message):
    raise ValueError(message)  # the raise line the remote traceback must show


def square_unless_five(x):
    if x == 5:
        raise KeyError(f"no square for {x}")  # raised in the middle of a chunk
    return x * x


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # never reached: SIGKILL is not deliverable later than now


def set_value(value):
    global INITIALIZED
    INITIALIZED = value


def get_value():
    return INITIALIZED


def failing_initializer(delay):
    time.sleep(delay)  # lets the test submit before the workers fail
    raise RuntimeError("initializer failed on purpose")


def row_sum(row):
    return int(row.sum())


def double(array):
    return array * 2


def small_and_big(n):
    import numpy as np

    return {"small": np.arange(4), "big": np.arange(n, dtype=np.float64)}


_kept = []


def keep_then_sum(array):
    """Keeps its argument past the task: it must stay valid (the worker's own copy)."""
    _kept.append(array)
    return float(sum(float(a.sum()) for a in _kept))


def page_faults_of_two_big_allocations(nbytes):
    """Minor page faults of allocating and touching nbytes, twice over."""
    import resource

    faults = []
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = bytearray(nbytes)  # zero-filled: every page touched
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        del block
    return faults


def as_memoryview(data):
    """A big result pickle could not send at all: a memoryview (of a fresh buffer)."""
    return memoryview(bytearray(data)).cast("B").cast("I")


def describe_buffer(value):
    return type(value).__name__, len(value), bytes(value[:3]) if not isinstance(value, memoryview) else value.tobytes()[:3]
