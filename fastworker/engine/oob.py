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

import pickle
import struct
from typing import Any

MAGIC = b"FWB1"
_HEAD = struct.Struct("<4sIQ")
_ENTRY = struct.Struct("<QQ")
_ALIGN = 64
MIN_OUT_OF_BAND = 64 * 1024


Layout = tuple[int, list[tuple[int, Any]]]  # total length, [(offset, buffer), ...]


def encode(value: Any) -> tuple[bytes | Layout, bool]:
    """(payload, out_of_band): a plain protocol-5 pickle, or the layout of the block as
    (length, [(offset, buffer), ...]) for the ring to copy each piece straight into place
    (no intermediate copy of the buffers)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(value, 5, buffer_callback=buffers.append)
    if not buffers:
        return data, False
    try:
        raws = [b.raw() for b in buffers]
    except BufferError:  # a non-contiguous buffer: send it in-band
        return pickle.dumps(value, 5), False
    if sum(r.nbytes for r in raws) < MIN_OUT_OF_BAND:
        return pickle.dumps(value, 5), False
    at = _HEAD.size + _ENTRY.size * len(raws) + len(data)
    places = []
    for raw in raws:
        at = -(-at // _ALIGN) * _ALIGN
        places.append((at, raw.nbytes))
        at += raw.nbytes
    if len(raws) > 60:  # the ring takes at most 64 pieces: lay many small buffers out in-band
        return pickle.dumps(value, 5), False
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
    return pickle.loads(view[start : start + data_len], buffers=buffers)
