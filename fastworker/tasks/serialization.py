"""Encoding of task arguments, results and failures: the codec on the hot path.

Every task crosses a codec twice (arguments in, result out), so the success path is one call into
orjson or pickle with module-level constants, no type dispatch in Python and no wrapper objects.
The error path may be slow: when encoding fails, a walk of the value finds the innermost object
that the format refused, so the message can say ``set`` or ``MyThing`` rather than "args".

Wire forms (the engine stores ``payload`` bytes and a small ``flags`` int per task)::

    arguments   flags & FLAG_KWARGS == 0  ->  payload = encode(args)
                flags & FLAG_KWARGS != 0  ->  payload = encode([args, kwargs])
    result      payload = encode(value)
    failure     payload = JSON {"type": ..., "message": ..., "traceback": ...}, whatever the format

Only bit 0 of ``flags`` belongs to the codec; the other bits are ignored here and free for the
engine.  The format itself is not in the flags: a client and a control plane agree on it when
the client attaches, and a JSON codec never calls ``pickle.loads``, whatever bytes it is given.

JSON notes: tuples arrive as lists; besides ``str int float bool None list dict`` orjson also
writes ``datetime``, ``UUID``, enums and dataclasses natively (they arrive as strings and dicts);
objects with ``model_dump()`` (Pydantic v2) or ``dict()`` (v1) are converted through it.
"""

from __future__ import annotations

import abc
import dataclasses
import pickle
from typing import Any

import orjson

from fastworker.errors import SerializationError
from fastworker.tasks.models import SerializationFormat

__all__ = [
    "FLAG_KWARGS",
    "JSON_CODEC",
    "PICKLE_CODEC",
    "Codec",
    "JsonCodec",
    "PickleCodec",
    "decode_failure",
    "encode_failure",
    "exception_summary",
]

