"""Task policies through a control plane: what an attached client and the CLI see of
countdown/eta (held by the control plane, so they outlive the client), retries, hard
timeouts, cancelling running and scheduled tasks, current_task() and periodic tasks."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from fastworker import Client, TaskStatus

from .test_cli import cli
from .test_control_plane import launch, retire, wait_until

pytestmark = pytest.mark.timeout(60)

# The tasks of the embedded tests, and a periodic one (kept apart: a periodic task would run in
# every embedded Client of this test process that snapshots the registry).
PERIODIC_MODULE = "policy_periodic_tasks"
PERIODIC = """
import os

from fastworker import task


@task(repeat_interval=0.2, repeat_count=3)
def beat():
    with open(os.environ["BEAT_FILE"], "a") as f:
        f.write("beat\\n")
"""


@pytest.fixture
def control_plane(tmp_path):
    (tmp_path / f"{PERIODIC_MODULE}.py").write_text(PERIODIC)
    cp = launch(tmp_path, f"tests.integration.tasks_for_tests,{PERIODIC_MODULE}",
                env={"BEAT_FILE": str(tmp_path / "beats")})
    yield cp
    retire([cp])


def status(name: str, task_id: str) -> dict:
    result = cli("status", "--task-id", task_id, "--name", name, "--json")
    assert result.exit_code in (0, 1), result.output
    return orjson.loads(result.stdout)


def test_a_countdown_task_outlives_the_client_that_submitted_it(control_plane):
    name = control_plane.name
    submitted = datetime.now(timezone.utc)
    queued = cli("submit", "--task-name", "add", "--args", "2", "3", "--countdown", "0.4", "--non-blocking",
                 "--name", name)
    assert queued.exit_code == 0, queued.output
    task_id = queued.stdout.strip()
    assert status(name, task_id)["status"] == "pending"  # held by the control plane; its client left
    assert wait_until(lambda: status(name, task_id)["status"] == "success", 10.0)
    found = status(name, task_id)
    assert found["result"] == 5
    assert datetime.fromisoformat(found["started_at"]) >= submitted + timedelta(seconds=0.39)


def test_a_scheduled_task_cancelled_from_the_cli_never_runs(control_plane):
    name = control_plane.name
    task_id = cli("submit", "--task-name", "add", "--args", "1", "1", "--countdown", "30", "--non-blocking",
                  "--name", name).stdout.strip()
    cancelled = cli("cancel", "--task-id", task_id, "--name", name)
    assert cancelled.exit_code == 0, cancelled.output
    assert status(name, task_id)["status"] == "cancelled"
    assert orjson.loads(cli("stats", "--json", "--name", name).stdout)["scheduled"] == 0


def test_eta_retries_timeouts_and_context_through_an_attached_client(control_plane, tmp_path):
    async def main():
        async with Client(name=control_plane.name) as client:
            eta = await client.delay("add", 1, 2, eta=datetime.now(timezone.utc) + timedelta(seconds=0.2))
            assert client.get_status(eta) is TaskStatus.PENDING
            flaky = await client.submit_task("flaky", args=(str(tmp_path / "n"), 2))
            timed_out = await client.submit_task("sleep_then_return", args=(30, "late"))
            me = await client.delay("whoami", priority="high")
            scheduled = await client.delay("add", 5, 5, countdown=30)
            cancelled = await client.cancel_task(scheduled)
            running = await client.delay("wait_for_file", str(tmp_path / "never"))
            while client.get_status(running) is not TaskStatus.STARTED:
                await asyncio.sleep(0.005)
            stopped = await client.cancel_task(running)
            return (await client.wait(eta, timeout=10), flaky, timed_out, await client.wait(me, timeout=10), me,
                    cancelled, client.get_status(scheduled), stopped, await client.wait(running, timeout=10))

    eta, flaky, timed_out, me, me_id, cancelled, scheduled, stopped, running = asyncio.run(main())
    assert eta.result == 3
    assert (flaky.status, flaky.result, flaky.attempts) == (TaskStatus.SUCCESS, 3, 3)
    assert timed_out.status is TaskStatus.FAILURE and "timeout of 0.3 s" in timed_out.error
    assert me.result == {"id": me_id, "name": "whoami", "attempt": 1, "priority": "HIGH"}
    assert (cancelled, scheduled) == (True, TaskStatus.CANCELLED)
    assert (stopped, running.status) == (True, TaskStatus.CANCELLED)


def test_periodic_tasks_run_in_the_control_plane_and_are_listed(control_plane, tmp_path):
    beats = tmp_path / "beats"
    assert wait_until(lambda: beats.exists() and beats.read_text().count("beat") == 3, 10.0)
    time.sleep(0.3)
    assert beats.read_text().count("beat") == 3  # repeat_count=3
    listed = cli("list", "--list-periodic", "--name", control_plane.name, "--json")
    assert listed.exit_code == 0, listed.output
    [row] = orjson.loads(listed.stdout)
    assert (row["task_name"], row["schedule"], row["runs"], row["next_run"]) == ("beat", "every 0.2 s", 3, None)
    shown = cli("list", "--list-periodic", "--name", control_plane.name)
    assert shown.output.splitlines()[1].split()[:4] == ["beat", "every", "0.2", "s"]


def test_list_periodic_from_modules_shows_the_next_run(tmp_path, monkeypatch):
    (tmp_path / "cron_tasks_mod.py").write_text(
        "from fastworker import task\n\n@task(cron='*/5 * * * *')\ndef sync():\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from fastworker.tasks.registry import registry

    saved = registry._snapshot_state()
    try:
        listed = cli("list", "--list-periodic", "--task-modules", "cron_tasks_mod", "--json")
    finally:
        registry._restore_state(saved)
    assert listed.exit_code == 0, listed.output
    [row] = orjson.loads(listed.stdout)
    assert row["schedule"] == "cron */5 * * * *"
    assert datetime.fromisoformat(row["next_run"]).minute % 5 == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--countdown", "-1"], "--countdown"),
        (["--eta", "someday"], "ISO 8601"),
        (["--countdown", "1", "--eta", "2030-01-01T00:00:00"], "not both"),
        (["--retries", "-2"], "--retries"),
        (["--task-timeout", "0"], "--task-timeout"),
    ],
)
def test_bad_policy_options_are_usage_errors(args, message):
    result = cli("submit", "--task-name", "add", "--args", "1", "2", *args)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize(("option", "value"), [("--max-memory-per-child", "lots"), ("--max-tasks-per-child", "0")])
def test_bad_recycling_options_of_the_control_plane_are_usage_errors(option, value):
    result = cli("control-plane", "--workers", "1", option, value)
    assert result.exit_code == 2 and option.lstrip("-").replace("-", "_") in result.output


def test_retries_go_on_in_the_control_plane_after_the_client_left(control_plane, tmp_path):
    """`submit --non-blocking` exits at once: the control plane runs the next attempts."""
    name = control_plane.name
    flaky = cli("submit", "--task-name", "flaky", "--args", f'"{tmp_path / "n"}"', "2", "--non-blocking",
                "--name", name)
    failing = cli("submit", "--task-name", "fail", "--args", '"boom"', "--retries", "1", "--non-blocking",
                  "--name", name)
    assert flaky.exit_code == failing.exit_code == 0, flaky.output + failing.output
    flaky_id, failing_id = flaky.stdout.strip(), failing.stdout.strip()
    assert wait_until(lambda: status(name, flaky_id)["status"] == "success", 10.0), status(name, flaky_id)
    assert (status(name, flaky_id)["result"], status(name, flaky_id)["attempts"]) == (3, 3)
    assert wait_until(lambda: status(name, failing_id)["status"] == "failure", 10.0)
    found = status(name, failing_id)
    assert (found["error"], found["attempts"]) == ("ValueError: boom", 2)


def test_an_attached_client_hears_the_control_planes_worker_events(control_plane):
    events: list[dict] = []

    async def main():
        async with Client(name=control_plane.name) as client:
            client.on("worker.lost", events.append)
            client.on("worker.started", events.append)
            lost = await client.submit_task("run_and", args=("SIGKILL",))
            for _ in range(500):
                if any(e["event"] == "worker.started" for e in events):
                    break
                await asyncio.sleep(0.01)
            return lost

    lost = asyncio.run(main())
    assert lost.status is TaskStatus.FAILURE and "SIGKILL" in lost.error
    [dead] = [e for e in events if e["event"] == "worker.lost"]
    assert "SIGKILL" in dead["how"] and dead["tasks_failed"] == 1
    assert any(e["event"] == "worker.started" for e in events)  # its replacement
