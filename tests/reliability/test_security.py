"""Security: a JSON engine never unpickles what a client wrote, a client of the other format is
refused at the door, and a task's arguments are decoded in workers only, never in the control
plane.  (Another uid: tests/integration/test_control_plane.py::test_a_client_of_another_uid_is_refused.)

The probe is an argument whose unpickling appends the unpickling process's pid to a file: the
file says whether, and where, the bytes were ever evaluated."""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
import time

import pytest

from fastworker import Client, ControlPlaneUnavailable
from fastworker.engine import oob
from fastworker.engine.worker import ARGS_LAID_OUT, FAILURE, SUCCESS, Worker
from fastworker.tasks.registry import TaskDefinition
from fastworker.tasks.serialization import JSON_CODEC, PICKLE_CODEC, decode_failure
from integration.test_control_plane import control_plane, run_client  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(60)

PROBE_MODULE = '''
import os
import pickle


def mark(path):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\\n")
    return "unpickled"


class Probe:
    """Unpickles by calling mark(path): the file then names the process that did it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return mark, (self.path,)
'''


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """(Probe class, marker file): the module lives in tmp_path, importable here and by children."""
    (tmp_path / "unpickle_probe.py").write_text(PROBE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "unpickle_probe", raising=False)
    import unpickle_probe

    return unpickle_probe.Probe, tmp_path / "unpickled-by"


def laid_out_arguments(args: tuple) -> bytes:
    """What a PICKLE client writes for big arguments (ARGS_LAID_OUT), as one buffer."""
    layout, laid_out = oob.encode(args + (pickle.PickleBuffer(bytearray(oob.MIN_OUT_OF_BAND)),))
    assert laid_out
    length, pieces = layout
    block = bytearray(length)
    for offset, piece in pieces:
        block[offset : offset + len(piece)] = piece
    return bytes(block)


def echo(*args):
    return args[0]


@pytest.mark.parametrize("codec", [JSON_CODEC, PICKLE_CODEC], ids=["JSON", "PICKLE"])
def test_only_a_pickle_worker_unpickles_laid_out_arguments(probe, codec):
    """A client attached to a JSON control plane writes straight into the ring: flags included.
    Until the worker checked its codec, the ARGS_LAID_OUT flag alone made it unpickle them."""
    Probe, marker = probe
    worker = Worker(None, 0, 1, [TaskDefinition("echo", echo, False, __name__, "echo")], codec, {})

    status, _flags, out = worker.execute(0, ARGS_LAID_OUT, laid_out_arguments((Probe(str(marker)),)))

    if codec is PICKLE_CODEC:  # the control: the same bytes are arguments to a PICKLE engine
        assert status == SUCCESS and PICKLE_CODEC.decode_result(out) == "unpickled"
        assert marker.read_text() == f"{os.getpid()}\n"
    else:
        assert status == FAILURE
        assert decode_failure(out)[0].startswith("SerializationError: Cannot decode task arguments (JSON)")
        assert not marker.exists()


def test_a_json_control_plane_refuses_a_pickle_client(control_plane):  # noqa: F811 - the fixture
    cp = control_plane()

    async def attach():
        async with Client(name=cp.name, serialization_format="pickle"):
            pass

    with pytest.raises(ControlPlaneUnavailable, match="serializes with json, the client with pickle"):
        asyncio.run(attach())
    assert cp.proc.poll() is None


async def finished(client, task_id, timeout=10.0):
    """Another client's task, asked of the control plane until it has finished."""
    deadline = time.monotonic() + timeout
    while (result := await client.get_task_result(task_id)) is None or result.result is None:
        assert time.monotonic() < deadline, f"task {task_id} not finished after {timeout} s"
        await asyncio.sleep(0.01)
    return result


def test_task_arguments_are_unpickled_by_workers_only(control_plane, probe):  # noqa: F811 - the fixture
    """Even with PICKLE, the control plane passes arguments through the ring untouched: the
    probe is unpickled once per task, by a worker, whether the task is run while its client
    waits, queried from another client, or handed over when its client leaves."""
    Probe, marker = probe
    cp = control_plane(env={"FASTWORKER_SERIALIZATION_FORMAT": "PICKLE"})
    workers = {p.pid for p in cp.wait_workers(2)}

    async def main():
        async with Client(name=cp.name, serialization_format="pickle") as owner:
            ran = await owner.submit_task("add", (Probe(str(marker)), "!"))
            left = [await owner.delay("add", Probe(str(marker)), "?") for _ in range(3)]
        async with Client(name=cp.name, serialization_format="pickle") as other:
            asked = [await finished(other, task_id) for task_id in [ran.task_id, *left]]
        return ran, asked

    ran, asked = asyncio.run(main())
    assert ran.result == "unpickled!"
    assert [r.result for r in asked] == ["unpickled!"] + ["unpickled?"] * 3
    pids = [int(line) for line in marker.read_text().split()]
    assert len(pids) == 4  # once per task
    assert set(pids) <= workers, f"unpickled outside the workers: {set(pids) - workers}"
    assert cp.pid not in pids
