"""The codecs: round trips, the kwargs flag, and errors that name the offending value."""

from __future__ import annotations

import dataclasses
import pickle
import threading
import traceback
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastworker.errors import SerializationError
from fastworker.tasks.models import SerializationFormat
from fastworker.tasks.serialization import (
    FLAG_KWARGS,
    JSON_CODEC,
    PICKLE_CODEC,
    Codec,
    JsonCodec,
    PickleCodec,
    decode_failure,
    encode_failure,
    exception_summary,
)

HYPOTHESIS = settings(database=None, deadline=None)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
json_kwargs = st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4)


class Point(pydantic.BaseModel):
    x: int
    y: int
    tags: list[str] = []


class Loose(pydantic.BaseModel):
    data: Any


class LegacyModel:
    """Looks like a Pydantic v1 model: converts through .dict()."""

    def __init__(self, value: int) -> None:
        self.value = value

    def dict(self) -> dict[str, int]:
        return {"value": self.value}


class MyThing:
    pass


class Holder:
    def __init__(self, inner: Any) -> None:
        self.inner = inner


@dataclasses.dataclass
class Box:
    items: Any


# --- factory -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "codec"),
    [
        (SerializationFormat.JSON, JSON_CODEC),
        ("json", JSON_CODEC),
        ("PICKLE", PICKLE_CODEC),
        (SerializationFormat.PICKLE, PICKLE_CODEC),
    ],
)
def test_for_format_returns_the_shared_codec(fmt: Any, codec: Codec) -> None:
    assert Codec.for_format(fmt) is codec


def test_for_format_refuses_unknown_formats() -> None:
    with pytest.raises(ValueError, match="'xml'"):
        Codec.for_format("xml")


def test_codec_types() -> None:
    assert isinstance(JSON_CODEC, JsonCodec) and JSON_CODEC.format is SerializationFormat.JSON
    assert (
        isinstance(PICKLE_CODEC, PickleCodec) and PICKLE_CODEC.format is SerializationFormat.PICKLE
    )


# --- wire form -----------------------------------------------------------------------------------


def test_json_args_without_kwargs_is_just_the_args_array() -> None:
    payload, flags = JSON_CODEC.encode_args("add", (1, "two"), None)
    assert (payload, flags) == (b'[1,"two"]', 0)
    assert JSON_CODEC.encode_args("add", (1, "two"), {}) == (payload, 0)
    assert JSON_CODEC.decode_args(payload, flags) == ([1, "two"], {})


def test_json_args_with_kwargs_sets_the_flag() -> None:
    payload, flags = JSON_CODEC.encode_args("add", (1,), {"y": 2})
    assert flags == FLAG_KWARGS == 1
    assert orjson.loads(payload) == [[1], {"y": 2}]
    assert JSON_CODEC.decode_args(payload, flags) == ([1], {"y": 2})


@pytest.mark.parametrize("codec", [JSON_CODEC, PICKLE_CODEC], ids=["json", "pickle"])
def test_unknown_flag_bits_are_left_to_the_engine(codec: Codec) -> None:
    payload, flags = codec.encode_args("t", (1,), {"k": 2})
    assert codec.decode_args(payload, flags | 0b1110) == codec.decode_args(payload, flags)
    payload, flags = codec.encode_args("t", (1,), None)
    assert list(codec.decode_args(payload, flags | 0b100)[0]) == [1]


@pytest.mark.parametrize("codec", [JSON_CODEC, PICKLE_CODEC], ids=["json", "pickle"])
def test_decoding_accepts_memoryview(codec: Codec) -> None:
    payload, flags = codec.encode_args("t", (1, 2), {"z": [3]})
    args, kwargs = codec.decode_args(memoryview(bytearray(payload)), flags)
    assert (list(args), kwargs) == ([1, 2], {"z": [3]})
    result = codec.encode_result("t", {"a": [1, 2.5, None]})
    assert codec.decode_result(memoryview(result)) == {"a": [1, 2.5, None]}


def test_decoded_kwargs_are_independent_dicts() -> None:
    payload, flags = JSON_CODEC.encode_args("t", (), None)
    _, first = JSON_CODEC.decode_args(payload, flags)
    first["polluted"] = True
    assert JSON_CODEC.decode_args(payload, flags)[1] == {}


def test_pickle_uses_protocol_5_and_keeps_types() -> None:
    payload, flags = PICKLE_CODEC.encode_args("t", (1, (2, 3)), {"s": {4}})
    assert payload[:2] == b"\x80\x05"
    assert PICKLE_CODEC.decode_args(payload, flags) == ((1, (2, 3)), {"s": {4}})
    assert pickle.loads(PICKLE_CODEC.encode_result("t", MyThing)) is MyThing


# --- round trips ---------------------------------------------------------------------------------


