"""fastworker.Executor against the concurrent.futures contract: futures,
map order and laziness, remote exceptions, refused lambdas, a killed worker,
recycled workers, initializers, shutdown, payload sizes, progress bars."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import pickle
import sys
import threading
import time
import types

import psutil
import pytest

from fastworker import (
    BrokenExecutor,
    Executor,
    RemoteTraceback,
    SerializationError,
    WorkerLostError,
    _native,
)

from . import executor_funcs as funcs

pytestmark = pytest.mark.timeout(60)

SMALL = {"workers": 2, "arena_size": "8MiB"}
MiB = 1 << 20


@pytest.fixture
def ex():
    with Executor(**SMALL) as executor:
        yield executor


def counting(iterable, pulled):
    """Yield from `iterable`, counting in pulled[0] how many items were taken."""
    for item in iterable:
        pulled[0] += 1
        yield item


def take_until_error(iterator):
    """The results an iterator yields before it raises, and what it raised."""
    got = []
    with pytest.raises(Exception) as info:
        for value in iterator:
            got.append(value)  # noqa: PERF402 - keep what came before the exception
    return got, info.value


# ------------------------------------------------------------------ 1. submit


def test_submit_returns_a_future_and_works_with_as_completed_and_wait(ex):
    future = ex.submit(funcs.add, 20, 22)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(timeout=10) == 42
    assert ex.submit(funcs.add, x=1, y=2).result(timeout=10) == 3  # keyword arguments travel too

    futures = {ex.submit(funcs.square, i): i for i in range(20)}
    seen = {}
    for done in concurrent.futures.as_completed(futures, timeout=10):
        seen[futures[done]] = done.result()
    assert seen == {i: i * i for i in range(20)}

    futures = [ex.submit(funcs.square, i) for i in range(10)]
    done, not_done = concurrent.futures.wait(futures, timeout=10, return_when=concurrent.futures.ALL_COMPLETED)
    assert done == set(futures) and not not_done
    assert [f.result() for f in futures] == [i * i for i in range(10)]

    slow = ex.submit(funcs.sleep_then, 0.5, "slow")
    fast = ex.submit(funcs.sleep_then, 0.0, "fast")
    done, not_done = concurrent.futures.wait(
        [slow, fast], timeout=10, return_when=concurrent.futures.FIRST_COMPLETED
    )
    assert done == {fast} and not_done == {slow}
    assert fast.result() == "fast"
    assert slow.result(timeout=10) == "slow"


def test_submit_from_several_threads(ex):
    def submit_many(base):
        return [ex.submit(funcs.add, base, i) for i in range(100)]

    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        batches = list(threads.map(submit_many, [0, 1000, 2000, 3000]))
    for base, batch in zip([0, 1000, 2000, 3000], batches):
        assert [f.result(timeout=10) for f in batch] == [base + i for i in range(100)]


def test_cancel_of_a_running_future_returns_false(ex, tmp_path):
    mark = str(tmp_path / "running")
    future = ex.submit(funcs.mark_then_sleep, mark, 0.3, "ran")
    deadline = time.monotonic() + 10
    while not os.path.exists(mark):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.01)
    cancelled = future.cancel()
    concurrent.futures.wait([future], timeout=5)
    assert not cancelled and future.result(timeout=0) == "ran"


# --------------------------------------------------------------------- 2. map


def test_map_keeps_order_for_a_list_a_range_and_a_generator(ex):
    expected = [i * i for i in range(200)]
    assert list(ex.map(funcs.square, list(range(200)))) == expected
    assert list(ex.map(funcs.square, range(200))) == expected
    assert list(ex.map(funcs.square, (i for i in range(200)))) == expected
    assert list(ex.map(funcs.square, range(10, 200, 7))) == [i * i for i in range(10, 200, 7)]


def test_map_over_several_iterables_stops_at_the_shortest_like_builtin_map(ex):
    a, b, c = [1, 2, 3, 4, 5], range(100), (10 * i for i in range(3))
    assert list(ex.map(funcs.add3, a, b, c)) == list(map(funcs.add3, [1, 2, 3, 4, 5], range(100), [0, 10, 20]))
    assert list(ex.map(funcs.add, range(50), [1] * 7)) == [i + 1 for i in range(7)]
    assert list(ex.map(funcs.add, range(50), range(1000), chunksize=7)) == [2 * i for i in range(50)]


def test_map_of_empty_input_returns_nothing(ex):
    assert list(ex.map(funcs.square, [])) == []
    assert list(ex.map(funcs.square, range(0))) == []
    assert list(ex.map(funcs.square, iter(()))) == []
    assert list(ex.map(funcs.add, [], range(10))) == []
    assert list(ex.map(funcs.square, [], chunksize=7)) == []
    assert ex.submit(funcs.square, 3).result(timeout=10) == 9  # nothing was left behind


@pytest.mark.parametrize("chunksize", [1, 7])
@pytest.mark.parametrize("kind", ["list", "range", "generator"])
def test_map_with_a_chunksize_keeps_order(ex, chunksize, kind):
    make = {"list": lambda: list(range(100)), "range": lambda: range(100), "generator": lambda: iter(range(100))}
    assert list(ex.map(funcs.square, make[kind](), chunksize=chunksize)) == [i * i for i in range(100)]


def test_map_auto_chunksize_on_a_lazy_generator_of_10k_items(ex):
    pulled = [0]
    results = ex.map(funcs.square, counting(range(10_000), pulled), chunksize=None)
    assert list(results) == [i * i for i in range(10_000)]
    assert pulled[0] == 10_000


@pytest.mark.parametrize("chunksize", [1, 5])
def test_map_buffersize_reads_an_endless_generator_only_a_little_ahead(ex, chunksize):
    buffersize, want = 2, 50
    pulled = [0]
    results = ex.map(funcs.square, counting(itertools.count(), pulled), chunksize=chunksize, buffersize=buffersize)
    assert list(itertools.islice(results, want)) == [i * i for i in range(want)]
    assert want <= pulled[0] <= want + (buffersize + 1) * chunksize, pulled[0]
    time.sleep(0.1)  # nothing reads behind the caller's back (the items are pulled in its thread)
    assert pulled[0] <= want + (buffersize + 1) * chunksize, pulled[0]
    results = None  # abandoned: closing the map cancels what it had in flight
    assert ex.submit(funcs.square, 3).result(timeout=10) == 9


def test_map_buffersize_with_auto_chunks_stays_bounded_on_an_endless_generator(ex):
    pulled = [0]
    results = ex.map(funcs.square, counting(itertools.count(), pulled), buffersize=2)
    assert list(itertools.islice(results, 50)) == [i * i for i in range(50)]
    # Chunks grow at most fourfold per chunk done: 1, 1, 4, 16, 64, 256 items at worst.
    assert pulled[0] <= 1 + 1 + 4 + 16 + 64 + 256, pulled[0]


def test_map_auto_chunksize_keeps_chunks_of_bigger_items_within_the_arena(ex):
    items = (bytes(400) for _ in range(150_000))  # 60 MB in all, 400 B each: any single one fits easily
    assert sum(1 for _ in ex.map(funcs.echo, items)) == 150_000


def test_map_rejects_bad_chunksize_and_buffersize(ex):
    with pytest.raises(ValueError, match="chunksize"):
        ex.map(funcs.square, range(3), chunksize=0)
    with pytest.raises(ValueError, match="buffersize"):
        ex.map(funcs.square, range(3), buffersize=0)


def test_map_timeout_raises_timeout_error(ex):
    results = ex.map(funcs.sleep_then, [1.0, 1.0], ["a", "b"], timeout=0.2, chunksize=1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        list(results)
    assert time.monotonic() - started < 0.9


def test_map_submits_at_call_time_like_the_stdlib(ex, tmp_path):
    paths = [str(tmp_path / f"m{i}") for i in range(2)]
    ex.map(funcs.mark_then_sleep, paths, [0.0, 0.0], [0, 1])  # results never read
    deadline = time.monotonic() + 2.0
    while not all(os.path.exists(p) for p in paths) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(os.path.exists(p) for p in paths)


# -------------------------------------------------------------- 3. exceptions


def test_exception_in_a_task_is_reraised_with_the_remote_traceback_as_cause(ex):
    future = ex.submit(funcs.raise_value_error, "broken on purpose")
    with pytest.raises(ValueError, match="^broken on purpose$") as info:
        future.result(timeout=10)
    assert type(info.value) is ValueError
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise_value_error" in cause.tb
    assert "raise ValueError(message)  # the raise line" in cause.tb
    assert "ValueError: broken on purpose" in cause.tb
    assert "raise ValueError(message)" in str(cause)
    assert ex.submit(funcs.square, 4).result(timeout=10) == 16


@pytest.mark.parametrize("chunksize", [1, 3, 7, None])
@pytest.mark.parametrize("kind", ["list", "range", "generator"])
def test_map_yields_the_results_before_a_failing_item_then_raises(ex, chunksize, kind):
    make = {"list": lambda: list(range(20)), "range": lambda: range(20), "generator": lambda: iter(range(20))}
    got, exc = take_until_error(ex.map(funcs.square_unless_five, make[kind](), chunksize=chunksize))
    assert got == [0, 1, 4, 9, 16]
    assert type(exc) is KeyError and exc.args == ("no square for 5",)
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "square_unless_five" in exc.__cause__.tb
    assert 'raise KeyError(f"no square for {x}")' in exc.__cause__.tb
    assert list(ex.map(funcs.square, range(5))) == [0, 1, 4, 9, 16]


def test_map_failing_in_a_star_map_raises_after_the_earlier_results(ex):
    got, exc = take_until_error(ex.map(funcs.add, [1, 2, 3], [1, 2, "x"], chunksize=2))
    assert got == [2, 4]
    assert isinstance(exc, TypeError) and isinstance(exc.__cause__, RemoteTraceback)


# ------------------------------------------------------ 4. lambdas, closures


def test_a_lambda_or_a_nested_function_is_refused_and_nothing_is_queued(ex):
    def nested(x):
        return x

    for fn in (lambda x: x, nested):
        with pytest.raises(SerializationError, match="module level") as info:
            ex.submit(fn, 1)
        assert isinstance(info.value, TypeError)
        assert fn.__qualname__ in str(info.value)
    with pytest.raises(SerializationError, match="module level"):
        ex.submit(funcs.echo, lambda: None)  # a lambda as an argument
    with pytest.raises(SerializationError, match="module level"):
        list(ex.map(lambda x: x, range(3)))
    assert ex.submit(funcs.square, 5).result(timeout=10) == 25
    assert list(ex.map(funcs.square, range(3))) == [0, 1, 4]


# --------------------------------------------------------------- 5. SIGKILL


def test_a_worker_killed_by_sigkill_fails_only_its_future(ex):
    before = [ex.submit(funcs.sleep_then, 0.05, i) for i in range(4)]
    killed = ex.submit(funcs.kill_myself)
    after = [ex.submit(funcs.sleep_then, 0.05, i) for i in range(4, 8)]
    with pytest.raises(WorkerLostError, match=r"was killed by signal 9 \(SIGKILL\)"):
        killed.result(timeout=10)
    assert [f.result(timeout=10) for f in before + after] == list(range(8))
    # The executor keeps working: the dead worker was replaced.
    assert [f.result(timeout=10) for f in [ex.submit(funcs.square, i) for i in range(20)]] == [
        i * i for i in range(20)
    ]
    assert list(ex.map(funcs.square, range(30), chunksize=4)) == [i * i for i in range(30)]


# ----------------------------------------------------- 6. max_tasks_per_child


def test_max_tasks_per_child_recycles_workers_and_loses_no_future():
    with Executor(max_tasks_per_child=3, **SMALL) as ex:
        futures = [ex.submit(funcs.getpid) for _ in range(20)]
        pids = [f.result(timeout=20) for f in futures]
        assert len(pids) == 20
        assert len(set(pids)) >= 20 / 3, pids
        assert max(pids.count(p) for p in set(pids)) <= 3, pids
        assert os.getpid() not in pids
        # Recycled workers keep serving map chunks too.
        assert list(ex.map(funcs.square, range(40), chunksize=2)) == [i * i for i in range(40)]


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_max_tasks_per_child_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        Executor(max_tasks_per_child=bad, **SMALL)


# ------------------------------------------------------------- 7. initializer


def test_initializer_runs_in_each_worker_with_its_initargs():
    with Executor(initializer=funcs.set_value, initargs=("ready",), **SMALL) as ex:
        assert [f.result(timeout=10) for f in [ex.submit(funcs.get_value) for _ in range(10)]] == ["ready"] * 10
    assert funcs.INITIALIZED is None  # it ran in the workers, not here


def test_initializer_runs_again_in_recycled_workers():
    with Executor(initializer=funcs.set_value, initargs=(7,), max_tasks_per_child=2, **SMALL) as ex:
        assert [f.result(timeout=10) for f in [ex.submit(funcs.get_value) for _ in range(9)]] == [7] * 9


def test_a_failing_initializer_breaks_the_executor_without_respawning(capfd):
    ex = Executor(initializer=funcs.failing_initializer, initargs=(0.3,), **SMALL)
    try:
        futures = [ex.submit(funcs.square, i) for i in range(4)]
        _, not_done = concurrent.futures.wait(futures, timeout=5)
        assert not not_done
        for future in futures:
            exc = future.exception()
            assert isinstance(exc, BrokenExecutor) and isinstance(exc, concurrent.futures.BrokenExecutor), exc
        with pytest.raises(concurrent.futures.BrokenExecutor):
            ex.submit(funcs.square, 1)
        with pytest.raises(BrokenExecutor):
            list(ex.map(funcs.square, range(3)))
        # No endless respawning: the process tree stays small and stable.
        me = psutil.Process()
        time.sleep(1.0)
        first = {p.pid for p in me.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.5)
        second = {p.pid for p in me.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
        assert len(first) <= 1 and first == second, (first, second)  # the fork server only
    finally:
        ex.shutdown()
    assert "initializer failed on purpose" in capfd.readouterr().err


def test_initializer_must_be_callable():
    with pytest.raises(TypeError, match="initializer"):
        Executor(initializer="not callable", **SMALL)


# ---------------------------------------------------------------- 8. shutdown


def test_shutdown_wait_true_waits_for_pending_work():
    ex = Executor(**SMALL)
    try:
        futures = [ex.submit(funcs.sleep_then, 0.2, i) for i in range(6)]
    finally:
        ex.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in futures)
    assert [f.result(timeout=0) for f in futures] == list(range(6))
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(funcs.square, 1)
    with pytest.raises(RuntimeError, match="after shutdown"):
        list(ex.map(funcs.square, range(3)))
    ex.shutdown()  # a second shutdown is harmless


def _shutdown_within(ex, seconds, stuck, **options):
    """Run ex.shutdown(**options) in a thread; if it is still waiting after `seconds`,
    notify the `stuck` futures' waiters (what the executor should have done) so it
    can return, and say so."""
    thread = threading.Thread(target=ex.shutdown, kwargs=options, name="test-shutdown")
    thread.start()
    thread.join(seconds)
    hung = thread.is_alive()
    if hung:
        for future in stuck:
            future.set_running_or_notify_cancel()  # CANCELLED -> CANCELLED_AND_NOTIFIED: wakes wait()
        thread.join(10)
    return hung


def test_shutdown_cancel_futures_cancels_queued_work_and_finishes_running_work(tmp_path):
    ex = Executor(**SMALL)
    queued = []
    try:
        marks = [str(tmp_path / f"running{i}") for i in range(2)]
        running = [ex.submit(funcs.mark_then_sleep, path, 0.8, f"ran{i}") for i, path in enumerate(marks)]
        deadline = time.monotonic() + 10
        while not all(os.path.exists(p) for p in marks):  # both workers are busy now
            assert time.monotonic() < deadline, "the tasks never started"
            time.sleep(0.01)
        queued = [ex.submit(funcs.square, i) for i in range(6)]
        hung = _shutdown_within(ex, 3.0, queued, wait=True, cancel_futures=True)
    finally:
        ex.shutdown()
    assert all(f.cancelled() for f in queued)
    assert [f.result(timeout=0) for f in running] == ["ran0", "ran1"]
    with pytest.raises(RuntimeError):
        ex.submit(funcs.square, 1)
    assert not hung, "shutdown(wait=True, cancel_futures=True) hung in concurrent.futures.wait()"


def test_futures_cancelled_by_shutdown_count_as_done_for_wait(tmp_path):
    ex = Executor(**SMALL)
    queued = []
    try:
        mark = str(tmp_path / "running")
        running = [ex.submit(funcs.mark_then_sleep, mark, 0.5, "ran") for _ in range(2)]
        deadline = time.monotonic() + 10
        while not os.path.exists(mark):
            assert time.monotonic() < deadline, "the tasks never started"
            time.sleep(0.01)
        time.sleep(0.05)
        queued = [ex.submit(funcs.square, i) for i in range(4)]
        ex.shutdown(wait=False, cancel_futures=True)
        _, not_done = concurrent.futures.wait(queued, timeout=2)
        for future in not_done:
            future.set_running_or_notify_cancel()
    finally:
        ex.shutdown()
    assert all(f.done() for f in running)
    assert all(f.cancelled() for f in queued)
    assert not not_done, f"{len(not_done)} cancelled future(s) never reached wait()'s done set"


def test_the_with_block_exit_waits_for_submitted_work():
    with Executor(**SMALL) as ex:
        futures = [ex.submit(funcs.sleep_then, 0.1, i) for i in range(4)]
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2, 3]


def test_shutdown_without_waiting_returns_promptly_and_leaves_nothing_behind():
    ex = Executor(**SMALL)
    try:
        future = ex.submit(funcs.sleep_then, 30.0, "never")
        time.sleep(0.2)
        started = time.monotonic()
        ex.shutdown(wait=False)
        assert time.monotonic() - started < 3.0
    finally:
        ex.shutdown()
    assert future.done() and not future.cancelled()
    with pytest.raises(Exception):  # noqa: B017 - it did not finish; whatever it says, it must not hang
        future.result(timeout=0)


# --------------------------------------------------------- 9. payload sizes


def _boundary_sizes():
    """0, 175, 176, 177 bytes and the sizes around the inline capacity of a slot,
    for the pickled arguments and for the pickled result."""
    sizes = {0, 175, 176, 177}
    cap = _native.INLINE_CAPACITY
    result_overhead = len(pickle.dumps(b"", 5))
    args_overhead = len(pickle.dumps((funcs.echo, (b"",), {}), 5))
    for overhead in (result_overhead, args_overhead):
        sizes.update(n for n in range(cap - overhead - 3, cap - overhead + 4) if n >= 0)
    return sorted(sizes)


def test_payloads_at_the_boundaries_round_trip_intact():
    with Executor(workers=2, arena_size="64MiB") as ex:
        sizes = [*_boundary_sizes(), MiB - 1, MiB, MiB + 1, 8 * MiB]
        payloads = [os.urandom(n) for n in sizes]
        futures = [ex.submit(funcs.echo, p) for p in payloads]
        for size, payload, future in zip(sizes, payloads, futures):
            got = future.result(timeout=20)
            assert type(got) is bytes and len(got) == size and got == payload, size
        # And through map, where they travel in chunks.
        assert list(ex.map(funcs.echo, payloads, chunksize=3)) == payloads


# ----------------------------------------------------------- 10. progress bar


def test_map_progress_without_tqdm_says_how_to_install_it(ex, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match="pip install tqdm"):
        list(ex.map(funcs.square, range(10), progress=True))
    assert list(ex.map(funcs.square, range(10))) == [i * i for i in range(10)]


def test_map_progress_with_tqdm_returns_the_results(ex, capfd):
    pytest.importorskip("tqdm")
    assert list(ex.map(funcs.square, range(100), progress=True, chunksize=7)) == [i * i for i in range(100)]
    assert list(ex.map(funcs.square, (i for i in range(50)), progress=True)) == [i * i for i in range(50)]
    capfd.readouterr()  # the bar went to stderr


def test_map_progress_drives_the_bar(ex, monkeypatch):
    """With a stand-in tqdm, whether or not the real one is installed: the bar
    gets the total, every item, and is closed."""
    bars = []

    class FakeBar:
        def __init__(self, total=None, unit=None):
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    package, auto = types.ModuleType("tqdm"), types.ModuleType("tqdm.auto")
    auto.tqdm = FakeBar
    package.auto = auto
    monkeypatch.setitem(sys.modules, "tqdm", package)
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    assert list(ex.map(funcs.square, range(100), progress=True, chunksize=7)) == [i * i for i in range(100)]
    assert list(ex.map(funcs.square, iter(range(30)), progress=True)) == [i * i for i in range(30)]
    assert [(b.total, b.n, b.closed) for b in bars] == [(100, 100, True), (None, 30, True)]


# --------------------------------------------------------------- 11. numpy


def test_map_over_a_numpy_array(ex):
    np = pytest.importorskip("numpy")
    values = np.arange(1000, dtype=np.int64)
    assert list(ex.map(funcs.square, values)) == list(map(funcs.square, values))
    assert list(ex.map(funcs.square, values, chunksize=64)) == [int(v) * int(v) for v in values]
    rows = np.arange(60).reshape(12, 5)
    assert list(ex.map(funcs.row_sum, rows)) == [int(r.sum()) for r in rows]
    assert list(ex.map(funcs.add, values[:10], values[::-1])) == [999] * 10


# ---------------------------------------------------------------- zero copy


def _inside(segment, array) -> bool:
    if isinstance(array, memoryview):
        import numpy as np

        array = np.frombuffer(array, dtype=np.uint8)
    address = array.__array_interface__["data"][0]
    return segment.base_address <= address < segment.base_address + segment.size


def test_a_big_numpy_result_is_a_view_of_the_shared_segment_freed_when_released():
    np = pytest.importorskip("numpy")
    data = np.random.default_rng(1).random(1 << 20)  # 8 MiB
    with Executor(workers=2, arena_size="64MiB") as ex:
        segment = ex._segment
        result = ex.submit(funcs.double, data).result()
        assert np.array_equal(result, data * 2)
        assert _inside(segment, result)  # no copy on the way back
        assert result.flags.writeable
        result[0] = -1.0  # the caller owns it now
        assert segment.check()["held"] == 1
        del result
        import gc

        gc.collect()
        census = segment.check()
        assert census["held"] == 0 and census["error"] == 0


def test_small_buffers_come_back_copied_and_mixed_results_leak_nothing():
    np = pytest.importorskip("numpy")
    with Executor(workers=2, arena_size="64MiB") as ex:
        segment = ex._segment
        for n in (0, 10, 8187, 8188, 70_000, 300_000):
            out = ex.submit(funcs.small_and_big, n).result()
            assert np.array_equal(out["small"], np.arange(4))
            assert np.array_equal(out["big"], np.arange(n, dtype=np.float64))
            # Lent when the result's buffers add up to 64 KiB (arange(4) is 32 bytes of them).
            assert _inside(segment, out["big"]) == (n * 8 + 32 >= 64 * 1024)
            del out
        import gc

        gc.collect()
        census = segment.check()
        assert census["held"] == 0 and census["free"] == segment.nslots and census["arena_used_bytes"] == 0


def test_a_lent_result_outlives_the_executor():
    np = pytest.importorskip("numpy")
    data = np.arange(100_000, dtype=np.float64)
    ex = Executor(workers=1, arena_size="8MiB")
    try:
        kept = ex.submit(funcs.double, data).result()
    finally:
        ex.shutdown()
    assert kept[-1] == data[-1] * 2  # the mapping stays until the array goes
    del kept


def test_an_executor_never_shut_down_is_shut_down_at_exit(tmp_path):
    import subprocess
    import textwrap

    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            sys.path.insert(0, sys.argv[1])
            from fastworker import Executor
            import executor_funcs as funcs

            if __name__ == "__main__":
                ex = Executor(workers=2, arena_size="4MiB")
                print(ex.submit(funcs.square, 9).result(), ex._segment.name, flush=True)
            """
        )
    )
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, str(script), here], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    result, name = out.stdout.split()
    assert result == "81"
    assert not os.path.exists("/dev/shm" + name)


