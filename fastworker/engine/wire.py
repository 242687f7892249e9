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

A client that stops with tasks that may still be retried hands their retry
state over in RETRY datagrams, so the control plane runs their next attempts:

    b"R" <Q tag> <I fn_id> <B lane> <I flags> <I next attempt> <I retries>
         <d retry_delay> <d retry_backoff> <d retry_backoff_max> <d timeout, 0: the task's own>
         then the arguments' payload
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..tasks.models import TaskStatus
from ..tasks.policy import TaskPolicy, make_policy

KEEP = b"K"
SCHEDULE = b"S"
RETRY = b"R"
_RECORD = struct.Struct("<HBQQI")
_SCHEDULED = struct.Struct("<QdIBI")  # tag, due (wall-clock s), fn_id, lane, flags
_RETRYING = struct.Struct("<QIBIIIdddd")
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


@dataclass
class RetryState:
    """A handed-over task's next attempts: its call, and how to space them."""

    tag: int
    fn_id: int
    lane: int
    flags: int
    attempt: int  # the attempt that runs next (or is running)
    policy: TaskPolicy  # its retries and their delays
    timeout: float | None  # the call's own time limit
    payload: bytes


def retry_datagram(state: RetryState) -> bytes:
    if len(state.payload) > MAX_DATAGRAM - 128:
        raise ValueError(f"a task's arguments take {len(state.payload)} bytes, too many to hand over")
    p = state.policy
    return RETRY + _RETRYING.pack(
        state.tag, state.fn_id, state.lane, state.flags, state.attempt, p.retries, p.retry_delay,
        p.retry_backoff, p.retry_backoff_max, state.timeout or 0.0,
    ) + state.payload


def read_retry(datagram: bytes) -> RetryState | None:
    """The RetryState of one RETRY datagram, or None if it is malformed."""
    if len(datagram) < 1 + _RETRYING.size:
        return None
    tag, fn_id, lane, flags, attempt, retries, delay, backoff, backoff_max, timeout = _RETRYING.unpack_from(datagram, 1)
    try:
        policy = make_policy(retries=retries, retry_delay=delay, retry_backoff=backoff, retry_backoff_max=backoff_max)
    except (TypeError, ValueError):
        return None
    return RetryState(tag, fn_id, lane, flags, attempt, policy, timeout or None, bytes(datagram[1 + _RETRYING.size :]))
