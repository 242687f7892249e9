"""Where a control plane is found: a per-user runtime directory.

    $XDG_RUNTIME_DIR/fastworker/   (or /tmp/fastworker-<uid>/ without it), mode 0700
        <name>.sock    the control plane's AF_UNIX SOCK_SEQPACKET socket
        <name>.pid     "<pid> <start ticks>" of the control plane that owns the name

The directory must belong to this user and be closed to everyone else: a
directory another user made (in /tmp, say) or left open is refused rather
than trusted, since whoever controls it could stand in for the control plane.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from ..errors import ConfigError, ControlPlaneUnavailable
from .shm import owner_alive, process_start_ticks


def runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "fastworker")
    return f"/tmp/fastworker-{os.getuid()}"


def ensure_private_dir(path: str) -> str:
    """Create the directory 0700, or check that an existing one is ours and private."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ControlPlaneUnavailable(
            f"refusing the runtime directory {path}: it must be a directory owned by uid {os.getuid()} "
            f"with mode 0700 (it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); remove it or set "
            "XDG_RUNTIME_DIR to a private directory"
        )
    return path


@dataclass(frozen=True)
class Place:
    """The files of one named control plane."""

    name: str
    directory: str

    @property
    def socket(self) -> str:
        return os.path.join(self.directory, f"{self.name}.sock")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.directory, f"{self.name}.pid")

    def owner(self) -> int | None:
        """The pid of the live control plane owning this name, else None."""
        try:
            with open(self.pidfile) as f:
                pid_text, ticks_text = f.read().split()
            pid, ticks = int(pid_text), int(ticks_text)
        except (OSError, ValueError):
            return None
        return pid if owner_alive(pid, ticks) else None

    def claim(self) -> None:
        """Take the name for this process, or explain who has it.

        A name whose owner died is cleaned up (socket and pid file) and taken.
        """
        owner = self.owner()
        if owner is not None:
            raise ControlPlaneUnavailable(
                f"a control plane named {self.name!r} is already running (pid {owner}); stop it first or "
                "start this one with another --name"
            )
        for path in (self.socket, self.pidfile):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        tmp = f"{self.pidfile}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {process_start_ticks(os.getpid())}\n")
        os.replace(tmp, self.pidfile)

    def release(self) -> None:
        for path in (self.socket, self.pidfile):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def place(name: str, create: bool = False) -> Place:
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"invalid control plane name {name!r}: use letters, digits, '_', '.', '-'")
    directory = runtime_dir()
    if create:
        ensure_private_dir(directory)
    return Place(name, directory)
