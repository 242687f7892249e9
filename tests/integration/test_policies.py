"""Task policies on an embedded Client: retries (also after a worker died), hard timeouts,
cancelling running and scheduled work, countdown/eta, current_task(), hooks, events and
callbacks, worker recycling."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

import pytest

from fastworker import TaskPriority, TaskStatus

from .conftest import run

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------------------- retries


def test_a_failing_task_is_retried_until_it_succeeds(client_factory, tmp_path):
    seen = []

    async def main():
        async with client_factory() as client:
            client.on("task.retrying", seen.append)
            return await client.submit_task("flaky", args=(str(tmp_path / "n"), 2))

    result = run(main())
    assert (result.status, result.result, result.attempts) == (TaskStatus.SUCCESS, 3, 3)
    assert [(e["attempt"], e["error"]) for e in seen] == [
        (2, "ValueError: attempt 1 fails"), (3, "ValueError: attempt 2 fails"),
    ]


def test_when_retries_run_out_the_last_attempts_error_is_the_result(client_factory, tmp_path):
    async def main():
        async with client_factory() as client:
            return await client.submit_task("flaky", args=(str(tmp_path / "n"), 10))

    result = run(main())
    assert (result.status, result.error, result.attempts) == (TaskStatus.FAILURE, "ValueError: attempt 3 fails", 3)
    assert (tmp_path / "n").read_text() == "xxx"


def test_per_call_retries_override_the_tasks_own(client_factory, tmp_path):
    async def main():
        async with client_factory() as client:
            none = await client.submit_task("flaky", args=(str(tmp_path / "a"), 1), retries=0)
            some = await client.submit_task("fail", args=("boom",), retries=2)
            return none, some

    none, some = run(main())
    assert (none.status, none.attempts) == (TaskStatus.FAILURE, 1)
    assert (some.status, some.error, some.attempts) == (TaskStatus.FAILURE, "ValueError: boom", 3)


def test_a_task_whose_worker_was_killed_is_retried(client_factory, tmp_path):
    async def main():
        async with client_factory() as client:
            return await client.submit_task("die_first", args=(str(tmp_path / "n"),))

    result = run(main())
    assert (result.status, result.result, result.attempts) == (TaskStatus.SUCCESS, 2, 2)


def test_bad_per_call_options_are_refused_and_nothing_is_queued(client_factory):
    async def main():
        async with client_factory() as client:
            for options, error in [({"retries": -1}, ValueError), ({"timeout": 0}, ValueError),
                                   ({"countdown": -1}, ValueError), ({"countdown": "soon"}, TypeError),
                                   ({"eta": "tomorrow"}, TypeError),
                                   ({"countdown": 1, "eta": datetime.now(timezone.utc)}, ValueError)]:
                with pytest.raises(error):
                    await client.queue_task("add", (1, 2), **options)
            return client.stats()["submitted"]

    assert run(main()) == 0


# ------------------------------------------------------------------------- hard timeouts


def test_a_task_past_its_timeout_fails_and_its_worker_is_replaced(client_factory):
    async def main():
        async with client_factory() as client:
            while len(client.stats()["worker_pids"]) < 2:  # both workers up
                await asyncio.sleep(0.01)
            pids_before = set(client.stats()["worker_pids"].values())
            slow = await client.delay("sleep_then_return", 30, "late")
            other = await client.delay("busy_for", 400_000)  # on the other worker: not disturbed
            slow_result = await client.wait(slow, timeout=20)
            other_result = await client.wait(other, timeout=20)
            after = await client.submit_task("add", args=(2, 3))
            return slow_result, other_result, after, pids_before, set(client.stats()["worker_pids"].values())

    slow, other, after, before, now = run(main())
    assert slow.status is TaskStatus.FAILURE
    assert slow.error.startswith("TaskTimeoutError: task 'sleep_then_return' ran past its timeout of 0.3 s")
    assert (other.status, after.result) == (TaskStatus.SUCCESS, 5)
    assert len(before & now) == 1  # one worker replaced, the other untouched


def test_a_timeout_that_lands_while_the_worker_holds_the_ring_lock(client_factory):
    async def main():
        async with client_factory(workers=1, slots=65536) as client:
            outcomes = []
            # The parent finds the deadline with the lock held, then kills: the worker is back
            # in the lock a moment later, or not yet; go on until one kill has landed inside.
            while client.stats()["recoveries"] == 0 and len(outcomes) < 20:
                outcomes.append(await client.submit_task("hold_the_ring_lock", args=(client._segment.name,)))
            after = await client.submit_task("add", args=(1, 2))
            return outcomes, after, client.stats(), client._segment.check(), client._segment.nslots

    outcomes, after, stats, census, nslots = run(main())
    assert all(r.status is TaskStatus.FAILURE and "timeout of 0.2 s" in r.error for r in outcomes)
    assert stats["recoveries"] >= 1  # the next locker recovered the lock of the killed worker
    assert after.result == 3 and census["error"] == 0 and census["free"] == nslots


def test_a_per_call_timeout_and_retries_of_a_timed_out_task(client_factory, tmp_path):
    async def main():
        async with client_factory() as client:
            limited = await client.submit_task("wait_for_file", args=(str(tmp_path / "never"),), timeout=0.2)
            retried = await client.submit_task("sleep_then_return", args=(30, "x"), retries=1)
            return limited, retried

    limited, retried = run(main())
    assert limited.status is TaskStatus.FAILURE and "timeout of 0.2 s" in limited.error
    assert (retried.status, retried.attempts) == (TaskStatus.FAILURE, 2)
    assert "timeout of 0.3 s" in retried.error


# ------------------------------------------------------------------------------ cancelling


def test_cancel_racing_completion_ends_one_way_or_the_other(client_factory):
    async def main():
        async with client_factory() as client:
            outcomes = []
            for i in range(60):
                task_id = await client.delay("busy_for", (i % 6) * 100)
                await asyncio.sleep((i % 3) * 0.0002)
                cancelled = await client.cancel_task(task_id)
                result = await client.wait(task_id, timeout=20)
                outcomes.append((cancelled, result.status))
                assert await client.cancel_task(task_id) is False  # twice: no
            return outcomes, await client.submit_task("add", args=(1, 1))

    outcomes, after = run(main())
    assert set(outcomes) <= {(True, TaskStatus.CANCELLED), (False, TaskStatus.SUCCESS)}
    assert after.result == 2


def test_a_scheduled_task_can_be_cancelled_and_never_runs(client_factory, tmp_path):
    marker = tmp_path / "ran"

    async def main():
        async with client_factory() as client:
            task_id = await client.delay("touch", str(marker), countdown=0.3)
            assert client.get_status(task_id) is TaskStatus.PENDING
            assert await client.cancel_task(task_id) is True
            assert await client.cancel_task(task_id) is False
            await asyncio.sleep(0.5)
            return await client.wait(task_id)

    assert run(main()).status is TaskStatus.CANCELLED
    assert not marker.exists()


# ------------------------------------------------------------------------- countdown / eta


def test_countdown_holds_the_task_until_it_is_due(client_factory):
    async def main():
        async with client_factory() as client:
            submitted = datetime.now(timezone.utc)
            task_id = await client.delay("add", 1, 2, countdown=0.3)
            assert client.get_status(task_id) is TaskStatus.PENDING
            return submitted, await client.wait(task_id, timeout=20)

    submitted, result = run(main())
    assert result.result == 3
    assert result.started_at >= submitted + timedelta(seconds=0.29)


def test_eta_aware_naive_and_past(client_factory):
    async def main():
        async with client_factory() as client:
            soon = datetime.now(timezone.utc) + timedelta(seconds=0.2)
            aware = await client.delay("add", 1, 1, eta=soon)
            naive = await client.delay("add", 2, 2, eta=datetime.now() + timedelta(seconds=0.2))  # local time
            past = await client.delay("add", 3, 3, eta=datetime(2000, 1, 1, tzinfo=timezone.utc))
            results = [await client.wait(t, timeout=20) for t in (aware, naive, past)]
            return soon, results

    soon, (aware, naive, past) = run(main())
    assert [r.result for r in (aware, naive, past)] == [2, 4, 6]
    assert aware.started_at >= soon - timedelta(milliseconds=10)
    assert naive.started_at >= soon - timedelta(milliseconds=50)


def test_scheduled_tasks_keep_their_priority_when_due(client_factory):
    async def main():
        async with client_factory(workers=1) as client:
            urgent = await client.delay("whoami", priority="critical", countdown=0.05)
            return await client.wait(urgent, timeout=20)

    result = run(main())
    assert result.result["priority"] == "CRITICAL"


def test_stopping_the_client_cancels_what_waits_for_its_time(client_factory):
    async def main():
        client = client_factory()
        await client.start()
        task_id = await client.delay("add", 1, 1, countdown=60)
        client.stop()
        return client.get_result(task_id)

    assert run(main()).status is TaskStatus.CANCELLED


# ------------------------------------------------------------------- context and hooks


def test_current_task_tells_the_task_its_id_name_attempt_and_priority(client_factory, tmp_path):
    async def main():
        async with client_factory() as client:
            task_id = await client.delay("whoami", priority=TaskPriority.HIGH)
            first = await client.wait(task_id)
            retried = await client.submit_task("whoami_on_retry", args=(str(tmp_path / "n"),))
            return task_id, first, retried

    task_id, first, retried = run(main())
    assert first.result == {"id": task_id, "name": "whoami", "attempt": 1, "priority": "HIGH"}
    assert retried.result["attempt"] == 2 and retried.result["id"] == retried.task_id


def test_current_task_outside_a_task_is_none():
    from fastworker import current_task

    assert current_task() is None


def test_before_and_after_hooks_run_in_the_worker(client_factory, tmp_path):
    log = tmp_path / "hooks"

    async def main():
        async with client_factory() as client:
            ok = await client.submit_task("hooked", args=(str(log),))
            failed = await client.submit_task("hooked", args=(str(log),), kwargs={"fail": True})
            broken = await client.submit_task("with_broken_after", args=(7,))
            return ok, failed, broken

    ok, failed, broken = run(main())
    assert ok.result == str(log) and failed.status is TaskStatus.FAILURE
    assert log.read_text() == "after hooked ok\nafter hooked ValueError\n"
    assert (broken.status, broken.result) == (TaskStatus.SUCCESS, 7)  # a broken after= hook changes nothing


# ------------------------------------------------------------------- events and callbacks


def test_events_follow_each_task_and_a_raising_handler_breaks_nothing(client_factory, caplog):
    events: list[tuple[str, str]] = []

    async def record_async(payload):
        events.append((payload["event"], payload["task_name"]))

    def explode(payload):
        raise RuntimeError("handler bug")

    async def main():
        async with client_factory(workers=1) as client:
            for name in ("task.queued", "task.success", "task.failure", "task.cancelled"):
                client.on(name, lambda p: events.append((p["event"], p["task_name"])))
            client.on("task.started", record_async)
            client.on("task.success", explode)
            ok = await client.delay("add", 1, 2)
            bad = await client.delay("fail", "x")
            gone = await client.delay("add", 0, 0, countdown=30)
            await client.cancel_task(gone)
            await client.wait(ok)
            await client.wait(bad)
            await asyncio.sleep(0.05)  # async handlers run on the loop
            with pytest.raises(ValueError, match="unknown event"):
                client.on("task.done", print)

    with caplog.at_level(logging.ERROR, logger="fastworker.events"):
        run(main())
    assert events.count(("task.queued", "add")) == 2
    assert {("task.success", "add"), ("task.failure", "fail"), ("task.cancelled", "add"),
            ("task.started", "add"), ("task.started", "fail")} <= set(events)
    assert "handler bug" in caplog.text


def test_task_started_is_reported_while_the_task_runs(client_factory, tmp_path):
    gate = tmp_path / "gate"
    started: list[dict] = []

    async def main():
        async with client_factory(workers=1) as client:
            client.on("task.started", started.append)
            task_id = await client.delay("wait_for_file", str(gate))
            for _ in range(500):
                if started:
                    break
                await asyncio.sleep(0.01)
            status_then = client.get_status(task_id)
            gate.touch()
            await client.wait(task_id)
            return task_id, status_then

    task_id, status_then = run(main())
    assert status_then is TaskStatus.STARTED  # reported before it finished
    assert [(e["task_id"], e["attempt"]) for e in started] == [(task_id, 1)]  # once, not again at the end
    assert started[0]["started_at"] is not None


def test_worker_events(client_factory):
    events: list[dict] = []

    async def main():
        async with client_factory(workers=1) as client:
            client.on("worker.lost", events.append)
            client.on("worker.started", events.append)
            await client.submit_task("run_and", args=("SIGKILL",))
            await client.submit_task("add", args=(1, 1))

    run(main())
    lost = [e for e in events if e["event"] == "worker.lost"]
    assert len(lost) == 1 and "SIGKILL" in lost[0]["how"] and lost[0]["tasks_failed"] == 1
    assert any(e["event"] == "worker.started" for e in events)


def test_delay_with_callback_calls_sync_and_async_callbacks_with_the_documented_dict(client_factory, caplog):
    got: list[dict] = []

    async def acallback(payload):
        got.append(payload)

    def broken(payload):
        raise RuntimeError("callback bug")

    async def main():
        async with client_factory() as client:
            ok = await client.delay_with_callback("add", got.append, 2, 3, callback_data={"k": 1})
            bad = await client.delay_with_callback("fail", acallback, "no", callback_data="d")
            await client.delay_with_callback("add", broken, 1, 1)
            await client.wait(ok)
            await client.wait(bad)
            for _ in range(100):
                if len(got) == 2:
                    break
                await asyncio.sleep(0.01)
            with pytest.raises(TypeError, match="callback must be callable"):
                await client.delay_with_callback("add", "not callable", 1, 1)
            await asyncio.sleep(0.05)
            return ok

    with caplog.at_level(logging.ERROR, logger="fastworker.events"):
        ok = run(main())
    by_id = {p["task_id"]: p for p in got}
    assert set(by_id[ok]) == {"task_id", "status", "result", "error", "started_at", "completed_at", "callback_data"}
    assert (by_id[ok]["status"], by_id[ok]["result"], by_id[ok]["callback_data"]) == ("success", 5, {"k": 1})
    [failed] = [p for p in got if p["task_id"] != ok]
    assert (failed["status"], failed["error"], failed["callback_data"]) == ("failure", "ValueError: no", "d")
    assert "callback bug" in caplog.text


# --------------------------------------------------------------------- worker recycling


def test_max_tasks_per_child_recycles_the_embedded_clients_workers(client_factory):
    async def main():
        async with client_factory(workers=1, max_tasks_per_child=2) as client:
            return [(await client.submit_task("pid", args=())).result for _ in range(6)]

    pids = run(main())
    assert len(set(pids)) == 3 and pids[0] == pids[1] and pids[2] == pids[3]


def test_max_memory_per_child_replaces_a_worker_that_grew(client_factory):
    async def baseline():
        async with client_factory(workers=1) as client:
            return (await client.submit_task("rss", args=())).result  # a fresh worker's RSS, forked from us

    limit = run(baseline()) + (40 << 20)

    async def main():
        async with client_factory(workers=1, max_memory_per_child=limit) as client:
            small = (await client.submit_task("grow", args=(1,))).result
            grown = (await client.submit_task("grow", args=(80,))).result
            after = (await client.submit_task("pid", args=())).result
            return small, grown, after

    small, grown, after = run(main())
    assert small == grown != after


@pytest.mark.parametrize("bad", ["lots", "1k", 0])
def test_max_memory_per_child_must_be_a_size(client_factory, bad):
    from fastworker import ConfigError

    with pytest.raises(ConfigError, match="max_memory_per_child"):
        client_factory(max_memory_per_child=bad)
