"""The parent's side of the workers: start them, watch them, replace the dead.

Runs on the owner's asyncio loop.  Each worker is watched through a pidfd
(race-free against pid reuse, works although the zygote is the worker's
parent); the zygote, which reaps it, reports its wait status.  A dead
worker's running task is failed with a ``WorkerLostError`` that names the
signal or exit code, and a new worker takes its index with the next
incarnation, so a late write by the old one can never land.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from .. import _native
from ..errors import TaskTimeoutError, WorkerLostError
from . import fdchannel, zygote
from .worker import inline_failure
from .zygote import WorkerSpec, ZygoteHandle, describe_exit

log = logging.getLogger("fastworker.supervisor")

# A worker whose exit status has not come from the zygote this long after its
# pidfd became readable is finalized without it.
_STATUS_GRACE = 0.5
# Respawns of a worker that keeps dying young back off up to this long.
_MAX_BACKOFF = 2.0
_YOUNG = 1.0
# Workers publish their running task's deadline in the segment; the owner
# looks this often (or at the earliest deadline, if sooner) and kills the late.
DEADLINE_POLL = 0.1


class Supervisor:
    def __init__(
        self,
        segment: _native.Segment,
        workers: int,
        spec: WorkerSpec,
        on_lost: Callable[[list[tuple[int, int]]], None],
        loop: asyncio.AbstractEventLoop,
        on_arena: Callable[[], None] = lambda: None,
        client_fd: Callable[[int, int], int | None] | None = None,
        on_initializer_failed: Callable[[], None] = lambda: None,
        task_id: Callable[[int, int, int], str | None] | None = None,
        watch_deadlines: bool = True,
        on_worker: Callable[[str, dict], None] = lambda event, payload: None,
    ) -> None:
        self.on_worker = on_worker  # ("worker.started" | "worker.lost", details) for events
        self.task_id = task_id  # (client, generation, tag) -> task id, for current_task() in attached workers
        self.watch_deadlines = watch_deadlines
        self._deadline_timer: asyncio.TimerHandle | None = None
        # (index, incarnation) of a worker killed on purpose -> how its running task ends
        self._outcomes: dict[tuple[int, int], tuple[int, bytes]] = {}
        self.tasks_stopped = 0
        self.on_initializer_failed = on_initializer_failed
        self.initializer_failed = False
        self.loop = loop
        self.on_arena = on_arena  # the arena's pages are reserved: wake submitters waiting for room
        self.client_fd = client_fd  # (client, generation) -> eventfd, for workers of an attachable engine
        self._channels: dict[int, socket.socket] = {}
        self.segment = segment
        self.size = workers
        self.spec = spec
        self.on_lost = on_lost  # told (handle, client) of every task failed by a worker's death
        self.incarnations = [0] * workers
        self.pids: dict[int, int] = {}
        self._pidfds: dict[int, int] = {}
        self._born: dict[int, float] = {}
        self._young_deaths = [0] * workers
        self._finalized: set[tuple[int, int]] = set()
        self.workers_lost = 0
        self.zygote: ZygoteHandle | None = None
        self.stopping = False

    # ------------------------------------------------------------ start / stop

    def start(self) -> None:
        self._start_zygote()
        for index in range(self.size):
            self._spawn(index)
        if self.watch_deadlines:
            self._deadline_timer = self.loop.call_later(DEADLINE_POLL, self._check_deadlines)

    def _start_zygote(self) -> None:
        self.zygote = z = zygote.start(self.spec)
        self.loop.add_reader(z.sock, self._on_messages, z)
        self.loop.add_reader(z.pidfd, self._on_zygote_exit, z)

    def stop(self, grace: float) -> None:
        """Refuse new work, let running tasks finish for `grace` s, then kill; reap all."""
        if self.stopping:
            return
        self.stopping = True
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self.segment.shutdown()
        for index in list(self._pidfds):
            self._forget_pidfd(index)
        z = self.zygote
        if z is None:
            return
        self._remove_reader(z.sock)
        self._remove_reader(z.pidfd)
        z.quit(grace)
        z.wait_exit(grace + 1.0)
        for msg in z.receive():
            if msg.pidfd is not None:
                os.close(msg.pidfd)
        z.close()
        self.zygote = None

    # ------------------------------------------------- stopping a running task

    def stop_task(self, handle: int, status: int, error: bytes) -> bool:
        """Kill the worker running this task, which then ends with ``status``
        (RESULT_CANCELLED or RESULT_FAILURE) and ``error``; its worker is replaced.
        False if the task is not running (queued, finished, unknown)."""
        stopped = self.segment.stop_running(handle)
        if stopped is None:
            return False
        self._kill(*stopped, status, error)
        return True

    def _kill(self, index: int, incarnation: int, status: int, error: bytes) -> None:
        # The ring stopped this worker under its lock: it takes nothing more,
        # so the task we mean is the only one the kill can end.
        self._outcomes.setdefault((index, incarnation), (status, error))
        self.tasks_stopped += 1
        pidfd = self._pidfds.get(index)
        if pidfd is not None and self.incarnations[index] == incarnation:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already dead: its pidfd reports it and _finalize applies the outcome

    def _check_deadlines(self) -> None:
        if self.stopping or self.segment.closed:
            return
        for index, incarnation, handle, timeout_ms in self.segment.expired():
            fn_id = self.segment.slot_state(handle & 0xFFFFFFFF)["fn_id"]
            name = self.spec.tasks[fn_id].name if fn_id < len(self.spec.tasks) else f"#{fn_id}"
            error = TaskTimeoutError(
                f"task {name!r} ran past its timeout of {timeout_ms / 1000:g} s; its worker "
                f"(pid {self.pids.get(index, 0)}) was killed and replaced"
            )
            self._kill(index, incarnation, _native.RESULT_FAILURE, inline_failure(error))
        delay = DEADLINE_POLL
        next_deadline = self.segment.next_deadline()
        if next_deadline is not None:
            delay = min(delay, max(0.0, (next_deadline - time.monotonic_ns()) / 1e9))
        self._deadline_timer = self.loop.call_later(delay, self._check_deadlines)

    # ----------------------------------------------------------------- workers

    def _spawn(self, index: int) -> None:
        if self.stopping or self.zygote is None:
            return
        self.incarnations[index] = (self.incarnations[index] % 0xFFFF) + 1
        self.zygote.spawn(index, self.incarnations[index])

    def _on_messages(self, z: ZygoteHandle) -> None:
        for msg in z.receive():
            if msg.kind == zygote.SPAWNED and msg.pidfd is not None:
                if self.stopping or msg.incarnation != self.incarnations[msg.index]:
                    signal.pidfd_send_signal(msg.pidfd, signal.SIGKILL)  # a spawn nobody waits for
                    os.close(msg.pidfd)
                    if msg.channel is not None:
                        os.close(msg.channel)
                    continue
                self.pids[msg.index] = msg.pid
                self._pidfds[msg.index] = msg.pidfd
                self._born[msg.index] = time.monotonic()
                self.loop.add_reader(msg.pidfd, self._on_pidfd, msg.index, msg.incarnation, msg.pid)
                if msg.channel is not None:
                    self._open_channel(msg.index, msg.channel)
                self.on_worker("worker.started", {"event": "worker.started", "index": msg.index, "pid": msg.pid})
            elif msg.kind == zygote.ARENA:
                self.on_arena()
            elif msg.kind == zygote.EXITED:
                self._finalize(
                    msg.index, msg.incarnation, msg.pid, describe_exit(msg.status),
                    code=os.waitstatus_to_exitcode(msg.status),
                )
            elif msg.kind == zygote.FAILED:
                log.error("could not fork worker %d: %s", msg.index, os.strerror(msg.status))
                self._respawn_later(msg.index, young=True)

    def _on_pidfd(self, index: int, incarnation: int, pid: int) -> None:
        self._forget_pidfd(index)
        # The zygote's report with the wait status is normally already here
        # or a moment away; do not wait for it forever.
        self.loop.call_later(_STATUS_GRACE, self._finalize, index, incarnation, pid, "exited")

    def _forget_pidfd(self, index: int) -> None:
        pidfd = self._pidfds.pop(index, None)
        if pidfd is not None:
            self._remove_reader(pidfd)
            os.close(pidfd)
        channel = self._channels.pop(index, None)
        if channel is not None:
            self._remove_reader(channel)
            channel.close()

    def _open_channel(self, index: int, fd: int) -> None:
        channel = socket.socket(fileno=fd)
        channel.setblocking(False)
        old = self._channels.pop(index, None)
        if old is not None:
            self._remove_reader(old)
            old.close()
        self._channels[index] = channel
        self.loop.add_reader(channel, self._on_channel, index, channel)

    def _on_channel(self, index: int, channel: socket.socket) -> None:
        lookup = self.client_fd or (lambda client, generation: None)
        task_id = self.task_id or (lambda client, generation, tag: None)
        if not fdchannel.answer(channel, lookup, task_id) and self._channels.get(index) is channel:
            del self._channels[index]  # the worker is gone; its pidfd tells the rest
            self._remove_reader(channel)
            channel.close()

    def _remove_reader(self, fd: int | socket.socket) -> None:
        if not self.loop.is_closed():  # stopping at exit, after asyncio.run closed the loop
            self.loop.remove_reader(fd)

    def _finalize(
        self, index: int, incarnation: int, pid: int, how: str, respawn: bool = True, code: int | None = None
    ) -> None:
        key = (index, incarnation)
        if key in self._finalized or self.stopping:
            return
        self._finalized.add(key)
        if self.incarnations[index] == incarnation:
            self._forget_pidfd(index)
        outcome = self._outcomes.pop(key, None)
        if outcome is not None:  # killed on purpose: its task was cancelled or ran out of time
            lost = self.segment.reclaim_worker(index, incarnation, outcome[1], outcome[0])
            if lost:
                self.on_lost(lost)
            if respawn and self.incarnations[index] == incarnation:
                self._respawn_later(index, young=False)
            return
        lost = self.segment.reclaim_worker(
            index, incarnation, inline_failure(WorkerLostError(f"worker {index} (pid {pid}) {how}"))
        )
        if lost:
            self.on_lost(lost)
        if code == zygote.INITIALIZER_FAILED:
            # Its initializer raised (the traceback is on stderr): a new worker would too.
            log.error("worker %d (pid %d): the initializer failed; not replacing it", index, pid)
            self.initializer_failed = True
            self.on_initializer_failed()
            return
        if code in (0, zygote.RETIRED_OVER_MEMORY) and not lost:
            reason = "its task quota" if code == 0 else "its RSS passed max_memory_per_child"
            log.info("worker %d (pid %d) retired after %s; replacing it", index, pid, reason)
            respawn_young = False
        else:
            self.workers_lost += 1
            log.warning("worker %d (pid %d) %s; %d task(s) failed; replacing it", index, pid, how, len(lost))
            self.on_worker("worker.lost", {"event": "worker.lost", "index": index, "pid": pid, "how": how,
                                           "tasks_failed": len(lost)})
            respawn_young = time.monotonic() - self._born.get(index, 0.0) < _YOUNG
        if respawn and self.incarnations[index] == incarnation:
            self._respawn_later(index, young=respawn_young)

    def _respawn_later(self, index: int, young: bool) -> None:
        self._young_deaths[index] = self._young_deaths[index] + 1 if young else 0
        streak = self._young_deaths[index]
        delay = 0.0 if streak < 3 else min(_MAX_BACKOFF, 0.01 * 2**streak)
        if delay:
            log.warning("worker %d keeps dying at start; next try in %.2f s", index, delay)
            self.loop.call_later(delay, self._spawn, index)
        else:
            self._spawn(index)

    def _on_zygote_exit(self, z: ZygoteHandle) -> None:
        """The fork server died (OOM killer, a stray kill): its workers die with it."""
        self.loop.remove_reader(z.sock)
        self.loop.remove_reader(z.pidfd)
        self._on_messages_safely(z)
        z.wait_exit(0.0)
        z.close()
        self.zygote = None
        log.error("the fork server (pid %d) died; starting a new one", z.pid)
        for index in range(self.size):
            self._finalize(
                index, self.incarnations[index], self.pids.get(index, 0), "was lost with the fork server", respawn=False
            )
        if not self.stopping:
            self._start_zygote()
            for index in range(self.size):
                self._spawn(index)

    def _on_messages_safely(self, z: ZygoteHandle) -> None:
        for msg in z.receive():
            if msg.pidfd is not None:
                os.close(msg.pidfd)
