"""Eager mode: tasks run inline in the caller, through the same codec, statuses and errors
(no workers, no segment: nothing to leak)."""

from __future__ import annotations

import pytest

from fastworker import Client, SerializationError, TaskStatus, UnknownTaskError

from .conftest import run


def test_eager_runs_tasks_inline_with_the_same_results_and_errors(tmp_path):
    async def main():
        async with Client(eager=True) as client:
            ok = await client.submit_task("add", args=(2, 3))
            failed = await client.wait(await client.delay("fail", "boom"))
            coro = await client.submit_task("async_add", args=(1, 1))
            batch = await client.submit_batch([{"task_name": "add", "args": (i, i)} for i in range(3)])
            mapped = [x async for x in client.map("add", [(1, 1), (2, 2)], star=True)]
            retried = await client.submit_task("flaky", args=(str(tmp_path / "n"), 1))
            me = await client.submit_task("whoami", args=(), priority="low")
            with pytest.raises(SerializationError):
                await client.delay("echo", object())  # JSON cannot carry it, as with workers
            with pytest.raises(UnknownTaskError):
                await client.delay("nope")
            return ok, failed, coro, [client.get_result(t).result for t in batch], mapped, retried, me, client.stats()

    ok, failed, coro, batch, mapped, retried, me, stats = run(main())
    assert (ok.status, ok.result, coro.result) == (TaskStatus.SUCCESS, 5, 2)
    assert failed.status is TaskStatus.FAILURE and failed.error == "ValueError: boom"
    assert "Traceback" in failed.traceback
    assert batch == [0, 2, 4] and mapped == [2, 4]
    assert (retried.result, retried.attempts) == (2, 2)
    assert me.result == {"id": me.task_id, "name": "whoami", "attempt": 1, "priority": "LOW"}
    assert stats["eager"] is True


def test_eager_from_the_environment(monkeypatch):
    monkeypatch.setenv("FASTWORKER_EAGER", "1")

    async def main():
        async with Client() as client:  # would attach to a control plane if not eager
            return await client.submit_task("echo", args=({"a": [1, 2]},))

    assert run(main()).result == {"a": [1, 2]}


def test_eager_rejects_a_bad_flag(monkeypatch):
    from fastworker import ConfigError

    monkeypatch.setenv("FASTWORKER_EAGER", "maybe")
    with pytest.raises(ConfigError, match="eager"):
        Client()
