"""Resources: a /dev/shm too small for the segment, for real (a 4 MiB tmpfs mounted over /dev/shm
in a private mount namespace), fails at start with the size needed and never with SIGBUS; the
files a control plane makes are private to its user.  (Stale segments of dead owners removed,
live owners' never touched: tests/integration/test_faults.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from integration.test_control_plane import control_plane, run_client  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(60)

TMPFS = "4m"
IN_SMALL_SHM = textwrap.dedent(
    """
    import asyncio, os
    from fastworker import Client, SharedMemoryFullError, _native

    async def start(arena):
        async with Client(workers=1, arena_size=arena, slots=64) as client:
            return (await client.submit_task("add", (2, 3))).result

    try:
        asyncio.run(start("16MiB"))
        print("started: no error")
    except SharedMemoryFullError as exc:
        print("error:", exc)

    # Past the Python check: the C create's posix_fallocate must refuse too (no SIGBUS later).
    try:
        _native.create("/fw-too-big", 64, 16 << 20, 2, 2, os.getpid(), 1, 1)
        print("native: created")
    except _native.NoSpace as exc:
        print("native:", exc)
    print("left:", sorted(os.listdir("/dev/shm")))

    print("fits:", asyncio.run(start("1MiB")))
    """
)


def private_mount_namespace_available() -> str | None:
    """None if this process may mount a tmpfs in a mount namespace of its own, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare(1) here"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", "/mnt"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a private mount namespace (needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


def test_a_dev_shm_too_small_is_a_clear_error_at_start_never_sigbus(tmp_path):
    why_not = private_mount_namespace_available()
    if why_not:
        pytest.skip(why_not)
    (tmp_path / "tasks_small_shm.py").write_text("from fastworker import task\n\n@task\ndef add(x, y):\n    return x + y\n")
    script = tmp_path / "small_shm.py"
    script.write_text("import tasks_small_shm\n" + IN_SMALL_SHM)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    shell = f"mount -t tmpfs -o size={TMPFS},mode=1777 tmpfs /dev/shm && exec {sys.executable} {script}"
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", shell],
        capture_output=True,
        text=True,
        env=env,
        timeout=50,
    )
    assert out.returncode == 0, f"exit {out.returncode} (SIGBUS is -7):\n{out.stdout}\n{out.stderr}"
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    error = lines["error:"]
    assert "needs 16." in error and "MiB in /dev/shm" in error and "only 4.0 MiB is free" in error, error
    assert "no space left in /dev/shm" in lines["native:"]
    assert lines["left:"] == "[]"  # nothing half-made stays behind
    assert lines["fits:"] == "5"


def test_a_control_planes_directory_socket_and_segment_are_private(control_plane):  # noqa: F811 - the fixture
    cp = control_plane()

    async def body(client):
        return client._segment.name

    segment = run_client(cp.name, body)
    assert os.stat(os.path.dirname(cp.place.socket)).st_mode & 0o777 == 0o700
    assert os.stat(cp.place.socket).st_mode & 0o777 == 0o600
    assert os.stat(cp.place.pidfile).st_mode & 0o077 == 0
    assert os.stat("/dev/shm" + segment).st_mode & 0o777 == 0o600
