"""The embedded Client end to end: real forked workers, real shared memory."""

from __future__ import annotations

import asyncio
import os
from datetime import timezone

import pytest

from fastworker import (
    Client,
    ClientClosedError,
    PayloadTooLargeError,
    SerializationError,
    TaskNotFoundError,
    TaskPriority,
    TaskStatus,
    TaskTimeoutError,
    UnknownTaskError,
)

from .conftest import run

pytestmark = pytest.mark.timeout(60)


def test_sync_and_async_tasks_return_results_with_timestamps(client_factory):
    async def main():
        async with client_factory() as client:
            first = await client.submit_task("add", (2, 3))
            second = await client.submit_task("async_add", (4,), {"y": 5})
            task_id = await client.delay("add", 1, 1)
            third = await client.wait(task_id)
            return first, second, third, task_id

    first, second, third, task_id = run(main())
    assert (first.status, first.result, first.error) == (TaskStatus.SUCCESS, 5, None)
    assert second.result == 9 and third.result == 2 and third.task_id == task_id
    assert first.started_at.tzinfo is timezone.utc
    assert first.started_at <= first.completed_at


def test_a_failing_task_reports_type_message_and_traceback(client_factory):
    async def main():
        async with client_factory() as client:
            return await client.submit_task("fail", ("bad input",))

    result = run(main())
    assert result.status is TaskStatus.FAILURE
    assert result.error == "ValueError: bad input"
    assert "in fail" in result.traceback and "raise ValueError(message)" in result.traceback
    assert result.result is None


def test_unknown_task_is_refused_with_close_names_and_nothing_queued(client_factory):
    async def main():
        async with client_factory() as client:
            with pytest.raises(UnknownTaskError) as info:
                await client.delay("ad", 1, 2)
            return info.value, client.stats()["submitted"]

    error, submitted = run(main())
    assert "'ad'" in str(error) and "add" in error.suggestions
    assert submitted == 0


def test_unserializable_argument_fails_in_the_caller_naming_type_and_task(client_factory):
    async def main():
        async with client_factory() as client:
            with pytest.raises(SerializationError) as info:
                await client.delay("echo", {1, 2})
            assert isinstance(info.value, TypeError)
            return str(info.value), client.stats()["submitted"]

    message, submitted = run(main())
    assert "set" in message and "'echo'" in message and "PICKLE" in message.upper()
    assert submitted == 0


def test_unserializable_result_ends_the_task_in_failure(client_factory):
    async def main():
        async with client_factory() as client:
            return await client.submit_task("unserializable_result")

    result = run(main())
    assert result.status is TaskStatus.FAILURE
    assert result.error.startswith("SerializationError") and "set" in result.error


def test_pydantic_models_are_sent_through_model_dump(client_factory):
    pydantic = pytest.importorskip("pydantic")

    class Point(pydantic.BaseModel):
        x: int
        y: int

    async def main():
        async with client_factory() as client:
            return await client.submit_task("echo", (Point(x=1, y=2),))

    assert run(main()).result == {"x": 1, "y": 2}


def test_pickle_format_round_trips_python_objects(client_factory):
    async def main():
        async with client_factory(serialization_format="pickle") as client:
            return await client.submit_task("echo", (({1, 2}, (3, 4)),))

    assert run(main()).result == ({1, 2}, (3, 4))


def test_lanes_run_most_urgent_first_and_fifo_within_a_lane(client_factory, tmp_path):
    gate = tmp_path / "gate"
    log = tmp_path / "order"

    async def main():
        async with client_factory(workers=1) as client:
            blocker = await client.delay("wait_for_file", str(gate))
            while client.get_status(blocker) is not TaskStatus.STARTED:
                await asyncio.sleep(0.001)
            ids = {}
            for label, priority in [("low1", "low"), ("n1", TaskPriority.NORMAL), ("c1", 0), ("h1", "HIGH"),
                                    ("low2", TaskPriority.LOW), ("c2", "critical"), ("n2", 2), ("h2", 1)]:
                ids[label] = await client.delay("touch", str(log) + "." + label, priority=priority)
            gate.touch()
            results = {label: await client.wait(task_id) for label, task_id in ids.items()}
            return results

    results = run(main())
    order = sorted(results, key=lambda label: results[label].result)
    assert order == ["c1", "c2", "h1", "h2", "n1", "n2", "low1", "low2"]


def test_bad_priority_is_a_value_error_listing_names(client_factory):
    async def main():
        async with client_factory() as client:
            with pytest.raises(ValueError, match="critical, high, normal, low"):
                await client.delay("add", 1, 2, priority="urgent")

    run(main())


