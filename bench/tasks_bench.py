"""Tasks the benchmarks run.

Registered at import time, before any Client starts: the workers are forked
from this process, so they see every task defined here.  ``add`` is also a
plain module-level function, so ``multiprocessing`` and
``concurrent.futures`` pickle it by reference and run the very same code.
"""

from fastworker import task


@task
def add(x, y):
    return x + y


# --- plain functions for the Executor benchmarks (bench/test_executor.py) ---
# Not tasks: fastworker.Executor, multiprocessing and concurrent.futures all
# pickle them by reference, so every pool runs the very same code.


def square(x):
    return x * x


def burn(n):
    """A busy loop of `n` iterations: pure CPU in the interpreter, no allocation, no I/O."""
    x = 0
    for i in range(n):
        x += i
    return x


def identity(x):
    return x


def double(a):
    return a * 2
