"""Results that cross without a copy on the way back: pickle protocol 5
out-of-band buffers laid out in the result's arena block.

A worker encodes a result whose buffers (NumPy arrays, bytearrays, ...) add
up to at least ``MIN_OUT_OF_BAND`` bytes as::

    <4s magic> <I buffer count> <Q pickle length>   then per buffer <Q offset> <Q length>
    the pickle stream, then each buffer at a 64-byte aligned offset

and marks it ``RESULT_KEEP``.  The receiving side gets the arena block lent
as a ``SlotBuffer`` and unpickles with views into it: a NumPy array comes
back as a view of the shared segment, and the block returns to the ring when
the last view of it is released.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

MAGIC = b"FWB1"
_HEAD = struct.Struct("<4sIQ")
_ENTRY = struct.Struct("<QQ")
_ALIGN = 64
MIN_OUT_OF_BAND = 64 * 1024


Layout = tuple[int, list[tuple[int, Any]]]  # total length, [(offset, buffer), ...]


# Buffers pickle sends in-band (bytes, bytearray) or cannot pickle at all (memoryview), sent
# out of band here as persistent ids that hold a PickleBuffer: (kind, format, shape, buffer).
_KINDS = {bytes: "bytes", bytearray: "bytearray", memoryview: "memoryview"}


class _BuffersOutOfBand(pickle.Pickler):
    """Pickle sends ``bytes`` and ``bytearray`` in-band even with protocol 5: a 1 MiB argument
    would be copied into a fresh 1 MiB pickle first (and page-faulted in); a ``memoryview`` it
    refuses.  Big ones become persistent ids holding a PickleBuffer, which ``buffer_callback``
    takes out of band: the ring copies them straight into the arena."""

    def persistent_id(self, obj: Any) -> Any:
        kind = _KINDS.get(type(obj))
        if kind is None or _nbytes(obj) < MIN_OUT_OF_BAND:
            return None
        if kind == "memoryview":
            if not obj.contiguous:
                return None  # pickle refuses it, as it would anyway
            return (kind, obj.format, obj.shape, pickle.PickleBuffer(obj))
        return (kind, "B", None, pickle.PickleBuffer(obj))


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        try:
            kind, fmt, shape, buffer = pid
        except (TypeError, ValueError):
            raise pickle.UnpicklingError(f"unexpected persistent id {type(pid).__name__}") from None
        if not isinstance(buffer, memoryview):
            raise pickle.UnpicklingError(f"unexpected persistent id holding {type(buffer).__name__}")
        if kind == "bytes":
            return bytes(buffer)
        if kind == "bytearray":
            return bytearray(buffer)
        if kind == "memoryview":  # a view of the block: no copy, as a NumPy array gets
            return buffer.cast("B").cast(fmt, shape) if shape else buffer.cast("B").cast(fmt)
        raise pickle.UnpicklingError(f"unexpected persistent id kind {kind!r}")


def _nbytes(obj: Any) -> int:
    return obj.nbytes if type(obj) is memoryview else len(obj)


def _holds_big_buffer(value: Any, depth: int = 0) -> bool:
    """A big bytes, bytearray or memoryview at the top of a value or one container down (a
    call's arguments are ``(fn, args, kwargs)``: two down)."""
    if type(value) in _KINDS:
        return _nbytes(value) >= MIN_OUT_OF_BAND
    if depth < 2:
        if type(value) is dict:
            return any(_holds_big_buffer(v, depth + 1) for v in value.values())
        if type(value) in (tuple, list) and len(value) <= 16:
            return any(_holds_big_buffer(v, depth + 1) for v in value)
    return False


def _dumps(value: Any, pickler: type[pickle.Pickler], buffer_callback: Any = None, big_buffers: bool = False) -> bytes:
    if pickler is pickle.Pickler and not big_buffers:
        return pickle.dumps(value, 5, buffer_callback=buffer_callback)  # the C fast path
    stream = io.BytesIO()
    (_out_of_band(pickler) if big_buffers else pickler)(stream, 5, buffer_callback=buffer_callback).dump(value)
    return stream.getvalue()


_OUT_OF_BAND: dict[type, type] = {pickle.Pickler: _BuffersOutOfBand}


def _out_of_band(pickler: type[pickle.Pickler]) -> type[pickle.Pickler]:
    """`pickler` (pickle's, or cloudpickle's) that sends big bytes, bytearrays and memoryviews
    out of band."""
    cls = _OUT_OF_BAND.get(pickler)
    if cls is None:
        cls = _OUT_OF_BAND[pickler] = type(
            f"OutOfBand{pickler.__name__}", (pickler,), {"persistent_id": _BuffersOutOfBand.persistent_id}
        )
    return cls


def encode(value: Any, pickler: type[pickle.Pickler] = pickle.Pickler) -> tuple[bytes | Layout, bool]:
    """(payload, out_of_band): a plain protocol-5 pickle, or the layout of the block as
    (length, [(offset, buffer), ...]) for the ring to copy each piece straight into place
    (no intermediate copy of the buffers).  `pickler`: pickle's, or cloudpickle's."""
    buffers: list[pickle.PickleBuffer] = []
    data = _dumps(value, pickler, buffers.append, big_buffers=_holds_big_buffer(value))
    if not buffers:
        return data, False
    try:
        raws = [b.raw() for b in buffers]
    except BufferError:  # a non-contiguous buffer: send it in-band
        return _dumps(value, pickler), False
    if sum(r.nbytes for r in raws) < MIN_OUT_OF_BAND:
        return _dumps(value, pickler), False
    at = _HEAD.size + _ENTRY.size * len(raws) + len(data)
    places = []
    for raw in raws:
        at = -(-at // _ALIGN) * _ALIGN
        places.append((at, raw.nbytes))
        at += raw.nbytes
    if len(raws) > 60:  # the ring takes at most 64 pieces: lay many small buffers out in-band
        return _dumps(value, pickler), False
    head = _HEAD.pack(MAGIC, len(raws), len(data)) + b"".join(_ENTRY.pack(*place) for place in places)
    pieces: list[tuple[int, Any]] = [(0, head), (len(head), data)]
    pieces += [(offset, raw.cast("B")) for (offset, _), raw in zip(places, raws)]
    return (at, pieces), True


def decode(block: Any) -> Any:
    """Unpickle a laid-out block; the buffers are views of it (no copy)."""
    view = memoryview(block)
    magic, count, data_len = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise ValueError("not an out-of-band result block")
    places = [_ENTRY.unpack_from(view, _HEAD.size + i * _ENTRY.size) for i in range(count)]
    start = _HEAD.size + _ENTRY.size * count
    buffers = [view[offset : offset + length] for offset, length in places]
    return _Unpickler(io.BytesIO(view[start : start + data_len]), buffers=buffers).load()