@HYPOTHESIS
@given(args=st.lists(json_values, max_size=5), kwargs=json_kwargs)
def test_json_args_round_trip(args: list[Any], kwargs: dict[str, Any]) -> None:
    payload, flags = JSON_CODEC.encode_args("t", tuple(args), kwargs)
    assert JSON_CODEC.decode_args(payload, flags) == (args, kwargs)
    assert bool(flags & FLAG_KWARGS) == bool(kwargs)


@HYPOTHESIS
@given(json_values)
def test_json_result_round_trip(value: Any) -> None:
    assert JSON_CODEC.decode_result(JSON_CODEC.encode_result("t", value)) == value


@HYPOTHESIS
@given(
    args=st.lists(json_values | st.tuples(json_scalars) | st.frozensets(st.integers()), max_size=5),
    kwargs=json_kwargs,
    big=st.integers(),
)
def test_pickle_round_trip(args: list[Any], kwargs: dict[str, Any], big: int) -> None:
    payload, flags = PICKLE_CODEC.encode_args("t", (*args, big), kwargs)
    assert PICKLE_CODEC.decode_args(payload, flags) == ((*args, big), kwargs)
    assert PICKLE_CODEC.decode_result(PICKLE_CODEC.encode_result("t", (args, big))) == (args, big)


def test_json_tuples_arrive_as_lists_and_int_keys_as_str() -> None:
    payload, flags = JSON_CODEC.encode_args("t", ((1, 2),), {"m": {1: "a"}})
    assert JSON_CODEC.decode_args(payload, flags) == ([[1, 2]], {"m": {"1": "a"}})


def test_json_converts_pydantic_models_with_model_dump() -> None:
    payload, flags = JSON_CODEC.encode_args(
        "t", (Point(x=1, y=2),), {"p": [Point(x=3, y=4, tags=["a"])]}
    )
    assert JSON_CODEC.decode_args(payload, flags) == (
        [{"x": 1, "y": 2, "tags": []}],
        {"p": [{"x": 3, "y": 4, "tags": ["a"]}]},
    )
    assert JSON_CODEC.decode_result(JSON_CODEC.encode_result("t", Point(x=5, y=6))) == {
        "x": 5,
        "y": 6,
        "tags": [],
    }


def test_json_converts_v1_style_dict_method() -> None:
    assert JSON_CODEC.decode_result(JSON_CODEC.encode_result("t", [LegacyModel(7)])) == [
        {"value": 7}
    ]


# --- errors that name the value ------------------------------------------------------------------


def _json_arg_error(*args: Any, **kwargs: Any) -> SerializationError:
    with pytest.raises(SerializationError) as info:
        JSON_CODEC.encode_args("reports.build", args, kwargs)
    assert isinstance(info.value, TypeError)
    assert "task 'reports.build'" in str(info.value)
    assert "argument" in str(info.value)
    assert 'serialization_format="pickle"' in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)
    return info.value


@pytest.mark.parametrize(
    ("args", "kwargs", "type_name"),
    [
        (({1, 2},), {}, "set"),
        ((1, [2, {"deep": {3}}]), {}, "set"),
        ((), {"k": object()}, "object"),
        ((MyThing(),), {}, f"{__name__}.MyThing"),
        ((lambda: 1,), {}, "function"),
        ((b"raw",), {}, "bytes"),
        ((Box(items={1}),), {}, "set"),
        ((), {"when": Loose(data={1})}, "set"),
    ],
    ids=[
        "set",
        "nested-set",
        "object-kwarg",
        "user-class",
        "lambda",
        "bytes",
        "dataclass-field",
        "model-field",
    ],
)
def test_json_unserializable_args_name_the_innermost_type(
    args: tuple[Any, ...], kwargs: dict[str, Any], type_name: str
) -> None:
    err = _json_arg_error(*args, **kwargs)
    assert err.type_name == type_name
    assert f"type {type_name!r}" in str(err)


def test_json_huge_int_is_explained() -> None:
    err = _json_arg_error(2**64)
    assert err.type_name == "int"
    assert f"int {2**64} does not fit in the 64-bit integers" in str(err)
    assert "Send it as a str" in str(err)


def test_json_negative_huge_int_is_explained() -> None:
    assert "64-bit" in str(_json_arg_error([-(2**63) - 1]))


def test_json_enormous_int_is_not_printed() -> None:
    err = _json_arg_error(10**5000)
    assert "int of 16610 bits" in str(err)


def test_json_unserializable_dict_key() -> None:
    err = _json_arg_error({(1, 2): "pair"})
    assert err.type_name == "tuple"
    assert "'tuple' cannot be a dict key" in str(err)


def test_json_cycle_is_an_error_not_a_hang() -> None:
    loop: list[Any] = []
    loop.append(loop)
    err = _json_arg_error(loop)
    assert err.type_name == "list"


