"""Random-kill stress: workers and submitters busy on one ring are SIGKILLed at random moments,
some of them inside a locked ring operation, and after every kill the ring must be whole.

The parent plays the owner: it has its own client entry (never killed) whose tasks are counted
one by one, and it supervises the children the way the engine's supervisor does — a dead worker
is reclaimed (its running task fails) and replaced by the next incarnation, a dead submitter's
client entry is closed and the entry handed to its replacement.  Children:

- workers take, check that the argument is their own task's, log the take to a pipe (a 16-byte
  record, so the parent can count how often each task ran), spin a little, then complete (or
  complete and take the next under the same lock);
- submitters submit to their own entry in random lanes, cancel some, drain their results and
  check each is theirs (exit 42 otherwise: a reused entry must never see an old client's task).

Some children arm a crash point after a random number of operations, dying with SIGKILL while
holding the ring lock inside take, complete, submit, release or cancel; the others are killed
by the parent at random times.  Each iteration is bounded by a watchdog."""

from __future__ import annotations

import fcntl
import os
import random
import struct
import time
from dataclasses import dataclass

import pytest

from fastworker import _native
from native.conftest import owned_segment

from .harness import census_total, exit_code, fork, holds, kill_and_reap, payload

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

NSLOTS = 32
WORKERS = 3
SUBMITTERS = 2
SIZES = (8, 100, 176, 177, 900, 3000)  # inline, the inline edge, arena blocks
WATCHDOG = 5.0  # seconds an iteration may take before the ring counts as hung
TAKEN = struct.Struct("<HHIQ")  # client, argument held its own tag, worker, tag
LOST = b"lost: the worker was killed"
BAD_RESULT = 42  # a submitter's exit code when it drained a task that was not its own
SUCCESS = _native.RESULT_SUCCESS


def spin(rng: random.Random) -> None:
    until = time.perf_counter() + rng.choice((0, 0, 5e-6, 5e-5, 3e-4))
    while time.perf_counter() < until:
        pass


def worker_body(name: str, widx: int, inc: int, log_fd: int, seed: int, crash_op: str | None) -> None:
    seg = _native.attach(name)
    rng = random.Random(seed)
    crash_after = rng.randrange(1, 30) if crash_op else -1
    done = 0
    item = None
    while True:
        if item is None:
            item = seg.take(widx, inc, 0.2)
            if item is None:
                if seg.is_shutdown:
                    return
                continue
        handle, client, _fn, _flags, tag, _lane, data = item
        os.write(log_fd, TAKEN.pack(client, holds(data, tag), widx, tag))
        done += 1
        if done == crash_after:
            _native._set_crash_point(crash_op)
        spin(rng)
        result = payload(tag, rng.choice(SIZES), b"R")
        if rng.random() < 0.5:
            item = seg.complete_take(handle, widx, inc, SUCCESS, 0, result, -1)
        else:
            seg.complete(handle, widx, inc, SUCCESS, 0, result, -1)
            item = None


def submitter_body(name: str, entry: int, serial: int, seed: int, crash_op: str | None) -> None:
    seg = _native.attach(name)
    rng = random.Random(seed)
    crash_after = rng.randrange(1, 30) if crash_op else -1
    mine: dict[int, int] = {}  # tag -> handle, not yet back
    n = 0
    while not seg.is_shutdown:
        n += 1
        if n == crash_after:
            _native._set_crash_point(crash_op)
        if len(mine) < 6:
            tag = (serial << 32) | n
            try:
                mine[tag] = seg.submit(entry, rng.randrange(4), 0, 0, tag, payload(tag, rng.choice(SIZES)))
            except (_native.Full, _native.Shutdown):
                pass
        if mine and rng.random() < 0.2:
            tag = rng.choice(list(mine))
            if seg.cancel(entry, mine[tag]):
                del mine[tag]
        for _h, status, _f, tag, data, _s, _e in seg.drain(entry):
            if tag not in mine or (status == SUCCESS and not holds(data, tag, b"R")):
                os._exit(BAD_RESULT)
            del mine[tag]
        spin(rng)


