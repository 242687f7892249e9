"""The fork server ("zygote") and the start of a worker process.

Why a fork server: the embedded Client starts inside a running asyncio loop,
maybe in a threaded program, and forking such a process again and again is
how children inherit locks held by threads that do not exist in them.  So
the parent forks exactly once, at start, and the child drops the parent's
loop and signal wake-up state at once (``_leave_parent_runtime``).  That
child stays single-threaded, with the task modules already imported and the
segment mapped, and forks every worker, the first ones and the replacements.

It also guards the segment: it asks the kernel for SIGTERM when the owner
dies (PR_SET_PDEATHSIG), and then unlinks the segment the owner can no longer
remove.  Workers ask for SIGKILL when the zygote dies, so nothing outlives
the owner.

Protocol on a SOCK_SEQPACKET socketpair, one fixed-size record per message
(``_MSG``: kind, worker index, incarnation, pid, wait status):

    parent -> zygote   SPAWN (index, incarnation)     QUIT (grace in ms in `pid`)
    zygote -> parent   SPAWNED (index, incarnation, pid) + the child's pidfd (SCM_RIGHTS),
                               and for an attachable engine the parent's end of the
                               worker's fd channel (see fdchannel.py)
                       EXITED (index, incarnation, pid, wait status)
                       FAILED (index, incarnation, errno): fork failed
                       ARENA: the arena's pages are reserved (or could not be)
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .. import _native
from ..tasks.registry import TaskDefinition
from ..tasks.serialization import Codec
from . import shm
from .fdchannel import ClientFds
from .ids import make_task_id
from .worker import FdLookup, Worker

SPAWN, QUIT, SPAWNED, EXITED, FAILED, ARENA = b"S", b"Q", b"P", b"X", b"F", b"A"
# A worker whose initializer raised exits with this code: respawning it would fail again.
INITIALIZER_FAILED = 86
# A worker that left because its RSS passed max_memory_per_child (replaced, nothing lost).
RETIRED_OVER_MEMORY = 87
_MSG = struct.Struct("<cIIii")
# Workers serve allocations under 16 MiB from their heap and keep up to 32 MiB
# of it when freed: a task that unpickles a big argument and allocates a big
# result reuses warm pages instead of faulting in fresh ones every time (an
# 8 MiB NumPy round trip: ~4 ms -> ~1.6 ms here).  The cost is at most 32 MiB
# of idle heap per worker after a burst of big tasks.
WORKER_MMAP_THRESHOLD = 16 << 20
WORKER_HEAP_KEPT = 32 << 20


@dataclass(frozen=True)
class Message:
    kind: bytes
    index: int
    incarnation: int
    pid: int
    status: int
    pidfd: int | None = None
    channel: int | None = None  # the parent's end of an attachable worker's fd channel


def pack(kind: bytes, index: int = 0, incarnation: int = 0, pid: int = 0, status: int = 0) -> bytes:
    return _MSG.pack(kind, index, incarnation, pid, status)


def unpack(data: bytes, fds: Sequence[int] = ()) -> Message:
    kind, index, incarnation, pid, status = _MSG.unpack(data)
    return Message(
        kind, index, incarnation, pid, status, fds[0] if fds else None, fds[1] if len(fds) > 1 else None
    )


@dataclass(frozen=True)
class WorkerSpec:
    """All a worker needs, inherited through fork rather than sent."""

    segment: _native.Segment
    tasks: tuple[TaskDefinition, ...]
    codec: Codec
    notify_fds: Mapping[int, int]  # clients known at fork time (the embedded owner)
    attachable: bool = False  # clients attach later: workers fetch their fds (fdchannel.py)
    initializer: Callable[..., object] | None = None  # run once in each new worker
    initargs: tuple = ()
    max_tasks_per_child: int | None = None  # recycle a worker after this many tasks
    max_memory_per_child: int | None = None  # recycle a worker whose RSS passed this (bytes)
    id_prefixes: Mapping[int, str] = field(default_factory=dict)  # client -> task id prefix (embedded)

    def task_ids(self, client: int, tag: int) -> str | None:
        """The id of a client's task (current_task().id), for the clients known at fork time."""
        prefix = self.id_prefixes.get(client)
        return None if prefix is None else make_task_id(prefix, tag)


