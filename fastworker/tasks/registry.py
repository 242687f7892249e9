"""The ``@task`` decorator and the process-wide registry it fills.

A task is identified across processes by its *name* only: the client sends the name, the worker
looks it up in its own registry.  Both sides therefore have to import the same modules, which is
what ``task_modules`` / :func:`load_task_modules` are for; an unknown name fails with a message
that points there.

Re-running a module (``importlib.reload``, a retried import after a failure, a script executed
twice) creates new function objects with the same ``module.qualname``; that is a redefinition, and
the newer function replaces the older one.  Two functions from different places under one name
are a genuine clash and raise :class:`~fastworker.errors.DuplicateTaskError` naming both.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from fastworker.tasks.policy import DEFAULT_POLICY, TaskPolicy, make_policy
from fastworker.errors import (
    ConfigError,
    DuplicateTaskError,
    TaskModuleImportError,
    UnknownTaskError,
)

__all__ = [
    "TaskDefinition",
    "TaskRegistry",
    "get_task",
    "is_module_name",
    "load_task_modules",
    "registry",
    "split_module_names",
    "task",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """What the registry knows about one task."""

    name: str
    func: Callable[..., Any]
    is_async: bool
    module: str
    qualname: str
    policy: TaskPolicy = DEFAULT_POLICY

    @property
    def signature(self) -> str:
        """The function's signature as text, e.g. ``"(x: int, y: int) -> int"``."""
        try:
            return str(inspect.signature(self.func))
        except (TypeError, ValueError):  # some builtins and C callables have none
            return "(...)"

    @property
    def label(self) -> str:
        """``module.qualname``, how errors name the function."""
        return f"{self.module}.{self.qualname}"


