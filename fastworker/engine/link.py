"""An attached client's side of the control plane's protocol (control_plane.py).

    open()      connect to <name>.sock, HELLO + this client's eventfd  ->  WELCOME
    listen()    questions the control plane relays from other clients (result, cancel) and
                its worker events arrive here; EOF means the control plane is gone
    answer()    the reply to such a question, on the same connection
    query()     one question of ours (a task of another client, unschedule, stop), on a
                connection of its own
    hold()      a task to place in the ring when it is due (a SCHEDULE datagram)
    keep()      a stopping client's finished results, for the control plane's cache (KEEP)
    hand_over_retries()   and the retry state of its tasks that may still fail (RETRY)

Control messages are JSON, one per SOCK_SEQPACKET datagram; task payloads travel in the
binary framings of wire.py, never decoded by the control plane.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterable

import orjson

from ..errors import ControlPlaneUnavailable
from ..tasks.models import TaskStatus
from . import runtime, wire

PROTOCOL = 1
_ANSWER_TIMEOUT = 10.0  # seconds a question to the control plane may take
_MAX_MESSAGE = 1 << 20


class Link:
    def __init__(self, name: str, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self.sock = sock
        self.loop = loop
        self._listening = False

    @classmethod
    async def open(cls, name: str, serialization_format: str, ids_prefix: str) -> tuple[Link, dict, int]:
        """Connect and introduce this client: (the link, the WELCOME, this client's eventfd)."""
        loop = asyncio.get_running_loop()
        place = runtime.place(name)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.setblocking(False)
        eventfd = -1
        try:
            try:
                await loop.sock_connect(sock, place.socket)
            except (FileNotFoundError, ConnectionRefusedError):
                raise ControlPlaneUnavailable(
                    f"no control plane named {name!r} is running for this user (no one listens on "
                    f"{place.socket}); start one with `fastworker control-plane --workers N --task-modules "
                    "your.tasks`, or run an embedded engine: Client(workers=N, task_modules=[...])"
                ) from None
            eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            hello = {
                "hello": PROTOCOL,
                "pid": os.getpid(),
                "format": serialization_format,
                "ids": ids_prefix,  # the control plane tells our tasks apart by it
            }
            socket.send_fds(sock, [orjson.dumps(hello)], [eventfd])
            reply = await asyncio.wait_for(loop.sock_recv(sock, _MAX_MESSAGE), _ANSWER_TIMEOUT)
            welcome = orjson.loads(reply) if reply else {"error": "the control plane closed the connection"}
            if "error" in welcome:
                raise ControlPlaneUnavailable(f"control plane {name!r}: {welcome['error']}")
        except BaseException:
            sock.close()
            if eventfd >= 0:
                os.close(eventfd)
            raise
        return cls(name, sock, loop), welcome, eventfd

    # -------------------------------------------------------------- listening

    def listen(
        self, on_question: Callable[[dict], None], on_gone: Callable[[], None],
        on_event: Callable[[dict], None] = lambda event: None,
    ) -> None:
        """Call on_question(message) for each relayed question, on_event(message) for each
        worker event the control plane announces, and on_gone() once, at EOF."""

        def readable() -> None:
            while self._listening:
                try:
                    data = self.sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    data = b""
                if not data:  # the control plane stopped or died
                    self._stop_listening()
                    on_gone()
                    return
                try:
                    ask = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(ask, dict) and "qid" in ask:
                    on_question(ask)
                elif isinstance(ask, dict) and str(ask.get("event", "")).startswith("worker."):
                    on_event(ask)

        self._listening = True
        self.loop.add_reader(self.sock, readable)

    def _stop_listening(self) -> None:
        if self._listening:
            self._listening = False
            if not self.loop.is_closed():  # stopping at exit, after asyncio.run closed the loop
                self.loop.remove_reader(self.sock)

    def answer(self, ask: dict, reply: dict) -> None:
        try:
            self.sock.send(orjson.dumps({"answer": ask["qid"], **reply}))
        except OSError:
            pass  # the control plane is gone; its EOF tells the rest

    # ---------------------------------------------------------------- sending

    async def query(self, message: dict) -> dict:
        """One question to the control plane, on a connection of its own."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.setblocking(False)
        try:
            await self.loop.sock_connect(conn, runtime.place(self.name).socket)
            await self.loop.sock_sendall(conn, orjson.dumps(message))
            reply = orjson.loads(await asyncio.wait_for(self.loop.sock_recv(conn, _MAX_MESSAGE), _ANSWER_TIMEOUT))
        except (OSError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
            raise ControlPlaneUnavailable(f"control plane {self.name!r} did not answer: {exc}") from None
        finally:
            conn.close()
        if "error" in reply:
            raise ControlPlaneUnavailable(f"control plane {self.name!r}: {reply['error']}")
        return reply

    def hold(self, tag: int, due: float, fn_id: int, lane: int, flags: int, payload: bytes) -> None:
        """Hand a task over to be placed in the ring, for this client, at `due` (wall clock)."""
        try:
            self.sock.send(wire.schedule_datagram(tag, due, fn_id, lane, flags, payload))
        except (OSError, ValueError) as exc:
            raise ControlPlaneUnavailable(f"could not hand the task to control plane {self.name!r}: {exc}") from None

    def keep(self, finished: Iterable[tuple[str, TaskStatus, bytes | None, int, int]]) -> None:
        """Leave finished results (task_id, status, payload, t_start, t_end) in the control
        plane's cache: a stopping client's last words."""
        self.sock.setblocking(True)
        self.sock.settimeout(2.0)
        try:
            for datagram in wire.keep_datagrams(finished):
                self.sock.send(datagram)
        except OSError:
            pass  # the control plane is gone: nothing to keep them in

    def hand_over_retries(self, states: Iterable[wire.RetryState]) -> None:
        """A stopping client's tasks that may still be retried: the control plane runs their
        next attempts (it keeps their results, as it keeps every handed-over task's)."""
        self.sock.setblocking(True)
        self.sock.settimeout(2.0)
        try:
            for state in states:
                self.sock.send(wire.retry_datagram(state))
        except (OSError, ValueError):
            pass  # the control plane is gone (or the arguments are too big): no more attempts

    def close(self) -> None:
        """Close the connection: the control plane takes over this client's unfinished tasks."""
        self._stop_listening()
        self.sock.close()


__all__ = ["PROTOCOL", "Link"]
