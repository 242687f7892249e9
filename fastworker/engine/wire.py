"""Messages between clients and the control plane, besides the ring.

Control messages are JSON (orjson), one per SOCK_SEQPACKET datagram.  A
client that stops hands its finished results to the control plane's cache in
KEEP datagrams, a binary framing that never runs anything on the receiving
side (no pickle: a JSON control plane must not unpickle a client's data):

    b"K" then records of  <H id length> <B status> <Q started ns> <Q ended ns> <I payload length>
                          id bytes, payload bytes
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from ..tasks.models import TaskStatus

KEEP = b"K"
_RECORD = struct.Struct("<HBQQI")
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
