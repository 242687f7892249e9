"""Events of a client's tasks and workers, for ``client.on(name, handler)``.

A handler is a plain function or a coroutine function; it gets one dict.  A
handler that raises is logged and changes nothing: the engine never depends
on what a handler does.  Emitting costs one truth test when nobody listens.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fastworker.events")

TASK_EVENTS = ("task.queued", "task.started", "task.success", "task.failure", "task.retrying", "task.cancelled")
WORKER_EVENTS = ("worker.started", "worker.lost")
EVENTS = TASK_EVENTS + WORKER_EVENTS


class Events:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable[[dict], Any]]] = {}
        self._running: set[asyncio.Task] = set()  # async handlers, held until done
        # Anyone listening?  A plain attribute: the client tests it once per task.
        self.active = False

    def listens(self, event: str) -> bool:
        return event in self._handlers

    def on(self, event: str, handler: Callable[[dict], Any]) -> Callable[[dict], Any]:
        """Call ``handler(payload)`` on each ``event``; returns the handler (usable as a decorator)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}")
        if not callable(handler):
            raise TypeError(f"an event handler must be callable, not {handler!r}")
        self._handlers.setdefault(event, []).append(handler)
        self.active = True
        return handler

    def off(self, event: str, handler: Callable[[dict], Any]) -> None:
        handlers = self._handlers.get(event, [])
        if handler in handlers:
            handlers.remove(handler)
        if not handlers:
            self._handlers.pop(event, None)
        self.active = bool(self._handlers)

    def emit(self, event: str, payload: dict) -> None:
        for handler in self._handlers.get(event, ()):
            call(handler, payload, f"{event} handler", self._running)


def call(fn: Callable[..., Any], payload: dict, what: str, running: set[asyncio.Task]) -> None:
    """Run a user's sync or async callable with ``payload``; log what it raises."""
    try:
        outcome = fn(payload)
        if inspect.isawaitable(outcome):
            task = asyncio.ensure_future(outcome)
            running.add(task)
            task.add_done_callback(lambda t: _finished(t, what, running))
    except Exception:  # noqa: BLE001 - a user's callback never breaks the engine
        log.exception("the %s %r raised; ignored", what, fn)


def _finished(task: asyncio.Task, what: str, running: set[asyncio.Task]) -> None:
    running.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("the %s raised; ignored", what, exc_info=task.exception())
