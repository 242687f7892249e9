"""Faults: tasks that kill their worker at every stage, a worker killed while
it holds the ring lock, signals, stale segments, too little shared memory."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from fastworker import SharedMemoryFullError, TaskStatus, _native
from fastworker.engine import shm

from .conftest import run
from .tasks_for_tests import ExplodesOnLoad

pytestmark = pytest.mark.timeout(60)

LOST = "WorkerLostError: worker 0 (pid {pid}) "
EXPECTED = {
    # how the task misbehaves -> the error the caller sees, wherever it happens
    "sys.exit": "SystemExit: 3",
    "os._exit": "exited with code 7",
    "SIGKILL": "was killed by signal 9 (SIGKILL)",
    "segfault": "was killed by signal 11 (SIGSEGV)",
}
RAISED = {
    "decode": "SerializationError: Cannot decode task arguments (pickle): RuntimeError: raised on purpose",
    "run": "RuntimeError: raised on purpose",
    "encode": "SerializationError:",
}


def submit_misbehaving(where, how):
    if where == "decode":
        return "take_anything", (ExplodesOnLoad(how),)
    if where == "run":
        return "run_and", (how,)
    return "return_exploding", (how,)


@pytest.mark.parametrize("how", ["raise", "sys.exit", "os._exit", "SIGKILL", "segfault"])
@pytest.mark.parametrize("where", ["decode", "run", "encode"])
def test_crash_matrix_each_failure_reaches_the_caller_and_the_pool_keeps_working(client_factory, where, how):
    name, args = submit_misbehaving(where, how)

    async def main():
        async with client_factory(workers=1, serialization_format="pickle") as client:
            failed = await client.submit_task(name, args)
            after = await client.submit_task("add", (20, 22))
            return failed, after, client.stats()["workers_lost"]

    failed, after, lost = run(main())
    assert failed.status is TaskStatus.FAILURE
    assert after.status is TaskStatus.SUCCESS and after.result == 42
    if how == "raise":
        assert failed.error.startswith(RAISED[where]), failed.error
        assert lost == 0
    elif how == "sys.exit":
        assert failed.error == EXPECTED[how]
        assert lost == 0  # SystemExit in a task does not end the worker
    else:
        assert failed.error.startswith("WorkerLostError: worker 0 (pid "), failed.error
        assert failed.error.endswith(EXPECTED[how]), failed.error
        assert lost == 1


def test_worker_killed_while_holding_the_lock_in_complete(client_factory):
    """It dies inside complete(), lock held, before publishing: the next locker
    recovers the ring and the task fails as lost, never half-published."""

    async def main():
        async with client_factory(workers=1) as client:
            victim = await client.submit_task("crash_inside_ring", ("complete",))
            results = [await client.submit_task("add", (i, i)) for i in range(50)]
            stats, census = client.stats(), client._segment.check()
            return victim, results, stats, census

    victim, results, stats, census = run(main())
    assert victim.status is TaskStatus.FAILURE
    assert victim.error.startswith("WorkerLostError") and "SIGKILL" in victim.error
    assert [r.result for r in results] == [2 * i for i in range(50)]
    assert stats["recoveries"] >= 1 and stats["workers_lost"] == 1
    assert census["error"] == 0 and census["free"] == 256


def test_worker_killed_while_holding_the_lock_in_take_loses_no_task(client_factory, tmp_path):
    """It dies mid-take, after unlinking the task from its lane: recovery puts
    the task back at the head of its lane and the replacement runs it once."""
    marker = tmp_path / "ran"

    async def main():
        async with client_factory(workers=1) as client:
            armed = await client.submit_task("crash_inside_ring", ("take",))
            victim = await client.submit_task("touch", (str(marker),))
            more = [await client.submit_task("add", (i, 1)) for i in range(20)]
            return armed, victim, more, client.stats(), client._segment.check()

    armed, victim, more, stats, census = run(main())
    assert armed.status is TaskStatus.SUCCESS
    assert victim.status is TaskStatus.SUCCESS
    assert len(marker.read_text().splitlines()) == 1  # ran exactly once
    assert [r.result for r in more] == [i + 1 for i in range(20)]
    assert stats["recoveries"] >= 1 and stats["workers_lost"] == 1
    assert census["error"] == 0


def test_every_other_task_completes_while_workers_are_killed(client_factory):
    async def main():
        async with client_factory(workers=2) as client:
            ids = [await client.delay("add", i, 0) for i in range(300)]
            killer = [await client.delay("run_and", "SIGKILL") for _ in range(3)]
            results = [await client.wait(task_id) for task_id in ids]
            killed = [await client.wait(task_id) for task_id in killer]
            return results, killed, client._segment.check()

    results, killed, census = run(main())
    assert [r.result for r in results] == list(range(300))
    assert all("SIGKILL" in r.error for r in killed)
    assert census["error"] == 0


def test_a_signal_to_a_worker_never_runs_the_parent_loops_handler(client_factory):
    """Python 3.11 regression: a forked child kept the parent loop's signal
    wake-up fd, so SIGUSR1 sent to the child ran the parent's handler."""
    hits = []
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)  # the parent is threaded too
    thread.start()

    async def main():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, hits.append, "parent")
        try:
            async with client_factory(workers=1) as client:
                while not client.stats()["worker_pids"]:
                    await asyncio.sleep(0.005)
                worker = client.stats()["worker_pids"][0]
                os.kill(worker, signal.SIGUSR1)  # default action: the worker dies
                while client.stats()["workers_lost"] == 0:
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.05)  # give a stray self-pipe byte time to be read
                return (await client.submit_task("add", (2, 2))).result
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    try:
        assert run(main()) == 4
    finally:
        stop.set()
        thread.join()
    assert hits == []


