"""The tasks the benchmarks run: those of ``fastworker bench`` (``fastworker/bench/tasks.py``).

Imported by ``conftest.py`` before any Client starts, so forked workers see
the tasks; plain module-level functions too, so ``multiprocessing`` and
``concurrent.futures`` pickle them by reference and run the very same code.
A Client submits them by name: ``ADD`` is ``add``'s (``bench.add``).
"""

from fastworker.bench.tasks import add, burn, double, identity, square, task_name

ADD = task_name(add)

__all__ = ["ADD", "add", "burn", "double", "identity", "square"]
