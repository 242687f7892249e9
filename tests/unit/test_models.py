"""Priorities, statuses, formats and TaskResult."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastworker.tasks import models
from fastworker.tasks.models import (
    SerializationFormat,
    TaskPriority,
    TaskResult,
    TaskStatus,
    utc_now,
)

HYPOTHESIS = settings(database=None, deadline=None)
NAMES = ("critical", "high", "normal", "low")


def test_priority_values_match_fastworker() -> None:
    assert [(p.name, p.value) for p in TaskPriority] == [
        ("CRITICAL", 0),
        ("HIGH", 1),
        ("NORMAL", 2),
        ("LOW", 3),
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (TaskPriority.LOW, TaskPriority.LOW),
        (0, TaskPriority.CRITICAL),
        (3, TaskPriority.LOW),
        ("high", TaskPriority.HIGH),
        ("HIGH", TaskPriority.HIGH),
        ("  Normal\t\n", TaskPriority.NORMAL),
        ("cRiTiCaL", TaskPriority.CRITICAL),
    ],
)
def test_priority_parse_accepts(raw: object, expected: TaskPriority) -> None:
    assert TaskPriority.parse(raw) is expected


@pytest.mark.parametrize(
    "raw", [True, False, -1, 4, 2.0, "urgent", "", "2", None, b"high", "cr\u0131t\u0131cal", [1]]
)
def test_priority_parse_rejects_with_the_valid_choices(raw: object) -> None:
    with pytest.raises(ValueError) as info:
        TaskPriority.parse(raw)
    message = str(info.value)
    assert repr(raw) in message
    assert "critical, high, normal, low" in message
    assert "0, 1, 2, 3" in message


@HYPOTHESIS
@given(st.integers())
def test_priority_parse_any_int(value: int) -> None:
    if 0 <= value <= 3:
        assert TaskPriority.parse(value) == value
    else:
        with pytest.raises(ValueError, match="critical, high, normal, low"):
            TaskPriority.parse(value)


@HYPOTHESIS
@given(st.text())
def test_priority_parse_any_text(text: str) -> None:
    key = text.strip()
    if key.isascii() and key.lower() in NAMES:
        assert TaskPriority.parse(text).name == key.upper()
    else:
        with pytest.raises(ValueError, match="critical, high, normal, low"):
            TaskPriority.parse(text)


@HYPOTHESIS
@given(
    st.sampled_from(NAMES),
    st.text(alphabet=" \t\n\r", max_size=3),
    st.text(alphabet=" \t\n", max_size=3),
    st.data(),
)
def test_priority_parse_names_in_any_case(
    name: str, before: str, after: str, data: st.DataObject
) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    mixed = "".join(c.upper() if up else c for c, up in zip(name, flips, strict=True))
    assert TaskPriority.parse(before + mixed + after) is TaskPriority[name.upper()]


def test_status_values_and_finality() -> None:
    assert [s.value for s in TaskStatus] == [
        "pending",
        "started",
        "success",
        "failure",
        "cancelled",
    ]
    assert {s for s in TaskStatus if s.is_final} == {
        TaskStatus.SUCCESS,
        TaskStatus.FAILURE,
        TaskStatus.CANCELLED,
    }
    assert TaskStatus("success") is TaskStatus.SUCCESS
    assert TaskStatus.SUCCESS == "success"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("json", SerializationFormat.JSON),
        ("PICKLE", SerializationFormat.PICKLE),
        (" Json ", SerializationFormat.JSON),
        (SerializationFormat.PICKLE, SerializationFormat.PICKLE),
    ],
)
def test_format_parse(raw: object, expected: SerializationFormat) -> None:
    assert SerializationFormat.parse(raw) is expected


@pytest.mark.parametrize("raw", ["xml", "", None, 1])
def test_format_parse_rejects(raw: object) -> None:
    with pytest.raises(ValueError, match=r"expected 'json' or 'pickle'") as info:
        SerializationFormat.parse(raw)
    assert repr(raw) in str(info.value)


def test_task_result_defaults_and_slots() -> None:
    result = TaskResult(task_id="t1", status=TaskStatus.PENDING)
    assert (
        result.result,
        result.error,
        result.started_at,
        result.completed_at,
        result.traceback,
        result.task_name,
    ) == (
        None,
        None,
        None,
        None,
        None,
        None,
    )
    assert [f.name for f in dataclasses.fields(TaskResult)] == [
        "task_id",
        "status",
        "result",
        "error",
        "started_at",
        "completed_at",
        "traceback",
        "task_name",
        "attempts",
    ]
    with pytest.raises(AttributeError):
        result.extra = 1  # type: ignore[attr-defined]


def test_task_result_to_dict_is_json_ready() -> None:
    started = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    result = TaskResult(
        task_id="t1",
        status=TaskStatus.FAILURE,
        error="ValueError: bad input",
        started_at=started,
        completed_at=started + timedelta(seconds=1.5),
        traceback="Traceback (most recent call last):\n...",
        task_name="add",
    )
    doc = result.to_dict()
    assert doc == {
        "task_id": "t1",
        "task_name": "add",
        "status": "failure",
        "result": None,
        "error": "ValueError: bad input",
        "traceback": "Traceback (most recent call last):\n...",
        "started_at": "2024-05-01T12:00:00+00:00",
        "completed_at": "2024-05-01T12:00:01.500000+00:00",
        "attempts": 1,
    }
    assert orjson.loads(orjson.dumps(doc)) == doc


def test_task_result_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="started_at must be timezone-aware"):
        TaskResult(task_id="t", status=TaskStatus.STARTED, started_at=datetime(2024, 1, 1))


def test_utc_now_is_aware_utc() -> None:
    now = utc_now()
    assert now.tzinfo is timezone.utc
    assert TaskResult(task_id="t", status=TaskStatus.SUCCESS, completed_at=now).completed_at is now


def test_module_all() -> None:
    assert sorted(models.__all__) == [
        "SerializationFormat",
        "TaskPriority",
        "TaskResult",
        "TaskStatus",
        "utc_now",
    ]