def test_big_array_arguments_travel_laid_out_and_stay_valid_in_the_worker():
    np = pytest.importorskip("numpy")
    data = np.arange(1 << 18, dtype=np.float64)  # 2 MiB: its buffer goes out of band
    with Executor(workers=1, arena_size="32MiB") as ex:
        assert np.array_equal(ex.submit(funcs.double, data).result(), data * 2)
        first = ex.submit(funcs.keep_then_sum, data).result()
        second = ex.submit(funcs.keep_then_sum, data * 3).result()
        rows = list(ex.map(funcs.double, [data, data + 1, data + 2]))
    assert first == float(data.sum()) and second == float(data.sum() * 4)
    assert all(np.array_equal(row, (data + i) * 2) for i, row in enumerate(rows))


def test_holding_many_big_results_never_starves_the_workers_of_arena_room():
    """Lent results occupy the arena while held; past a share of it, results are copied
    instead, so a caller holding them all still gets every next one (no wait for room)."""
    np = pytest.importorskip("numpy")
    data = np.arange(1 << 17, dtype=np.float64)  # 1 MiB: each lent result holds a 2 MiB block
    with Executor(workers=2, arena_size="8MiB") as ex:
        segment = ex._segment
        held = [ex.submit(funcs.double, data).result(timeout=10) for _ in range(12)]
        lent = sum(_inside(segment, array) for array in held)
        assert all(np.array_equal(array, data * 2) for array in held)
        assert 1 <= lent < 12  # some lent, the rest copied once the arena ran low
        del held