class TaskRegistry:
    """Task names to definitions, for one process.

    Lookups (``get``) take no lock: they happen on every task, and a dict read is atomic.
    Registration does, because two threads importing task modules must not both pass the
    duplicate check for one name.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, TaskDefinition] = {}
        self._lock = threading.Lock()

    def register(self, defn: TaskDefinition) -> TaskDefinition:
        """Add ``defn`` and return the definition now in force under its name.

        The same function again is a no-op; a function with the same ``module.qualname``
        replaces the old one (a re-executed module); any other function under a taken name
        raises ``DuplicateTaskError``.
        """
        with self._lock:
            current = self._tasks.get(defn.name)
            if current is not None:
                if current.func is defn.func:
                    return current
                if (current.module, current.qualname) != (defn.module, defn.qualname):
                    raise DuplicateTaskError(defn.name, current.label, defn.label)
            self._tasks[defn.name] = defn
            return defn

    def get(self, name: str) -> TaskDefinition:
        """The definition registered under ``name``; ``UnknownTaskError`` if there is none."""
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTaskError(name, self._tasks) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._tasks)

    def snapshot(self) -> tuple[str, ...]:
        """Registered names, sorted, as an immutable value to compare between processes."""
        return tuple(sorted(self._tasks))

    def _discard(self, defn: TaskDefinition) -> None:
        """Remove ``defn`` if it is still the one registered under its name."""
        with self._lock:
            if self._tasks.get(defn.name) is defn:
                del self._tasks[defn.name]

    def clear(self) -> None:
        """Forget every task.  For tests; a running worker never needs this."""
        with self._lock:
            self._tasks.clear()

    def _snapshot_state(self) -> dict[str, TaskDefinition]:
        """A copy of the internal mapping, for tests to restore with :meth:`_restore_state`."""
        with self._lock:
            return dict(self._tasks)

    def _restore_state(self, state: dict[str, TaskDefinition]) -> None:
        with self._lock:
            self._tasks.clear()
            self._tasks.update(state)


registry = TaskRegistry()


def get_task(name: str) -> TaskDefinition:
    """Look ``name`` up in the process-wide registry."""
    return registry.get(name)


@overload
def task(func: F, /) -> F: ...


@overload
def task(*, name: str | None = None, **options: Any) -> Callable[[F], F]: ...


def task(func: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any) -> Any:
    """Register a function (sync or ``async def``) as a task: ``@task`` or ``@task(name=..., ...)``.

    Options (checked now, see ``fastworker.tasks.policy``): ``retries``, ``retry_delay``,
    ``retry_backoff``, ``retry_backoff_max``, ``timeout``, ``repeat_interval``, ``cron``,
    ``repeat_count``, ``repeat_until``, ``before``, ``after``.  The function is returned
    unchanged, so calling it still runs it locally; its definition is attached as
    ``func.__fastworker_task__``.
    """
    if isinstance(func, str):
        raise TypeError(
            f"@task takes the name as a keyword: use @task(name={func!r}), not @task({func!r})."
        )
    try:
        policy = make_policy(**options) if options else DEFAULT_POLICY
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        unknown = ", ".join(sorted(set(options) - set(make_policy.__kwdefaults__ or ())))
        raise TypeError(
            f"@task got unknown option(s) {unknown}; it takes name, "
            + ", ".join(sorted(make_policy.__kwdefaults__ or ()))
        ) from None
    if func is None:
        return lambda f: _register_function(f, name, policy)
    return _register_function(func, name, policy)


def _register_function(func: Callable[..., Any], name: str | None, policy: TaskPolicy = DEFAULT_POLICY) -> Any:
    if not callable(func):
        raise TypeError(f"@task can only decorate a function, not {type(func).__name__} {func!r}.")
    task_name = getattr(func, "__name__", None) if name is None else name
    if not isinstance(task_name, str):
        raise TypeError(
            f"Task name must be a str, got {type(task_name).__name__} {task_name!r}"
            + ("; pass @task(name=...) for callables without __name__." if name is None else ".")
        )
    if not task_name.strip() or task_name != task_name.strip():
        raise ValueError(
            f"Task name {task_name!r} is not usable: it must be non-empty, without leading "
            f"or trailing whitespace."
        )
    defn = TaskDefinition(
        name=task_name,
        func=func,
        is_async=inspect.iscoroutinefunction(func),
        module=getattr(func, "__module__", None) or "<unknown>",
        qualname=getattr(func, "__qualname__", None) or task_name,
        policy=policy,
    )
    registered = registry.register(defn)
    try:
        func.__fastworker_task__ = registered  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # builtins and bound methods take no attributes
        if registered is defn:
            registry._discard(defn)
        raise TypeError(
            f"@task cannot mark {func!r} (it takes no attributes); "
            f"wrap it in a def and decorate that."
        ) from None
    return func


def is_module_name(name: str) -> bool:
    """True for an absolute dotted module name such as ``"app.tasks"``."""
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def split_module_names(modules: str | Iterable[str] | None) -> tuple[str, ...]:
    """Turn ``"a, b.c"``, ``["a,b", "c"]`` or None into ``("a", "b", "c")``.

    Whitespace is stripped, empty items dropped, and repeats removed (first one kept).  Names
    are not checked here; see :func:`is_module_name`.
    """
    if modules is None:
        return ()
    items = [modules] if isinstance(modules, str) else modules
    names: dict[str, None] = {}
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(
                f"task_modules must be a comma-separated str or a list of str, "
                f"got an item of type {type(item).__name__}: {item!r}."
            )
        for part in item.split(","):
            part = part.strip()
            if part:
                names[part] = None
    return tuple(names)


def load_task_modules(modules: str | Iterable[str] | None) -> list[str]:
    """Import the task modules so their ``@task`` functions register; return the names imported.

    The current directory is put on ``sys.path`` (as FastWorker did) so ``--task-modules tasks``
    finds ``./tasks.py`` when started from a console script.  Any failure stops here with the
    module's name and the original traceback chained, never a silently incomplete registry.
    """
    names = split_module_names(modules)
    for name in names:
        if not is_module_name(name):
            hint = ""
            if name.endswith(".py") or "/" in name or os.sep in name:
                hint = (
                    " Give the module's import name, not a file path"
                    " (e.g. 'app.tasks' for app/tasks.py)."
                )
            raise ConfigError(
                f"Invalid task module name {name!r} in task_modules: expected a dotted Python "
                f"module name such as 'app.tasks'.{hint}"
            )
    if not names:
        return []
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    # Finders cache directory listings; a module written since the last import would be missed.
    importlib.invalidate_caches()
    for name in names:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:  # SystemExit: a module that runs a CLI on import
            raise TaskModuleImportError(name, exc) from exc
    return list(names)