def test_json_unserializable_result_names_result_and_task() -> None:
    with pytest.raises(SerializationError) as info:
        JSON_CODEC.encode_result("stats", {"values": {1.5}})
    assert info.value.direction == "result"
    assert "result of task 'stats'" in str(info.value)
    assert "'set'" in str(info.value)


def test_model_dump_that_raises_is_reported() -> None:
    class Broken:
        def model_dump(self) -> Any:
            raise RuntimeError("cannot dump")

    with pytest.raises(SerializationError, match="Broken"):
        JSON_CODEC.encode_result("t", Broken())


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (lambda: 1, "function"),
        ([1, {"lock": threading.Lock()}], "_thread.lock"),
        (Holder(Holder(threading.Lock())), "_thread.lock"),
        ((x for x in ()), "generator"),
    ],
    ids=["lambda", "lock-in-dict", "lock-in-object", "generator"],
)
def test_pickle_errors_name_the_innermost_type(value: Any, type_name: str) -> None:
    with pytest.raises(SerializationError) as info:
        PICKLE_CODEC.encode_args("crunch", (1, value), None)
    err = info.value
    assert err.type_name.endswith(type_name.rsplit(".", 1)[-1])
    assert "argument of task 'crunch'" in str(err)
    assert "with pickle" in str(err)
    assert "FASTWORKER_SERIALIZATION_FORMAT" not in str(err)
    assert err.__cause__ is not None


def test_pickle_local_function_result() -> None:
    def local() -> None:
        pass

    with pytest.raises(SerializationError, match="result of task 'make'") as info:
        PICKLE_CODEC.encode_result("make", {"f": local})
    assert info.value.type_name == "function"
    assert isinstance(info.value.__cause__, (AttributeError, pickle.PicklingError))


@pytest.mark.parametrize("codec", [JSON_CODEC, PICKLE_CODEC], ids=["json", "pickle"])
def test_corrupt_payloads_are_serialization_errors(codec: Codec) -> None:
    with pytest.raises(SerializationError, match="Cannot decode task arguments"):
        codec.decode_args(b"\x00not a payload", 0)
    with pytest.raises(SerializationError, match="Cannot decode task arguments"):
        codec.decode_args(codec.encode_args("t", (1, 2, 3), None)[0], FLAG_KWARGS)
    with pytest.raises(SerializationError, match="Cannot decode task result"):
        codec.decode_result(b"\x00not a payload")


def test_json_codec_never_unpickles() -> None:
    payload, flags = PICKLE_CODEC.encode_args("t", (1,), None)
    with pytest.raises(SerializationError):
        JSON_CODEC.decode_args(payload, flags)


# --- failures ------------------------------------------------------------------------------------


def _raise(exc: BaseException) -> str:
    try:
        raise exc
    except BaseException as caught:
        return "".join(traceback.format_exception(type(caught), caught, caught.__traceback__))


def test_failure_round_trip() -> None:
    exc = ValueError("bad input")
    tb_text = _raise(exc)
    payload = encode_failure(exc, tb_text)
    assert orjson.loads(payload) == {
        "type": "ValueError",
        "message": "bad input",
        "traceback": tb_text,
    }
    assert decode_failure(payload) == ("ValueError: bad input", tb_text)
    assert decode_failure(memoryview(payload)) == ("ValueError: bad input", tb_text)


def test_failure_with_an_empty_message_is_just_the_type() -> None:
    payload = encode_failure(KeyboardInterrupt(), "tb")
    assert decode_failure(payload) == ("KeyboardInterrupt", "tb")
    assert exception_summary(RuntimeError()) == "RuntimeError"


def test_failure_uses_the_plain_class_name() -> None:
    class QuotaExceeded(Exception):
        pass

    assert decode_failure(encode_failure(QuotaExceeded("over"), ""))[0] == "QuotaExceeded: over"
    assert exception_summary(SerializationError("x")) == "SerializationError: x"


def test_failure_encoding_survives_broken_str_and_surrogates() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert (
        decode_failure(encode_failure(Unprintable(), "tb"))[0]
        == "Unprintable: <unprintable Unprintable object>"
    )
    error, tb_text = decode_failure(encode_failure(ValueError("bad \udcff byte"), "line \ud800"))
    assert error == "ValueError: bad \\udcff byte"
    assert tb_text == "line \\ud800"


def test_decode_failure_refuses_garbage() -> None:
    with pytest.raises(SerializationError, match="failure"):
        decode_failure(b'{"type": "ValueError"}')


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
def test_json_refuses_a_float_it_would_send_as_null(value):
    # orjson writes inf and nan as null: the task got None, silently.
    with pytest.raises(SerializationError, match=r"float .* has no JSON form"):
        JSON_CODEC.encode_args("t", (1, [{"x": value}]), None)
    with pytest.raises(SerializationError, match=r"result of task 't'"):
        JSON_CODEC.encode_result("t", {"x": value})
    assert JSON_CODEC.encode_args("t", (None, [None]), None) == (b"[null,[null]]", 0)
