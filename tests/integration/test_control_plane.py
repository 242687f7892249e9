"""The control plane as a real service: `fastworker control-plane` runs in a
subprocess, clients attach to it by name (in this process or in others), and
it is stopped, killed, refused and restarted the ways a user would."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import psutil
import pytest

from fastworker import (
    Client,
    ClientClosedError,
    ControlPlaneUnavailable,
    TaskStatus,
    UnknownTaskError,
    _native,
)
from fastworker.engine import runtime, shm

pytestmark = pytest.mark.timeout(60)

TASK_MODULE = "cp_test_tasks"
TASKS = '''
import time

from fastworker import task


@task
def add(x, y):
    return x + y


@task
def nap(seconds):
    time.sleep(seconds)
    return seconds
'''
CLI = [sys.executable, "-c", "from fastworker.cli import main; main()", "control-plane"]
READY_TIMEOUT = 20.0


def unique_name() -> str:
    return f"t{os.getpid()}-{uuid4().hex[:6]}"


def segment_path(name: str) -> str:
    return shm.SHM_DIR + name  # names start with '/'


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(predicate, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(interval)
    return True


def census(segment_name: str) -> dict:
    segment = _native.attach(segment_name)
    try:
        return segment.check()
    finally:
        segment.close()


@dataclass
class ControlPlaneProcess:
    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def place(self) -> runtime.Place:
        return runtime.place(self.name)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children(recursive=True)

    def wait_ready(self) -> None:
        """Ready: the pid file names this process and its socket accepts a connection."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"control plane {self.name} exited with {self.proc.returncode}:\n{self.output()}")
            if self.place.owner() == self.pid and os.path.exists(self.place.socket):
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                try:
                    probe.connect(self.place.socket)
                    return
                except OSError:
                    pass
                finally:
                    probe.close()
            time.sleep(0.01)
        pytest.fail(f"control plane {self.name} not ready after {READY_TIMEOUT} s:\n{self.output()}")

    def wait_workers(self, count: int) -> list[psutil.Process]:
        """The fork server and `count` workers below it."""
        assert wait_until(lambda: len(self.descendants()) >= count + 1, 10.0), self.descendants()
        return self.descendants()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def launch(directory: Path, task_modules: str, name: str | None = None, env: dict[str, str] | None = None,
           log_name: str = "cp.log", ready: bool = True) -> ControlPlaneProcess:
    """`fastworker control-plane --workers 2` in a subprocess, importing `task_modules` from
    `directory` (and the repository), with a small arena; stop it with `retire`."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(directory), str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")) if p
    )
    full_env["FASTWORKER_ARENA_SIZE"] = "4MiB"
    full_env.update(env or {})
    log = directory / log_name
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*CLI, "--workers", "2", "--task-modules", task_modules, "--name", name or unique_name()],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    cp = ControlPlaneProcess(proc.args[-1], proc, log)
    if ready:
        try:
            cp.wait_ready()
        except BaseException:
            retire([cp])
            raise
    return cp


def retire(started: list[ControlPlaneProcess]) -> None:
    for cp in started:
        cp.stop()
    for cp in started:
        place = cp.place
        if place.owner() is None:  # a killed one leaves its files; never touch a live owner's
            place.release()


@pytest.fixture
def control_plane(tmp_path):
    """start(name=None, env=None, ready=True): a `fastworker control-plane` subprocess,
    always stopped afterwards (SIGTERM, then SIGKILL)."""
    (tmp_path / f"{TASK_MODULE}.py").write_text(TASKS)
    started: list[ControlPlaneProcess] = []

    def start(name: str | None = None, env: dict[str, str] | None = None, ready: bool = True) -> ControlPlaneProcess:
        log_name = f"cp-{len(started)}.log"
        cp = launch(tmp_path, TASK_MODULE, name, env, log_name, ready=False)
        started.append(cp)
        if ready:
            cp.wait_ready()
        return cp

    yield start
    retire(started)


def run_client(name: str, body):
    """asyncio.run(body(client)) with a Client attached to control plane `name`."""

    async def main():
        async with Client(name=name) as client:
            return await body(client)

    return asyncio.run(main())


async def until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        await asyncio.sleep(0.01)
    return True


# --------------------------------------------------------------------- attach


def test_an_attached_client_runs_tasks_through_the_control_plane(control_plane):
    cp = control_plane()

    async def body(client):
        one = await client.submit_task("add", (2, 3))
        keywords = await client.submit_task("add", kwargs={"x": "a", "y": "b"})
        ids = [await client.delay("add", i, 1000) for i in range(50)]
        waited = [await client.wait(task_id) for task_id in ids]
        batch = await client.submit_batch([{"task_name": "add", "args": (i, -i * 2)} for i in range(100)])
        batched = [await client.wait(task_id) for task_id in batch]
        with pytest.raises(UnknownTaskError) as unknown:
            await client.delay("no_such_task")
        return one, keywords, ids + batch, waited, batched, str(unknown.value), client.stats(), client._segment.name

    one, keywords, ids, waited, batched, unknown, stats, segment = run_client(cp.name, body)
    assert (one.status, one.result, one.task_name) == (TaskStatus.SUCCESS, 5, "add")
    assert keywords.result == "ab"
    assert len(set(ids)) == 150
    assert all(r.status is TaskStatus.SUCCESS for r in waited + batched)
    assert [r.result for r in waited] == [i + 1000 for i in range(50)]
    assert [r.result for r in batched] == [-i for i in range(100)]
    assert "add" in unknown and "nap" in unknown  # the control plane's task names reached the client
    assert segment.startswith(f"/{shm.user_prefix()}cp-{cp.name}-")
    # This client is the only one: the segment-wide counters are its own.
    assert (stats["submitted"], stats["completed"], stats["in_flight"]) == (152, 152, 0)
    assert stats["free_slots"] == 4096 and stats["rescues"] == 0

    # Its detach was reclaimed: a second client attaches and the census is clean.
    async def again(client):
        result = await client.submit_task("add", (40, 2))
        return result.result, client._segment.name, client._segment.check()

    result, segment_again, after = run_client(cp.name, again)
    assert (result, segment_again) == (42, segment)
    assert after["free"] == 4096 and after["error"] == 0 and after["arena_used_bytes"] == 0
    assert cp.proc.poll() is None


CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from fastworker import Client

    name, k = sys.argv[1], int(sys.argv[2])

    async def main():
        async with Client(name=name) as client:
            ids = [await client.delay("add", k * 1_000_000, i) for i in range(100)]
            ids += await client.submit_batch(
                [{"task_name": "add", "args": (k * 1_000_000, i)} for i in range(100, 200)]
            )
            results = [(await client.wait(task_id)).result for task_id in ids]
        expected = [k * 1_000_000 + i for i in range(200)]
        assert results == expected, [(i, r) for i, r in enumerate(results) if r != expected[i]][:5]
        print(sum(results), len(set(ids)), flush=True)

    asyncio.run(main())
    """
)


