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
