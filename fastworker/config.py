"""Configuration of a client or control plane, resolved from arguments, environment and defaults.

Each option ``foo`` is taken from, in order: an explicit argument to :meth:`Config.resolve`
(``None`` meaning "not given", so click options can pass straight through), the environment
variable ``FASTWORKER_FOO`` (an empty value counts as unset), then the default.  Values from
either source may be strings and are parsed to the option's type; :meth:`Config.validate` then
checks ranges, and every error names the option, the bad value, where it came from and what
would be accepted.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fastworker.errors import ConfigError
from fastworker.tasks.models import SerializationFormat
from fastworker.tasks.registry import is_module_name, split_module_names

__all__ = ["ENV_PREFIX", "Config", "default_workers", "parse_size"]

ENV_PREFIX = "FASTWORKER_"

MIN_WORKERS, MAX_WORKERS = 1, 256
MIN_SLOTS, MAX_SLOTS = 16, 1_048_576
MIN_ARENA_SIZE = 1 << 20
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Size suffixes, case-insensitive.  Bare and "iB" suffixes are binary (k = KiB = 1024), as in
# Docker and systemd; "KB"/"MB"/... are the SI powers of 1000 their names promise.
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}  # fmt: skip
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")


def default_workers() -> int:
    """The number of cores this process may run on (its affinity mask, not the machine's
    count, so a container limited by cpuset gets the right number), capped at the maximum."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return max(MIN_WORKERS, min(usable, MAX_WORKERS))


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string such as ``"64MiB"``, ``"1GiB"``, ``"512k"``, ``"1.5g"``.

    Fractions are allowed and the result is rounded down to whole bytes.
    """
    if isinstance(value, bool):
        raise ValueError("a size cannot be a bool")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an int or a str, got {type(value).__name__}")
    match = _SIZE_RE.fullmatch(value)
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError("not a number with an optional unit")
    return int(Decimal(match.group(1)) * unit)  # Decimal: "1.1GiB" exactly, no float rounding


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a bool is not a count")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip(), 10)
    raise ValueError(f"expected an int, got {type(value).__name__}")


def _parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a bool is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"expected a number, got {type(value).__name__}")


def _parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a str, got {type(value).__name__}")
    return value.strip()


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _parse_str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a yes/no value")


def _parse_log_level(value: Any) -> str:
    return _parse_str(value).upper()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_seconds(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@dataclass(frozen=True)
class _Rule:
    parse: Callable[[Any], Any]
    check: Callable[[Any], bool]
    allowed: str


_RULES: dict[str, _Rule] = {
    "workers": _Rule(
        _parse_int,
        lambda v: _is_int(v) and MIN_WORKERS <= v <= MAX_WORKERS,
        f"an integer from {MIN_WORKERS} to {MAX_WORKERS}",
    ),
    "task_modules": _Rule(
        split_module_names,
        lambda v: isinstance(v, tuple) and all(isinstance(m, str) and is_module_name(m) for m in v),
        "comma-separated dotted module names such as 'app.tasks,app.more'",
    ),
    "name": _Rule(
        _parse_str,
        lambda v: isinstance(v, str) and _NAME_RE.fullmatch(v) is not None,
        "1 to 64 characters from A-Z a-z 0-9 _ . -",
    ),
    "serialization_format": _Rule(
        SerializationFormat.parse,
        lambda v: isinstance(v, SerializationFormat),
        "'json' or 'pickle'",
    ),
    "timeout": _Rule(
        _parse_float,
        lambda v: v is None or _is_positive_seconds(v),
        "a finite number of seconds > 0, or unset for no timeout",
    ),
    "result_cache_size": _Rule(_parse_int, lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "result_cache_ttl": _Rule(_parse_float, _is_positive_seconds, "a finite number of seconds > 0"),
    "slots": _Rule(
        _parse_int,
        lambda v: _is_int(v) and MIN_SLOTS <= v <= MAX_SLOTS,
        f"an integer from {MIN_SLOTS} to {MAX_SLOTS:_}",
    ),
    "arena_size": _Rule(
        parse_size,
        lambda v: _is_int(v) and v >= MIN_ARENA_SIZE,
        "at least 1 MiB, as bytes or with a unit such as '64MiB', '1GiB', '512k'",
    ),
    "spin_us": _Rule(
        _parse_int,
        lambda v: _is_int(v) and 0 <= v <= 1000,
        "an integer from 0 (never spin) to 1000 microseconds",
    ),
    "log_level": _Rule(
        _parse_log_level, lambda v: v in _LOG_LEVELS, "one of " + ", ".join(_LOG_LEVELS)
    ),
    "max_tasks_per_child": _Rule(
        _parse_int, lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1, or unset for no limit"
    ),
    "max_memory_per_child": _Rule(
        parse_size,
        lambda v: v is None or (_is_int(v) and v >= MIN_ARENA_SIZE),
        "at least 1 MiB of RSS, as bytes or with a unit such as '512MiB', '2GiB'; or unset for no limit",
    ),
    "eager": _Rule(
        _parse_bool, lambda v: isinstance(v, bool), "true or false (1/0, yes/no)"
    ),
}


@dataclass(frozen=True)
class Config:
    """Settings shared by the client and the control plane.

    Build it with :meth:`resolve`.  Constructing it directly skips parsing and validation; call
    :meth:`validate` afterwards if the values did not come from trusted code.
    """

    workers: int = field(default_factory=default_workers)
    task_modules: tuple[str, ...] = ()
    name: str = "default"
    serialization_format: SerializationFormat = SerializationFormat.JSON
    timeout: float | None = None
    result_cache_size: int = 10_000
    result_cache_ttl: float = 3600.0
    slots: int = 4096
    arena_size: int = 128 << 20
    # How long an idle worker may spin for new work before it sleeps: one
    # worker at a time, only with a core to spare (see native/ring.c).
    spin_us: int = 50
    log_level: str = "WARNING"
    # Replace a worker after this many tasks / once its RSS passes this many bytes.
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    # Run tasks inline in the caller (for users' tests): no workers, no segment.
    eager: bool = False

    @staticmethod
    def env_var(option: str) -> str:
        """The environment variable read for ``option``: ``FASTWORKER_<OPTION>``."""
        return ENV_PREFIX + option.upper()

    @classmethod
    def resolve(cls, **explicit: Any) -> Config:
        """Explicit values (None = not given) over ``FASTWORKER_*`` variables over defaults."""
        unknown = sorted(set(explicit) - set(_RULES))
        if unknown:
            close = difflib.get_close_matches(unknown[0], _RULES, n=1)
            raise TypeError(
                f"Config.resolve() got unknown option(s) {', '.join(map(repr, unknown))}"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f" Options: {', '.join(_RULES)}."
            )
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for option, rule in _RULES.items():
            raw = explicit.get(option)
            source = "argument"
            if raw is None:
                source = cls.env_var(option)
                raw = os.environ.get(source) or None
            if raw is None:
                continue
            sources[option] = source
            try:
                value = rule.parse(raw)
            except (ValueError, TypeError, ConfigError) as exc:
                raise _invalid(option, raw, source, rule.allowed, str(exc)) from exc
            if not rule.check(value):  # checked here too, to report the value as it was given
                raise _invalid(option, raw, source, rule.allowed)
            values[option] = value
        return cls(**values).validate(sources)

    def validate(self, sources: Mapping[str, str] | None = None) -> Config:
        """Check every option's range; return ``self`` so it can end an expression.

        ``sources`` maps an option to where its value came from (``"argument"`` or an
        environment variable's name) for the error message; unlisted options are reported as
        defaults.
        """
        sources = sources or {}
        for option, rule in _RULES.items():
            value = getattr(self, option)
            if not rule.check(value):
                raise _invalid(option, value, sources.get(option, "default"), rule.allowed)
        return self


def _invalid(option: str, value: Any, source: str, allowed: str, detail: str = "") -> ConfigError:
    detail = f" ({detail})" if detail else ""
    return ConfigError(f"Invalid {option}={value!r} (from {source}){detail}: expected {allowed}.")