def test_several_client_processes_each_get_exactly_their_own_results(control_plane, tmp_path):
    cp = control_plane()
    script = tmp_path / "attached_client.py"
    script.write_text(CLIENT_SCRIPT)
    clients = [
        subprocess.Popen(
            [sys.executable, str(script), cp.name, str(k)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for k in (1, 2, 3)
    ]
    outputs = [proc.communicate(timeout=40) for proc in clients]
    for k, (proc, (out, err)) in enumerate(zip(clients, outputs), 1):
        assert proc.returncode == 0, f"client {k}: {err}\ncontrol plane:\n{cp.output()}"
        assert out.split() == [str(200 * k * 1_000_000 + sum(range(200))), "200"]

    async def body(client):
        return client._segment.check(), client.stats()

    after, stats = run_client(cp.name, body)
    assert (stats["submitted"], stats["completed"]) == (600, 600)
    assert after["free"] == 4096 and after["done"] == 0 and after["error"] == 0


def test_attaching_with_no_control_plane_running_says_how_to_start_one():
    name = unique_name()
    place = runtime.place(name, create=True)

    async def attach():
        async with Client(name=name):
            pass

    # Nothing at all under that name.
    with pytest.raises(ControlPlaneUnavailable, match=r"fastworker control-plane") as nothing:
        asyncio.run(attach())
    assert repr(name) in str(nothing.value) and place.socket in str(nothing.value)

    # A socket file nobody listens on (left by a killed control plane).
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    leftover.bind(place.socket)
    leftover.close()
    try:
        with pytest.raises(ControlPlaneUnavailable, match=r"fastworker control-plane"):
            asyncio.run(attach())
    finally:
        os.unlink(place.socket)


# ------------------------------------------------------------------ the name


def test_a_second_control_plane_with_the_same_name_is_refused(control_plane):
    first = control_plane()
    segment = run_client(first.name, lambda client: _segment_name(client))
    assert os.path.exists(segment_path(segment))

    second = control_plane(first.name, ready=False)
    assert second.proc.wait(20) == 1
    output = second.output()
    assert f"already running (pid {first.pid})" in output, output
    # The refused one touched nothing of the first's.
    assert first.place.owner() == first.pid and os.path.exists(first.place.socket)
    assert run_client(first.name, lambda client: _add(client, 1, 2)) == 3

    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(15) == 0, first.output()
    assert not os.path.exists(first.place.socket)
    assert not os.path.exists(first.place.pidfile)
    assert not os.path.exists(segment_path(segment))
    assert "stopped" in first.output()


async def _segment_name(client) -> str:
    return client._segment.name


async def _add(client, x, y):
    return (await client.submit_task("add", (x, y))).result


@pytest.mark.parametrize("owner", ["dead pid", "reused pid"])
def test_a_stale_name_is_cleaned_up_and_taken(control_plane, owner):
    name = unique_name()
    place = runtime.place(name, create=True)
    if owner == "dead pid":
        child = os.fork()
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        pid, ticks = child, 12345
    else:  # a live process with another start time: the pid was reused
        pid, ticks = os.getpid(), (shm.process_start_ticks(os.getpid()) or 0) + 1
    Path(place.pidfile).write_text(f"{pid} {ticks}\n")
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    leftover.bind(place.socket)
    leftover.close()
    assert place.owner() is None

    cp = control_plane(name)
    assert place.owner() == cp.pid
    assert Path(place.pidfile).read_text().split()[0] == str(cp.pid)
    assert run_client(name, lambda client: _add(client, 20, 22)) == 42


# --------------------------------------------------------------------- deaths


def test_sigkill_of_the_control_plane_fails_pending_waits_at_once_and_takes_the_workers(control_plane):
    cp = control_plane()
    processes = cp.wait_workers(2)

    async def body(client):
        segment = client._segment.name
        task_id = await client.delay("nap", 5)
        assert await until(lambda: client.get_status(task_id) is TaskStatus.STARTED, 10.0)
        waiter = asyncio.ensure_future(client.wait(task_id))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        started = time.monotonic()
        os.kill(cp.pid, signal.SIGKILL)
        with pytest.raises(ControlPlaneUnavailable, match=repr(cp.name)):
            await waiter
        elapsed = time.monotonic() - started
        with pytest.raises(ClientClosedError):
            await client.delay("add", 1, 1)
        return segment, elapsed, client.get_result(task_id)

    segment, elapsed, result = run_client(cp.name, body)
    assert elapsed < 1.5
    assert result.status is TaskStatus.FAILURE and result.error.startswith("ControlPlaneUnavailable:")
    assert cp.proc.wait(5) == -signal.SIGKILL
    # The fork server (PDEATHSIG) kills the workers and removes the segment.
    assert wait_until(lambda: all(gone(p.pid) for p in processes), 2.0), [p for p in processes if not gone(p.pid)]
    assert wait_until(lambda: not os.path.exists(segment_path(segment)), 2.0)
    # Nobody removed the name's files: the next start under that name does.
    assert os.path.exists(cp.place.socket) and cp.place.owner() is None

    again = control_plane(cp.name)
    assert again.place.owner() == again.pid
    assert run_client(cp.name, lambda client: _add(client, 2, 2)) == 4


def test_a_control_plane_killed_with_its_whole_tree_leaves_a_segment_the_next_start_removes(control_plane):
    """SIGKILL of every process at once (the OOM killer of a cgroup, say): no one
    is left to clean up, so the next control plane does."""
    cp = control_plane()
    processes = cp.wait_workers(2)
    segment = run_client(cp.name, lambda client: _segment_name(client))
    for process in processes:  # fork server first: it must not get the PDEATHSIG it cleans up on
        process.kill()
    os.kill(cp.pid, signal.SIGKILL)
    cp.proc.wait(5)
    assert wait_until(lambda: all(gone(p.pid) for p in processes), 2.0)
    assert os.path.exists(segment_path(segment))  # stale: its owner is dead

    again = control_plane(cp.name)
    assert again.place.owner() == again.pid
    assert not os.path.exists(segment_path(segment))
    assert run_client(cp.name, lambda client: _add(client, 3, 4)) == 7


KILLED_CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from fastworker import Client

    async def until(predicate):
        while not predicate():
            await asyncio.sleep(0.005)

    async def main():
        async with Client(name=sys.argv[1]) as client:
            segment = client._segment
            # Never drain: finished results stay in the ring, holding slots and arena blocks.
            asyncio.get_running_loop().remove_reader(client._eventfd)
            for i in range(6):
                await client.delay("add", i, i)
            big = await client.delay("add", "x" * 1000, "y")  # an arena block both ways
            await until(lambda: segment.check()["done"] == 7)
            for _ in range(2):
                await client.delay("nap", 2.0)
            await until(lambda: segment.check()["running"] == 2)
            for i in range(10):
                last = await client.delay("add", i, 0)  # queued behind the naps
            census = segment.check()
            print(segment.name, census["done"], census["running"], census["queued"], census["free"], big, last,
                  flush=True)
            await asyncio.sleep(60)

    asyncio.run(main())
    """
)


def test_the_tasks_of_a_killed_client_run_on_and_their_results_are_kept(control_plane, tmp_path):
    """SIGKILL of a client with tasks done, running and queued: the control plane takes them
    over at once (its done results collected, their blocks freed), the running and queued ones
    run to the end, their results are kept for anyone who asks, and the whole ring comes back."""
    cp = control_plane(env={"FASTWORKER_SLOTS": "32"})
    script = tmp_path / "killed_client.py"
    script.write_text(KILLED_CLIENT_SCRIPT)
    victim = subprocess.Popen(
        [sys.executable, str(script), cp.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = victim.stdout.readline().split()
    if len(line) != 7:
        victim.kill()
        _, err = victim.communicate(timeout=10)
        pytest.fail(f"the client script did not report: {line} {err}")
    segment, big_id, last_id = line[0], line[5], line[6]
    done, running, queued, free = map(int, line[1:5])
    assert (done, running, queued, free) == (7, 2, 10, 32 - 19)
    assert census(segment)["arena_used_bytes"] > 0

    victim.kill()
    victim.communicate(timeout=10)

    def taken_over():
        c = census(segment)
        return c["done"] == 0 and c["error"] == 0 and c["arena_used_bytes"] == 0

    assert wait_until(taken_over, 1.5), census(segment)
    assert wait_until(lambda: census(segment)["free"] == 32, 8.0), census(segment)  # naps and the rest ran

    async def body(client):
        big = await client.get_task_result(big_id)
        last = await client.get_task_result(last_id)
        assert client.get_result(big_id) is None  # not this client's: it came from the control plane
        whole = await client.submit_batch([{"task_name": "add", "args": (i, 7)} for i in range(32)])
        free_after_submit = client.stats()["free_slots"]  # no await since: nothing drained yet
        whole_results = [(await client.wait(task_id)).result for task_id in whole]
        return big, last, whole_results, free_after_submit, client._segment.check()

    big, last, whole_results, free_after_submit, after = run_client(cp.name, body)
    assert (big.status.value, big.result) == ("success", "x" * 1000 + "y")
    assert (last.status.value, last.result) == ("success", 9)
    assert free_after_submit == 0  # the whole ring went to this client in one go
    assert whole_results == [i + 7 for i in range(32)]
    assert after["free"] == 32 and after["done"] == 0 and after["error"] == 0


# ----------------------------------------------------------------- security


def _connect_as(uid: int, path: str) -> str:
    """In a forked child of `uid`: connect to `path` and read one message.

    Returns "PermissionError", "message: <text>", "EOF" or another error's name."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            conn.settimeout(5)
            try:
                conn.connect(path)
                data = conn.recv(1 << 16)
                outcome = f"message: {data.decode()}" if data else "EOF"
            except OSError as exc:
                outcome = type(exc).__name__
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            outcome = pipe.read().decode()
    finally:
        os.waitpid(child, 0)
    return outcome


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another uid")
def test_a_client_of_another_uid_is_refused(control_plane, monkeypatch):
    nobody = 65534
    base = tempfile.mkdtemp(prefix="fw", dir="/tmp")  # short: AF_UNIX paths are limited to 108 bytes
    monkeypatch.setenv("XDG_RUNTIME_DIR", base)
    try:
        cp = control_plane()
        directory = runtime.runtime_dir()
        assert directory == os.path.join(base, "fastworker")
        assert os.stat(directory).st_mode & 0o777 == 0o700
        assert os.stat(cp.place.socket).st_mode & 0o777 == 0o600

        # As made: the private directory stops another uid at connect().
        assert _connect_as(nobody, cp.place.socket) == "PermissionError"

        # Opened by mistake: the control plane itself refuses the peer (SO_PEERCRED).
        os.chmod(base, 0o711)
        os.chmod(directory, 0o711)
        os.chmod(cp.place.socket, 0o666)
        try:
            outcome = _connect_as(nobody, cp.place.socket)
        finally:
            os.chmod(cp.place.socket, 0o600)
            os.chmod(directory, 0o700)
            os.chmod(base, 0o700)
        assert outcome.startswith("message: "), outcome
        assert "serves uid 0 only; you are uid 65534" in outcome
        assert f"refused a client of uid {nobody}" in cp.output()

        assert cp.proc.poll() is None
        assert run_client(cp.name, lambda client: _add(client, 5, 6)) == 11
        cp.stop()
        assert cp.proc.returncode == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------- signals


def _wait_for_output(cp: ControlPlaneProcess, text: str, timeout: float = 5.0) -> None:
    assert wait_until(lambda: text in cp.output(), timeout), cp.output()


def test_a_second_sigint_stops_at_once_while_a_long_task_runs(control_plane):
    cp = control_plane()
    processes = cp.wait_workers(2)

    async def body(client):
        task_id = await client.delay("nap", 5)
        assert await until(lambda: client.get_status(task_id) is TaskStatus.STARTED, 10.0)
        waiter = asyncio.ensure_future(client.wait(task_id))
        cp.proc.send_signal(signal.SIGINT)
        _wait_for_output(cp, "SIGINT, stopping")  # the first is handled: the grace period runs
        await asyncio.sleep(0.2)
        assert cp.proc.poll() is None and not waiter.done()
        started = time.monotonic()
        cp.proc.send_signal(signal.SIGINT)
        try:
            cp.proc.wait(2.5)
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.monotonic() - started
        with pytest.raises(ControlPlaneUnavailable):
            await waiter
        return elapsed

    elapsed = run_client(cp.name, body)
    assert cp.proc.poll() is not None, "still running 2.5 s after the second SIGINT"
    assert elapsed < 2.0
    assert wait_until(lambda: all(gone(p.pid) for p in processes), 2.0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_still_cleans_up_the_name(control_plane, sig):
    cp = control_plane()

    async def body(client):
        task_id = await client.delay("nap", 5)
        assert await until(lambda: client.get_status(task_id) is TaskStatus.STARTED, 10.0)
        cp.proc.send_signal(sig)
        _wait_for_output(cp, f"{signal.Signals(sig).name}, stopping")
        await asyncio.sleep(0.2)
        cp.proc.send_signal(sig)
        cp.proc.wait(5)
        return client._segment.name

    segment = run_client(cp.name, body)
    assert "stopping at once" in cp.output()
    assert cp.proc.returncode == 0, cp.output()
    assert not os.path.exists(cp.place.socket) and not os.path.exists(cp.place.pidfile)
    assert wait_until(lambda: not os.path.exists(segment_path(segment)), 2.0)


def test_a_task_that_finishes_in_the_grace_period_reaches_its_client(control_plane):
    cp = control_plane()

    async def body(client):
        task_id = await client.delay("nap", 1.0)
        assert await until(lambda: client.get_status(task_id) is TaskStatus.STARTED, 10.0)
        cp.proc.send_signal(signal.SIGTERM)
        return await client.wait(task_id)

    result = run_client(cp.name, body)
    assert cp.proc.wait(15) == 0
    assert (result.status, result.result) == (TaskStatus.SUCCESS, 1.0)


# ---------------------------------------------------------- results from anywhere


def test_any_client_reads_or_cancels_another_live_clients_task(control_plane):
    """Asked about a task of a live client, the control plane relays to that client."""
    cp = control_plane()

    async def main():
        async with Client(name=cp.name) as owner, Client(name=cp.name) as other:
            done = await owner.submit_task("add", (20, 22))
            busy = [await owner.delay("nap", 0.5) for _ in range(2)]  # both workers
            queued = await owner.delay("add", 1, 1)  # behind the naps
            seen = await other.get_task_result(done.task_id)
            cancelled = await other.cancel_task(queued)
            again = await other.cancel_task(queued)
            for task_id in busy:
                await owner.wait(task_id)
            return seen, cancelled, again, owner.get_status(queued)

    seen, cancelled, again, status = asyncio.run(main())
    assert (seen.status.value, seen.result) == ("success", 42)
    assert cancelled is True and again is False
    assert status.value == "cancelled"


def test_a_client_that_stops_leaves_its_results_and_unfinished_tasks_to_the_control_plane(control_plane):
    cp = control_plane()

    async def first():
        async with Client(name=cp.name) as client:
            running = await client.delay("nap", 0.3)
            done = await client.submit_task("add", (2, 3))
            return running, done.task_id

    running, done = asyncio.run(first())

    async def second():
        async with Client(name=cp.name) as client:
            kept = await client.get_task_result(done)
            assert await until(lambda: False, 0.5) is False  # let the nap end
            later = await client.get_task_result(running)
            unknown = await client.get_task_result("00000000-0000-4000-8000-000000000000")
            return kept, later, unknown

    kept, later, unknown = asyncio.run(second())
    assert (kept.status.value, kept.result) == ("success", 5)
    assert (later.status.value, later.result) == ("success", 0.3)
    assert unknown is None