FLAG_KWARGS = 1
"""Set in ``flags`` when the payload is ``[args, kwargs]`` rather than ``args``."""

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS
# Bound once: the hot path then pays a global lookup, not a module attribute lookup as well.
_dumps, _loads = orjson.dumps, orjson.loads
_pickle_dumps, _pickle_loads = pickle.dumps, pickle.loads
_PICKLE_PROTOCOL = 5
# How deep the error-path walk descends before blaming the container it is in (cycles end here).
_MAX_WALK_DEPTH = 64
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class Codec(abc.ABC):
    """Encodes and decodes task payloads in one serialization format."""

    format: SerializationFormat

    @staticmethod
    def for_format(fmt: SerializationFormat | str) -> Codec:
        """The shared codec for ``fmt`` (a ``SerializationFormat`` or its name, any case)."""
        return _CODECS[SerializationFormat.parse(fmt)]

    @abc.abstractmethod
    def encode_args(
        self, task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[bytes, int]:
        """Return ``(payload, flags)``; raise ``SerializationError`` naming the bad value."""

    @abc.abstractmethod
    def decode_args(
        self, payload: bytes | memoryview, flags: int
    ) -> tuple[list[Any] | tuple[Any, ...], dict[str, Any]]:
        """Return ``(args, kwargs)`` from ``encode_args`` output; ``kwargs`` is a fresh dict."""

    @abc.abstractmethod
    def encode_result(self, task_name: str, value: Any) -> bytes:
        """Encode a task's return value; raise ``SerializationError`` naming the bad value."""

    @abc.abstractmethod
    def decode_result(self, payload: bytes | memoryview) -> Any:
        """Decode ``encode_result`` output."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} format={self.format.value}>"


# --- JSON -------------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    """orjson's hook for types it does not know: Pydantic models; anything else is refused."""
    model_dump = getattr(obj, "model_dump", None)
    if callable(model_dump):
        return model_dump()
    as_dict = getattr(obj, "dict", None)
    if callable(as_dict):
        return as_dict()
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


class JsonCodec(Codec):
    """JSON through orjson: safe to accept from any caller, limited to JSON-shaped values."""

    format = SerializationFormat.JSON

    def encode_args(
        self, task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[bytes, int]:
        try:
            if kwargs:
                out = _dumps((args, kwargs), default=_json_default, option=_JSON_OPTIONS), FLAG_KWARGS
            else:
                out = _dumps(args, default=_json_default, option=_JSON_OPTIONS), 0
        except orjson.JSONEncodeError as exc:
            raise _json_error(task_name, "argument", (args, kwargs or {}), exc) from exc
        if _N in out[0] and out[0].find(b"null") >= 0:  # only then can an inf or nan have become null
            _refuse_nonfinite(task_name, "argument", (args, kwargs))
        return out

    def decode_args(
        self, payload: bytes | memoryview, flags: int
    ) -> tuple[list[Any] | tuple[Any, ...], dict[str, Any]]:
        try:
            if flags & FLAG_KWARGS:
                args, kwargs = _loads(payload)
                return args, kwargs
            return _loads(payload), {}
        except (ValueError, TypeError) as exc:
            raise _decode_error("arguments", "JSON", exc) from exc

    def encode_result(self, task_name: str, value: Any) -> bytes:
        try:
            out = _dumps(value, default=_json_default, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise _json_error(task_name, "result", value, exc) from exc
        if _N in out and out.find(b"null") >= 0:
            _refuse_nonfinite(task_name, "result", value)
        return out

    def decode_result(self, payload: bytes | memoryview) -> Any:
        try:
            return _loads(payload)
        except (ValueError, TypeError) as exc:
            raise _decode_error("result", "JSON", exc) from exc


# The byte "n" as an int: `int in bytes` is a memchr (~15 ns); `b"null" in bytes` costs ~100 ns
# even when the payload is one digit, and this runs on every task.
_N = ord("n")


def _nonfinite(value: Any, depth: int = 0) -> float | None:
    """An inf or nan inside lists, tuples and dict values: orjson writes those as null."""
    if isinstance(value, float):
        return None if value - value == 0.0 else value
    if depth < _MAX_WALK_DEPTH:
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
        for item in items:
            found = _nonfinite(item, depth + 1)
            if found is not None:
                return found
    return None


def _refuse_nonfinite(task_name: str, direction: str, value: Any) -> None:
    """JSON has no inf or nan: orjson would send null in their place, silently."""
    found = _nonfinite(value)
    if found is not None:
        raise SerializationError.for_value(
            type_name="float",
            task_name=task_name,
            direction=direction,
            fmt=SerializationFormat.JSON.value,
            problem=f"float {found!r} has no JSON form (it would arrive as None)",
            hint="Send it as a str",
        )


def _json_ok(value: Any) -> bool:
    try:
        orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError:
        return False
    return True


def _json_culprit(value: Any, depth: int = 0) -> tuple[Any, bool]:
    """Find the innermost value orjson refuses inside ``value`` (which it refuses).

    Returns ``(culprit, is_key)``; ``is_key`` when the culprit is a dict key (e.g. a tuple).
    """
    if depth < _MAX_WALK_DEPTH:
        if isinstance(value, dict):
            for key, item in value.items():
                if not _json_ok({key: None}):
                    return key, True
                if not _json_ok(item):
                    return _json_culprit(item, depth + 1)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if not _json_ok(item):
                    return _json_culprit(item, depth + 1)
        else:
            converted = _json_converted(value)
            if converted is not _NOT_CONVERTED and not _json_ok(converted):
                return _json_culprit(converted, depth + 1)
    return value, False


_NOT_CONVERTED = object()


def _json_converted(value: Any) -> Any:
    """What orjson would serialize in place of ``value``, for the walk to look inside."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    try:
        return _json_default(value)
    except Exception:  # the hook refused it, or model_dump()/dict() itself raised
        return _NOT_CONVERTED


def _json_error(task_name: str, direction: str, value: Any, exc: Exception) -> SerializationError:
    culprit, is_key = _json_culprit(value)
    type_name = _type_name(culprit)
    problem = hint = ""
    if is_key:
        problem = f"value of type {type_name!r} cannot be a dict key"
        hint = "Use str, int, float, bool, None, datetime, enum or UUID keys"
    elif isinstance(culprit, int) and not _INT64_MIN <= culprit <= _UINT64_MAX:
        # str() of a huge int is slow and, past 4300 digits, refused by Python itself.
        shown = str(culprit) if culprit.bit_length() <= 256 else f"of {culprit.bit_length()} bits"
        problem = f"int {shown} does not fit in the 64-bit integers JSON carries"
        hint = "Send it as a str"
    return SerializationError.for_value(
        type_name=type_name,
        task_name=task_name,
        direction=direction,
        fmt=SerializationFormat.JSON.value,
        detail=str(exc),
        problem=problem,
        hint=hint,
    )


# --- pickle -----------------------------------------------------------------------------------


class PickleCodec(Codec):
    """Pickle protocol 5: any picklable value, for trusted callers only (unpickling runs code).

    Encoding catches every ``Exception``: lambdas and local functions raise ``PicklingError`` or
    ``AttributeError``, locks and generators ``TypeError``, deep structures ``RecursionError``,
    and a user's ``__reduce__`` anything at all.  Each means "this value cannot be sent", and
    the original stays chained to the ``SerializationError``.
    """

    format = SerializationFormat.PICKLE

    def encode_args(
        self, task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[bytes, int]:
        try:
            if kwargs:
                return _pickle_dumps((args, kwargs), _PICKLE_PROTOCOL), FLAG_KWARGS
            return _pickle_dumps(args, _PICKLE_PROTOCOL), 0
        except Exception as exc:
            raise _pickle_error(task_name, "argument", (args, kwargs or {}), exc) from exc

    def decode_args(
        self, payload: bytes | memoryview, flags: int
    ) -> tuple[list[Any] | tuple[Any, ...], dict[str, Any]]:
        try:
            if flags & FLAG_KWARGS:
                args, kwargs = _pickle_loads(payload)
                return args, kwargs
            return _pickle_loads(payload), {}
        except Exception as exc:  # unpickling can raise anything a __reduce__ target raises
            raise _decode_error("arguments", "pickle", exc) from exc

    def encode_result(self, task_name: str, value: Any) -> bytes:
        try:
            return _pickle_dumps(value, _PICKLE_PROTOCOL)
        except Exception as exc:
            raise _pickle_error(task_name, "result", value, exc) from exc

    def decode_result(self, payload: bytes | memoryview) -> Any:
        try:
            return _pickle_loads(payload)
        except Exception as exc:
            raise _decode_error("result", "pickle", exc) from exc


def _pickle_ok(value: Any) -> bool:
    try:
        pickle.dumps(value, _PICKLE_PROTOCOL)
    except Exception:
        return False
    return True


def _pickle_culprit(value: Any, depth: int = 0) -> Any:
    """Find the innermost value pickle refuses inside ``value`` (which it refuses)."""
    if depth < _MAX_WALK_DEPTH:
        if isinstance(value, dict):
            children: Any = (x for pair in value.items() for x in pair)
        elif isinstance(value, (list, tuple, set, frozenset)):
            children = value
        else:
            state = getattr(value, "__dict__", None)
            children = state.values() if isinstance(state, dict) else ()
        for child in children:
            if not _pickle_ok(child):
                return _pickle_culprit(child, depth + 1)
    return value


def _pickle_error(task_name: str, direction: str, value: Any, exc: Exception) -> SerializationError:
    culprit = _pickle_culprit(value)
    return SerializationError.for_value(
        type_name=_type_name(culprit),
        task_name=task_name,
        direction=direction,
        fmt=SerializationFormat.PICKLE.value,
        detail=f"{type(exc).__name__}: {exc}",
        hint="Define functions and classes at module top level, and pass data rather than "
        "open resources (locks, files, sockets, generators)",
    )


# --- shared helpers ---------------------------------------------------------------------------


def _type_name(obj: Any) -> str:
    """``set`` for builtins, ``module.QualName`` otherwise, so a user's class is findable."""
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _decode_error(what: str, fmt_label: str, exc: BaseException) -> SerializationError:
    message = (
        f"Cannot decode task {what} ({fmt_label}): {type(exc).__name__}: {exc}. "
        f"Both sides must use the same serialization_format"
    )
    if fmt_label == "pickle":
        message += ", and the decoding process must be able to import every class and function"
        message += " the payload refers to"
    return SerializationError(message + ".")


JSON_CODEC = JsonCodec()
PICKLE_CODEC = PickleCodec()
_CODECS: dict[SerializationFormat, Codec] = {
    SerializationFormat.JSON: JSON_CODEC,
    SerializationFormat.PICKLE: PICKLE_CODEC,
}


# --- failures ---------------------------------------------------------------------------------


def exception_summary(exc: BaseException) -> str:
    """``"ValueError: bad input"``, or just ``"ValueError"`` when the message is empty."""
    message = _safe_str(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def encode_failure(exc: BaseException, tb_text: str) -> bytes:
    """Describe a task's exception as JSON, whatever the task's format.

    JSON always, because a failure must reach the caller even when the exception object itself
    would not pickle, and the result must be readable by a client of either format.  This never
    raises: text that is not valid UTF-8 (lone surrogates) is escaped rather than refused.
    """
    doc = {"type": type(exc).__name__, "message": _safe_str(exc), "traceback": tb_text}
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError:
        return orjson.dumps({k: _utf8_clean(str(v)) for k, v in doc.items()})


def decode_failure(payload: bytes | memoryview) -> tuple[str, str]:
    """Return ``(error, traceback)``, error being ``"Type: message"`` (or ``"Type"``)."""
    try:
        doc = orjson.loads(payload)
        name, message, tb_text = doc["type"], doc["message"], doc["traceback"]
    except (ValueError, TypeError, KeyError) as exc:
        raise _decode_error("failure", "JSON", exc) from exc
    return (f"{name}: {message}" if message else name), tb_text


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not hide the original failure
        return f"<unprintable {type(exc).__name__} object>"


def _utf8_clean(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
