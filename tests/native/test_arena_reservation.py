"""An arena created pending (reserved later by the fork server) hands out no
block until it is reserved, then works like any other."""

from __future__ import annotations

import os

import pytest

from fastworker import _native

from .conftest import unique_name, unlink_quietly


@pytest.fixture
def pending_segment():
    name = unique_name()
    seg = _native.create(name, 8, 1 << 20, 2, 1, os.getpid(), 1, 2, reserve_arena=False)
    yield seg
    seg.close()
    unlink_quietly(name)


def test_no_arena_block_before_the_arena_is_reserved(pending_segment):
    seg = pending_segment
    client, _ = seg.client_open(os.getpid())
    assert seg.arena_state == "pending"
    seg.submit(client, 2, 0, 0, 1, b"small")  # inline payloads do not need the arena
    with pytest.raises(_native.Full):
        seg.submit(client, 2, 0, 0, 2, b"x" * 4096)
    assert seg.check()["error"] == 0

    seg.reserve_arena()
    assert seg.arena_state == "ready"
    seg.submit(client, 2, 0, 0, 2, b"x" * 4096)
    census = seg.check()
    assert census["error"] == 0 and census["arena_used_bytes"] == 4096
    seg.reserve_arena()  # a second call changes nothing
    assert seg.check()["arena_used_bytes"] == 4096
