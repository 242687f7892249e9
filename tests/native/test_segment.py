"""Creating, sizing and attaching segments: the header's bytes, refusals of anything that is not
a whole segment of this layout, permissions, and a /dev/shm too small for the segment."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import struct
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastworker import _native

from .conftest import (
    DEFAULT_GEOMETRY,
    create_segment,
    shm_path,
    unique_name,
    unlink_quietly,
)

LAYOUT = _native.layout()
MAGIC_BYTES = b"FWRING01"


@contextlib.contextmanager
def shm_file(data: bytes) -> Iterator[str]:
    """A file in /dev/shm holding ``data``; yields its shared-memory name."""
    name = unique_name()
    try:
        with open(shm_path(name), "xb") as f:
            f.write(data)
        yield name
    finally:
        unlink_quietly(name)


def read_segment(seg: _native.Segment) -> bytes:
    with open(shm_path(seg.name), "rb") as f:
        return f.read()


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


# ------------------------------------------------------------------ layout


def test_layout_constants() -> None:
    assert LAYOUT["magic"] == int.from_bytes(MAGIC_BYTES, "little")
    assert LAYOUT["layout_version"] == _native.LAYOUT_VERSION
    assert LAYOUT["header_size"] == 4096
    assert LAYOUT["slot_size"] == 256
    assert LAYOUT["inline_capacity"] == _native.INLINE_CAPACITY == 176
    assert LAYOUT["lanes"] == 4
    assert LAYOUT["arena_unit"] == 1024
    assert LAYOUT["max_workers"] == _native.MAX_WORKERS
    assert LAYOUT["max_clients"] == _native.MAX_CLIENTS
    offsets = [
        LAYOUT[k]
        for k in (
            "off_magic",
            "off_layout_version",
            "off_total_size",
            "off_owner_pid",
            "off_owner_start_time",
            "off_epoch",
            "off_ready",
        )
    ]
    assert offsets == sorted(offsets) and offsets[-1] < LAYOUT["header_size"]


def test_header_bytes_agree_with_layout(segment: _native.Segment) -> None:
    data = read_segment(segment)
    assert len(data) == segment.size
    assert data[LAYOUT["off_magic"] : LAYOUT["off_magic"] + 8] == MAGIC_BYTES
    (magic,) = struct.unpack_from("<Q", data, LAYOUT["off_magic"])
    (version,) = struct.unpack_from("<I", data, LAYOUT["off_layout_version"])
    (total,) = struct.unpack_from("<Q", data, LAYOUT["off_total_size"])
    (owner_pid,) = struct.unpack_from("<I", data, LAYOUT["off_owner_pid"])
    (start_time,) = struct.unpack_from("<Q", data, LAYOUT["off_owner_start_time"])
    (epoch,) = struct.unpack_from("<Q", data, LAYOUT["off_epoch"])
    (ready,) = struct.unpack_from("<I", data, LAYOUT["off_ready"])
    assert magic == LAYOUT["magic"]
    assert version == LAYOUT["layout_version"] == segment.layout_version
    assert (
        total
        == segment.size
        == _native.segment_size(
            DEFAULT_GEOMETRY["nslots"],
            DEFAULT_GEOMETRY["arena_size"],
            DEFAULT_GEOMETRY["max_workers"],
            DEFAULT_GEOMETRY["max_clients"],
        )
    )
    assert owner_pid == segment.owner_pid == os.getpid()
    assert start_time == segment.owner_start_time == 12345
    assert epoch == segment.epoch == 0x0123456789ABCDEF
    assert ready == 1


def test_properties(segment: _native.Segment) -> None:
    g = DEFAULT_GEOMETRY
    assert (
        segment.nslots,
        segment.arena_size,
        segment.max_workers,
        segment.max_clients,
    ) == (g["nslots"], g["arena_size"], g["max_workers"], g["max_clients"])
    assert (
        segment.arena_max_block == g["arena_size"]
    )  # a power of two: one block can take it all
    assert segment.name.startswith("/fastworker-test-")
    assert not segment.is_shutdown and not segment.closed
    segment.shutdown()
    assert segment.is_shutdown
    with pytest.raises(_native.Shutdown):
        segment.submit(0, 0, 0, 0, 1, b"")


def test_attach_maps_the_same_ring(segment: _native.Segment) -> None:
    other = _native.attach(segment.name)
    try:
        assert (other.size, other.epoch, other.owner_pid, other.nslots) == (
            segment.size,
            segment.epoch,
            segment.owner_pid,
            segment.nslots,
        )
        c, _ = segment.client_open(os.getpid())
        h = other.submit(c, 2, 9, 0, 77, b"through the other mapping")
        assert segment.take(0, 1, 0) == (
            h,
            c,
            9,
            0,
            77,
            2,
            b"through the other mapping",
        )
        assert other.check()["running"] == 1
    finally:
        other.close()
    assert other.closed
    with pytest.raises(ValueError, match="closed"):
        other.check()
    other.close()  # twice is harmless


def test_segment_file_mode_is_0600_whatever_the_umask() -> None:
    for umask in (0o000, 0o022, 0o077):
        old = os.umask(umask)
        name = unique_name()
        try:
            seg = create_segment(name)
            seg.close()
            mode = os.stat(shm_path(name)).st_mode
            assert stat.S_ISREG(mode)
            assert stat.S_IMODE(mode) == 0o600, oct(mode)
        finally:
            os.umask(old)
            unlink_quietly(name)


def test_create_refuses_an_existing_name(segment: _native.Segment) -> None:
    with pytest.raises(FileExistsError):
        create_segment(segment.name)
    other = _native.attach(segment.name)  # the existing segment is untouched
    other.close()


def test_attach_missing() -> None:
    with pytest.raises(FileNotFoundError):
        _native.attach(unique_name())


@pytest.mark.parametrize(
    "geometry",
    [
        {"nslots": 0},
        {"nslots": LAYOUT["max_slots"] + 1},
        {"max_workers": 0},
        {"max_workers": _native.MAX_WORKERS + 1},
        {"max_clients": 0},
        {"max_clients": _native.MAX_CLIENTS + 1},
        {"arena_size": 1023},
    ],
)
def test_geometry_out_of_range(geometry: dict[str, int]) -> None:
    g = {**DEFAULT_GEOMETRY, **geometry}
    with pytest.raises(ValueError):
        _native.segment_size(
            g["nslots"], g["arena_size"], g["max_workers"], g["max_clients"]
        )
    name = unique_name()
    with pytest.raises(ValueError):
        create_segment(name, **geometry)
    assert not os.path.exists(shm_path(name))


# ------------------------------------------------------------------ sizing

geometries = st.fixed_dictionaries(
    {
        "nslots": st.integers(1, LAYOUT["max_slots"]),
        "arena_size": st.integers(1024, 1 << 36),
        "max_workers": st.integers(1, _native.MAX_WORKERS),
        "max_clients": st.integers(1, _native.MAX_CLIENTS),
    }
)


def size_of(g: dict[str, int]) -> int:
    return _native.segment_size(
        g["nslots"], g["arena_size"], g["max_workers"], g["max_clients"]
    )


@settings(max_examples=200, database=None, deadline=None)
@given(
    g=geometries,
    field=st.sampled_from(sorted(DEFAULT_GEOMETRY)),
    more=st.integers(1, 1 << 20),
)
def test_segment_size_is_monotonic(g: dict[str, int], field: str, more: int) -> None:
    size = size_of(g)
    arena = g["arena_size"] // 1024 * 1024
    assert size % 4096 == 0
    assert (
        size
        >= 4096
        + g["nslots"] * 256
        + g["max_workers"] * 64
        + g["max_clients"] * 128
        + arena
    )
    limits = {
        "nslots": LAYOUT["max_slots"],
        "max_workers": _native.MAX_WORKERS,
        "max_clients": _native.MAX_CLIENTS,
        "arena_size": 1 << 40,
    }
    bigger = {**g, field: min(g[field] + more, limits[field])}
    assert size_of(bigger) >= size


@pytest.mark.parametrize(
    "geometry",
    [
        {},
        {"nslots": 1, "arena_size": 1024, "max_workers": 1, "max_clients": 1},
        {"nslots": 1000, "arena_size": 3 * 1024 * 1024 + 1024},
    ],
)
def test_created_size_matches_segment_size(
    make_segment: Callable[..., _native.Segment], geometry: dict[str, int]
) -> None:
    seg = make_segment(**geometry)
    g = {**DEFAULT_GEOMETRY, **geometry}
    assert seg.size == size_of(g) == os.stat(shm_path(seg.name)).st_size
    assert seg.check()["free"] == g["nslots"]
    assert seg.check()["error"] == 0
    assert (
        seg.stats()["arena_free_bytes"]
        == seg.arena_size
        == g["arena_size"] // 1024 * 1024
    )


# --------------------------------------------------------- attach refusals

# A function-scoped autouse fixture only checks for leftovers after the whole test.
_fuzz = settings(
    max_examples=25,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_fuzz
@given(data=st.binary(max_size=8192), pad=st.sampled_from([0, 4096, 1 << 20]))
def test_attach_refuses_random_bytes(data: bytes, pad: int) -> None:
    with shm_file(data + bytes(pad)) as name:
        with pytest.raises(_native.SegmentInvalid) as info:
            _native.attach(name)
        if not data.startswith(MAGIC_BYTES):
            assert info.type is _native.Foreign


@_fuzz
@given(data=st.binary(min_size=8, max_size=4096))
def test_attach_refuses_random_bytes_after_the_magic(data: bytes) -> None:
    """Past the magic number a wrong version or geometry is caught, never trusted."""
    refusals = (_native.VersionMismatch, _native.NotReady, _native.Corrupt)
    with (
        shm_file(MAGIC_BYTES + data[8:] + bytes(8192)) as name,
        pytest.raises(refusals),
    ):
        _native.attach(name)


@_fuzz
@given(offset=st.integers(0, 4095), value=st.integers(0, 255))
def test_attach_of_a_header_with_one_byte_changed(offset: int, value: int) -> None:
    """Refused cleanly, or (the byte is not part of identity or geometry) mapped."""
    with contextlib.ExitStack() as stack:
        seg = create_segment()
        stack.callback(unlink_quietly, seg.name)
        stack.callback(seg.close)
        data = bytearray(read_segment(seg))
        data[offset] = value
        name = stack.enter_context(shm_file(bytes(data)))
        try:
            other = _native.attach(name)
        except _native.SegmentInvalid:
            return
        other.close()


@pytest.fixture
def segment_bytes(segment: _native.Segment) -> bytes:
    return read_segment(segment)


@pytest.mark.parametrize(
    ("field", "fmt", "value", "error"),
    [
        ("off_magic", "<Q", 0, _native.Foreign),
        ("off_magic", "<Q", int.from_bytes(b"FWRING02", "little"), _native.Foreign),
        (
            "off_layout_version",
            "<I",
            _native.LAYOUT_VERSION + 1,
            _native.VersionMismatch,
        ),
        ("off_layout_version", "<I", 0, _native.VersionMismatch),
        ("off_ready", "<I", 0, _native.NotReady),
        ("off_total_size", "<Q", 1 << 40, _native.Corrupt),
    ],
)
def test_attach_refuses_a_patched_header(
    segment_bytes: bytes, field: str, fmt: str, value: int, error: type[Exception]
) -> None:
    with (
        shm_file(patched(segment_bytes, LAYOUT[field], fmt, value)) as name,
        pytest.raises(error),
    ):
        _native.attach(name)


def test_attach_accepts_an_unpatched_copy(segment_bytes: bytes) -> None:
    with shm_file(segment_bytes) as name:
        _native.attach(name).close()


@pytest.mark.parametrize(
    "new_size", ["minus_page", "plus_page", "header_only", "below_header", "empty"]
)
def test_attach_refuses_a_resized_segment(
    segment: _native.Segment, new_size: str
) -> None:
    size = {
        "minus_page": segment.size - 4096,
        "plus_page": segment.size + 4096,
        "header_only": 4096,
        "below_header": 4095,
        "empty": 0,
    }[new_size]
    os.truncate(shm_path(segment.name), size)
    error = _native.Foreign if size < LAYOUT["header_size"] else _native.Corrupt
    with pytest.raises(error):
        _native.attach(segment.name)


def test_refusals_are_oserrors() -> None:
    for cls in (
        _native.Foreign,
        _native.VersionMismatch,
        _native.Corrupt,
        _native.NotReady,
    ):
        assert issubclass(cls, _native.SegmentInvalid) and issubclass(cls, OSError)
    assert issubclass(_native.NoSpace, OSError)


# ------------------------------------------------------------------ ENOSPC


def test_segment_bigger_than_dev_shm_is_refused_at_create() -> None:
    st_ = os.statvfs("/dev/shm")
    if st_.f_blocks == 0:
        pytest.skip("/dev/shm has no size limit")
    free = st_.f_bavail * st_.f_frsize
    arena = free + (1 << 30)
    if arena // 1024 >= 2**32 - 1:
        pytest.skip("/dev/shm is larger than the biggest arena")
    name = unique_name()
    with pytest.raises(_native.NoSpace) as info:
        create_segment(name, arena_size=arena)
    assert isinstance(info.value, OSError)
    assert "/dev/shm" in str(info.value)
    assert not os.path.exists(shm_path(name))
    assert shutil.disk_usage("/dev/shm").free >= free - (
        1 << 20
    )  # nothing stayed allocated


# ------------------------------------------------------------------ names


@pytest.mark.parametrize("bad", ["/\ud800x", "/fastworker-test-\udcff"])
def test_names_that_are_not_utf8_are_refused(bad: str) -> None:
    # Until module.c checked PyUnicode_AsUTF8, both calls dereferenced NULL (SIGSEGV).
    with pytest.raises(UnicodeEncodeError):
        _native.attach(bad)
    with pytest.raises(UnicodeEncodeError):
        create_segment(bad)


def test_names_with_a_nul_are_refused(segment: _native.Segment) -> None:
    # shm_open stops at the NUL: this attached to (or created) the segment named by the prefix.
    with pytest.raises(ValueError, match="NUL"):
        _native.attach(segment.name + "\x00other")
    name = unique_name()
    with pytest.raises(ValueError, match="NUL"):
        create_segment(name + "\x00other")
    assert not os.path.exists(shm_path(name))


def test_attach_takes_a_str() -> None:
    with pytest.raises(TypeError):
        _native.attach(b"/fastworker-test")  # type: ignore[arg-type]
