"""Exceptions raised by fastworker.

Every error derives from :class:`FastWorkerError`, so a caller can catch "anything fastworker
raised" in one clause.  Most subclasses also derive from the matching builtin (``LookupError``,
``TypeError``, ``TimeoutError`` ...) so code written against the standard library's vocabulary
keeps working: ``except TimeoutError`` still catches a task timeout.

The classes are plain: the code that raises one writes its message, because only it knows what
failed and what to do next.  The exceptions whose message is formed here are the ones that several
call sites raise the same way (unknown task, serialization, task-module import, duplicate task).

Errors cross process boundaries (a Dask worker pickles them back to the caller), so
:meth:`FastWorkerError.__reduce__` rebuilds an instance from its message and attributes instead of
calling ``__init__`` again, which would fail for the subclasses whose constructors take parts
rather than a message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ClientClosedError",
    "ConfigError",
    "ControlPlaneUnavailable",
    "DuplicateTaskError",
    "FastWorkerError",
    "PayloadTooLargeError",
    "SegmentError",
    "SerializationError",
    "SharedMemoryFullError",
    "TaskCancelledError",
    "TaskFailedError",
    "TaskModuleImportError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "UnknownTaskError",
    "WorkerLostError",
]

# How many registered names an "unknown task" message lists before it stops.
_MAX_LISTED_NAMES = 10


def _rebuild(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    """Recreate an exception without running ``__init__`` (see the module docstring)."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    for attr, value in state.items():
        setattr(exc, attr, value)
    return exc


class FastWorkerError(Exception):
    """Base class of every error fastworker raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        state = dict(self.__dict__)
        if isinstance(self, ImportError):  # kept in C-level slots, not in __dict__
            state.update(name=self.name, path=self.path)
        return (_rebuild, (type(self), self.args, state))


class UnknownTaskError(FastWorkerError, LookupError):
    """A task name that is not in the registry of the process that looked it up.

    Usually the module defining the task was not imported by the workers: the message points at
    ``task_modules`` and offers close matches to catch typos.
    """

    def __init__(self, name: str, known_names: Iterable[str]) -> None:
        known = sorted(known_names)
        self.task_name = name
        self.suggestions: list[str] = (
            difflib.get_close_matches(name, known, n=3) if isinstance(name, str) else []
        )
        if self.suggestions:
            hint = "Did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        elif known:
            listed = ", ".join(repr(n) for n in known[:_MAX_LISTED_NAMES])
            more = len(known) - _MAX_LISTED_NAMES
            hint = f"Registered tasks: {listed}" + (f" (and {more} more)." if more > 0 else ".")
        else:
            hint = "No tasks are registered."
        super().__init__(
            f"Unknown task {name!r}. {hint} Check that the module defining it is listed in "
            f"task_modules (--task-modules / FASTWORKER_TASK_MODULES) and imports without errors."
        )


class SerializationError(FastWorkerError, TypeError):
    """A value that the chosen serialization format cannot carry.

    Raised in the caller for arguments (nothing is queued) and turned into a task ``FAILURE`` for
    results.  Use :meth:`for_value` to get the standard message.
    """

    task_name: str | None = None
    type_name: str | None = None
    direction: str | None = None

    @classmethod
    def for_value(
        cls,
        *,
        type_name: str,
        task_name: str,
        direction: str,
        fmt: str,
        detail: str = "",
        problem: str = "",
        hint: str = "",
    ) -> SerializationError:
        """Build the error for one value.

        ``direction`` is ``"argument"`` or ``"result"``; ``fmt`` is the format's value
        (``"json"``/``"pickle"``; a ``SerializationFormat`` compares equal to those).
        ``problem`` replaces the default "value of type ... is not supported", ``detail`` is
        the library's own message, and ``hint`` says what to do instead.
        """
        json = fmt == "json"
        problem = problem or f"value of type {type_name!r} is not supported"
        label = "JSON" if json else "pickle"
        message = f"Cannot serialize {direction} of task {task_name!r} with {label}: {problem}"
        if detail:
            message += f" ({detail})"
        if json:
            hint = (
                hint
                or "Convert it to str, int, float, bool, None, list or dict (or a Pydantic model)"
            )
            hint += (
                ', or, if every caller is trusted, use serialization_format="pickle"'
                " (FASTWORKER_SERIALIZATION_FORMAT=PICKLE)"
            )
        message += f". {hint}." if hint else "."
        exc = cls(message)
        exc.type_name = type_name
        exc.task_name = task_name
        exc.direction = direction
        return exc


class TaskModuleImportError(FastWorkerError, ImportError):
    """A module listed in ``task_modules`` raised while being imported.

    Start-up stops here rather than running with a registry that silently lacks the module's
    tasks.  Raise it ``from`` the original exception so its traceback is kept.
    """

    def __init__(self, module_name: str, original: BaseException) -> None:
        self.module_name = module_name
        detail = f"{type(original).__name__}: {original}"
        super().__init__(
            f"Could not import task module {module_name!r}: {detail}. Fix the module (the "
            f"original traceback is chained to this error) or remove it from task_modules; it "
            f"must be importable from the current directory or PYTHONPATH.",
            name=module_name,
        )


class DuplicateTaskError(FastWorkerError, ValueError):
    """Two different functions registered under one task name.

    ``existing`` and ``new`` are the functions' ``module.qualname`` labels.
    """

    def __init__(self, name: str, existing: str, new: str) -> None:
        self.task_name = name
        self.existing = existing
        self.new = new
        super().__init__(
            f"Task name {name!r} is already registered to {existing}; cannot also register {new}. "
            f'Rename one of the functions or give one a unique @task(name="...").'
        )


class ControlPlaneUnavailable(FastWorkerError, ConnectionError):
    """The control plane is not running, or went away while requests were pending."""


class TaskTimeoutError(FastWorkerError, TimeoutError):
    """A task, or a wait for its result, ran past its timeout."""


class TaskCancelledError(FastWorkerError):
    """A task was cancelled while it ran (its worker was killed and replaced)."""


class WorkerLostError(FastWorkerError):
    """The worker process running a task died before reporting a result."""


class SegmentError(FastWorkerError, OSError):
    """A shared segment that is foreign, corrupt or from an incompatible layout version."""


class SharedMemoryFullError(FastWorkerError, MemoryError):
    """Not enough space in ``/dev/shm`` for the shared segment or a payload."""


class PayloadTooLargeError(FastWorkerError, ValueError):
    """A serialized payload larger than the shared arena can ever hold."""


class ClientClosedError(FastWorkerError, RuntimeError):
    """An operation on a client or executor that was already closed."""


class ConfigError(FastWorkerError, ValueError):
    """A configuration value outside its allowed range, or one that could not be parsed."""


class TaskNotFoundError(FastWorkerError, LookupError):
    """A task id this client does not know: never submitted here, or its result expired."""


class TaskFailedError(FastWorkerError):
    """A task ended in FAILURE where the API returns values, not TaskResults (``Client.map``).

    ``.result`` is the task's TaskResult: its ``error`` ("Type: message") and the worker's
    ``traceback``.
    """

    def __init__(self, result: Any) -> None:
        super().__init__(f"task {result.task_id} ({result.task_name}) failed: {result.error}")
        self.result = result
