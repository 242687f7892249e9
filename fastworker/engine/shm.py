"""The shared segment's life: naming, creating, attaching, removing, and
cleaning up after owners that died.

The C extension does ``shm_open`` + ``posix_fallocate`` + ``mmap`` itself
rather than going through ``multiprocessing.shared_memory``: on Python 3.11
and 3.12 that module's resource tracker unlinks a segment that any attaching
process registered (CPython gh-82300), and a failed attach there can unlink a
live segment.  Here only the owner ever unlinks, and a segment whose owner
died is found and removed by the next start (``remove_stale``) or by the fork
server the owner left behind (see ``zygote.py``).
"""

from __future__ import annotations

import errno
import os
import secrets
import struct
import time
from dataclasses import dataclass

from .. import _native
from ..errors import SegmentError, SharedMemoryFullError

SHM_DIR = "/dev/shm"
PREFIX = "fastworker"

_LAYOUT = _native.layout()


def user_prefix(uid: int | None = None) -> str:
    """Every segment of this user starts with this (without the leading '/')."""
    return f"{PREFIX}-{os.getuid() if uid is None else uid}-"


def new_segment_name(kind: str) -> str:
    """A fresh POSIX name: /fastworker-<uid>-<kind>-<pid>-<random>."""
    return f"/{user_prefix()}{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks.

    Stored in the header next to the owner's pid, so that a pid reused by an
    unrelated process is not mistaken for a live owner.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def owner_alive(pid: int, start_ticks: int) -> bool:
    return pid > 0 and process_start_ticks(pid) == start_ticks


@dataclass(frozen=True)
class Geometry:
    nslots: int
    arena_size: int
    max_workers: int
    max_clients: int

    @property
    def size(self) -> int:
        return _native.segment_size(self.nslots, self.arena_size, self.max_workers, self.max_clients)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# Arenas up to this size are reserved by create() itself; bigger ones by the
# fork server right after start (reserving costs ~0.3 ms per MiB, which would
# otherwise delay the first result), and no arena block is used before that.
RESERVE_NOW = 8 << 20


def create(kind: str, geometry: Geometry) -> _native.Segment:
    """Create this process's segment: header and slots reserved now, the arena
    now or just after start (see RESERVE_NOW).

    A /dev/shm too small for the whole segment fails here with the size
    needed, never with SIGBUS when a page is touched later.
    """
    remove_stale()
    free = _shm_free_bytes()
    if geometry.size > free:
        raise _no_room(geometry, free)
    name = new_segment_name(kind)
    try:
        return _native.create(
            name,
            geometry.nslots,
            geometry.arena_size,
            geometry.max_workers,
            geometry.max_clients,
            os.getpid(),
            process_start_ticks(os.getpid()) or 0,
            int.from_bytes(secrets.token_bytes(8), "little"),
            reserve_arena=geometry.arena_size <= RESERVE_NOW,
        )
    except _native.NoSpace:
        raise _no_room(geometry, _shm_free_bytes()) from None
    except OSError as exc:
        if exc.errno == errno.EEXIST:  # 32 random bits collided: vanishingly rare, try once more
            return create(kind, geometry)
        raise


def _no_room(geometry: Geometry, free: int) -> SharedMemoryFullError:
    return SharedMemoryFullError(
        f"fastworker needs {_mib(geometry.size)} in {SHM_DIR} for its shared segment "
        f"but only {_mib(free)} is free. Lower FASTWORKER_ARENA_SIZE (now {_mib(geometry.arena_size)}) "
        f"or FASTWORKER_SLOTS, or give {SHM_DIR} more room (docker run --shm-size=...)."
    )


def attach(name: str) -> _native.Segment:
    """Map an existing segment, refusing anything that is not a live fastworker segment."""
    try:
        return _native.attach(name)
    except _native.Foreign:
        raise SegmentError(f"{name} is not a fastworker shared segment; refusing to attach") from None
    except _native.VersionMismatch:
        raise SegmentError(
            f"{name} was made by a different fastworker version (layout {_native.LAYOUT_VERSION} "
            "expected); run the same fastworker version on both sides"
        ) from None
    except _native.Corrupt:
        raise SegmentError(f"{name} is corrupt or truncated (header does not match its size); refusing to attach") from None
    except _native.NotReady:
        raise SegmentError(f"{name} is still being created; try again") from None
    except FileNotFoundError:
        raise SegmentError(f"no shared segment named {name}: its owner has stopped") from None


def unlink(name: str) -> None:
    try:
        os.unlink(SHM_DIR + name)
    except FileNotFoundError:
        pass


def _shm_free_bytes() -> int:
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize


def _read_owner(path: str) -> tuple[int, int] | None:
    """(owner pid, owner start ticks) from a segment header, or None if unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if len(head) < 64:
        return None
    (pid,) = struct.unpack_from("<I", head, _LAYOUT["off_owner_pid"])
    (ticks,) = struct.unpack_from("<Q", head, _LAYOUT["off_owner_start_time"])
    return pid, ticks


def remove_stale() -> list[str]:
    """Unlink this user's segments whose owner is gone; never touch a live owner's.

    The owner pid and start time are written first when a segment is
    created (the magic last), so even a segment whose creator died half-way
    names its owner.
    """
    removed: list[str] = []
    prefix = user_prefix()
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return removed
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        path = os.path.join(SHM_DIR, entry)
        owner = _read_owner(path)
        if owner is None:
            continue
        pid, ticks = owner
        if pid and owner_alive(pid, ticks):
            continue
        if pid == 0 and _younger_than(path, 5.0):
            continue  # being created this very moment
        try:
            os.unlink(path)
            removed.append("/" + entry)
        except FileNotFoundError:
            pass
    return removed


def _younger_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime < seconds
    except OSError:
        return False
