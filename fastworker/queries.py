"""Queries to a running control plane: the client side of its QUERY protocol.

    fastworker status/cancel/stats ──▶ query(name, {"query": ...})
        connect <runtime dir>/<name>.sock (AF_UNIX, SOCK_SEQPACKET)
        ── one JSON message, no fds ──────▶ control plane answers from its own state
        ◀── one JSON reply (≤ 1 MiB) ─────
        close

A query is a connection of its own, separate from an attached Client's: it
hands over no eventfd and maps no segment, so the control plane has nothing
to reclaim when it ends.  The calls block; they are for the command line, not
for an event loop.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

import orjson

from .engine import runtime
from .errors import ControlPlaneUnavailable

__all__ = ["cancel", "query", "result", "stats", "task_names"]

MAX_REPLY = 1 << 20
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _not_running(name: str, path: str) -> ControlPlaneUnavailable:
    return ControlPlaneUnavailable(
        f"no control plane named {name!r} is running for this user (no one listens on {path}); "
        f"start one with `fastworker control-plane --name {name} --workers N --task-modules your.tasks`"
    )


def query(name: str, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send ``message`` to the control plane ``name`` and return its reply.

    Raises ``ControlPlaneUnavailable`` when nothing listens under that name, when it does not
    answer within ``timeout`` seconds or answers nonsense, and with the server's own words when
    the reply is ``{"error": ...}``.  A bad ``name`` is a ``ConfigError``.
    """
    path = runtime.place(name).socket
    request = orjson.dumps(message)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise _not_running(name, path) from None
        _pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        if uid != os.getuid():  # the runtime directory is private, so only a planted socket gets here
            raise ControlPlaneUnavailable(
                f"the socket {path} of control plane {name!r} belongs to uid {uid}, not to you "
                f"(uid {os.getuid()}); refusing to talk to it"
            )
        sock.send(request)  # one SEQPACKET record: sent whole or not at all
        data, _ancdata, flags, _addr = sock.recvmsg(MAX_REPLY)
    except TimeoutError:
        raise ControlPlaneUnavailable(
            f"control plane {name!r} did not answer a {message.get('query')!r} query within {timeout:g} s"
        ) from None
    except ControlPlaneUnavailable:  # ours, from above (it is an OSError too)
        raise
    except OSError as exc:
        raise ControlPlaneUnavailable(
            f"could not query control plane {name!r} at {path}: {exc.strerror or exc}"
        ) from None
    finally:
        sock.close()
    if not data:
        raise ControlPlaneUnavailable(f"control plane {name!r} closed the connection without answering")
    if flags & socket.MSG_TRUNC:
        raise ControlPlaneUnavailable(f"control plane {name!r} sent a reply larger than {MAX_REPLY} bytes")
    try:
        reply = orjson.loads(data)
    except orjson.JSONDecodeError:
        reply = None
    if not isinstance(reply, dict):
        raise ControlPlaneUnavailable(f"control plane {name!r} sent a reply that is not a JSON object")
    if "error" in reply:
        raise ControlPlaneUnavailable(f"control plane {name!r}: {reply['error']}")
    return reply


def result(name: str, task_id: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """The task's ``TaskResult.to_dict()`` as the control plane knows it; None if unknown or expired."""
    found = query(name, {"query": "result", "task_id": task_id}, timeout)
    value = found.get("result")
    if value is not None and not isinstance(value, dict):
        raise ControlPlaneUnavailable(f"control plane {name!r} sent a result that is not a JSON object")
    return value


def cancel(name: str, task_id: str, timeout: float = 10.0) -> tuple[bool, str]:
    """Ask the control plane to cancel a task (queued, scheduled or running): (cancelled, the server's message)."""
    reply = query(name, {"query": "cancel", "task_id": task_id}, timeout)
    return bool(reply.get("cancelled")), str(reply.get("message") or "")


def stats(name: str, timeout: float = 10.0) -> dict[str, Any]:
    """Uptime, workers, queue lengths per priority and counters of the control plane."""
    return query(name, {"query": "stats"}, timeout)


def task_names(name: str, timeout: float = 10.0) -> list[str]:
    """The names of the tasks the control plane serves."""
    names = query(name, {"query": "tasks"}, timeout).get("tasks")
    if not isinstance(names, list):
        raise ControlPlaneUnavailable(f"control plane {name!r} sent no task list")
    return [str(n) for n in names]


def periodic(name: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The control plane's periodic tasks: schedule, next run (ISO 8601, UTC), runs so far."""
    rows = query(name, {"query": "tasks"}, timeout).get("periodic")
    if not isinstance(rows, list):
        raise ControlPlaneUnavailable(f"control plane {name!r} sent no list of periodic tasks")
    return rows
