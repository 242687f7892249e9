"""`fastworker control-plane`: the engine as a service that clients attach to.

    client process                      control plane (this module)                workers
    ──────────────                      ───────────────────────────                ───────
    Client()  ── connect <name>.sock ─▶ accept; SO_PEERCRED: same uid only
              ── HELLO + eventfd ─────▶ client_open() -> (entry, generation)
              ◀── WELCOME ───────────── segment name, entry, task names, format
    attach segment; then, with no hop through here:
    delay() ─────────── submit into the shared ring ────────────────────────▶ take / run
    _on_wakeup ◀──────── eventfd (written by the worker) ◀────────────────── complete
                                         ▲ NEED (entry, generation) on first use of a client
                                         └─ FD via SCM_RIGHTS ─────────────────▶ fd cache
    EOF on the connection ─────────────▶ client_close(): its slots and blocks freed
    ◀── EOF (the control plane died or stopped): pending waits fail at once

The control plane owns the segment, the fork server and the workers (the same
Supervisor as the embedded Client), the runtime directory entry of its name,
and every attached client's eventfd.  It never touches a task on the hot
path: it accepts, hands out fds, reclaims, supervises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
from dataclasses import dataclass

import orjson

from . import _native
from .config import Config
from .engine import runtime, shm
from .engine.supervisor import Supervisor
from .engine.zygote import WorkerSpec
from .errors import ControlPlaneUnavailable
from .tasks.registry import load_task_modules, registry
from .tasks.serialization import Codec

log = logging.getLogger("fastworker.control_plane")

PROTOCOL = 1
MAX_CLIENTS = 256  # attached client processes at once
STOP_GRACE = 10.0  # how long running tasks may finish after SIGTERM / SIGINT
_MAX_MESSAGE = 64 * 1024
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass
class Attached:
    """One attached client process."""

    generation: int
    eventfd: int
    conn: socket.socket
    pid: int


def peer_uid(conn: socket.socket) -> int:
    _pid, uid, _gid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return uid


def send_json(conn: socket.socket, message: dict) -> None:
    try:
        conn.send(orjson.dumps(message))
    except OSError:
        pass  # the peer is gone; its EOF cleans up


class ControlPlane:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.codec = Codec.for_format(config.serialization_format)
        self.clients: dict[int, Attached] = {}
        self.segment: _native.Segment | None = None
        self.supervisor: Supervisor | None = None
        self.listener: socket.socket | None = None
        self.task_names: tuple[str, ...] = ()
        self._stop: asyncio.Future[float] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ life

    async def serve(self) -> int:
        """Run until SIGTERM or SIGINT; remove everything this made; 0 on a clean stop."""
        loop = self._loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        place = runtime.place(self.config.name, create=True)
        place.claim()
        grace = 0.0  # an error on the way up: stop at once
        try:
            load_task_modules(self.config.task_modules)
            self.task_names = registry.snapshot()
            self._start_engine(loop)
            self._listen(place)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
            log.info(
                "control plane %r: %d workers, %d tasks (%s), %s, segment %s of %.1f MiB, socket %s",
                self.config.name,
                self.config.workers,
                len(self.task_names),
                ", ".join(self.task_names) or "none",
                self.config.serialization_format.value,
                self.segment.name if self.segment else "?",
                (self.segment.size if self.segment else 0) / (1 << 20),
                place.socket,
            )
            grace = await self._stop
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
                # The shutdown below blocks this loop: a second signal must act by itself.
                signal.signal(sig, self._stop_now)
            try:
                self._shutdown(grace)
            finally:
                place.release()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
        log.info("control plane %r stopped", self.config.name)
        return 0

    def _start_engine(self, loop: asyncio.AbstractEventLoop) -> None:
        geometry = shm.Geometry(
            nslots=self.config.slots,
            arena_size=self.config.arena_size,
            max_workers=self.config.workers,
            max_clients=MAX_CLIENTS,
        )
        self.segment = shm.create(f"cp-{self.config.name}", geometry)
        self.segment.set_spin(self.config.spin_us * 1000, len(os.sched_getaffinity(0)))
        tasks = tuple(registry.get(name) for name in self.task_names)
        spec = WorkerSpec(self.segment, tasks, self.codec, {}, attachable=True)
        self.supervisor = Supervisor(
            self.segment,
            self.config.workers,
            spec,
            self._on_lost,
            loop,
            on_arena=self._wake_all,
            client_fd=self._client_fd,
        )
        self.supervisor.start()

    def _listen(self, place: runtime.Place) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old_umask = os.umask(0o177)  # the socket file is created 0600
        try:
            listener.bind(place.socket)
        finally:
            os.umask(old_umask)
        listener.listen(128)
        listener.setblocking(False)
        self.listener = listener
        assert self._loop is not None
        self._loop.add_reader(listener, self._accept)

    def _on_signal(self, sig: int) -> None:
        """First SIGTERM/SIGINT: stop taking work, let running tasks finish.  Second: stop now."""
        if self._stop is not None and not self._stop.done():
            log.info("control plane %r: %s, stopping (running tasks get %g s)",
                     self.config.name, signal.Signals(sig).name, STOP_GRACE)
            self._stop.set_result(STOP_GRACE)

    def _stop_now(self, sig: int, frame: object) -> None:
        log.warning("control plane %r: second %s, stopping at once", self.config.name, signal.Signals(sig).name)
        zygote = self.supervisor.zygote if self.supervisor else None
        if zygote is not None:
            signal.pidfd_send_signal(zygote.pidfd, signal.SIGKILL)  # its workers die with it

    def _shutdown(self, grace: float) -> None:
        loop = self._loop
        if self.listener is not None:
            if loop is not None and not loop.is_closed():
                loop.remove_reader(self.listener)
            self.listener.close()
            self.listener = None
        if self.supervisor is not None:
            self.supervisor.stop(grace)
        # Results finished in the grace period stay in the segment for their
        # clients, which collect them when they see the connection close.
        for client in list(self.clients):
            self._detach(client, free_slots=False)
        if self.segment is not None:
            name = self.segment.name
            self.segment.close()
            shm.unlink(name)
            self.segment = None

    # --------------------------------------------------------------- clients

    def _accept(self) -> None:
        assert self.listener is not None and self._loop is not None
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            uid = peer_uid(conn)
            if uid != os.getuid():
                log.warning("refused a client of uid %d (this control plane serves uid %d only)", uid, os.getuid())
                send_json(conn, {"error": f"this control plane serves uid {os.getuid()} only; you are uid {uid}"})
                conn.close()
                continue
            self._loop.add_reader(conn, self._on_hello, conn)

    def _on_hello(self, conn: socket.socket) -> None:
        assert self._loop is not None and self.segment is not None
        self._loop.remove_reader(conn)
        fds: list[int] = []
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, _MAX_MESSAGE, 1)
            hello = orjson.loads(data) if data else None
        except (OSError, orjson.JSONDecodeError):
            hello = None
        if not isinstance(hello, dict) or hello.get("hello") != PROTOCOL or len(fds) != 1:
            send_json(conn, {"error": f"expected a protocol {PROTOCOL} HELLO with the client's eventfd"})
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        wanted = hello.get("format")
        if wanted != self.config.serialization_format.value:
            send_json(
                conn,
                {
                    "error": f"this control plane serializes with {self.config.serialization_format.value}, "
                    f"the client with {wanted}; set FASTWORKER_SERIALIZATION_FORMAT="
                    f"{self.config.serialization_format.value.upper()} (or serialization_format=) on the client"
                },
            )
            os.close(fds[0])
            conn.close()
            return
        try:
            client, generation = self.segment.client_open(int(hello.get("pid", 0)))
        except _native.Full:
            send_json(conn, {"error": f"this control plane serves at most {MAX_CLIENTS} clients at once"})
            os.close(fds[0])
            conn.close()
            return
        self.clients[client] = Attached(generation, fds[0], conn, int(hello.get("pid", 0)))
        send_json(
            conn,
            {
                "protocol": PROTOCOL,
                "segment": self.segment.name,
                "layout": _native.LAYOUT_VERSION,
                "epoch": self.segment.epoch,
                "client": client,
                "generation": generation,
                "tasks": list(self.task_names),
                "format": self.config.serialization_format.value,
                "pid": os.getpid(),
                "workers": self.config.workers,
            },
        )
        self._loop.add_reader(conn, self._on_client_message, client, conn)
        log.debug("client pid %s attached as entry %d", hello.get("pid"), client)

    def _on_client_message(self, client: int, conn: socket.socket) -> None:
        try:
            data = conn.recv(_MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed or died: reclaim everything it held
            self._detach(client)

    def _detach(self, client: int, free_slots: bool = True) -> None:
        attached = self.clients.pop(client, None)
        if attached is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(attached.conn)
        attached.conn.close()
        if free_slots and self.segment is not None:
            self.segment.client_close(client)
        os.close(attached.eventfd)
        log.debug("client pid %d (entry %d) detached", attached.pid, client)

    def _client_fd(self, client: int, generation: int) -> int | None:
        attached = self.clients.get(client)
        if attached is None or attached.generation != generation:
            return None
        return attached.eventfd

    def _on_lost(self, lost: list[tuple[int, int]]) -> None:
        """Tasks failed by a dead worker: wake their clients (the worker could not)."""
        for client in {client for _handle, client in lost}:
            attached = self.clients.get(client)
            if attached is not None:
                os.eventfd_write(attached.eventfd, 1)

    def _wake_all(self) -> None:
        for attached in self.clients.values():
            os.eventfd_write(attached.eventfd, 1)


def run(config: Config) -> int:
    """Run a control plane in the foreground (what the CLI command does)."""
    try:
        return asyncio.run(ControlPlane(config).serve())
    except ControlPlaneUnavailable as exc:
        log.error("%s", exc)
        return 1
