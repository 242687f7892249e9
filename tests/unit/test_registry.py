"""The @task decorator, the registry and loading task modules."""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fastworker.tasks as tasks_pkg
from fastworker.errors import (
    ConfigError,
    DuplicateTaskError,
    TaskModuleImportError,
    UnknownTaskError,
)
from fastworker.tasks.registry import (
    TaskDefinition,
    TaskRegistry,
    get_task,
    is_module_name,
    load_task_modules,
    registry,
    split_module_names,
    task,
)

# --- the decorator --------------------------------------------------------------------------


def test_bare_decorator_registers_and_returns_the_function() -> None:
    def add(x: int, y: int = 2) -> int:
        return x + y

    decorated = task(add)
    assert decorated is add
    assert add(1) == 3  # still runs locally
    defn = get_task("add")
    assert add.__fastworker_task__ is defn  # type: ignore[attr-defined]
    assert defn == TaskDefinition(
        name="add", func=add, is_async=False, module=__name__, qualname=add.__qualname__
    )
    assert defn.signature == "(x: 'int', y: 'int' = 2) -> 'int'"  # annotations are strings here
    assert defn.label == f"{__name__}.{add.__qualname__}"


def test_decorator_with_name_and_with_empty_parentheses() -> None:
    @task(name="reports.build")
    def build(report_id: str) -> dict[str, str]:
        return {"id": report_id}

    @task()
    def plain() -> None:
        pass

    assert get_task("reports.build").func is build
    assert "build" not in registry
    assert get_task("plain").func is plain
    assert build("r1") == {"id": "r1"}


def test_async_functions_are_detected() -> None:
    @task
    async def fetch(url: str) -> str:
        return url.upper()

    @task
    def sync() -> None:
        pass

    assert get_task("fetch").is_async is True
    assert get_task("sync").is_async is False
    assert asyncio.run(fetch("x")) == "X"  # still an ordinary coroutine function


def test_definition_is_frozen() -> None:
    @task
    def f() -> None:
        pass

    with pytest.raises(AttributeError):
        get_task("f").name = "g"  # type: ignore[misc]


def test_an_unknown_option_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\) retry.*it takes name, after, before"):
        task(name="x", retry=3)  # type: ignore[call-overload]


def test_name_passed_positionally_is_explained() -> None:
    with pytest.raises(TypeError, match=r"@task\(name='x'\)"):
        task("x")  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("name", "error"), [("", ValueError), ("   ", ValueError), (" add", ValueError), (3, TypeError)]
)
def test_task_names_must_be_non_empty_str(name: Any, error: type[Exception]) -> None:
    def f() -> None:
        pass

    with pytest.raises(error, match="Task name"):
        task(name=name)(f)
    assert "f" not in registry


def test_callables_without_attributes_are_refused_and_not_registered() -> None:
    with pytest.raises(TypeError, match="wrap it in a def"):
        task(name="length")(len)
    assert "length" not in registry


def test_non_callables_are_refused() -> None:
    with pytest.raises(TypeError, match="can only decorate a function"):
        task(42)  # type: ignore[call-overload]


# --- duplicates and re-registration ------------------------------------------------------------


def test_registering_the_same_function_twice_is_a_no_op() -> None:
    def add() -> int:
        return 1

    first = task(add).__fastworker_task__  # type: ignore[attr-defined]
    task(add)
    registry.register(first)
    assert get_task("add") is first
    assert registry.names().count("add") == 1


def _make_version(value: int) -> Callable[[], int]:
    """Same module and qualname on every call: what re-executing a module produces."""

    def job() -> int:
        return value

    return job


def test_a_redefinition_from_the_same_place_replaces_the_old_one() -> None:
    old, new = _make_version(1), _make_version(2)
    task(old)
    task(new)
    assert get_task("job").func is new


def test_a_different_function_under_a_taken_name_names_both() -> None:
    def first() -> None:
        pass

    def second() -> None:
        pass

    task(name="shared")(first)
    with pytest.raises(DuplicateTaskError) as info:
        task(name="shared")(second)
    message = str(info.value)
    assert "'shared'" in message
    assert f"{__name__}.{first.__qualname__}" in message
    assert f"{__name__}.{second.__qualname__}" in message
    assert get_task("shared").func is first
    assert not hasattr(second, "__fastworker_task__")


# --- the registry ------------------------------------------------------------------------------


def _definition(name: str) -> TaskDefinition:
    def func() -> None:
        pass

    return TaskDefinition(name=name, func=func, is_async=False, module="m", qualname=f"func_{name}")


def test_registry_lookup_and_listing() -> None:
    reg = TaskRegistry()
    for name in ("mul", "add", "reports.build"):
        reg.register(_definition(name))
    assert len(reg) == 3
    assert "add" in reg and "sub" not in reg
    assert reg.names() == ["add", "mul", "reports.build"]
    assert reg.snapshot() == ("add", "mul", "reports.build")
    assert reg.get("mul").name == "mul"
    reg.clear()
    assert len(reg) == 0 and reg.snapshot() == ()


def test_unknown_task_lookup_suggests_and_is_a_lookup_error() -> None:
    reg = TaskRegistry()
    reg.register(_definition("add"))
    with pytest.raises(LookupError) as info:
        reg.get("ad")
    assert isinstance(info.value, UnknownTaskError)
    assert info.value.suggestions == ["add"]
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_get_task_uses_the_process_registry() -> None:
    with pytest.raises(UnknownTaskError, match="'nope'"):
        get_task("nope")


def test_snapshot_and_restore_state() -> None:
    reg = TaskRegistry()
    reg.register(_definition("a"))
    saved = reg._snapshot_state()
    reg.register(_definition("b"))
    reg._restore_state(saved)
    assert reg.names() == ["a"]


