"""The error hierarchy and the messages formed in fastworker.errors."""

from __future__ import annotations

import pickle

import pytest

from fastworker import errors
from fastworker.errors import (
    ClientClosedError,
    ConfigError,
    ControlPlaneUnavailable,
    DuplicateTaskError,
    FastWorkerError,
    PayloadTooLargeError,
    SegmentError,
    SerializationError,
    SharedMemoryFullError,
    TaskModuleImportError,
    TaskTimeoutError,
    UnknownTaskError,
    WorkerLostError,
)

BUILTIN_BASES = [
    (UnknownTaskError, LookupError),
    (SerializationError, TypeError),
    (TaskModuleImportError, ImportError),
    (DuplicateTaskError, ValueError),
    (ControlPlaneUnavailable, ConnectionError),
    (TaskTimeoutError, TimeoutError),
    (SegmentError, OSError),
    (SharedMemoryFullError, MemoryError),
    (PayloadTooLargeError, ValueError),
    (ClientClosedError, RuntimeError),
    (ConfigError, ValueError),
]


@pytest.mark.parametrize(("cls", "builtin"), BUILTIN_BASES)
def test_each_error_is_a_fastworker_error_and_its_builtin(cls: type, builtin: type) -> None:
    assert issubclass(cls, FastWorkerError)
    assert issubclass(cls, builtin)


def test_worker_lost_is_only_a_fastworker_error() -> None:
    assert WorkerLostError.__mro__[1:] == (FastWorkerError, Exception, BaseException, object)


def test_all_lists_every_error() -> None:
    exported = {getattr(errors, n) for n in errors.__all__}
    defined = {
        v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, FastWorkerError)
    }
    assert exported == defined


def test_plain_errors_keep_the_raisers_message() -> None:
    exc = ControlPlaneUnavailable("control plane 'default' is not running; start it with ...")
    assert str(exc) == "control plane 'default' is not running; start it with ..."


def test_unknown_task_suggests_close_matches() -> None:
    exc = UnknownTaskError("ad", ["add", "mul", "reports.build"])
    assert exc.task_name == "ad"
    assert exc.suggestions == ["add"]
    message = str(exc)
    assert "Unknown task 'ad'" in message
    assert "Did you mean 'add'?" in message
    assert "task_modules" in message


def test_unknown_task_lists_at_most_ten_registered_names() -> None:
    known = [f"job{i:02d}" for i in range(15)]
    exc = UnknownTaskError("zzz", known)
    assert exc.suggestions == []
    message = str(exc)
    assert "'job09'" in message
    assert "'job10'" not in message
    assert "(and 5 more)" in message


def test_unknown_task_with_an_empty_registry() -> None:
    assert "No tasks are registered" in str(UnknownTaskError("add", []))


def test_unknown_task_with_a_non_str_name() -> None:
    exc = UnknownTaskError(None, ["add"])  # type: ignore[arg-type]
    assert exc.suggestions == []
    assert "Unknown task None" in str(exc)


def test_serialization_error_for_json_suggests_pickle() -> None:
    exc = SerializationError.for_value(
        type_name="set",
        task_name="add",
        direction="argument",
        fmt="json",
        detail="Type is not JSON serializable: set",
    )
    message = str(exc)
    assert "argument of task 'add'" in message
    assert "'set'" in message
    assert 'serialization_format="pickle"' in message
    assert "FASTWORKER_SERIALIZATION_FORMAT=PICKLE" in message
    assert (exc.type_name, exc.task_name, exc.direction) == ("set", "add", "argument")


def test_serialization_error_for_pickle_does_not_suggest_pickle() -> None:
    exc = SerializationError.for_value(
        type_name="function", task_name="run", direction="result", fmt="pickle"
    )
    message = str(exc)
    assert "result of task 'run'" in message
    assert "with pickle" in message
    assert "PICKLE" not in message


def test_task_module_import_error_names_module_and_original() -> None:
    original = ZeroDivisionError("division by zero")
    try:
        try:
            raise original
        except ZeroDivisionError as exc:
            raise TaskModuleImportError("app.tasks", exc) from exc
    except TaskModuleImportError as err:
        caught = err
    assert caught.module_name == "app.tasks"
    assert caught.name == "app.tasks"  # ImportError's own attribute
    assert "'app.tasks'" in str(caught)
    assert "ZeroDivisionError: division by zero" in str(caught)
    assert caught.__cause__ is original


def test_duplicate_task_names_both_functions() -> None:
    exc = DuplicateTaskError("add", "app.math.add", "app.other.add")
    message = str(exc)
    assert "'add'" in message
    assert "app.math.add" in message
    assert "app.other.add" in message
    assert (exc.task_name, exc.existing, exc.new) == ("add", "app.math.add", "app.other.add")


@pytest.mark.parametrize(
    "exc",
    [
        UnknownTaskError("ad", ["add"]),
        DuplicateTaskError("add", "a.add", "b.add"),
        TaskModuleImportError("app.tasks", ValueError("boom")),
        SerializationError.for_value(
            type_name="set", task_name="t", direction="argument", fmt="json"
        ),
        SegmentError("segment /fastworker-default has a foreign magic number"),
        WorkerLostError("worker 1234 died (SIGKILL) while running task 'add'"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling(exc: FastWorkerError) -> None:
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is type(exc)
    assert str(clone) == str(exc)
    assert clone.__dict__ == exc.__dict__


def test_task_module_import_error_keeps_import_name_through_pickling() -> None:
    clone = pickle.loads(pickle.dumps(TaskModuleImportError("app.tasks", ValueError("boom"))))
    assert clone.name == clone.module_name == "app.tasks"