def test_submit_batch_keeps_order_and_queues_all_or_none(client_factory):
    async def main():
        async with client_factory() as client:
            ids = await client.submit_batch(
                [{"task_name": "add", "args": (i, i), "priority": "high" if i % 2 else "low"} for i in range(600)]
            )
            results = [await client.wait(task_id) for task_id in ids]
            before = client.stats()["submitted"]
            with pytest.raises(SerializationError):
                await client.submit_batch([{"task_name": "echo", "args": (1,)}, {"task_name": "echo", "args": (object(),)}])
            with pytest.raises(ValueError, match="task #1"):
                await client.submit_batch([{"task_name": "echo", "args": (1,)}, {"name": "echo"}])
            return results, before, client.stats()["submitted"]

    results, before, after = run(main())
    assert [r.result for r in results] == [2 * i for i in range(600)]
    assert before == after == 600


def test_a_full_ring_applies_back_pressure_and_loses_nothing(client_factory):
    async def main():
        async with client_factory(slots=16) as client:
            ids = [await client.delay("add", i, 1) for i in range(2000)]
            return [(await client.wait(task_id)).result for task_id in ids]

    assert run(main()) == [i + 1 for i in range(2000)]


def test_statuses_move_from_pending_to_started_to_success(client_factory, tmp_path):
    gate = tmp_path / "gate"

    async def main():
        async with client_factory(workers=1) as client:
            running = await client.delay("wait_for_file", str(gate))
            queued = await client.delay("add", 1, 2)
            while client.get_status(running) is not TaskStatus.STARTED:
                await asyncio.sleep(0.001)
            snapshot = await client.get_task_result(running)
            assert snapshot.started_at is not None and snapshot.completed_at is None
            assert client.get_status(queued) is TaskStatus.PENDING
            gate.touch()
            await client.wait(queued)
            assert client.get_status(running) is TaskStatus.SUCCESS
            assert await client.get_task_result("00000000-0000-4000-8000-000000000000") is None
            with pytest.raises(TaskNotFoundError):
                await client.wait("nope")

    run(main())


def test_cancel_a_queued_task_never_runs_it(client_factory, tmp_path):
    gate, marker = tmp_path / "gate", tmp_path / "marker"

    async def main():
        async with client_factory(workers=1) as client:
            running = await client.delay("wait_for_file", str(gate))
            victim = await client.delay("touch", str(marker))
            assert await client.cancel_task(victim) is True
            assert await client.cancel_task(victim) is False
            while client.get_status(running) is not TaskStatus.STARTED:
                await asyncio.sleep(0.001)
            assert await client.cancel_task(running) is True  # running: its worker is killed
            assert (await client.wait(running)).status is TaskStatus.CANCELLED
            after = await client.delay("add", 1, 1)  # on the worker that replaced it
            await client.wait(after)
            assert await client.cancel_task(after) is False  # finished
            return await client.wait(victim)

    result = run(main())
    assert result.status is TaskStatus.CANCELLED
    assert not marker.exists()


def test_wait_with_a_timeout_raises_and_the_task_keeps_running(client_factory, tmp_path):
    gate = tmp_path / "gate"

    async def main():
        async with client_factory(workers=1) as client:
            task_id = await client.delay("wait_for_file", str(gate))
            with pytest.raises(TaskTimeoutError, match="did not finish within"):
                await client.wait(task_id, timeout=0.05)
            gate.touch()
            return await client.wait(task_id)

    assert run(main()).status is TaskStatus.SUCCESS


@pytest.mark.parametrize("size", [0, 1, 170, 171, 172, 176, 177, 1000, 4096, 1 << 20])
def test_payloads_cross_the_inline_and_arena_boundaries_intact(client_factory, size):
    value = "x" * size

    async def main():
        async with client_factory() as client:
            return await client.submit_task("echo", (value,))

    assert run(main()).result == value


def test_a_64_mib_payload_round_trips(client_factory):
    value = os.urandom(64 << 20)

    async def main():
        async with client_factory(serialization_format="pickle", arena_size="160MiB") as client:
            return await client.submit_task("echo", (value,))

    assert run(main()).result == value


def test_a_payload_larger_than_the_arena_is_refused_clearly(client_factory):
    async def main():
        async with client_factory(arena_size="1MiB") as client:
            with pytest.raises(PayloadTooLargeError, match="arena"):
                await client.delay("echo", "y" * (2 << 20))
            return await client.submit_task("add", (1, 2))

    assert run(main()).result == 3


def test_a_client_used_after_stop_says_so(client_factory):
    async def main():
        client = client_factory()
        with pytest.raises(ClientClosedError, match="not started"):
            await client.delay("add", 1, 2)
        async with client:
            pass
        with pytest.raises(ClientClosedError, match="stopped"):
            await client.delay("add", 1, 2)

    run(main())


def test_leaving_on_an_exception_cleans_up_and_ends_unfinished_tasks(client_factory, tmp_path):
    gate = tmp_path / "gate"

    async def main():
        client = client_factory(workers=1)
        with pytest.raises(RuntimeError):
            async with client:
                task_id = await client.delay("wait_for_file", str(gate))
                raise RuntimeError("user code failed")
        return client.get_result(task_id)

    result = run(main())
    assert result.status is TaskStatus.CANCELLED