@dataclass
class Child:
    pid: int
    kind: str  # "worker" or "submitter"
    index: int  # worker index, or client entry
    incarnation: int


class KillStress:
    """The parent's side: owner, supervisor and killer."""

    def __init__(self, seg: _native.Segment, seed: int) -> None:
        self.seg = seg
        self.rng = random.Random(seed)
        self.me, _ = seg.client_open(os.getpid())
        self.log_r, self.log_w = os.pipe()
        fcntl.fcntl(self.log_r, fcntl.F_SETFL, os.O_NONBLOCK)
        self.log = b""
        self.children: list[Child] = []
        self.serial = 0
        self.next_tag = 1
        self.outstanding: set[int] = set()
        self.submitted = 0
        self.results: dict[int, int] = {}  # tag -> status, for the parent's own tasks
        self.runs: dict[int, int] = {}  # tag -> times a worker took it
        self.bad_arguments = 0
        self.killed = {"by the parent": 0, "inside a locked operation": 0}
        self.worst_iteration = 0.0

    # ------------------------------------------------------------ children

    def spawn(self, kind: str, index: int, incarnation: int) -> None:
        self.serial += 1
        seed = self.rng.randrange(1 << 30)
        if kind == "worker":
            crash = self.rng.choice((None, None, "take", "complete"))
            self.seg.set_worker(index, 0, incarnation, _native.WORKER_IDLE)
            name, log_w = self.seg.name, self.log_w
            pid = fork(lambda: worker_body(name, index, incarnation, log_w, seed, crash))
            self.seg.set_worker(index, pid, incarnation, _native.WORKER_IDLE)
        else:
            crash = self.rng.choice((None, None, "submit", "release", "cancel"))
            index, _ = self.seg.client_open(0)
            name, serial = self.seg.name, self.serial
            pid = fork(lambda: submitter_body(name, index, serial, seed, crash))
        self.children.append(Child(pid, kind, index, incarnation))

    def bury(self, child: Child, code: int) -> None:
        """Recover from a child's death as the supervisor would, then replace it."""
        assert code != BAD_RESULT, "a submitter drained a task that was not its own"
        assert code == -9, f"{child.kind} {child.pid} ended with {code}, not by SIGKILL"
        self.children.remove(child)
        if child.kind == "worker":
            self.seg.reclaim_worker(child.index, child.incarnation, LOST)
            self.spawn("worker", child.index, child.incarnation + 1)
        else:
            self.seg.client_close(child.index)
            self.spawn("submitter", 0, 0)

    def reap_self_killed(self) -> None:
        for child in list(self.children):
            pid, status = os.waitpid(child.pid, os.WNOHANG)
            if pid:
                self.killed["inside a locked operation"] += 1
                self.bury(child, os.waitstatus_to_exitcode(status))

    # ------------------------------------------------- the owner's client

    def top_up(self) -> None:
        while len(self.outstanding) < 8:
            tag = self.next_tag
            try:
                self.seg.submit(self.me, self.rng.randrange(4), 0, 0, tag, payload(tag, self.rng.choice(SIZES)))
            except _native.Full:
                return
            self.next_tag += 1
            self.outstanding.add(tag)
            self.submitted += 1

    def collect(self) -> int:
        got = 0
        for _h, status, _f, tag, data, _s, _e in self.seg.drain(self.me):
            assert tag in self.outstanding, f"task {tag} delivered twice or never submitted"
            if status == SUCCESS:
                assert holds(data, tag, b"R"), f"task {tag} resolved to another task's result"
            else:
                assert bytes(data) == LOST, (tag, status, bytes(data))
            self.outstanding.discard(tag)
            self.results[tag] = status
            got += 1
        self.read_log()
        return got

    def read_log(self) -> None:
        try:
            while chunk := os.read(self.log_r, 1 << 16):
                self.log += chunk
        except BlockingIOError:
            pass
        whole = len(self.log) - len(self.log) % TAKEN.size
        for client, own, _w, tag in TAKEN.iter_unpack(self.log[:whole]):
            self.bad_arguments += not own
            if client == self.me:
                self.runs[tag] = self.runs.get(tag, 0) + 1
        self.log = self.log[whole:]

    # --------------------------------------------------------------- the run

    def check_ring(self) -> None:
        census = self.seg.check()
        assert census["error"] == 0, census
        assert census_total(census) == NSLOTS, census

    def iteration(self) -> None:
        started = time.monotonic()
        self.top_up()
        until = started + self.rng.uniform(0.001, 0.015)
        while time.monotonic() < until:
            self.collect()
            self.reap_self_killed()
        victim = self.rng.choice(self.children)
        self.killed["by the parent"] += 1
        self.bury(victim, kill_and_reap(victim.pid))
        self.check_ring()
        # The watchdog: after the kill the owner's tasks still move (or none are left).
        while self.outstanding and not self.collect():
            self.reap_self_killed()
            assert time.monotonic() - started < WATCHDOG, f"no progress for {WATCHDOG} s: {self.seg.check()}"
            time.sleep(0.0005)
        self.worst_iteration = max(self.worst_iteration, time.monotonic() - started)

    def finish(self) -> None:
        deadline = time.monotonic() + WATCHDOG
        while self.outstanding:
            if not self.collect():
                self.reap_self_killed()
                assert time.monotonic() < deadline, f"tasks never came back: {sorted(self.outstanding)[:10]}"
                time.sleep(0.001)
        self.seg.shutdown()
        for child in self.children:
            code = exit_code(child.pid, WATCHDOG)
            code = kill_and_reap(child.pid) if code is None else code
            assert code in (0, -9), f"{child.kind} {child.pid} ended with {code}"
            if child.kind == "submitter":  # it left results it never drained: the owner closes its entry
                self.seg.client_close(child.index)
            elif code == -9:  # its crash point fired on the way out, with a task running
                self.seg.reclaim_worker(child.index, child.incarnation, LOST)
        self.children.clear()
        self.collect()

    def close(self) -> None:
        for child in self.children:
            kill_and_reap(child.pid)
        os.close(self.log_r)
        os.close(self.log_w)