def test_workers_reuse_freed_heap_for_big_allocations(ex):
    # A second 8 MiB allocation reuses the pages of the first instead of
    # faulting in 2048 fresh ones (the cost of every big-payload task).
    _first, second = ex.submit(funcs.page_faults_of_two_big_allocations, 8 << 20).result()
    assert second < 256  # of 2048 pages; without the retained heap, ~2000


def test_retain_heap_checks_its_thresholds():
    from fastworker import _native

    with pytest.raises(ValueError, match="thresholds"):
        _native.retain_heap(-1, 0)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_big_bytes_bytearrays_and_memoryviews_cross_out_of_band_keeping_their_type(kind):
    data = kind(b"abc" * 100_000)  # 300 KB
    with Executor(workers=1) as ex:
        assert ex.submit(funcs.describe_buffer, data).result() == (kind.__name__, 300_000, b"abc")
        if kind is not memoryview:  # pickle itself cannot send a memoryview back, even in-band
            back = ex.submit(funcs.echo, data).result()
            assert type(back) is kind and back == data
        view = ex.submit(funcs.as_memoryview, data).result()
        assert type(view) is memoryview and view.format == "I" and view.tobytes() == bytes(data)
        assert _inside(ex._segment, view)  # the result is a view of the shared segment, no copy
        del view


def test_cloudpickle_sends_lambdas_and_closures_by_value():
    pytest.importorskip("cloudpickle")
    offset = 10

    def add_offset(x):  # a closure: plain pickle cannot find it by name in the worker
        return x + offset

    with Executor(workers=2, serialization_format="cloudpickle") as ex:
        assert ex.submit(lambda x: x * 3, 4).result() == 12
        assert list(ex.map(add_offset, range(5))) == [10, 11, 12, 13, 14]
        data = bytes(200_000)  # big arguments still travel out of band
        assert ex.submit(lambda b: len(b), data).result() == 200_000


def test_the_default_refusal_of_a_lambda_says_how_to_send_it_by_value(ex):
    with pytest.raises(SerializationError, match="serialization_format='cloudpickle'"):
        ex.submit(lambda: 1)


@pytest.mark.parametrize("fmt", ["json", "yaml", 3])
def test_an_executor_format_other_than_pickle_or_cloudpickle_is_refused(fmt):
    with pytest.raises(ValueError, match="'pickle'.*'cloudpickle'"):
        Executor(workers=1, serialization_format=fmt)
