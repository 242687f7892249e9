"""Per-call options that travel with a task's arguments: a hard timeout that
overrides the task's own, and which attempt this run is.

Most tasks carry none and pay nothing; a task that does is marked with the
``CALL_OPTIONS`` submission flag and its payload starts with a fixed header::

    <d timeout in s, 0: the task's own> <I attempt, 1 for the first run>
"""

from __future__ import annotations

import struct
from typing import Any

CALL_OPTIONS = 8  # submission flag (the codec uses bit 0, the Executor bits 1 and 2)
_HEAD = struct.Struct("<dI")


def wrap(payload: bytes, timeout: float | None, attempt: int) -> bytes:
    return _HEAD.pack(timeout or 0.0, attempt) + payload


def unwrap(payload: Any) -> tuple[float | None, int, memoryview]:
    """(timeout or None, attempt, the arguments' own payload)."""
    view = memoryview(payload)
    timeout, attempt = _HEAD.unpack_from(view, 0)
    return (timeout or None), attempt, view[_HEAD.size :]
