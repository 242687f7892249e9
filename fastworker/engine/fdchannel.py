"""How a worker gets the eventfd of a client that attached after it was forked.

A client that attaches to a control plane hands its eventfd to the control
plane (``socket.send_fds``); workers need it to wake that client.  Each
worker has a socketpair to its owner, made by the fork server when it forks
the worker.  The first time a worker completes a task for a client entry
(index, generation) it asks the owner once (``NEED``) and caches the fd; a
later client reusing the entry has a new generation, so the worker asks
again and closes the old fd.  The owner answers from its event loop.

``current_task().id`` inside a task asks the same way, only when a task
calls it: the owner knows each client's task id prefix, workers do not.

Messages (``_MSG``: kind, client index, generation, tag):
    worker -> owner   NEED                    ASK_ID (the tag of the task)
    owner -> worker   FD (+ the eventfd, SCM_RIGHTS) or GONE (that client left)
                      TASK_ID (+ the id, ASCII, after the record) or GONE
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable

from .. import _native

NEED, FD, GONE, ASK_ID, TASK_ID = b"N", b"F", b"G", b"I", b"T"
_MSG = struct.Struct("<cIIQ")
_ID_MAX = 64  # a task id is 36 characters
# A worker waits this long for its owner's answer, then does without.
_ANSWER_TIMEOUT = 2.0


class ClientFds:
    """The worker's view: a Mapping-like ``get(client, default)`` of eventfds.

    The worker loop calls ``get`` once per completed task, so the hit path
    is one native call (the entry's generation) and one dict lookup.
    """

    def __init__(self, segment: _native.Segment, channel: socket.socket) -> None:
        self._segment = segment
        self._channel = channel
        self._channel.settimeout(_ANSWER_TIMEOUT)
        self._cache: dict[int, tuple[int, int]] = {}  # client -> (generation, fd)

    def get(self, client: int, default: int = -1) -> int:
        generation = self._segment.client_gen(client)
        cached = self._cache.get(client)
        if cached is not None:
            if cached[0] == generation:
                return cached[1]
            os.close(cached[1])  # the entry was reused: that client is gone
            del self._cache[client]
        if generation == 0:
            return default
        fd = self._fetch(client, generation)
        if fd < 0:
            return default
        self._cache[client] = (generation, fd)
        return fd

    def task_id(self, client: int, tag: int) -> str | None:
        """The id of the client's task ``tag`` (None if the owner does not know it any more)."""
        generation = self._segment.client_gen(client)
        try:
            self._channel.send(_MSG.pack(ASK_ID, client, generation, tag))
            data = self._channel.recv(_MSG.size + _ID_MAX)
        except OSError:
            return None
        if len(data) <= _MSG.size:
            return None
        kind, got_client, _generation, got_tag = _MSG.unpack_from(data)
        if kind != TASK_ID or (got_client, got_tag) != (client, tag):
            return None
        return data[_MSG.size :].decode("ascii")

    def values(self) -> list[int]:
        return [fd for _, fd in self._cache.values()]

    def _fetch(self, client: int, generation: int) -> int:
        try:
            self._channel.send(_MSG.pack(NEED, client, generation, 0))
            data, fds, _flags, _addr = socket.recv_fds(self._channel, _MSG.size, 1)
        except OSError:  # the owner is gone or stuck: the client is not woken this time
            return -1
        if not data:
            return -1
        kind, got_client, got_generation, _tag = _MSG.unpack(data)
        if kind != FD or not fds or (got_client, got_generation) != (client, generation):
            for fd in fds:
                os.close(fd)
            return -1
        return fds[0]


def answer(
    channel: socket.socket,
    lookup: Callable[[int, int], int | None],
    task_id: Callable[[int, int, int], str | None] = lambda client, generation, tag: None,
) -> bool:
    """The owner's side: answer every request waiting on a worker's channel.

    ``lookup(client, generation)`` gives the client's eventfd, or None if that
    client (entry and generation) is no longer attached; ``task_id(client,
    generation, tag)`` the id of one of its tasks.  Returns False when the
    worker closed its end.
    """
    while True:
        try:
            data = channel.recv(_MSG.size)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        if len(data) != _MSG.size:
            continue
        kind, client, generation, tag = _MSG.unpack(data)
        try:
            if kind == NEED:
                fd = lookup(client, generation)
                if fd is None:
                    channel.send(_MSG.pack(GONE, client, generation, 0))
                else:
                    socket.send_fds(channel, [_MSG.pack(FD, client, generation, 0)], [fd])
            elif kind == ASK_ID:
                found = task_id(client, generation, tag)
                reply = _MSG.pack(TASK_ID, client, generation, tag) + found.encode("ascii") if found else (
                    _MSG.pack(GONE, client, generation, tag)
                )
                channel.send(reply)
        except OSError:
            return False
