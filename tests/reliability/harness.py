"""Forked processes that drive ``_native`` directly, for the reliability tests: a child is a few
dozen lines of Python over the ring, so a test gets many kills or cycles per second.

Payloads carry their task's tag in every 8 bytes (``payload``), so whoever reads one can tell
whether it is the task it asked for (``holds``) wherever in the slot or arena it was read."""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable

from native import test_crash as crash
from native.test_crash import payload

__all__ = ["census_total", "exit_code", "fork", "holds", "kill_and_reap", "payload"]


def holds(data: bytes, tag: int, kind: bytes = b"A") -> bool:
    """Is data exactly payload(tag, len(data), kind)?"""
    return bytes(data) == payload(tag, len(data), kind)


def fork(body: Callable[[], object]) -> int:
    """Run body in a child that dies with its parent (exit code 0, or 3 if it raises)."""
    return crash.fork([], body)


def exit_code(pid: int, timeout: float) -> int | None:
    """The child's exit code (-signal if killed) once it ends within timeout, else None (still
    running, not reaped)."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        return None
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def kill_and_reap(pid: int) -> int:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def census_total(census: dict) -> int:
    """Slots the census counted in any state: must be all of them."""
    return sum(census[k] for k in ("free", "reserved", "queued", "running", "done", "held"))