def test_random_kills_lose_no_task_run_none_twice_and_leave_the_ring_whole(count, figures):
    kills = count(400, 2000)
    with owned_segment(nslots=NSLOTS, arena_size=256 << 10, max_workers=8, max_clients=8) as seg:
        stress = KillStress(seg, seed=kills)
        try:
            for w in range(WORKERS):
                stress.spawn("worker", w, 1)
            for _ in range(SUBMITTERS):
                stress.spawn("submitter", 0, 0)
            started = time.monotonic()
            while stress.killed["by the parent"] < kills:
                stress.iteration()
            stress.finish()
        finally:
            stress.close()
        twice = sorted(tag for tag, n in stress.runs.items() if n > 1)
        lost = stress.submitted - len(stress.results)
        failed = sum(status != SUCCESS for status in stress.results.values())
        figures.update(
            kills=sum(stress.killed.values()),
            **{f"kills {k}": v for k, v in stress.killed.items()},
            lock_recoveries=seg.stats()["recoveries"],
            tasks_submitted=stress.submitted,
            tasks_lost=lost,
            tasks_run_twice=len(twice),
            tasks_failed_with_their_worker=failed,
            arguments_of_another_task=stress.bad_arguments,
            worst_iteration_s=round(stress.worst_iteration, 3),
            seconds=round(time.monotonic() - started, 1),
        )
        assert lost == 0 and not stress.outstanding
        assert twice == [], f"tasks run twice: {twice[:10]}"
        assert stress.bad_arguments == 0
        assert seg.stats()["recoveries"] > 0  # some deaths really were inside the lock
        census = seg.check()
        leftover = [seg.slot_state(i) for i in range(NSLOTS) if seg.slot_state(i)["state"] != 0]
        assert census["error"] == 0 and census["free"] == NSLOTS, (census, leftover)
        assert census["arena_used_bytes"] == 0, census
