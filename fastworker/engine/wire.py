"""Messages between clients and the control plane, besides the ring.

Control messages are JSON (orjson), one per SOCK_SEQPACKET datagram.  A
client that stops hands its finished results to the control plane's cache in
KEEP datagrams, a binary framing that never runs anything on the receiving
side (no pickle: a JSON control plane must not unpickle a client's data):

    b"K" then records of  <H id length> <B status> <Q started ns> <Q ended ns> <I payload length>
                          id bytes, payload bytes

A task given a countdown or eta, or a retry waiting out its delay, is handed
to the control plane in one SCHEDULE datagram; it places the task in the ring
for the client when due (the payload is copied, never decoded):

    b"S" <Q tag> <d due, wall-clock s> <I fn_id> <B lane> <I flags> then the payload
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from ..tasks.models import TaskStatus

KEEP = b"K"
SCHEDULE = b"S"
_RECORD = struct.Struct("<HBQQI")
_SCHEDULED = struct.Struct("<QdIBI")  # tag, due (wall-clock s), fn_id, lane, flags
_STATUS_CODES = {status: code for code, status in enumerate(TaskStatus)}
_CODE_STATUS = {code: status for status, code in _STATUS_CODES.items()}
# A datagram stays well under the socket's default buffer (~208 KiB); a
# result bigger than this is not kept by the control plane.
MAX_DATAGRAM = 128 * 1024
MAX_KEPT_PAYLOAD = MAX_DATAGRAM - 1024


def keep_datagrams(results: Iterable[tuple[str, TaskStatus, bytes | None, int, int]]) -> Iterator[bytes]:
    """(task_id, status, payload, t_start, t_end) -> KEEP datagrams, each under MAX_DATAGRAM."""
    chunk = [KEEP]
    size = 1
    for task_id, status, payload, t_start, t_end in results:
        data = payload or b""
        if len(data) > MAX_KEPT_PAYLOAD:
            continue
        ident = task_id.encode()
        record = _RECORD.pack(len(ident), _STATUS_CODES[status], t_start, t_end, len(data)) + ident + data
        if size + len(record) > MAX_DATAGRAM:
            yield b"".join(chunk)
            chunk, size = [KEEP], 1
        chunk.append(record)
        size += len(record)
    if size > 1:
        yield b"".join(chunk)


def read_keep(datagram: bytes) -> Iterator[tuple[str, TaskStatus, bytes, int, int]]:
    """The records of one KEEP datagram; stops at the first malformed one."""
    view = memoryview(datagram)
    at = 1
    while at + _RECORD.size <= len(view):
        id_len, code, t_start, t_end, length = _RECORD.unpack_from(view, at)
        at += _RECORD.size
        if code not in _CODE_STATUS or at + id_len + length > len(view):
            return
        task_id = bytes(view[at : at + id_len]).decode("ascii", "replace")
        at += id_len
        payload = bytes(view[at : at + length])
        at += length
        yield task_id, _CODE_STATUS[code], payload, t_start, t_end


def schedule_datagram(tag: int, due: float, fn_id: int, lane: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_DATAGRAM - 64:
        raise ValueError(
            f"a scheduled task's arguments take {len(payload)} bytes; the control plane holds at most "
            f"{MAX_DATAGRAM - 64} (submit it without countdown/eta, or pass less)"
        )
    return SCHEDULE + _SCHEDULED.pack(tag, due, fn_id, lane, flags) + payload


def read_schedule(datagram: bytes) -> tuple[int, float, int, int, int, bytes] | None:
    """(tag, due, fn_id, lane, flags, payload), or None if malformed."""
    if len(datagram) < 1 + _SCHEDULED.size:
        return None
    tag, due, fn_id, lane, flags = _SCHEDULED.unpack_from(datagram, 1)
    return tag, due, fn_id, lane, flags, bytes(datagram[1 + _SCHEDULED.size :])
