"""`fastworker control-plane`: the engine as a service that clients attach to.

    client process                      control plane (this module)                workers
    ──────────────                      ───────────────────────────                ───────
    Client()  ── connect <name>.sock ─▶ accept; SO_PEERCRED: same uid only
              ── HELLO + eventfd ─────▶ client_open() -> (entry, generation)
              ◀── WELCOME ───────────── segment name, entry, task names, format
    attach segment; then, with no hop through here:
    delay() ─────────── submit into the shared ring ────────────────────────▶ take / run
    _on_wakeup ◀──────── eventfd (written by the worker) ◀────────────────── complete
                                         ▲ NEED (entry, generation) on first use of a client
                                         └─ FD via SCM_RIGHTS ─────────────────▶ fd cache
    KEEP (finished results) on stop ───▶ the result cache (LRU + TTL)
    EOF on the connection ─────────────▶ handover: its queued and running tasks go on
                                         and complete to this process's own entry, whose
                                         results join the cache
    query connection: result / cancel ─▶ the cache, the task's live client (relayed), or
                                         a task handed over here
    ◀── EOF (the control plane died or stopped): pending waits fail at once

The control plane owns the segment, the fork server and the workers (the same
Supervisor as the embedded Client), the runtime directory entry of its name,
and every attached client's eventfd.  It never touches a task on the hot
path: it accepts, hands out fds, reclaims, supervises.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import time
from dataclasses import dataclass, field

import orjson
import psutil

from . import _native
from .config import Config
from .engine import call_options, runtime, shm, wire
from .engine.ids import TaskIds, make_task_id
from .engine.link import PROTOCOL
from .engine.periodic import Periodic
from .engine.records import RecordTable, to_result
from .engine.schedule import Schedule
from .engine.supervisor import Supervisor
from .engine.worker import inline_failure
from .engine.zygote import WorkerSpec
from .errors import ControlPlaneUnavailable, TaskCancelledError
from .tasks.models import TaskPriority, TaskStatus
from .tasks.policy import DEFAULT_POLICY
from .tasks.registry import load_task_modules, registry
from .tasks.serialization import Codec

log = logging.getLogger("fastworker.control_plane")

MAX_CLIENTS = 256  # attached client processes at once
STOP_GRACE = 10.0  # how long running tasks may finish after SIGTERM / SIGINT
_MAX_MESSAGE = 64 * 1024
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_RESULT_STATUS = {
    _native.RESULT_SUCCESS: TaskStatus.SUCCESS,
    _native.RESULT_FAILURE: TaskStatus.FAILURE,
    _native.RESULT_CANCELLED: TaskStatus.CANCELLED,
}
# A scheduled task that finds the ring full tries again this much later.
_PLACE_RETRY = 0.05
_WORKER_STATES = {
    _native.WORKER_EMPTY: "starting",
    _native.WORKER_IDLE: "idle",
    _native.WORKER_BUSY: "busy",
    _native.WORKER_SLEEPING: "sleeping",
    _native.WORKER_GONE: "gone",
}


@dataclass
class Attached:
    """One attached client process."""

    generation: int
    eventfd: int
    conn: socket.socket
    pid: int
    ids: str  # the prefix of its task ids: says whose a task id is
    asked: dict[int, socket.socket] = field(default_factory=dict)  # qid -> the querier waiting
    scheduled: set[int] = field(default_factory=set)  # tags of its tasks held in our schedule


@dataclass
class Scheduled:
    """A task a client handed over to be placed in the ring at its time."""

    client: int  # whose entry it goes in: the client's, or ours once it left
    generation: int
    ids: str  # its client's task id prefix
    tag: int  # the tag in the ring (ours carry the departed client's mark)
    fn_id: int
    lane: int
    flags: int
    payload: bytes

    @property
    def task_id(self) -> str:
        return make_task_id(self.ids, self.tag)


def peer_uid(conn: socket.socket) -> int:
    _pid, uid, _gid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return uid


def send_json(conn: socket.socket, message: dict) -> None:
    # A pickled task's result may not be JSON: it is shown by its repr.
    data = orjson.dumps(message, default=repr, option=orjson.OPT_NON_STR_KEYS)
    try:
        conn.send(data)
    except OSError:
        pass  # the peer is gone; its EOF cleans up


class ControlPlane:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.codec = Codec.for_format(config.serialization_format)
        self.clients: dict[int, Attached] = {}
        self.segment: _native.Segment | None = None
        self.supervisor: Supervisor | None = None
        self.listener: socket.socket | None = None
        self.task_names: tuple[str, ...] = ()
        self._stop: asyncio.Future[float] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Finished results of clients that left, and of any client that stopped cleanly.
        self.results = RecordTable(config.result_cache_size, config.result_cache_ttl)
        self.own_entry = 0  # this process's own client entry: tasks of clients that left complete here
        self.own_generation = 0
        self.own_eventfd = -1
        self.departed: dict[int, str] = {}  # handover mark -> that client's task id prefix
        self._next_mark = 0
        self._next_qid = 0
        self.started = time.monotonic()
        self.schedule: Schedule | None = None
        self.scheduled: dict[tuple[str, int], Scheduled] = {}  # (id prefix, counter) -> task held for later
        # (id prefix, counter) -> the retry state of a task whose client left: we run its next attempts
        self.retrying: dict[tuple[str, int], wire.RetryState] = {}
        self.periodic: Periodic | None = None
        self.own_ids = TaskIds()  # the ids of periodic runs (tag mark 0 on our own entry)
        self._own_counter = 0

    # ------------------------------------------------------------------ life

    async def serve(self) -> int:
        """Run until SIGTERM or SIGINT; remove everything this made; 0 on a clean stop."""
        loop = self._loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        place = runtime.place(self.config.name, create=True)
        place.claim()
        grace = 0.0  # an error on the way up: stop at once
        try:
            load_task_modules(self.config.task_modules)
            self.task_names = registry.snapshot()
            self._start_engine(loop)
            self._listen(place)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
            log.info(
                "control plane %r: %d workers, %d tasks (%s), %s, segment %s of %.1f MiB, socket %s",
                self.config.name,
                self.config.workers,
                len(self.task_names),
                ", ".join(self.task_names) or "none",
                self.config.serialization_format.value,
                self.segment.name if self.segment else "?",
                (self.segment.size if self.segment else 0) / (1 << 20),
                place.socket,
            )
            grace = await self._stop
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
                # The shutdown below blocks this loop: a second signal must act by itself.
                signal.signal(sig, self._stop_now)
            try:
                self._shutdown(grace)
            finally:
                place.release()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
        log.info("control plane %r stopped", self.config.name)
        return 0

    def _start_engine(self, loop: asyncio.AbstractEventLoop) -> None:
        geometry = shm.Geometry(
            nslots=self.config.slots,
            arena_size=self.config.arena_size,
            max_workers=self.config.workers,
            max_clients=MAX_CLIENTS,
        )
        self.segment = shm.create(f"cp-{self.config.name}", geometry)
        self.segment.set_spin(self.config.spin_us * 1000, len(os.sched_getaffinity(0)))
        tasks = self.tasks = tuple(registry.get(name) for name in self.task_names)
        spec = WorkerSpec(
            self.segment, tasks, self.codec, {}, attachable=True,
            max_tasks_per_child=self.config.max_tasks_per_child,
            max_memory_per_child=self.config.max_memory_per_child,
        )
        self.supervisor = Supervisor(
            self.segment,
            self.config.workers,
            spec,
            self._on_lost,
            loop,
            on_arena=self._wake_all,
            client_fd=self._client_fd,
            task_id=self._task_id,
            on_worker=self._on_worker,
        )
        self.own_entry, self.own_generation = self.segment.client_open(os.getpid())
        self.own_eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        loop.add_reader(self.own_eventfd, self._collect)
        self.segment.arm(self.own_entry)
        self.supervisor.start()
        self.schedule = Schedule(loop)
        self.periodic = Periodic.start(self.schedule, tasks, self._run_periodic, self._kept_status)

    def _listen(self, place: runtime.Place) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old_umask = os.umask(0o177)  # the socket file is created 0600
        try:
            listener.bind(place.socket)
        finally:
            os.umask(old_umask)
        listener.listen(128)
        listener.setblocking(False)
        self.listener = listener
        assert self._loop is not None
        self._loop.add_reader(listener, self._accept)

    def _on_signal(self, sig: int) -> None:
        """First SIGTERM/SIGINT: stop taking work, let running tasks finish.  Second: stop now."""
        if self._stop is not None and not self._stop.done():
            log.info("control plane %r: %s, stopping (running tasks get %g s)",
                     self.config.name, signal.Signals(sig).name, STOP_GRACE)
            self._stop.set_result(STOP_GRACE)

    def _stop_now(self, sig: int, frame: object) -> None:
        log.warning("control plane %r: second %s, stopping at once", self.config.name, signal.Signals(sig).name)
        zygote = self.supervisor.zygote if self.supervisor else None
        if zygote is not None:
            signal.pidfd_send_signal(zygote.pidfd, signal.SIGKILL)  # its workers die with it

    def _shutdown(self, grace: float) -> None:
        loop = self._loop
        if self.listener is not None:
            if loop is not None and not loop.is_closed():
                loop.remove_reader(self.listener)
            self.listener.close()
            self.listener = None
        if self.schedule is not None:
            unplaced = self.schedule.close()
            if unplaced:
                log.warning("control plane %r: %d scheduled task(s) never ran (stopped first)",
                            self.config.name, len(unplaced))
        if self.supervisor is not None:
            self.supervisor.stop(grace)
        # Results finished in the grace period stay in the segment for their
        # clients, which collect them when they see the connection close.
        for client in list(self.clients):
            self._detach(client, free_slots=False)
        if self.own_eventfd >= 0:
            if loop is not None and not loop.is_closed():
                loop.remove_reader(self.own_eventfd)
            os.close(self.own_eventfd)
            self.own_eventfd = -1
        if self.segment is not None:
            name = self.segment.name
            self.segment.close()
            shm.unlink(name)
            self.segment = None

    # --------------------------------------------------------------- clients

    def _accept(self) -> None:
        assert self.listener is not None and self._loop is not None
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            uid = peer_uid(conn)
            if uid != os.getuid():
                log.warning("refused a client of uid %d (this control plane serves uid %d only)", uid, os.getuid())
                send_json(conn, {"error": f"this control plane serves uid {os.getuid()} only; you are uid {uid}"})
                conn.close()
                continue
            self._loop.add_reader(conn, self._on_hello, conn)

    def _on_hello(self, conn: socket.socket) -> None:
        assert self._loop is not None and self.segment is not None
        self._loop.remove_reader(conn)
        fds: list[int] = []
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, _MAX_MESSAGE, 1)
            hello = orjson.loads(data) if data else None
        except (OSError, orjson.JSONDecodeError):
            hello = None
        if isinstance(hello, dict) and "query" in hello and not fds:
            try:
                self._on_query(conn, hello)
            except Exception as exc:  # noqa: BLE001 - the asker gets an answer, the service goes on
                log.exception("control plane %r: the query %r failed", self.config.name, hello.get("query"))
                self._reply(conn, {"error": f"the {hello.get('query')!r} query failed: {type(exc).__name__}: {exc}"})
            return
        if not isinstance(hello, dict) or hello.get("hello") != PROTOCOL or len(fds) != 1:
            send_json(conn, {"error": f"expected a protocol {PROTOCOL} HELLO with the client's eventfd"})
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        wanted = hello.get("format")
        if wanted != self.config.serialization_format.value:
            send_json(
                conn,
                {
                    "error": f"this control plane serializes with {self.config.serialization_format.value}, "
                    f"the client with {wanted}; set FASTWORKER_SERIALIZATION_FORMAT="
                    f"{self.config.serialization_format.value.upper()} (or serialization_format=) on the client"
                },
            )
            os.close(fds[0])
            conn.close()
            return
        try:
            client, generation = self.segment.client_open(int(hello.get("pid", 0)))
        except _native.Full:
            send_json(conn, {"error": f"this control plane serves at most {MAX_CLIENTS} clients at once"})
            os.close(fds[0])
            conn.close()
            return
        self.clients[client] = Attached(generation, fds[0], conn, int(hello.get("pid", 0)), str(hello.get("ids", "")))
        send_json(
            conn,
            {
                "protocol": PROTOCOL,
                "segment": self.segment.name,
                "layout": _native.LAYOUT_VERSION,
                "epoch": self.segment.epoch,
                "client": client,
                "generation": generation,
                "tasks": list(self.task_names),
                # Retries are the client's to run (it keeps the arguments): their options.
                "policies": {
                    d.name: {"retries": d.policy.retries, "retry_delay": d.policy.retry_delay,
                             "retry_backoff": d.policy.retry_backoff, "retry_backoff_max": d.policy.retry_backoff_max}
                    for d in self.tasks if d.policy is not DEFAULT_POLICY and d.policy.retries
                },
                "format": self.config.serialization_format.value,
                "pid": os.getpid(),
                "workers": self.config.workers,
            },
        )
        self._loop.add_reader(conn, self._on_client_message, client, conn)
        log.debug("client pid %s attached as entry %d", hello.get("pid"), client)

    def _on_client_message(self, client: int, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(_MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # the client left or died: its unfinished tasks are now ours
                self._detach(client)
                return
            if data[:1] == wire.KEEP:  # a stopping client hands over its finished results
                for task_id, status, payload, t_start, t_end in wire.read_keep(data):
                    self.results.store(task_id, None, status, payload, t_start, t_end)
                continue
            if data[:1] == wire.SCHEDULE:  # a task to place in the ring at its time
                self._hold(client, data)
                continue
            if data[:1] == wire.RETRY:  # a stopping client's task that may still be retried
                self._adopt_retries(client, data)
                continue
            try:
                message = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            attached = self.clients.get(client)
            if isinstance(message, dict) and "answer" in message and attached is not None:
                querier = attached.asked.pop(message["answer"], None)
                if querier is not None:
                    message.pop("answer")
                    self._reply(querier, message)

    def _detach(self, client: int, free_slots: bool = True) -> None:
        """A client left: its queued and running tasks go on, their results kept here."""
        attached = self.clients.pop(client, None)
        if attached is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(attached.conn)
        attached.conn.close()
        for querier in attached.asked.values():
            self._reply(querier, {"error": "the client that submitted the task left before answering"})
        if free_slots and self.segment is not None:
            self._next_mark = self._next_mark % 0xFFFF + 1  # marks 1..65535, reused in turn
            self.departed[self._next_mark] = attached.ids
            _delivered, moved = self.segment.client_handover(client, self.own_entry, self._next_mark)
            for tag in attached.scheduled:  # its scheduled tasks will run for us
                held = self.scheduled.get((attached.ids, tag))
                if held is not None:
                    held.client, held.generation = self.own_entry, self.own_generation
                    held.tag = (self._next_mark << 48) | tag
            self._collect()
            log.debug("client pid %d (entry %d) left; %d task(s) handed over", attached.pid, client, moved)
        os.close(attached.eventfd)

    # ------------------------------------------------------------- schedule

    def _hold(self, client: int, datagram: bytes) -> None:
        attached = self.clients.get(client)
        fields = wire.read_schedule(datagram)
        if attached is None or fields is None or self.schedule is None:
            return
        tag, due, fn_id, lane, flags, payload = fields
        if fn_id >= len(self.task_names) or lane > 3:
            log.warning("client pid %d sent a scheduled task with fn_id %d lane %d; dropped", attached.pid, fn_id, lane)
            return
        held = Scheduled(client, attached.generation, attached.ids, tag, fn_id, lane, flags, payload)
        key = (attached.ids, tag)
        self.scheduled[key] = held
        attached.scheduled.add(tag)
        self.schedule.add(key, due, lambda: self._place(key))

    def _place(self, key: tuple[str, int]) -> None:
        held = self.scheduled.get(key)
        if held is None or self.segment is None:
            return
        attached = self.clients.get(held.client)
        if held.client != self.own_entry and (attached is None or attached.generation != held.generation):
            del self.scheduled[key]  # a client that left without a handover (shutting down)
            return
        try:
            self.segment.submit(held.client, held.lane, held.fn_id, held.flags, held.tag, held.payload)
        except _native.Full:
            assert self.schedule is not None
            self.schedule.add(key, self.schedule.clock() + _PLACE_RETRY, lambda: self._place(key))
            return
        except (_native.TooBig, _native.Shutdown, _native.ArenaFailed) as exc:
            self.results.store(held.task_id, self.task_names[held.fn_id], TaskStatus.FAILURE, None, 0, 0,
                               f"{type(exc).__name__}: the scheduled task could not be queued")
        del self.scheduled[key]
        if attached is not None:
            attached.scheduled.discard(key[1])

    def _adopt_retries(self, client: int, datagram: bytes) -> None:
        attached = self.clients.get(client)
        state = wire.read_retry(datagram)
        if attached is None or state is None or state.fn_id >= len(self.task_names) or state.lane > 3:
            return
        self.retrying[(attached.ids, state.tag)] = state

    def _retry(self, key: tuple[str, int], state: wire.RetryState, mark: int) -> None:
        """A handed-over task failed with attempts left: its next attempt, on our own entry,
        after its delay (what its client would have done)."""
        assert self.schedule is not None
        delay = state.policy.retry_delay_after(state.attempt)
        state.attempt += 1
        payload = call_options.wrap(state.payload, state.timeout, state.attempt)
        self.scheduled[key] = Scheduled(self.own_entry, self.own_generation, key[0], (mark << 48) | key[1],
                                        state.fn_id, state.lane, state.flags | call_options.CALL_OPTIONS, payload)
        self.schedule.add(key, self.schedule.clock() + delay, lambda: self._place(key))
        log.debug("task %s: attempt %d in %.2f s", make_task_id(*key), state.attempt, delay)

    def _unschedule(self, ids: str, tag: int) -> bool:
        self.retrying.pop((ids, tag & 0xFFFFFFFFFFFF), None)  # cancelled: no further attempts either
        held = self.scheduled.pop((ids, tag & 0xFFFFFFFFFFFF), None)
        if held is None or self.schedule is None:
            return False
        self.schedule.cancel((ids, tag & 0xFFFFFFFFFFFF))
        attached = self.clients.get(held.client)
        if attached is not None:
            attached.scheduled.discard(tag)
        return True

    def _run_periodic(self, task_name: str) -> str | None:
        """One run of a periodic task, on our own entry (its result joins the cache)."""
        if self.segment is None:
            return None
        self._own_counter += 1
        fn_id = self.task_names.index(task_name)
        payload, flags = self.codec.encode_args(task_name, (), {})
        task_id = self.own_ids.make(self._own_counter)
        try:
            self.segment.submit(self.own_entry, TaskPriority.NORMAL, fn_id, flags, self._own_counter, payload)
        except (_native.Full, _native.Shutdown, _native.ArenaFailed) as exc:
            self.results.store(task_id, task_name, TaskStatus.FAILURE, None, 0, 0,
                               f"{type(exc).__name__}: the periodic run could not be queued")
        return task_id

    def _kept_status(self, task_id: str) -> TaskStatus | None:
        """A periodic run's status: finished once its result is kept, else still going."""
        kept = self.results.get(task_id)
        return TaskStatus.PENDING if kept is None else TaskStatus(kept[2])

    def _task_id(self, client: int, generation: int, tag: int) -> str | None:
        """For current_task() in a worker: the id of a client's task."""
        if client == self.own_entry:
            mark = tag >> 48
            prefix = self.own_ids.prefix if mark == 0 else self.departed.get(mark)
        else:
            attached = self.clients.get(client)
            prefix = attached.ids if attached is not None and attached.generation == generation else None
        return None if prefix is None else make_task_id(prefix, tag)

    def _collect(self) -> None:
        """Keep the results of tasks whose clients left (they complete to our own entry)."""
        segment = self.segment
        if segment is None:
            return
        try:
            os.eventfd_read(self.own_eventfd)
        except BlockingIOError:
            pass
        while True:
            for _handle, status, _flags, tag, payload, t_start, t_end in segment.drain(self.own_entry):
                mark = tag >> 48
                prefix = self.own_ids.prefix if mark == 0 else self.departed.get(mark)
                if prefix is None:
                    continue
                key = (prefix, tag & 0xFFFFFFFFFFFF)
                state = self.retrying.get(key)
                if state is not None and status == _native.RESULT_FAILURE and state.attempt <= state.policy.retries:
                    self._retry(key, state, mark)
                    continue
                self.retrying.pop(key, None)
                name, attempts = (self.task_names[state.fn_id], state.attempt) if state is not None else (None, 1)
                self.results.store(make_task_id(prefix, tag), name, _RESULT_STATUS[status], payload, t_start, t_end,
                                   attempts=attempts)
            if not segment.arm(self.own_entry):
                break

    # --------------------------------------------------------------- queries

    def _reply(self, conn: socket.socket, message: dict) -> None:
        send_json(conn, message)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(conn)
        conn.close()

    def _owner(self, task_id: str) -> Attached | None:
        for attached in self.clients.values():
            if attached.ids and task_id.startswith(attached.ids):
                return attached
        return None

    def _ask_owner(self, owner: Attached, conn: socket.socket, message: dict) -> None:
        """Relay a query about a live client's task to that client; it answers on its connection."""
        self._next_qid += 1
        qid = self._next_qid
        owner.asked[qid] = conn
        send_json(owner.conn, {**message, "ask": message["query"], "qid": qid})
        assert self._loop is not None
        self._loop.call_later(5.0, self._ask_expired, owner, qid)

    def _ask_expired(self, owner: Attached, qid: int) -> None:
        querier = owner.asked.pop(qid, None)
        if querier is not None:
            self._reply(querier, {"error": "the client that submitted the task did not answer"})

    def _on_query(self, conn: socket.socket, query: dict) -> None:
        kind = query.get("query")
        task_id = query.get("task_id")
        if kind in ("result", "cancel") and not isinstance(task_id, str):
            self._reply(conn, {"error": f"a {kind!r} query needs a task_id string"})
        elif kind == "result":
            kept = self.results.get(task_id)  # type: ignore[arg-type]
            owner = self._owner(task_id)  # type: ignore[arg-type]
            if kept is not None:
                self._reply(conn, {"result": to_result(kept, self.codec).to_dict()})  # type: ignore[arg-type]
            elif owner is not None:
                self._ask_owner(owner, conn, query)
            else:
                self._reply(conn, {"result": self._pending_result(task_id)})  # type: ignore[arg-type]
        elif kind == "cancel":
            owner = self._owner(task_id)  # type: ignore[arg-type]
            if owner is not None:
                self._ask_owner(owner, conn, query)
            else:
                self._reply(conn, self._cancel_handed_over(task_id))  # type: ignore[arg-type]
        elif kind == "stats":
            self._reply(conn, self.stats())
        elif kind == "tasks":
            self._reply(conn, {"tasks": list(self.task_names),
                               "periodic": self.periodic.describe() if self.periodic is not None else []})
        elif kind in ("unschedule", "stop"):
            self._on_client_query(conn, kind, query)
        else:
            self._reply(conn, {"error": f"unknown query {kind!r}; expected result, cancel, stats or tasks"})

    def _on_client_query(self, conn: socket.socket, kind: str, query: dict) -> None:
        """A client about one of its own tasks: take it out of the schedule, or stop it running."""
        client = query.get("client")
        attached = self.clients.get(client) if isinstance(client, int) else None
        if attached is None:
            self._reply(conn, {"error": f"no client is attached as entry {client!r}"})
        elif kind == "unschedule":
            tag = query.get("tag")
            self._reply(conn, {"cancelled": isinstance(tag, int) and self._unschedule(attached.ids, tag)})
        else:
            handle = query.get("handle")
            owned = (
                isinstance(handle, int) and self.segment is not None
                and 0 <= handle & 0xFFFFFFFF < self.segment.nslots
                and self.segment.slot_state(handle & 0xFFFFFFFF)["client"] == client
                and query.get("generation") == attached.generation
            )
            self._reply(conn, {"stopped": bool(owned) and self._stop_task(handle)})

    def _stop_task(self, handle: int) -> bool:
        assert self.supervisor is not None
        error = inline_failure(TaskCancelledError("the task was cancelled while running"))
        return self.supervisor.stop_task(handle, _native.RESULT_CANCELLED, error)

    def _handed_over(self, task_id: str) -> int | None:
        """The ring handle of a task handed over to us and not finished yet."""
        for mark, prefix in self.departed.items():
            if task_id.startswith(prefix) and self.segment is not None:
                try:
                    counter = int(task_id[len(prefix) :], 16)
                except ValueError:
                    return None
                return self.segment.find_task(self.own_entry, (mark << 48) | counter)
        return None

    def _scheduled_key(self, task_id: str) -> tuple[str, int] | None:
        prefix, counter = task_id[:-12], task_id[-12:]
        try:
            key = (prefix, int(counter, 16))
        except ValueError:
            return None
        return key if key in self.scheduled else None

    def _pending_result(self, task_id: str) -> dict | None:
        handle = self._handed_over(task_id)
        if handle is None and self._scheduled_key(task_id) is not None:
            key = self._scheduled_key(task_id)
            return {"task_id": task_id, "task_name": self.task_names[self.scheduled[key].fn_id],  # type: ignore[index]
                    "status": TaskStatus.PENDING.value, "result": None, "error": None, "traceback": None,
                    "started_at": None, "completed_at": None}
        if handle is None or self.segment is None:
            return None
        state, _t_start = self.segment.handle_state(handle)
        status = TaskStatus.STARTED if state == _native.SLOT_RUNNING else TaskStatus.PENDING
        return {"task_id": task_id, "task_name": None, "status": status.value, "result": None, "error": None,
                "traceback": None, "started_at": None, "completed_at": None}

    def _cancel_handed_over(self, task_id: str) -> dict:
        if self.results.get(task_id) is not None:
            return {"cancelled": False, "message": f"task {task_id} already finished"}
        key = self._scheduled_key(task_id)
        if key is not None and self._unschedule(*key):
            self.results.store(task_id, None, TaskStatus.CANCELLED, None, 0, 0, "cancelled before it started")
            return {"cancelled": True, "message": f"task {task_id} cancelled (it was scheduled)"}
        handle = self._handed_over(task_id)
        if handle is None or self.segment is None:
            return {"cancelled": False, "message": f"task {task_id} not found (unknown, or its result expired)"}
        if self.segment.cancel(self.own_entry, handle):
            self.results.store(task_id, None, TaskStatus.CANCELLED, None, 0, 0, "cancelled before it started")
            return {"cancelled": True, "message": f"task {task_id} cancelled"}
        if self._stop_task(handle):  # its result (CANCELLED) reaches our entry and the cache
            return {"cancelled": True, "message": f"task {task_id} cancelled while running; its worker was replaced"}
        return {"cancelled": False, "message": f"task {task_id} already finished"}

    def stats(self) -> dict:
        assert self.segment is not None and self.supervisor is not None
        census = self.segment.check()
        counters = self.segment.stats()
        workers = []
        for index in range(self.config.workers):
            info = self.segment.worker(index)
            pid = self.supervisor.pids.get(index, 0)
            cpu = rss = None
            try:
                proc = psutil.Process(pid)
                cpu = proc.cpu_percent(interval=None)
                rss = proc.memory_info().rss
            except (psutil.Error, ValueError):
                pass
            current = None
            if info["current_slot"] is not None:
                fn_id = self.segment.slot_state(info["current_slot"])["fn_id"]
                current = self.task_names[fn_id] if fn_id < len(self.task_names) else None
            workers.append({"index": index, "pid": pid, "state": _WORKER_STATES.get(info["state"], "unknown"),
                            "current_task": current, "tasks_done": info["tasks_done"], "cpu_percent": cpu,
                            "rss_bytes": rss})
        return {
            "name": self.config.name,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "workers": workers,
            "queued_by_priority": {p.name.lower(): n for p, n in zip(TaskPriority, census["queued_by_lane"])},
            "running": census["running"],
            "submitted": counters["submitted"],
            "completed": counters["completed"],
            "failed": counters["failed"],
            "workers_lost": self.supervisor.workers_lost,
            "tasks_stopped": self.supervisor.tasks_stopped,
            "scheduled": len(self.scheduled),
            "clients": len(self.clients),
            "results_kept": len(self.results.finished),
        }

    def _client_fd(self, client: int, generation: int) -> int | None:
        if client == self.own_entry and generation == self.own_generation:
            return self.own_eventfd
        attached = self.clients.get(client)
        if attached is None or attached.generation != generation:
            return None
        return attached.eventfd

    def _on_lost(self, lost: list[tuple[int, int]]) -> None:
        """Tasks failed by a dead worker: wake their clients (the worker could not)."""
        self._collect()
        for client in {client for _handle, client in lost}:
            attached = self.clients.get(client)
            if attached is not None:
                os.eventfd_write(attached.eventfd, 1)

    def _on_worker(self, event: str, payload: dict) -> None:
        """worker.started / worker.lost: told to every attached client (their handlers decide)."""
        for attached in self.clients.values():
            send_json(attached.conn, payload)

    def _wake_all(self) -> None:
        for attached in self.clients.values():
            os.eventfd_write(attached.eventfd, 1)


def run(config: Config) -> int:
    """Run a control plane in the foreground (what the CLI command does)."""
    try:
        return asyncio.run(ControlPlane(config).serve())
    except ControlPlaneUnavailable as exc:
        log.error("%s", exc)
        return 1