def test_attach_mode_is_refused_with_a_hint():
    from fastworker import ControlPlaneUnavailable

    async def main():
        with pytest.raises(ControlPlaneUnavailable, match="workers=N"):
            async with Client():
                pass

    run(main())


@pytest.mark.parametrize("spin_us", [0, 20])
def test_workers_serve_with_and_without_spinning(client_factory, spin_us):
    async def main():
        async with client_factory(spin_us=spin_us) as client:
            results = [(await client.submit_task("add", (i, i))).result for i in range(200)]
            return results, client.stats()

    results, stats = run(main())
    assert results == [2 * i for i in range(200)]
    if spin_us == 0:
        assert stats["spin_hits"] == stats["spin_misses"] == 0


def test_task_modules_are_imported_before_the_workers_start(client_factory, tmp_path, monkeypatch):
    (tmp_path / "shop_tasks.py").write_text(
        "from fastworker import task\n\n@task(name='shop.total')\ndef total(prices):\n    return sum(prices)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from fastworker.tasks.registry import registry

    state = registry._snapshot_state()

    async def main():
        async with client_factory(task_modules="shop_tasks") as client:
            return await client.submit_task("shop.total", ([1, 2, 3],))

    try:
        assert run(main()).result == 6
    finally:
        registry._restore_state(state)


def test_a_task_module_that_fails_to_import_stops_the_start_naming_it(client_factory, tmp_path, monkeypatch):
    from fastworker import TaskModuleImportError

    (tmp_path / "broken_tasks.py").write_text("raise RuntimeError('missing setting')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    async def main():
        with pytest.raises(TaskModuleImportError, match="broken_tasks") as info:
            async with client_factory(task_modules=["broken_tasks"]):
                pass
        return info.value

    error = run(main())
    assert "missing setting" in str(error)


def test_submit_task_waits_at_most_the_clients_timeout(client_factory, tmp_path):
    gate = tmp_path / "gate"

    async def main():
        async with client_factory(workers=1, timeout=0.05) as client:
            with pytest.raises(TaskTimeoutError):
                await client.submit_task("wait_for_file", (str(gate),))
            gate.touch()

    run(main())


def test_a_big_arena_is_usable_as_soon_as_the_client_starts(client_factory):
    """Over 8 MiB the arena is reserved by the fork server after start; a big
    payload submitted at once waits for it rather than failing."""

    async def main():
        async with client_factory(arena_size="64MiB") as client:
            result = await client.submit_task("echo", ("z" * (1 << 20),))
            return result, client._segment.arena_state

    result, state = run(main())
    assert result.result == "z" * (1 << 20)
    assert state == "ready"


def test_bursts_of_delays_never_lose_a_wake_up(client_factory):
    """The throughput pattern (a burst of delay() through a full ring, then
    wait for each) in rounds: every task completes and no worker ever had to
    be rescued by its safety timeout with work waiting (a lost wake-up)."""

    async def main():
        async with client_factory(slots=512, result_cache_size=40_000) as client:
            for _ in range(3):
                ids = [await client.delay("add", i, 1) for i in range(20_000)]
                results = [(await client.wait(task_id)).result for task_id in ids]
                assert results == [i + 1 for i in range(20_000)]
            return client.stats()

    stats = run(main())
    assert stats["rescues"] == 0


def test_map_yields_results_in_order_and_raises_a_failure(client_factory):
    from fastworker import TaskFailedError

    async def main():
        async with client_factory() as client:
            echoed = [value async for value in client.map("echo", range(300), window=16)]
            sums = [value async for value in client.map("add", [(1, 2), (3, 4)], star=True)]
            empty = [value async for value in client.map("echo", [])]
            seen = []
            with pytest.raises(TaskFailedError, match="ValueError: no 2") as info:
                async for value in client.map("fail_on_two", [0, 1, 2, 3, 4], window=2):
                    seen.append(value)
            return echoed, sums, empty, seen, info.value.result

    echoed, sums, empty, seen, failed = run(main())
    assert echoed == list(range(300))
    assert sums == [3, 7]
    assert empty == []
    assert seen == [0, 1]
    assert failed.error == "ValueError: no 2" and "fail_on_two" in failed.traceback


def test_map_reads_a_lazy_iterable_only_as_far_as_it_needs(client_factory):
    pulled = []

    def numbers():
        for i in range(10_000):
            pulled.append(i)
            yield i

    async def main():
        async with client_factory() as client:
            got = []
            async for value in client.map("echo", numbers(), window=5):
                got.append(value)
                if len(got) == 20:
                    break
            return got

    assert run(main()) == list(range(20))
    assert len(pulled) <= 20 + 5 + 1
