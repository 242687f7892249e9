"""The task commands of the CLI (`submit`, `status`, `cancel`, `list`, `stats`) against a real
`fastworker control-plane` subprocess: what a user types, what they read, the exit code.

Parsing and usage errors run in-process through click's CliRunner; the exit codes and the
one-line stderr of a failure are also checked on a real `fastworker` process.  The query
protocol's client side (`fastworker.queries`) is checked against a stand-in server too, for the
replies a healthy control plane never sends.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from fastworker import ControlPlaneUnavailable, queries
from fastworker.cli import main
from fastworker.engine import runtime
from fastworker.tasks.registry import registry

from .test_control_plane import launch, retire, unique_name

pytestmark = pytest.mark.timeout(60)

TASK_MODULE = "cli_test_tasks"
TASKS = '''
import os
import time

from fastworker import task


@task
def add(x, y):
    return x + y


@task
def fail(message):
    raise ValueError(message)


@task
def tagged(priority, label="x"):
    return [priority, label]


@task
def wait_for_file(path, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.005)
    return "released"
'''
CLI = [sys.executable, "-c", "from fastworker.cli import main; main()"]
CP = [*CLI, "control-plane"]


@pytest.fixture
def control_plane(tmp_path):
    """A `fastworker control-plane --workers 2` subprocess serving TASKS under a unique name,
    stopped afterwards (SIGTERM, then SIGKILL)."""
    (tmp_path / f"{TASK_MODULE}.py").write_text(TASKS)
    cp = launch(tmp_path, TASK_MODULE)
    yield cp
    retire([cp])


def cli(*args: str, env: dict[str, str] | None = None):
    """The CLI in this process."""
    return CliRunner().invoke(main, list(args), env=env)


def cli_process(*args: str) -> subprocess.CompletedProcess:
    """The CLI as a real process."""
    return subprocess.run([*CLI, *args], check=False, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def status_json(name: str, task_id: str) -> dict:
    result = cli("status", "--task-id", task_id, "--name", name, "--json")
    assert result.exit_code in (0, 1), result.output
    return orjson.loads(result.stdout)


def wait_for_status(name: str, task_id: str, wanted: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = status_json(name, task_id)
        if found["status"] == wanted or time.monotonic() > deadline:
            assert found["status"] == wanted, found
            return found
        time.sleep(0.02)


# ---------------------------------------------------------------------------------- submit


def test_submit_waits_and_prints_the_result(control_plane):
    name = control_plane.name
    result = cli("submit", "--task-name", "add", "--args", "5", "3", "--name", name)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "8\n", "")

    as_json = cli("submit", "--task-name", "add", "--args", "5", "3", "--priority", "high", "--json", "--name", name)
    assert as_json.exit_code == 0, as_json.output
    found = orjson.loads(as_json.stdout)
    assert set(found) == {"task_id", "task_name", "status", "result", "error", "traceback", "started_at", "completed_at", "attempts"}
    assert (found["status"], found["result"], found["task_name"], found["error"]) == ("success", 8, "add", None)

    # The name from FASTWORKER_NAME; JSON where it parses, text where it does not; negative numbers.
    env = {"FASTWORKER_NAME": name}
    strings = cli("submit", "--task-name", "add", "--args", '"Q"', '"1"', env=env)
    assert (strings.exit_code, strings.stdout) == (0, '"Q1"\n'), strings.output
    text = cli("submit", "--task-name", "add", "--args", "ab", "cd", env=env)
    assert (text.exit_code, text.stdout) == (0, '"abcd"\n'), text.output
    negative = cli("submit", "--task-name", "add", "--args", "-5", "-3", env=env)
    assert (negative.exit_code, negative.stdout) == (0, "-8\n"), negative.output
    repeated = cli("submit", "--task-name", "add", "--args", "[1]", "--args", "[2, 3]", env=env)
    assert (repeated.exit_code, repeated.stdout) == (0, "[1,2,3]\n"), repeated.output
    # A task keyword named like one of delay()'s own keywords still reaches the task.
    keywords = cli("submit", "--task-name", "tagged", "--kwargs", '{"priority": 7, "label": "y"}', env=env)
    assert (keywords.exit_code, keywords.stdout) == (0, '[7,"y"]\n'), keywords.output


def test_a_failing_task_exits_1_with_its_error_on_stderr(control_plane):
    out = cli_process("submit", "--task-name", "fail", "--args", "boom", "--name", control_plane.name)
    assert out.returncode == 1
    assert one_line(out.stderr) == "Error: ValueError: boom"
    assert out.stdout == ""

    as_json = cli("submit", "--task-name", "fail", "--args", "boom", "--json", "--name", control_plane.name)
    assert as_json.exit_code == 1
    found = orjson.loads(as_json.stdout)
    assert (found["status"], found["error"]) == ("failure", "ValueError: boom")
    assert "ValueError: boom" in found["traceback"]
    assert one_line(as_json.stderr) == "Error: ValueError: boom"


def test_an_unknown_task_exits_1_naming_it_and_close_matches(control_plane):
    result = cli("submit", "--task-name", "ad", "--args", "5", "3", "--name", control_plane.name)
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert line.startswith("Error: Unknown task 'ad'.") and "'add'" in line
    assert result.stdout == ""


def test_non_blocking_prints_an_id_whose_result_the_control_plane_keeps(control_plane):
    name = control_plane.name
    submitted = cli_process("submit", "--task-name", "add", "--args", "5", "3", "--non-blocking", "--name", name)
    assert submitted.returncode == 0, submitted.stderr
    task_id = one_line(submitted.stdout)
    assert submitted.stderr == ""

    # The submitting process is gone: the control plane answers for the task it left behind.
    wait_for_status(name, task_id, "success")
    shown = cli_process("status", "--task-id", task_id, "--name", name)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:3] == [f"Task ID: {task_id}", "Status: success", "Result: 8"]
    assert [line.split(":", 1)[0] for line in lines[3:]] == ["Started", "Completed"]

    as_json = cli("submit", "--task-name", "add", "--args", "1", "2", "--non-blocking", "--json", "--name", name)
    assert as_json.exit_code == 0, as_json.output
    assert set(orjson.loads(as_json.stdout)) == {"task_id"}


def test_status_of_a_failed_task_shows_its_error_and_exits_1(control_plane):
    name = control_plane.name
    task_id = cli("submit", "--task-name", "fail", "--args", "boom", "--non-blocking", "--name", name).stdout.strip()
    wait_for_status(name, task_id, "failure")
    shown = cli("status", "--task-id", task_id, "--name", name)
    assert shown.exit_code == 1
    assert shown.stdout.splitlines()[:3] == [f"Task ID: {task_id}", "Status: failure", "Error: ValueError: boom"]


def test_an_unknown_task_id_is_not_found(control_plane):
    out = cli_process("status", "--task-id", "no-such-id", "--name", control_plane.name)
    assert out.returncode == 1
    assert one_line(out.stderr) == "Error: Task no-such-id not found (unknown, or its result expired)"
    cancelled = cli("cancel", "--task-id", "no-such-id", "--name", control_plane.name)
    assert cancelled.exit_code == 1
    assert "not found" in one_line(cancelled.stderr)


def test_cancel_a_queued_task_and_a_running_one(control_plane, tmp_path):
    name = control_plane.name
    release = tmp_path / "release"

    def submit(*args: str) -> str:
        result = cli("submit", *args, "--non-blocking", "--name", name)
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    # Two blockers take both workers (first in, first out), so the third waits in the queue.
    blockers = [submit("--task-name", "wait_for_file", "--args", f'"{release}"') for _ in range(2)]
    queued = submit("--task-name", "add", "--args", "1", "2")
    for task_id in blockers:
        wait_for_status(name, task_id, "started")
    try:
        assert status_json(name, queued)["status"] == "pending"
        cancelled = cli_process("cancel", "--task-id", queued, "--name", name)
        assert (cancelled.returncode, cancelled.stdout, cancelled.stderr) == (0, f"Task {queued} cancelled\n", "")
        shown = cli("status", "--task-id", queued, "--name", name)
        assert shown.exit_code == 0 and "Status: cancelled" in shown.stdout.splitlines()

        again = cli("cancel", "--task-id", queued, "--name", name, "--json")
        assert again.exit_code == 1
        assert orjson.loads(again.stdout)["cancelled"] is False
        # A running task is stopped: its worker is killed and replaced.
        running = cli_process("cancel", "--task-id", blockers[0], "--name", name)
        assert running.returncode == 0, running.stderr
        assert wait_for_status(name, blockers[0], "cancelled")["status"] == "cancelled"
    finally:
        release.touch()
    assert wait_for_status(name, blockers[1], "success")["result"] == "released"


# ----------------------------------------------------------------------------------- stats


def test_stats_reports_workers_queues_and_counters(control_plane):
    name = control_plane.name
    assert cli("submit", "--task-name", "add", "--args", "1", "2", "--name", name).exit_code == 0
    assert cli("submit", "--task-name", "fail", "--args", "boom", "--name", name).exit_code == 1
    result = cli("stats", "--json", "--name", name)
    assert result.exit_code == 0, result.output
    stats = orjson.loads(result.stdout)
    assert {"name", "pid", "uptime_s", "workers", "queued_by_priority", "submitted", "completed", "failed",
            "clients"} <= set(stats)
    assert (stats["name"], stats["pid"]) == (name, control_plane.pid)
    assert set(stats["queued_by_priority"]) == {"critical", "high", "normal", "low"}
    assert len(stats["workers"]) == 2
    for worker in stats["workers"]:
        assert {"index", "pid", "state", "current_task", "tasks_done", "cpu_percent", "rss_bytes"} <= set(worker)
    assert stats["submitted"] >= 2 and stats["completed"] >= 2 and stats["failed"] >= 1

    human = cli_process("stats", "--name", name)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0].startswith(f"Control plane {name!r} (pid {control_plane.pid}), up ")
    assert lines[1] == "Queued: critical 0, high 0, normal 0, low 0"
    assert lines[2].startswith("Submitted: ") and ", failed: " in lines[2]
    assert lines[3].split() == ["WORKER", "PID", "STATE", "TASK", "TASKS", "CPU", "%", "RSS", "MiB"]
    assert [line.split()[0] for line in lines[4:]] == ["0", "1"]


def test_stats_watch_repeats_until_ctrl_c(control_plane, monkeypatch):
    import fastworker.cli

    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(fastworker.cli.time, "sleep", sleep)
    result = cli("stats", "--watch", "--interval", "0.5", "--json", "--name", control_plane.name)
    assert result.exit_code == 0, result.output
    assert sleeps == [0.5, 0.5]
    assert [orjson.loads(line)["name"] for line in result.stdout.splitlines()] == [control_plane.name] * 2


# ------------------------------------------------------------------------------------ list


@pytest.fixture
def task_module(tmp_path, monkeypatch):
    """A task module in a temporary directory, importable by name; forgotten afterwards."""
    monkeypatch.chdir(tmp_path)  # load_task_modules puts the current directory on sys.path
    before = registry._snapshot_state()
    names: list[str] = []

    def write(module: str, source: str) -> str:
        (tmp_path / f"{module}.py").write_text(source)
        names.append(module)
        return module

    yield write
    registry._restore_state(before)
    for module in names:
        sys.modules.pop(module, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_list_imports_the_modules_here_and_shows_each_task(task_module):
    module = task_module(
        "cli_list_tasks",
        "from fastworker import task\n\n"
        "@task\ndef cli_add(x: int, y: int) -> int:\n    return x + y\n\n"
        "@task(name='reports.build')\nasync def build(report_id: str, *, draft=False):\n    return report_id\n",
    )
    result = cli("list", "--task-modules", module)
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["NAME", "MODULE"], ["cli_add", module], ["reports.build", module],
    ]
    assert "(x: int, y: int) -> int" in result.stdout.splitlines()[1]

    as_json = cli("list", "--task-modules", module, "--json")
    assert orjson.loads(as_json.stdout) == [
        {"name": "cli_add", "module": module, "signature": "(x: int, y: int) -> int"},
        {"name": "reports.build", "module": module, "signature": "(report_id: str, *, draft=False)"},
    ]


def test_list_names_a_module_that_fails_to_import(task_module):
    module = task_module("cli_broken_tasks", "raise RuntimeError('broken on purpose')\n")
    result = cli("list", "--task-modules", module)
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert line.startswith(f"Error: Could not import task module {module!r}: RuntimeError: broken on purpose")

    missing = cli("list", "--task-modules", "cli_no_such_module")
    assert missing.exit_code == 1
    assert "'cli_no_such_module'" in one_line(missing.stderr)


def test_list_without_modules_shows_what_the_control_plane_serves(control_plane):
    result = cli("list", "--name", control_plane.name)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["add", "fail", "tagged", "wait_for_file"]


# ----------------------------------------------------------------------- usage and failures


@pytest.mark.parametrize("kwargs", ["{x", "[1, 2]", '"text"', "null"])
def test_bad_kwargs_are_a_usage_error(kwargs):
    result = cli("submit", "--task-name", "add", "--kwargs", kwargs)
    assert result.exit_code == 2
    assert "Invalid value for '--kwargs'" in result.stderr and "JSON object" in result.stderr
    assert "Traceback" not in result.output


def test_a_bad_priority_is_a_usage_error_listing_the_names():
    result = cli("submit", "--task-name", "add", "--args", "1", "2", "--priority", "urgent")
    assert result.exit_code == 2
    assert "Invalid value for '--priority'" in result.stderr
    assert "critical, high, normal, low" in result.stderr


def test_task_arguments_that_look_like_options_are_refused():
    typo = cli("submit", "--task-name", "add", "--args", "1", "--prioriti", "high")
    assert typo.exit_code == 2
    assert "No such option: --prioriti. Did you mean --priority?" in typo.stderr
    stray = cli("submit", "--task-name", "add", "1", "2")
    assert stray.exit_code == 2
    assert "--args" in stray.stderr


def test_a_bad_name_is_a_usage_error():
    result = cli("status", "--task-id", "x", "--name", "no/slash")
    assert result.exit_code == 2
    assert "Invalid name=" in result.stderr


def test_no_control_plane_is_one_line_saying_how_to_start_one():
    name = unique_name()
    out = cli_process("submit", "--task-name", "add", "--args", "5", "3", "--name", name)
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert line.startswith(f"Error: no control plane named {name!r} is running") and "fastworker control-plane" in line
    for command in (["status", "--task-id", "x"], ["cancel", "--task-id", "x"], ["stats"], ["list"]):
        result = cli(*command, "--name", name)
        assert result.exit_code == 1, (command, result.output)
        line = one_line(result.stderr)
        assert line.startswith(f"Error: no control plane named {name!r} is running"), command
        assert f"fastworker control-plane --name {name}" in line


# ----------------------------------------------------- queries against a stand-in server


@pytest.fixture
def fake_control_plane():
    """serve(reply) listens where control plane `name` would and answers each query with
    reply(message) -> bytes (b"" closes without answering); returns (name, the messages seen)."""
    servers: list[tuple[socket.socket, threading.Thread, str]] = []

    def serve(reply: Callable[[dict], bytes]) -> tuple[str, list[dict]]:
        name = unique_name()
        place = runtime.place(name, create=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(place.socket)
        listener.listen(8)
        seen: list[dict] = []

        def loop() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:  # closed: the test is over
                    return
                with conn:
                    message = orjson.loads(conn.recv(1 << 16))
                    seen.append(message)
                    answer = reply(message)
                    if answer:
                        conn.send(answer)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        servers.append((listener, thread, place.socket))
        return name, seen

    yield serve
    for listener, thread, path in servers:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
        Path(path).unlink(missing_ok=True)


def test_queries_send_one_message_and_read_one_reply(fake_control_plane):
    record = {"task_id": "t1", "task_name": "add", "status": "started", "result": None, "error": None,
              "traceback": None, "started_at": "2026-01-01T00:00:00+00:00", "completed_at": None}
    answers = {
        "result": {"result": record},
        "cancel": {"cancelled": False, "message": "task t1 is already running; it cannot be cancelled"},
        "tasks": {"tasks": ["add", "fail"]},
    }
    name, seen = fake_control_plane(lambda message: orjson.dumps(answers[message["query"]]))
    assert queries.result(name, "t1") == record
    assert queries.cancel(name, "t1") == (False, "task t1 is already running; it cannot be cancelled")
    assert queries.task_names(name) == ["add", "fail"]
    assert seen == [{"query": "result", "task_id": "t1"}, {"query": "cancel", "task_id": "t1"}, {"query": "tasks"}]

    shown = cli("status", "--task-id", "t1", "--name", name)
    assert (shown.exit_code, shown.stdout) == (0, "Task ID: t1\nStatus: started\nStarted: 2026-01-01T00:00:00+00:00\n")
    refused = cli("cancel", "--task-id", "t1", "--name", name)
    assert (refused.exit_code, refused.stderr) == (1, "Error: task t1 is already running; it cannot be cancelled\n")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (orjson.dumps({"error": "unknown query 'x'"}), "unknown query 'x'"),
        (b"", "closed the connection without answering"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff not json", "not a JSON object"),
    ],
)
def test_a_bad_reply_is_control_plane_unavailable(fake_control_plane, answer, expected):
    name, _seen = fake_control_plane(lambda message: answer)
    with pytest.raises(ControlPlaneUnavailable, match=expected) as failed:
        queries.query(name, {"query": "stats"})
    assert repr(name) in str(failed.value)
    result = cli("stats", "--name", name)
    assert result.exit_code == 1
    assert expected in one_line(result.stderr)
