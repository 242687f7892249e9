"""Config: precedence explicit > FASTWORKER_* environment > default, parsing and validation."""

from __future__ import annotations

import os
from typing import Any

import pytest

from fastworker.config import Config, default_workers, parse_size
from fastworker.errors import ConfigError
from fastworker.tasks.models import SerializationFormat

MiB = 1 << 20
OPTIONS = [
    "workers", "task_modules", "name", "serialization_format", "timeout", "result_cache_size",
    "result_cache_ttl", "slots", "arena_size", "log_level",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the FASTWORKER_* variables they set themselves."""
    for option in OPTIONS:
        monkeypatch.delenv(Config.env_var(option), raising=False)


def test_defaults() -> None:
    config = Config.resolve()
    assert config == Config(
        workers=len(os.sched_getaffinity(0)),
        task_modules=(),
        name="default",
        serialization_format=SerializationFormat.JSON,
        timeout=None,
        result_cache_size=10_000,
        result_cache_ttl=3600.0,
        slots=4096,
        arena_size=128 * MiB,
        log_level="WARNING",
    )
    assert Config() == config


def test_default_workers_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(1000)))
    assert default_workers() == 256


def test_env_var_names() -> None:
    assert [Config.env_var(o) for o in ("workers", "serialization_format")] == [
        "FASTWORKER_WORKERS", "FASTWORKER_SERIALIZATION_FORMAT",
    ]  # fmt: skip


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "FASTWORKER_WORKERS": "3",
        "FASTWORKER_TASK_MODULES": "app.tasks, app.more",
        "FASTWORKER_NAME": "svc-1",
        "FASTWORKER_SERIALIZATION_FORMAT": "PICKLE",
        "FASTWORKER_TIMEOUT": "2.5",
        "FASTWORKER_RESULT_CACHE_SIZE": "0",
        "FASTWORKER_RESULT_CACHE_TTL": "60",
        "FASTWORKER_SLOTS": "1024",
        "FASTWORKER_ARENA_SIZE": "64MiB",
        "FASTWORKER_LOG_LEVEL": "debug",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = Config.resolve()
    assert config == Config(
        workers=3,
        task_modules=("app.tasks", "app.more"),
        name="svc-1",
        serialization_format=SerializationFormat.PICKLE,
        timeout=2.5,
        result_cache_size=0,
        result_cache_ttl=60.0,
        slots=1024,
        arena_size=64 * MiB,
        log_level="DEBUG",
    )


def test_explicit_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_WORKERS", "3")
    monkeypatch.setenv("FASTWORKER_SERIALIZATION_FORMAT", "pickle")
    monkeypatch.setenv("FASTWORKER_ARENA_SIZE", "garbage")  # never read: given explicitly
    config = Config.resolve(workers=5, serialization_format="json", arena_size="1GiB")
    assert (config.workers, config.serialization_format, config.arena_size) == (
        5,
        SerializationFormat.JSON,
        1 << 30,
    )


def test_explicit_none_means_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_WORKERS", "7")
    config = Config.resolve(workers=None, timeout=None, task_modules=None)
    assert (config.workers, config.timeout, config.task_modules) == (7, None, ())


def test_empty_environment_value_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_NAME", "")
    assert Config.resolve().name == "default"


def test_task_modules_forms() -> None:
    assert Config.resolve(task_modules=["a,b", " c"]).task_modules == ("a", "b", "c")
    assert Config.resolve(task_modules=("x.y",)).task_modules == ("x.y",)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config.resolve().workers = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (4096, 4096), ("4096", 4096), ("512k", 512 * 1024), ("64MiB", 64 * MiB),
        ("64 mib", 64 * MiB), ("1GiB", 1 << 30), ("1g", 1 << 30), ("2MB", 2_000_000),
        ("1.5GiB", 3 << 29), (".5k", 512), ("10b", 10),
    ],
)  # fmt: skip
def test_parse_size(raw: Any, expected: int) -> None:
    assert parse_size(raw) == expected


@pytest.mark.parametrize("raw", ["", "MiB", "12q", "-1MiB", "1 2", "1e6", True, 1.5, None])
def test_parse_size_rejects(raw: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(raw)


def _error(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        Config.resolve(**kwargs)
    assert isinstance(info.value, ValueError)
    return str(info.value)


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("workers", 0, "an integer from 1 to 256"),
        ("workers", 257, "an integer from 1 to 256"),
        ("workers", True, "an integer from 1 to 256"),
        ("slots", 15, "an integer from 16 to 1_048_576"),
        ("slots", 1_048_577, "an integer from 16 to 1_048_576"),
        ("arena_size", MiB - 1, "at least 1 MiB"),
        ("arena_size", "512k", "at least 1 MiB"),
        ("name", "has space", "1 to 64 characters"),
        ("name", "x" * 65, "1 to 64 characters"),
        ("name", "", "1 to 64 characters"),
        ("result_cache_size", -1, "an integer >= 0"),
        ("result_cache_ttl", 0, "seconds > 0"),
        ("result_cache_ttl", float("inf"), "seconds > 0"),
        ("timeout", 0, "seconds > 0, or unset"),
        ("timeout", -1.5, "seconds > 0, or unset"),
        ("timeout", "nan", "seconds > 0, or unset"),
        ("serialization_format", "xml", "'json' or 'pickle'"),
        ("log_level", "loud", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("task_modules", "app-tasks", "dotted module names"),
    ],
)
def test_invalid_explicit_values(option: str, value: Any, allowed: str) -> None:
    message = _error(**{option: value})
    assert message.startswith(f"Invalid {option}=")
    assert "(from argument)" in message
    assert allowed in message


def test_slots_need_not_be_a_power_of_two() -> None:
    assert Config.resolve(slots=1000).slots == 1000


@pytest.mark.parametrize(
    ("option", "raw", "allowed"),
    [
        ("workers", "abc", "an integer from 1 to 256"),
        ("workers", "0", "an integer from 1 to 256"),
        ("slots", "4.5", "an integer from 16"),
        ("timeout", "soon", "seconds > 0"),
        ("arena_size", "lots", "at least 1 MiB"),
        ("serialization_format", "yaml", "'json' or 'pickle'"),
        ("result_cache_ttl", "-5", "seconds > 0"),
    ],
)
def test_invalid_environment_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, option: str, raw: str, allowed: str
) -> None:
    variable = Config.env_var(option)
    monkeypatch.setenv(variable, raw)
    message = _error()
    assert f"Invalid {option}={raw!r}" in message
    assert f"(from {variable})" in message
    assert allowed in message


def test_parse_failures_keep_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTWORKER_WORKERS", "abc")
    with pytest.raises(ConfigError) as info:
        Config.resolve()
    assert isinstance(info.value.__cause__, ValueError)
    assert "invalid literal" in str(info.value)


def test_unknown_options_are_a_type_error_with_a_suggestion() -> None:
    with pytest.raises(TypeError, match="did you mean 'workers'"):
        Config.resolve(wrkers=2)


def test_validate_on_a_directly_built_config() -> None:
    assert Config(workers=4).validate().workers == 4
    with pytest.raises(ConfigError, match=r"Invalid workers=0 \(from default\)"):
        Config(workers=0).validate()
    with pytest.raises(ConfigError, match=r"Invalid arena_size='64MiB'"):
        Config(arena_size="64MiB").validate()  # type: ignore[arg-type]  # unparsed
