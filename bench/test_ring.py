"""The ring itself, in one process: no workers, no wake-ups, no serialization.

What one task costs the native layer: ``submit`` (lock, slot from the free
list, payload copied inline, lane push), ``take`` (lane pop), ``complete``
(result copied into the slot, done list) and ``drain`` (copied out, slot
freed) — the floor under every fastworker round trip.  Then the same for a
batch of 256 (``submit_many``, one lock for all), per task.
"""

from __future__ import annotations

import os

import pytest

from benchutil import describe
from fastworker import _native
from fastworker.engine import shm

pytestmark = pytest.mark.benchmark(group="ring")

PAYLOAD = b"\x00" * 64  # inline: under the slot's 176 bytes
BATCH = 256
WORKER, INCARNATION = 0, 1


@pytest.fixture
def ring():
    segment = shm.create("x", shm.Geometry(nslots=1024, arena_size=1 << 20, max_workers=1, max_clients=1))
    try:
        client, _ = segment.client_open(os.getpid())
        segment.set_worker(WORKER, os.getpid(), INCARNATION, _native.WORKER_BUSY)
        yield segment, client
    finally:
        name = segment.name
        segment.close()
        shm.unlink(name)


def test_one_task_through_the_ring(benchmark, ring):
    segment, client = ring
    submit, take, complete, drain = segment.submit, segment.take, segment.complete, segment.drain

    def one():
        submit(client, 2, 0, 0, 1, PAYLOAD)
        handle = take(WORKER, INCARNATION, 0)[0]
        complete(handle, WORKER, INCARNATION, _native.RESULT_SUCCESS, 0, PAYLOAD, -1)
        return drain(client)

    assert len(benchmark(one)) == 1
    describe(benchmark, "submit + take + complete + drain, 64-byte payloads", "fastworker", baseline=True,
             case="one task")


def test_a_batch_through_the_ring(benchmark, ring):
    segment, client = ring
    tasks = [(2, 0, 0, i, PAYLOAD) for i in range(BATCH)]

    def batch():
        segment.submit_many(client, tasks)
        for _ in range(BATCH):
            handle = segment.take(WORKER, INCARNATION, 0)[0]
            segment.complete(handle, WORKER, INCARNATION, _native.RESULT_SUCCESS, 0, PAYLOAD, -1)
        return segment.drain(client, BATCH)

    assert len(benchmark(batch)) == BATCH
    describe(benchmark, f"submit_many({BATCH}) + take/complete each + drain, per batch", "fastworker",
             baseline=True, case=f"a batch of {BATCH}", tasks=BATCH)
