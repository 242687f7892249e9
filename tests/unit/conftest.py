"""Fixtures for the unit tests (no processes, no shared memory)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fastworker.tasks.registry import registry


@pytest.fixture(autouse=True)
def _isolated_registry() -> Iterator[None]:
    """Every test starts from an empty registry and leaves it as it found it.

    Tests decorate functions with ``@task``, which registers them process-wide; without this a
    name used by one test would collide with the same name in the next, or with the tasks other
    test packages register at import.
    """
    state = registry._snapshot_state()
    registry.clear()
    try:
        yield
    finally:
        registry._restore_state(state)
