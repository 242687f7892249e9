"""Out-of-band layouts (engine/oob.py) without processes: what goes out of band, and that it
comes back as it went."""

from __future__ import annotations

import pickle

import pytest

from fastworker.engine import oob

BIG = oob.MIN_OUT_OF_BAND


def round_trip(value):
    payload, laid_out = oob.encode(value)
    if not laid_out:
        return pickle.loads(payload), False
    length, pieces = payload
    block = bytearray(length)
    for offset, piece in pieces:
        piece = memoryview(piece).cast("B")
        block[offset : offset + piece.nbytes] = piece
    return oob.decode(block), True


@pytest.mark.parametrize(
    "value",
    [
        b"x" * BIG,  # a result
        (len, (b"a" * BIG, 3), {}),  # a call: (fn, args, kwargs)
        (len, (), {"data": b"b" * (BIG + 1)}),
        [b"c" * BIG, b"d" * 10, "text"],
        {"k": b"e" * BIG},
    ],
)
def test_big_bytes_go_out_of_band_and_come_back_as_bytes(value):
    back, laid_out = round_trip(value)
    assert laid_out
    assert back == value
    assert type(next(iter(_bytes_in(back)))) is bytes


def _bytes_in(value):
    if type(value) is bytes:
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _bytes_in(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _bytes_in(v)


@pytest.mark.parametrize("value", [b"x" * (BIG - 1), [[[b"deep" * BIG]]], "s" * BIG, list(range(100))])
def test_small_or_deep_bytes_stay_in_band(value):
    back, laid_out = round_trip(value)
    assert (back, laid_out) == (value, False)


def test_a_bytearray_comes_back_as_a_bytearray():
    back, laid_out = round_trip(bytearray(b"z" * BIG))
    assert laid_out and type(back) is bytearray and back == b"z" * BIG


def test_a_memoryview_comes_back_as_a_view_of_the_block_with_its_format_and_shape():
    import array

    numbers = array.array("d", range(BIG // 8 * 2))
    view = memoryview(numbers).cast("B").cast("d", (2, BIG // 8))
    back, laid_out = round_trip({"v": view})
    assert laid_out
    got = back["v"]
    assert type(got) is memoryview and (got.format, got.shape) == ("d", (2, BIG // 8))
    assert got.tolist() == view.tolist()


def test_a_non_contiguous_memoryview_is_refused_as_pickle_refuses_it():
    view = memoryview(bytearray(BIG * 2))[::2]
    with pytest.raises(TypeError, match="memoryview"):
        oob.encode(view)


def test_a_persistent_id_that_is_not_a_buffer_is_refused():
    class Sneaky(pickle.Pickler):
        def persistent_id(self, obj):
            return 10**9 if obj == "x" else None  # bytes(10**9) would allocate a gigabyte

    import io

    stream = io.BytesIO()
    Sneaky(stream, 5).dump(["x"])
    head = oob._HEAD.pack(oob.MAGIC, 0, len(stream.getvalue()))
    with pytest.raises(pickle.UnpicklingError, match="unexpected persistent id int"):
        oob.decode(head + stream.getvalue())
