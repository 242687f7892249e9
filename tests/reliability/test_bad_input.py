"""Bad input, fuzzed with hypothesis against live control planes (one JSON, one PICKLE, started
once for the module): task names, arguments and keyword arguments of every JSON and Pickle shape,
priorities, countdowns and CLI arguments.  Each input either works (and its value comes back
equal) or is refused with a clear error in the caller; the control plane and its workers never
die of it.  (Random, patched, truncated and resized segment headers: tests/native/test_segment.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from uuid import uuid4

import psutil
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastworker import Client, FastWorkerError, TaskPriority, UnknownTaskError
from fastworker.cli import main as cli
from fastworker.engine import runtime
from fastworker.engine.schedule import MAX_COUNTDOWN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TASKS = textwrap.dedent(
    """
    from fastworker import task

    @task
    def echo(*args, **kwargs):
        return [list(args), kwargs]
    """
)
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


class Plane:
    """A `fastworker control-plane` subprocess serving echo; stopped at the end of the module."""

    def __init__(self, fmt: str, directory: str) -> None:
        self.name = f"fuzz{os.getpid()}-{fmt}-{uuid4().hex[:4]}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([directory, os.environ.get("PYTHONPATH", "")])}
        env.update(FASTWORKER_ARENA_SIZE="4MiB", FASTWORKER_SERIALIZATION_FORMAT=fmt)
        self.log = open(os.path.join(directory, f"{fmt}.log"), "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastworker", "control-plane", "--workers", "2", "--task-modules", "fuzz_tasks",
             "--name", self.name],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while runtime.place(self.name).owner() != self.proc.pid:
            assert self.proc.poll() is None and time.monotonic() < deadline, "the control plane did not start"
            time.sleep(0.01)
        time.sleep(0.1)  # its socket listens right after the pid file is written

    def processes(self) -> set[int]:
        return {self.proc.pid} | {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def planes():
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "fuzz_tasks.py"), "w") as f:
            f.write(TASKS)
        started = {fmt: Plane(fmt, directory) for fmt in ("json", "pickle")}
        try:
            yield started
        finally:
            for plane in started.values():
                plane.stop()


@pytest.fixture
def unharmed(planes):
    """Every process of both control planes outlives the test, and each still runs a task."""
    before = {fmt: plane.processes() for fmt, plane in planes.items()}
    yield planes
    for fmt, plane in planes.items():
        assert plane.processes() == before[fmt], f"a process of the {fmt} control plane died"
        assert call(plane, "echo", (1,), {}) == [[1], {}]


def call(plane: Plane, task_name, args, kwargs, **options):
    async def main():
        async with Client(name=plane.name, serialization_format=plane.name.split("-")[1]) as client:
            result = await client.submit_task(task_name, args=args, kwargs=kwargs, **options)
            assert result.error is None, result.error
            return result.result

    return asyncio.run(main())


JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5), max_leaves=20
)
PICKLE_SCALARS = JSON_SCALARS | st.integers() | st.binary() | st.complex_numbers(allow_nan=False) | st.decimals(allow_nan=False)
PICKLE_VALUES = st.recursive(
    PICKLE_SCALARS,
    lambda inner: st.lists(inner, max_size=5)
    | st.tuples(inner, inner)
    | st.frozensets(PICKLE_SCALARS, max_size=4)
    | st.dictionaries(PICKLE_SCALARS.filter(lambda v: not isinstance(v, (list, dict))), inner, max_size=4),
    max_leaves=20,
)
KEYWORDS = st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), st.none() | st.integers(), max_size=3)


@FUZZ
@given(name=st.text(max_size=40))
def test_any_task_name_runs_or_is_refused_as_unknown(unharmed, name):
    try:
        assert call(unharmed["json"], name, (), {}) == [[], {}]
        assert name == "echo"
    except UnknownTaskError as exc:
        assert name != "echo" and "echo" in str(exc)


@FUZZ
@given(args=st.lists(JSON_VALUES, max_size=4), kwargs=KEYWORDS)
def test_json_arguments_of_any_shape_come_back_equal(unharmed, args, kwargs):
    try:
        got = call(unharmed["json"], "echo", tuple(args), kwargs)
    except TypeError as exc:  # SerializationError: an int past 64 bits, an inf (it was sent as null)
        assert "echo" in str(exc) and "PICKLE" in str(exc)
        return
    assert got == [args, kwargs]


@FUZZ
@given(args=st.lists(PICKLE_VALUES, max_size=4), kwargs=KEYWORDS)
def test_pickle_arguments_of_any_shape_come_back_equal(unharmed, args, kwargs):
    assert call(unharmed["pickle"], "echo", tuple(args), kwargs) == [list(args), kwargs]


@FUZZ
@given(priority=st.integers() | st.text(max_size=10) | st.floats() | st.none() | st.sampled_from(list(TaskPriority)))
def test_a_priority_is_a_valid_one_or_a_value_error_naming_them(unharmed, priority):
    try:
        assert call(unharmed["json"], "echo", (), {}, priority=priority) == [[], {}]
    except ValueError as exc:
        assert "CRITICAL" in str(exc).upper() and "LOW" in str(exc).upper(), exc
    except TypeError as exc:
        assert "priority" in str(exc), exc


def schedule_and_cancel(plane: Plane, countdown) -> bool:
    """Queue echo() with this countdown on the control plane, then cancel it: was it cancelled?"""
    async def main():
        async with Client(name=plane.name, serialization_format=plane.name.split("-")[1]) as client:
            task_id = await client.delay("echo", 1, countdown=countdown)
            return await client.cancel_task(task_id) or (await client.wait(task_id, timeout=10)).result == 1

    return asyncio.run(main())


@FUZZ
@given(countdown=st.floats() | st.integers() | st.text(max_size=5))
def test_a_countdown_is_held_or_refused_with_a_clear_error_not_a_crash(unharmed, countdown):
    valid = isinstance(countdown, (int, float)) and 0 <= countdown <= MAX_COUNTDOWN  # NaN is neither
    if valid:  # held by the control plane until due (or run at once): either way it cancels or ran
        assert schedule_and_cancel(unharmed["json"], countdown)
        return
    with pytest.raises((FastWorkerError, ValueError, TypeError)) as info:
        schedule_and_cancel(unharmed["json"], countdown)
    assert "countdown" in str(info.value)


CLI_WORDS = st.lists(
    st.sampled_from(["--args", "--kwargs", "--priority", "--timeout", "--task-name", "--json", "--non-blocking",
                     "--countdown", "--eta", "--retries", "--task-timeout"])
    | st.text(max_size=12).filter(lambda w: "\0" not in w),
    max_size=6,
)


@FUZZ
@given(words=CLI_WORDS)
def test_cli_submit_with_any_arguments_exits_cleanly(unharmed, words):
    result = CliRunner().invoke(cli, ["submit", "--name", unharmed["json"].name, "--task-name", "echo", *words])
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
