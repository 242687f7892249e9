from __future__ import annotations

import asyncio

import pytest

from fastworker import Client

from . import tasks_for_tests  # noqa: F401 - registers the tasks before any Client forks

SMALL = {"arena_size": "4MiB", "slots": 256}


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def client_factory():
    """Client(workers=2, small segment) with overrides."""

    def make(**overrides):
        options = {"workers": 2, **SMALL, **overrides}
        return Client(**options)

    return make
