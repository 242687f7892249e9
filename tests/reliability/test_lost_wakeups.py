"""Lost wake-ups: a client and two worker processes pass one task back and forth, with random
pauses on both sides so that each side keeps arriving just before, during and after the other
goes to sleep (the futex on the workers' side, the armed eventfd on the client's).

A lost wake-up shows two ways: the client's wait for its eventfd passes 1 s (a stall), or a
worker's sleep ends by the engine's 1 s safety re-check with work queued (``stats()["rescues"]``).
Both must stay 0.  Run with spinning off and on: the spinner token changes who skips the wake."""

from __future__ import annotations

import os
import random
import select
import time

import pytest

from fastworker import _native
from native.conftest import owned_segment

from .harness import exit_code, fork, holds, kill_and_reap, payload

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STALL = 1.0  # seconds: a round trip longer than this is a lost wake-up
WORKERS = 2


def pause(rng: random.Random) -> None:
    """Mostly none, sometimes a busy wait, now and then long enough for the other side to sleep."""
    r = rng.random()
    if r < 0.5:
        return
    if r < 0.95:
        until = time.perf_counter() + rng.choice((1e-6, 1e-5, 5e-5, 2e-4))
        while time.perf_counter() < until:
            pass
    else:
        time.sleep(rng.choice((1e-4, 1e-3)))


def worker_body(name: str, widx: int, efd: int, seed: int) -> None:
    seg = _native.attach(name)
    rng = random.Random(seed)
    while (item := seg.take(widx, 1, None)) is not None:
        handle, _client, _fn, _flags, tag, _lane, data = item
        assert holds(data, tag)
        pause(rng)
        seg.complete(handle, widx, 1, _native.RESULT_SUCCESS, 0, payload(tag, 16, b"R"), efd)


def round_trips(seg: _native.Segment, client: int, efd: int, cycles: int, burst: int, rng: random.Random):
    """Submit `burst` tasks, wait for all of them through the eventfd; `cycles` tasks in all.
    Returns (stalls, worst round trip in seconds)."""
    stalls, worst, tag = 0, 0.0, 0
    while tag < cycles:
        pause(rng)
        n = min(burst, cycles - tag)
        seg.submit_many(client, [(rng.randrange(4), 0, 0, tag + i, payload(tag + i, 24)) for i in range(n)])
        started = time.perf_counter()
        want = set(range(tag, tag + n))
        while want:
            for _h, status, _f, got, data, _s, _e in seg.drain(client):
                assert status == _native.RESULT_SUCCESS and holds(data, got, b"R")
                want.remove(got)
            if not want or seg.arm(client):
                continue  # results came while arming: drain again, do not sleep
            ready, _, _ = select.select([efd], [], [], STALL)
            if ready:
                os.eventfd_read(efd)
            else:
                stalls += 1
        worst = max(worst, time.perf_counter() - started)
        tag += n
    return stalls, worst


@pytest.mark.parametrize(
    "spin_us, burst",
    [(0, 1), (50, 1), (0, 64)],
    ids=["one in flight, no spinning", "one in flight, spinning", "bursts of 64"],
)
def test_no_wake_up_is_lost(count, figures, spin_us, burst):
    cycles = count(60_000, 1_000_000)
    rng = random.Random(spin_us + burst)
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    pids = []
    with owned_segment(nslots=64, arena_size=1 << 20, max_workers=4, max_clients=2) as seg:
        try:
            seg.set_spin(spin_us * 1000, os.cpu_count() or 1)
            client, _ = seg.client_open(os.getpid())
            for w in range(WORKERS):
                seg.set_worker(w, 0, 1, _native.WORKER_IDLE)
                seed = rng.randrange(1 << 30)
                pids.append(fork(lambda w=w, seed=seed: worker_body(seg.name, w, efd, seed)))
            started = time.monotonic()
            stalls, worst = round_trips(seg, client, efd, cycles, burst, rng)
            elapsed = time.monotonic() - started
            seg.shutdown()
            codes = [exit_code(pid, 10.0) for pid in pids]
            pids.clear()
        finally:
            for pid in pids:
                kill_and_reap(pid)
            os.close(efd)
        stats = seg.stats()
    figures.update(
        cycles=cycles,
        stalls_over_1s=stalls,
        rescues=stats["rescues"],
        worst_round_trip_ms=round(worst * 1e3, 2),
        futex_wakes=stats["futex_wakes"],
        spin_hits=stats["spin_hits"],
        seconds=round(elapsed, 1),
    )
    assert codes == [0] * WORKERS
    assert stats["completed"] == cycles
    assert stalls == 0
    assert stats["rescues"] == 0
