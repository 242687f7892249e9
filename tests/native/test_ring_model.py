"""The native ring against its pure-Python model (ring_model.py), under random interleavings of
every operation by several clients and workers in one process."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastworker import _native

from .conftest import owned_segment
from .ring_model import FAILURE, INLINE_CAPACITY, SUCCESS, RingModel, Task, block_size

NSLOTS = 8
ARENA = 1 << 20
CLIENTS = 3
WORKERS = 2
KIB = 1024

# Lengths around every boundary: empty, inline, first arena byte, block sizes, a third of the arena.
sizes = st.one_of(
    st.sampled_from(
        [0, 1, 175, 176, 177, KIB - 1, KIB, KIB + 1, 4 * KIB, 64 * KIB + 1, 300 * KIB]
    ),
    st.integers(0, 4 * KIB),
    st.integers(0, 300 * KIB),
)
lanes = st.integers(0, 3)
u32 = st.integers(0, 2**32 - 1)
clients = st.integers(0, CLIENTS - 1)
workers = st.integers(0, WORKERS - 1)


def make_payload(tag: int, size: int, kind: bytes = b"A") -> bytes:
    """Bytes that name their task everywhere, so a payload read from the wrong slot shows."""
    unit = kind + tag.to_bytes(7, "little")
    return (unit * (size // 8 + 1))[:size]


def test_model_block_sizes() -> None:
    assert [block_size(n) for n in (0, 176, 177, 1024, 1025, 300 * KIB)] == [
        0,
        0,
        1024,
        1024,
        2048,
        512 * KIB,
    ]
    assert (
        INLINE_CAPACITY
        == _native.INLINE_CAPACITY
        == _native.layout()["inline_capacity"]
    )


def test_model_arena_room() -> None:
    m = RingModel(8, 4 * KIB)
    m.open_client(0)
    assert m.arena_room([4 * KIB]) == "yes"
    assert m.arena_room([4 * KIB + 1]) == "no"
    m.submit(0, [Task(1, 0, 0, 0, 0, 1, b"x" * 200)])  # one 1 KiB block somewhere
    assert m.arena_room([2 * KIB]) == "yes"  # one 2 KiB half is untouched
    assert m.arena_room([2 * KIB, 1 * KIB]) == "yes"
    assert m.arena_room([2 * KIB, 2 * KIB]) == "no"
    m.submit(0, [Task(2, 0, 0, 0, 0, 2, b"x" * 200)])  # may land in the other half
    assert m.arena_room([2 * KIB]) == "maybe"


class RingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stack = contextlib.ExitStack()
        try:
            self.seg = self.stack.enter_context(
                owned_segment(
                    nslots=NSLOTS,
                    arena_size=ARENA,
                    max_workers=WORKERS,
                    max_clients=CLIENTS + 1,
                )
            )
            self.model = RingModel(NSLOTS, ARENA)
            self.clients: list[int] = []
            self.eventfds: dict[int, int] = {}
            for _ in range(CLIENTS):
                c, gen = self.seg.client_open(os.getpid())
                assert gen >= 1
                self.clients.append(c)
                self.model.open_client(c)
                fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                self.stack.callback(os.close, fd)
                self.eventfds[c] = fd
            assert sorted(self.clients) == list(range(CLIENTS))
            self.notifies = dict.fromkeys(self.clients, 0)
            self.incarnation = [1] * WORKERS
            for w in range(WORKERS):
                self.seg.set_worker(w, os.getpid(), 1, _native.WORKER_IDLE)
            self.next_tag = 1
            self.issued: set[int] = set()  # every handle the ring ever returned
            self.retired: list[
                int
            ] = []  # handles whose task is gone (drained or cancelled)
        except BaseException:
            self.stack.close()
            raise

    def teardown(self) -> None:
        self.stack.close()

    # --------------------------------------------------------------- helpers

    def new_tag(self) -> int:
        self.next_tag += 1
        return self.next_tag

    def accept(
        self,
        client: int,
        handles: list[int],
        items: list[tuple[int, int, int, int, bytes]],
    ) -> None:
        assert len(handles) == len(items)
        for h in handles:
            assert h not in self.issued, f"handle {h:#x} issued twice"
            assert (h & 0xFFFFFFFF) < NSLOTS
            self.issued.add(h)
        assert len(set(handles)) == len(handles)
        tasks = [
            Task(h, client, lane, fn, fl, tag, p)
            for h, (lane, fn, fl, tag, p) in zip(handles, items)
        ]
        self.model.submit(client, tasks)

    def expect_notification(self, client: int, expected: bool) -> None:
        try:
            value = os.eventfd_read(self.eventfds[client])
        except BlockingIOError:
            value = 0
        assert value == (1 if expected else 0)

    def running(self) -> list[Task]:
        return sorted(self.model.running.values(), key=lambda t: t.handle)

    # ---------------------------------------------------------------- submit

    @rule(c=clients, lane=lanes, size=sizes, fn_id=u32, flags=u32)
    def submit(self, c: int, lane: int, size: int, fn_id: int, flags: int) -> None:
        tag = self.new_tag()
        payload = make_payload(tag, size)
        room = self.model.room([size])
        try:
            h = self.seg.submit(c, lane, fn_id, flags, tag, payload)
        except _native.Full:
            assert room != "yes", "Full although the model has room"
            event(f"submit: Full, model said {room}")
            return
        assert room != "no", "accepted although the model has no room"
        event(f"submit: accepted, model said {room}")
        self.accept(c, [h], [(lane, fn_id, flags, tag, payload)])

    @rule(c=clients, batch=st.lists(st.tuples(lanes, sizes, u32), max_size=4))
    def submit_many(self, c: int, batch: list[tuple[int, int, int]]) -> None:
        items = []
        for lane, size, fn_id in batch:
            tag = self.new_tag()
            items.append((lane, fn_id, 7, tag, make_payload(tag, size)))
        room = self.model.room([size for _, size, _ in batch])
        try:
            handles = self.seg.submit_many(c, items)
        except _native.Full:
            assert room != "yes", "Full although the model has room"
            event(f"submit_many: Full, model said {room}")
            return
        assert room != "no", "accepted although the model has no room"
        event(f"submit_many: accepted {len(items)}, model said {room}")
        self.accept(c, handles, items)

    @rule(c=clients)
    def submit_too_big(self, c: int) -> None:
        payload = bytes(self.seg.arena_max_block + 1)
        expected = _native.Full if self.model.free_slots == 0 else _native.TooBig
        with pytest.raises(expected):
            self.seg.submit(c, 0, 1, 0, self.new_tag(), payload)

    # ------------------------------------------------------------- take, complete

    @rule(w=workers)
    def take(self, w: int) -> None:
        inc = self.incarnation[w]
        got = self.seg.take(w, inc, 0)
        t = self.model.take((w, inc))
        if t is None:
            assert got is None
            event("take: empty")
            return
        event(f"take: lane {t.lane}")
        assert got == (t.handle, t.client, t.fn_id, t.flags, t.tag, t.lane, t.payload)
        info = self.seg.worker(w)
        assert info["state"] == _native.WORKER_BUSY
        assert info["current_slot"] == t.index

    @precondition(lambda self: self.model.running)
    @rule(
        data=st.data(),
        status=st.sampled_from([SUCCESS, FAILURE]),
        size=sizes,
        # Any result flags but RESULT_KEEP, which lends the payload instead of copying it
        # (tests/integration/test_executor.py covers that).
        flags=u32.map(lambda f: f & ~_native.RESULT_KEEP),
        use_fd=st.booleans(),
    )
    def complete(
        self, data: st.DataObject, status: int, size: int, flags: int, use_fd: bool
    ) -> None:
        t = data.draw(st.sampled_from(self.running()), label="task")
        w, inc = t.worker
        if self.model.arena_room([size], release=t.block) != "yes":
            # complete() waits for arena space when a big result does not fit; nothing would
            # free any here, so keep the result inline.
            size = min(size, INLINE_CAPACITY)
        event(f"complete: result {'in arena' if size > INLINE_CAPACITY else 'inline'}")
        result = make_payload(t.tag, size, b"R")
        client = t.client
        fd = self.eventfds[client] if use_fd else -1
        assert self.seg.complete(t.handle, w, inc, status, flags, result, fd) is True
        ok, notify = self.model.complete(t.handle, (w, inc), status, flags, result)
        assert ok
        self.notifies[client] += notify
        self.expect_notification(client, notify and use_fd)

    @precondition(
        lambda self: self.retired or self.model.queued() or self.model.running
    )
    @rule(data=st.data(), size=sizes)
    def complete_not_owned(self, data: st.DataObject, size: int) -> None:
        """Completing a task this worker does not run now is refused and changes nothing."""
        cands = [
            (h, w, self.incarnation[w])
            for h in self.retired[-5:]
            for w in range(WORKERS)
        ]
        cands += [(t.handle, 0, self.incarnation[0]) for t in self.model.queued()]
        for t in self.model.running.values():
            w, inc = t.worker
            cands += [
                (t.handle, 1 - w, self.incarnation[1 - w]),
                (t.handle, w, inc + 1),
            ]
        h, w, inc = data.draw(
            st.sampled_from(cands), label="handle, worker, incarnation"
        )
        assert (
            self.seg.complete(h, w, inc, SUCCESS, 0, make_payload(0, size, b"X"), -1)
            is False
        )

    # ------------------------------------------------------------- cancel

    @precondition(lambda self: self.model.queued())
    @rule(data=st.data())
    def cancel_queued(self, data: st.DataObject) -> None:
        t = data.draw(st.sampled_from(self.model.queued()), label="task")
        assert self.seg.cancel(t.client, t.handle) is True
        assert self.model.cancel(t.client, t.handle)
        self.retired.append(t.handle)

    @precondition(lambda self: self.retired or self.model.live())
    @rule(data=st.data())
    def cancel_refused(self, data: st.DataObject) -> None:
        """Running, finished, gone, or someone else's task: cancel says no and changes nothing."""
        cands = [(c, h) for h in self.retired[-5:] for c in self.clients]
        cands += [
            (t.client, t.handle) for t in self.model.live() if t.state != "queued"
        ]
        cands += [((t.client + 1) % CLIENTS, t.handle) for t in self.model.queued()]
        c, h = data.draw(st.sampled_from(cands), label="client, handle")
        assert self.seg.cancel(c, h) is False
        assert not self.model.cancel(c, h)

    # ------------------------------------------------------- drain, arm, reclaim

    @rule(c=clients, limit=st.none() | st.integers(1, 3))
    def drain(self, c: int, limit: int | None) -> None:
        got = self.seg.drain(c) if limit is None else self.seg.drain(c, limit)
        want = self.model.drain(c, limit)
        assert [g[:5] for g in got] == [
            (t.handle, t.status, t.flags, t.tag, t.result) for t in want
        ]
        for g in got:
            t_start, t_end = g[5], g[6]
            assert 0 < t_start <= t_end
        self.retired += [t.handle for t in want]

    @rule(c=clients)
    def arm(self, c: int) -> None:
        assert self.seg.arm(c) is self.model.arm(c)

    @rule(w=workers, size=st.sampled_from([0, 10, 176, 177, 400]))
    def reclaim_worker(self, w: int, size: int) -> None:
        """The parent's view of a dead worker: its tasks fail with the error, it comes back."""
        inc = self.incarnation[w]
        err = make_payload(inc, size, b"E")
        got = self.seg.reclaim_worker(w, inc, err)
        want = self.model.reclaim((w, inc), err)
        assert got == [(t.handle, t.client) for t in want]
        assert self.seg.worker(w)["state"] == _native.WORKER_GONE
        self.incarnation[w] = inc + 1
        self.seg.set_worker(w, os.getpid(), inc + 1, _native.WORKER_IDLE)

    # ------------------------------------------------------------- invariants

    @invariant()
    def census_matches_model(self) -> None:
        census = self.seg.check()
        assert census == self.model.counts()

    @invariant()
    def stats_match_model(self) -> None:
        m = self.model
        stats = self.seg.stats()
        assert {
            k: stats[k]
            for k in ("submitted", "completed", "cancelled", "reclaimed", "free_slots")
        } == {
            "submitted": m.submitted,
            "completed": m.completed,
            "cancelled": m.cancelled,
            "reclaimed": m.reclaimed,
            "free_slots": m.free_slots,
        }
        assert stats["arena_free_bytes"] == ARENA - m.arena_used
        assert stats["recoveries"] == 0
        for c in self.clients:
            cs = self.seg.client_stats(c)
            assert (
                cs["submitted"],
                cs["completed"],
                cs["done_waiting"],
                cs["notifies"],
            ) == (
                m.client_submitted[c],
                m.client_completed[c],
                len(m.done[c]),
                self.notifies[c],
            )
        for w in range(WORKERS):
            assert self.seg.worker(w)["tasks_done"] == m.tasks_done.get(w, 0)


RingMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestRing = pytest.mark.timeout(120)(RingMachine.TestCase)


# ------------------------------------------------------ arguments out of range


def test_arguments_out_of_range() -> None:
    with owned_segment(
        nslots=4, arena_size=1 << 20, max_workers=2, max_clients=2
    ) as seg:
        c, _ = seg.client_open(os.getpid())
        with pytest.raises(ValueError):
            seg.submit(c, 4, 0, 0, 1, b"")  # lanes are 0..3
        with pytest.raises(ValueError):
            seg.submit(2, 0, 0, 0, 1, b"")  # no such client
        with pytest.raises(ValueError):
            seg.submit_many(
                c, [(0, 0, 0, i, b"") for i in range(5)]
            )  # more than nslots
        with pytest.raises(ValueError):
            seg.take(2, 1, 0)
        with pytest.raises(ValueError):
            seg.drain(2)
        with pytest.raises(ValueError):
            seg.arm(2)
        with pytest.raises(ValueError):
            seg.worker(2)
        with pytest.raises(ValueError):
            seg.slot_state(4)
        with pytest.raises(ValueError):
            seg.complete(4, 0, 1, SUCCESS, 0, b"", -1)  # slot index 4 of 4
        with pytest.raises(TypeError):
            seg.submit(c, 0, 0, 0, 1)
        assert seg.cancel(c, 4) is False
        assert seg.reclaim_worker(2, 1, b"") == []
        assert seg.submit_many(c, []) == []
        assert seg.check() == {**RingModel(4, 1 << 20).counts()}


def test_client_table_fills_up() -> None:
    with owned_segment(max_clients=2) as seg:
        assert [seg.client_open(1)[0], seg.client_open(2)[0]] == [0, 1]
        with pytest.raises(_native.Full):
            seg.client_open(3)
        seg.client_close(0)
        assert seg.client_open(4) == (0, 2)  # the entry's generation moved on


def test_a_reused_client_entry_never_sees_the_old_clients_results() -> None:
    with owned_segment() as seg:
        c, gen = seg.client_open(1)
        h = seg.submit(c, 0, 0, 0, 7, b"old")
        assert seg.take(0, 1, 0)[0] == h
        assert seg.complete(h, 0, 1, SUCCESS, 0, b"old result", -1)
        seg.client_close(c)
        c2, gen2 = seg.client_open(2)
        assert (c2, gen2) == (c, gen + 1)
        assert seg.drain(c2) == []