def test_package_reexports() -> None:
    assert tasks_pkg.task is task
    assert tasks_pkg.registry is registry
    assert tasks_pkg.get_task is get_task
    assert tasks_pkg.load_task_modules is load_task_modules
    for name in (
        "TaskDefinition",
        "TaskRegistry",
        "TaskPriority",
        "TaskStatus",
        "TaskResult",
        "SerializationFormat",
    ):
        assert name in tasks_pkg.__all__ and hasattr(tasks_pkg, name)


# --- loading task modules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ()),
        ("", ()),
        ("a", ("a",)),
        (" a , b.c ,, ", ("a", "b.c")),
        (["a,b", " c "], ("a", "b", "c")),
        (("a", "", "a,b"), ("a", "b")),
    ],
)
def test_split_module_names(raw: Any, expected: tuple[str, ...]) -> None:
    assert split_module_names(raw) == expected


def test_split_module_names_refuses_non_str_items() -> None:
    with pytest.raises(ConfigError, match="int"):
        split_module_names(["a", 3])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("a.b_c.d1", True),
        ("a-b", False),
        (".a", False),
        ("a..b", False),
        ("a/b", False),
        ("tasks.py", True),
        ("1a", False),
        ("", False),
    ],
)
def test_is_module_name(name: str, ok: bool) -> None:
    assert is_module_name(name) is ok


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory for throw-away modules; sys.path and sys.modules are restored after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _write(directory: Path, relative: str, source: str) -> None:
    path = directory / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


TASK_MODULE = """
    from fastworker.tasks import task

    @task
    def {name}(x):
        return x * 2
"""


def test_load_task_modules_imports_from_the_current_directory(module_dir: Path) -> None:
    _write(module_dir, "fwt_alpha.py", TASK_MODULE.format(name="double"))
    _write(module_dir, "fwt_pkg/__init__.py", "")
    _write(module_dir, "fwt_pkg/more.py", TASK_MODULE.format(name="twice"))
    assert str(module_dir) not in sys.path

    loaded = load_task_modules(" fwt_alpha , fwt_pkg.more,")

    assert loaded == ["fwt_alpha", "fwt_pkg.more"]
    assert sys.path[0] == str(module_dir)
    assert get_task("double").func(4) == 8
    assert get_task("twice").module == "fwt_pkg.more"


def test_load_task_modules_list_form_and_none(module_dir: Path) -> None:
    _write(module_dir, "fwt_one.py", TASK_MODULE.format(name="one"))
    _write(module_dir, "fwt_two.py", TASK_MODULE.format(name="two"))
    assert load_task_modules(None) == []
    assert load_task_modules(["fwt_one,fwt_two", "fwt_one"]) == ["fwt_one", "fwt_two"]
    assert {"one", "two"} <= set(registry.names())


def test_a_module_that_raises_stops_loading_with_its_name_and_traceback(module_dir: Path) -> None:
    _write(module_dir, "fwt_broken.py", "x = 1\nraise RuntimeError('no database configured')\n")
    _write(module_dir, "fwt_after.py", TASK_MODULE.format(name="after"))

    with pytest.raises(TaskModuleImportError) as info:
        load_task_modules("fwt_broken,fwt_after")

    err = info.value
    assert err.module_name == "fwt_broken"
    assert "'fwt_broken'" in str(err)
    assert "RuntimeError: no database configured" in str(err)
    assert isinstance(err.__cause__, RuntimeError)
    assert any(
        frame.filename.endswith("fwt_broken.py")
        for frame in traceback.extract_tb(err.__cause__.__traceback__)
    )
    assert "fwt_after" not in sys.modules  # stopped at the first failure


def test_a_missing_module_is_reported_by_name(module_dir: Path) -> None:
    with pytest.raises(TaskModuleImportError, match="'fwt_missing'") as info:
        load_task_modules("fwt_missing")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert "ModuleNotFoundError" in str(info.value)


def test_a_module_calling_sys_exit_is_an_import_error(module_dir: Path) -> None:
    _write(module_dir, "fwt_cli.py", "import sys\nsys.exit(2)\n")
    with pytest.raises(TaskModuleImportError, match="SystemExit: 2"):
        load_task_modules("fwt_cli")


@pytest.mark.parametrize("bad", ["fwt-dash", "tasks/app", "app.tasks.py.", "app..tasks"])
def test_invalid_module_names_fail_before_importing_anything(module_dir: Path, bad: str) -> None:
    _write(module_dir, "fwt_good.py", TASK_MODULE.format(name="good"))
    with pytest.raises(ConfigError, match="Invalid task module name") as info:
        load_task_modules(["fwt_good", bad])
    assert repr(bad) in str(info.value)
    assert "fwt_good" not in sys.modules


def test_a_file_path_gets_a_hint(module_dir: Path) -> None:
    with pytest.raises(ConfigError, match="not a file path"):
        load_task_modules("app/tasks.py")


def test_a_retried_or_reloaded_module_does_not_clash_with_itself(module_dir: Path) -> None:
    _write(module_dir, "fwt_reload.py", TASK_MODULE.format(name="reloaded"))
    load_task_modules("fwt_reload")
    first = get_task("reloaded").func
    _write(
        module_dir,
        "fwt_reload.py",
        TASK_MODULE.format(name="reloaded").replace("x * 2", "x * 2 + x"),
    )
    importlib.invalidate_caches()
    importlib.reload(sys.modules["fwt_reload"])
    assert get_task("reloaded").func is not first
    assert get_task("reloaded").func(2) == 6
