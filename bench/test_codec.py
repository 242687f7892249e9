"""The codecs on the path of every task: the Client's arguments out and the result back.

``add(1, 2)`` through JSON (orjson, the Client's default) and Pickle
(protocol 5, the Executor's and ``serialization_format="pickle"``): encode
the call, decode it as a worker does, encode the result, decode it.
"""

from __future__ import annotations

import pytest

from benchutil import describe
from fastworker.tasks.serialization import JSON_CODEC, PICKLE_CODEC

pytestmark = pytest.mark.benchmark(group="codec")

CODECS = {"json": JSON_CODEC, "pickle": PICKLE_CODEC}


@pytest.mark.parametrize("fmt", list(CODECS))
def test_a_call_and_its_result(benchmark, fmt):
    codec = CODECS[fmt]

    def round_trip():
        payload, flags = codec.encode_args("add", (1, 2), None)
        args, _ = codec.decode_args(payload, flags)
        return codec.decode_result(codec.encode_result("add", args[0] + args[1]))

    assert benchmark(round_trip) == 3
    describe(benchmark, f"{fmt}: encode_args + decode_args + encode_result + decode_result of add(1, 2)",
             fmt, baseline=fmt == "json")
