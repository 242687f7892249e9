"""complete() with a laid-out result: (length, [(offset, buffer), ...]) pieces are
copied straight into place, inline or in the arena; bad layouts are refused."""

from __future__ import annotations

import os

import pytest

from fastworker import _native

SUCCESS = _native.RESULT_SUCCESS


def _run_one(seg, result):
    client, _ = seg.client_open(os.getpid())
    seg.submit(client, 2, 0, 0, 1, b"args")
    handle = seg.take(0, 1, 0)[0]
    assert seg.complete(handle, 0, 1, SUCCESS, 0, result, -1) is True
    [(_, _, _, _, payload, _, _)] = seg.drain(client)
    return payload


@pytest.mark.parametrize("length", [10, 176, 177, 5000])
def test_pieces_land_at_their_offsets(make_segment, length):
    seg = make_segment()
    head, tail = b"H" * 4, b"T" * 3
    payload = _run_one(seg, (length, [(0, head), (length - 3, memoryview(tail))]))
    assert len(payload) == length
    assert payload[:4] == head and payload[-3:] == tail
    assert seg.check()["error"] == 0


def test_a_piece_past_the_length_or_too_many_pieces_are_refused(make_segment):
    seg = make_segment()
    client, _ = seg.client_open(os.getpid())
    seg.submit(client, 2, 0, 0, 1, b"args")
    handle = seg.take(0, 1, 0)[0]
    with pytest.raises(ValueError, match="past the payload's length"):
        seg.complete(handle, 0, 1, SUCCESS, 0, (4, [(2, b"xyz")]), -1)
    with pytest.raises(ValueError, match="at most 64 parts"):
        seg.complete(handle, 0, 1, SUCCESS, 0, (100, [(i, b"x") for i in range(65)]), -1)
    assert seg.complete(handle, 0, 1, SUCCESS, 0, b"ok", -1) is True  # the task was not harmed
    assert seg.drain(client)[0][4] == b"ok"


@pytest.mark.parametrize("length", [20, 176, 177, 9000])
def test_a_submission_can_be_laid_out_too(make_segment, length):
    seg = make_segment()
    client, _ = seg.client_open(os.getpid())
    seg.submit(client, 2, 0, 0, 1, (length, [(0, b"AB"), (length - 2, b"YZ")]))
    payload = seg.take(0, 1, 0)[6]
    assert len(payload) == length and payload[:2] == b"AB" and payload[-2:] == b"YZ"
    assert seg.check()["error"] == 0