def describe_exit(wait_status: int) -> str:
    code = os.waitstatus_to_exitcode(wait_status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by signal {-code} ({name})"
    return f"exited with code {code}"


class ZygoteHandle:
    """The parent's end: ask for workers, read what happened to them."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket) -> None:
        self.pid = pid
        self.pidfd = pidfd  # readable when the zygote has exited
        self.sock = sock

    def spawn(self, index: int, incarnation: int) -> None:
        self.sock.send(pack(SPAWN, index, incarnation))

    def quit(self, grace: float) -> None:
        try:
            self.sock.send(pack(QUIT, pid=int(grace * 1000)))
        except OSError:
            pass  # already gone

    def receive(self) -> list[Message]:
        """Every message waiting now (the socket is non-blocking)."""
        out: list[Message] = []
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, _MSG.size, 2)
            except (BlockingIOError, InterruptedError):
                return out
            if not data:
                return out
            out.append(unpack(data, fds))

    def wait_exit(self, timeout: float) -> bool:
        """Reap the zygote; kill it if it has not gone within `timeout`."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.pidfd, selectors.EVENT_READ)
            while not sel.select(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                    break
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()
        os.close(self.pidfd)


def start(spec: WorkerSpec) -> ZygoteHandle:
    """Fork the zygote.  The parent may be running an event loop and threads."""
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent_pid = os.getpid()
    loop = asyncio._get_running_loop()
    with warnings.catch_warnings():
        # 3.12+ warns when a threaded process forks.  The child below only
        # drops what it inherited and then forks from its single thread; it
        # never touches a lock another thread could have held.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            parent_sock.close()
            _leave_parent_runtime(loop)
            _native.set_pdeathsig(signal.SIGTERM)
            if os.getppid() != parent_pid:  # the parent died before the line above
                shm.unlink(spec.segment.name)
                os._exit(0)
            code = Zygote(child_sock, spec, parent_pid).serve()
        except BaseException:  # noqa: BLE001 - report, then never return into the parent's stack
            traceback.print_exc()
        finally:
            _flush_stdio()
            os._exit(code)
    child_sock.close()
    parent_sock.setblocking(False)
    return ZygoteHandle(pid, os.pidfd_open(pid), parent_sock)


def _leave_parent_runtime(loop: asyncio.AbstractEventLoop | None) -> None:
    """Drop the parent's event loop and signal state in a freshly forked child.

    On 3.11 a forked child keeps the parent's signal wake-up fd, so a signal
    sent to the child alone runs the *parent's* loop handler (gh-66285,
    fixed in 3.12 by an at-fork reset).  The child also holds the parent's
    epoll fd and self-pipe; it must never poll them.
    """
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    # Ctrl-C reaches the whole process group; the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.events._set_running_loop(None)
    if loop is not None:
        for name in ("_ssock", "_csock"):
            sock = getattr(loop, name, None)
            if sock is not None:
                sock.close()
        selector = getattr(loop, "_selector", None)
        if selector is not None:
            selector.close()


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not keep a process alive
            pass


class Zygote:
    """The fork server's loop: spawn workers, reap them, report."""

    def __init__(self, sock: socket.socket, spec: WorkerSpec, parent_pid: int) -> None:
        self.sock = sock
        self.spec = spec
        self.parent_pid = parent_pid
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, tuple[int, int, int]] = {}  # pid -> (pidfd, index, incarnation)

    def serve(self) -> int:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.selector.register(self.sock, selectors.EVENT_READ, None)
        arena_pending = self.spec.segment.arena_state == "pending"
        while True:
            # The arena is reserved at the first idle moment, once the first
            # workers are forked, and clients are woken to use it.
            events = self.selector.select(0 if arena_pending else None)
            if not events and arena_pending:
                arena_pending = False
                self._reserve_arena()
                continue
            for key, _ in events:
                if key.data is None:
                    data = self.sock.recv(_MSG.size)
                    if not data:
                        # The owner closed its end without QUIT: it died, or
                        # dropped its Client unstopped.  Nobody else will
                        # remove the segment.
                        self._stop_children(grace=0.0)
                        shm.unlink(self.spec.segment.name)
                        return 0
                    msg = unpack(data)
                    if msg.kind == SPAWN:
                        self._spawn(msg.index, msg.incarnation)
                    elif msg.kind == QUIT:
                        self._stop_children(grace=msg.pid / 1000)
                        return 0
                else:
                    self._reap(key.data)

    def _reserve_arena(self) -> None:
        try:
            self.spec.segment.reserve_arena()
        except OSError as exc:  # clients now get SharedMemoryFullError for big payloads
            print(f"fastworker: could not reserve the shared arena: {exc}", file=sys.stderr)
        # The owner wakes its clients: submitters waiting for arena room retry.
        try:
            self.sock.send(pack(ARENA))
        except OSError:
            pass

    def _spawn(self, index: int, incarnation: int) -> None:
        zygote_pid = os.getpid()
        # (parent's end, worker's end) of the worker's fd channel
        channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if self.spec.attachable else None
        try:
            pid = os.fork()
        except OSError as exc:
            if channel is not None:
                channel[0].close()
                channel[1].close()
            self.sock.send(pack(FAILED, index, incarnation, 0, exc.errno or 0))
            return
        if pid == 0:
            code = 0
            try:
                self.selector.close()
                self.sock.close()
                # SIGINT and SIGTERM sent to the whole process group (Ctrl-C,
                # `timeout`, a service manager) are for the owner, which stops
                # workers gracefully; a worker only dies by SIGKILL or its owner.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                _native.set_pdeathsig(signal.SIGKILL)
                if os.getppid() != zygote_pid:
                    os._exit(0)
                _native.retain_heap(WORKER_MMAP_THRESHOLD, WORKER_HEAP_KEPT)
                spec = self.spec
                notify_fds: FdLookup | Mapping[int, int] = spec.notify_fds
                task_ids = spec.task_ids
                if channel is not None:
                    channel[0].close()
                    notify_fds = client_fds = ClientFds(spec.segment, channel[1])
                    task_ids = client_fds.task_id
                if spec.initializer is not None:
                    try:
                        spec.initializer(*spec.initargs)
                    except BaseException:  # noqa: BLE001 - reported, and the owner stops respawning
                        traceback.print_exc()
                        code = INITIALIZER_FAILED
                        return
                worker = Worker(
                    spec.segment, index, incarnation, spec.tasks, spec.codec, notify_fds, spec.max_tasks_per_child,
                    task_ids=task_ids, max_memory=spec.max_memory_per_child,
                )
                worker.run()
                if worker.over_memory:
                    code = RETIRED_OVER_MEMORY
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
                code = 1
            finally:
                _flush_stdio()
                os._exit(code)
        pidfd = os.pidfd_open(pid)
        self.children[pid] = (pidfd, index, incarnation)
        self.selector.register(pidfd, selectors.EVENT_READ, pid)
        fds = [pidfd]
        if channel is not None:
            channel[1].close()
            fds.append(channel[0].fileno())
        socket.send_fds(self.sock, [pack(SPAWNED, index, incarnation, pid)], fds)
        if channel is not None:
            channel[0].close()

    def _reap(self, pid: int) -> None:
        pidfd, index, incarnation = self.children.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        try:
            self.sock.send(pack(EXITED, index, incarnation, pid, status))
        except OSError:
            pass  # the parent is gone; PDEATHSIG is on its way

    def _stop_children(self, grace: float) -> None:
        """Let workers leave by themselves (the segment is shut down), then kill."""
        self.selector.unregister(self.sock)
        deadline = time.monotonic() + grace
        killed = False
        while self.children:
            left = deadline - time.monotonic()
            if left <= 0 and not killed:
                for pidfd, _, _ in self.children.values():
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                killed = True
            for key, _ in self.selector.select(None if killed else max(left, 0.0)):
                if key.data is not None:
                    self._reap(key.data)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        if os.getppid() == self.parent_pid:
            return  # the owner is alive and will tell us what to do
        # The owner died (PDEATHSIG): remove what it can no longer remove.
        shm.unlink(self.spec.segment.name)
        for pidfd, _, _ in self.children.values():
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os._exit(0)
