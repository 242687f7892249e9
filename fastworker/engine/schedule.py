"""Work that is due later: countdown/eta tasks, retries waiting out their
delay, periodic ticks.  Held by the parent (the embedded Client or the
control plane) in a heap, never by a sleeping worker.

One asyncio timer is armed for the earliest entry only.  Times are on the
wall clock (``eta`` is a datetime), read through an injectable ``clock`` so
tests move time by hand instead of sleeping; the timer never sleeps longer
than ``MAX_NAP`` at once, so a clock that jumps is noticed soon after.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Hashable
from datetime import datetime

log = logging.getLogger("fastworker.schedule")

MAX_NAP = 1.0
MAX_COUNTDOWN = 100 * 365.25 * 86400  # beyond this a countdown is a mistake (or infinity)


def due_time(countdown: float | None, eta: datetime | None, now: float) -> float | None:
    """When a task given ``countdown=`` (seconds) or ``eta=`` (a datetime) is due, as a
    wall-clock timestamp; None when neither was given.  A naive ``eta`` is local time, a past
    one is due now; a negative countdown is a ValueError."""
    if countdown is not None and eta is not None:
        raise ValueError("give countdown= or eta=, not both")
    if countdown is not None:
        if isinstance(countdown, bool) or not isinstance(countdown, (int, float)) or countdown != countdown:
            raise TypeError(f"countdown must be a number of seconds, not {countdown!r}")
        if countdown < 0:
            raise ValueError(f"countdown must be >= 0 seconds, not {countdown!r}")
        if countdown > MAX_COUNTDOWN:
            raise ValueError(f"countdown must be at most {MAX_COUNTDOWN:g} seconds (a century), not {countdown!r}")
        return now + countdown
    if eta is not None:
        if not isinstance(eta, datetime):
            raise TypeError(f"eta must be a datetime, not {eta!r}")
        return eta.timestamp()  # a naive datetime is taken as local time, as datetime does
    return None


class Schedule:
    """A heap of (due, action) entries under keys; ``action()`` runs on the loop when due."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float] = time.time) -> None:
        self.loop = loop
        self.clock = clock
        self._heap: list[tuple[float, int, Hashable]] = []
        self._entries: dict[Hashable, tuple[float, int, Callable[[], object]]] = {}
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self.closed = False

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def add(self, key: Hashable, due: float, action: Callable[[], object]) -> None:
        """Run ``action`` at ``due`` (wall-clock seconds); replaces an entry under the same key."""
        order = next(self._order)
        self._entries[key] = (due, order, action)
        heapq.heappush(self._heap, (due, order, key))
        if self._armed_for is None or due < self._armed_for:
            self._arm()

    def cancel(self, key: Hashable) -> bool:
        """Drop an entry before it runs: True if it was there."""
        return self._entries.pop(key, None) is not None  # its heap item is skipped when it surfaces

    def due(self, key: Hashable) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def items(self) -> list[tuple[Hashable, float]]:
        return sorted(((key, entry[0]) for key, entry in self._entries.items()), key=lambda item: item[1])

    def run_due(self) -> int:
        """Run every entry due by now, earliest first; then re-arm.  Returns how many ran."""
        ran = 0
        now = self.clock()
        while self._heap and self._heap[0][0] <= now:
            _due, order, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is None or entry[1] != order:
                continue  # cancelled or replaced
            del self._entries[key]
            ran += 1
            try:
                entry[2]()
            except Exception:  # noqa: BLE001 - one failing entry must not stop the others
                log.exception("a scheduled action failed")
        self._arm()
        return ran

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._armed_for = None
        while self._heap and self._heap[0][2] not in self._entries:
            heapq.heappop(self._heap)
        if self.closed or not self._heap or self.loop.is_closed():
            return
        due = self._heap[0][0]
        self._armed_for = due
        self._timer = self.loop.call_later(min(MAX_NAP, max(0.0, due - self.clock())), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._armed_for = None
        self.run_due()

    def close(self) -> list[Hashable]:
        """Stop; the keys of the entries that never ran."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        keys = list(self._entries)
        self._entries.clear()
        self._heap.clear()
        return keys