def test_functions_defined_in_the_users_main_module_are_tasks(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            from fastworker import Client, task

            @task
            def square(x):
                return x * x

            async def main():
                async with Client(workers=2, arena_size="4MiB") as client:
                    ids = [await client.delay("square", i) for i in range(10)]
                    print(sum([(await client.wait(i)).result for i in ids]))

            asyncio.run(main())
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "285"


def test_ctrl_c_in_a_script_removes_every_process_and_segment(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, os, signal, sys
            from fastworker import Client, task

            @task
            def forever():
                import time
                time.sleep(60)

            async def main():
                async with Client(workers=2, arena_size="4MiB") as client:
                    await client.delay("forever")
                    while len(client.stats()["worker_pids"]) < 2:
                        await asyncio.sleep(0.01)
                    print(client._segment.name, *client.stats()["worker_pids"].values(), flush=True)
                    await asyncio.sleep(60)

            asyncio.run(main())
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if len(line) < 3:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"script did not report its workers: {line} {err}")
    name, pids = line[0], [int(p) for p in line[1:]]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert "KeyboardInterrupt" in err
    assert not os.path.exists(shm.SHM_DIR + name)
    for worker in pids:
        assert not os.path.exists(f"/proc/{worker}") or open(f"/proc/{worker}/stat").read().split()[2] == "Z"


def test_a_killed_owner_leaves_no_segment_and_no_process_behind(tmp_path):
    """SIGKILL of the owner: the zygote gets SIGTERM (PDEATHSIG), unlinks the
    segment and kills the workers (whose own PDEATHSIG is SIGKILL)."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            from fastworker import Client, task

            async def main():
                async with Client(workers=2, arena_size="4MiB") as client:
                    while len(client.stats()["worker_pids"]) < 2:
                        await asyncio.sleep(0.01)
                    pids = [client._supervisor.zygote.pid, *client.stats()["worker_pids"].values()]
                    print(client._segment.name, *pids, flush=True)
                    await asyncio.sleep(60)

            asyncio.run(main())
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    name, *pids = proc.stdout.readline().split()
    assert os.path.exists(shm.SHM_DIR + name) and len(pids) == 3
    proc.kill()
    proc.communicate(timeout=10)

    def gone(pid):
        try:
            return psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (os.path.exists(shm.SHM_DIR + name) or not all(map(gone, pids))):
        time.sleep(0.01)
    assert not os.path.exists(shm.SHM_DIR + name)
    assert all(map(gone, pids)), "the fork server and the workers must die with their owner"


def _fake_segment(owner_pid, ticks):
    layout = _native.layout()
    head = bytearray(64)
    struct.pack_into("<I", head, layout["off_owner_pid"], owner_pid)
    struct.pack_into("<Q", head, layout["off_owner_start_time"], ticks)
    path = f"{shm.SHM_DIR}/{shm.user_prefix()}e-{owner_pid}-test{os.getpid()}"
    with open(path, "wb") as f:
        f.write(head)
    return path


def test_start_removes_stale_segments_and_never_touches_a_live_owners(client_factory):
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    stale = _fake_segment(child, 12345)
    live = _fake_segment(os.getpid(), shm.process_start_ticks(os.getpid()))
    try:

        async def main():
            async with client_factory():
                pass

        run(main())
        assert not os.path.exists(stale)
        assert os.path.exists(live)
    finally:
        for path in (stale, live):
            if os.path.exists(path):
                os.unlink(path)


def test_too_little_shared_memory_is_a_clear_error_at_start(client_factory):
    st = os.statvfs(shm.SHM_DIR)
    too_big = st.f_blocks * st.f_frsize + (1 << 30)

    async def main():
        with pytest.raises(SharedMemoryFullError, match=r"needs .* MiB in /dev/shm .* only .* MiB is free"):
            async with client_factory(arena_size=too_big):
                pass

    run(main())


def test_segment_is_private_to_its_user(client_factory):
    async def main():
        async with client_factory() as client:
            return os.stat(shm.SHM_DIR + client._segment.name).st_mode & 0o777

    assert run(main()) == 0o600


def test_a_client_never_stopped_is_stopped_at_exit(tmp_path):
    """The script drops its started Client: the process still leaves no segment and
    no child behind, and says what it did."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            from fastworker import Client, task

            @task
            def add(x, y):
                return x + y

            async def main():
                client = Client(workers=2, arena_size="4MiB")
                await client.start()
                print(client._segment.name, flush=True)
                print((await client.submit_task("add", (1, 2))).result, flush=True)

            asyncio.run(main())
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    name, result = out.stdout.split()
    assert result == "3"
    assert "never stopped" in out.stderr
    assert not os.path.exists(shm.SHM_DIR + name)
