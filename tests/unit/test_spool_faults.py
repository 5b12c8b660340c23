"""A full, read-only or failing disk under append and release: nothing lost, retry completes.

The `FaultyDisk` makes the real system calls and raises the errno a full (ENOSPC), read-only
(EROFS), locked-down (EPERM) or broken (EIO) filesystem gives, on the call and file named.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from spool_faults import EIO, ENOSPC, EPERM, EROFS, FaultyDisk

from connector.errors import Disposition, SpoolWriteError
from connector.spool.files import read_released, released_mark
from connector.spool.spool import Spool, segment_name

SEGMENT_BYTES = 200  # about three entries per segment


def open_spool(directory: Path, disk: FaultyDisk | None = None, **kwargs: object) -> Spool:
    options: dict = {"max_bytes": 2**20, "fsync": True, "segment_bytes": SEGMENT_BYTES}
    options.update(kwargs)
    return Spool.open(directory, disk=disk, **options)


def body(i: int) -> bytes:
    return f"body-{i:03d}-".encode() * 3


def fill(spool: Spool, count: int) -> None:
    for i in range(1, count + 1):
        spool.append(body(i), fetched_at=float(i), reports=1)


def state(spool: Spool) -> tuple:
    return [(e.seq, e.body) for e in spool.entries_after(0)], spool.level(), spool.last_seq


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.seg"))


RELEASE_FAULTS = [
    ("open", EROFS, "released"),  # read-only: the bookkeeping file cannot be created
    ("pwrite", EIO, "released"),  # it cannot be written
    ("fdatasync", EIO, "released"),
    ("replace", EPERM, "released"),
    ("unlink", EPERM, ".seg"),  # a released segment cannot be deleted
    ("unlink", EROFS, ".seg"),
]


@pytest.mark.parametrize(("call", "code", "name"), RELEASE_FAULTS)
@pytest.mark.parametrize("times", [1, None])  # once, or until the disk is repaired
def test_a_failed_release_changes_nothing_and_the_same_call_completes_it(
    tmp_path: Path, call: str, code: int, name: str, times: int | None
) -> None:
    disk = FaultyDisk()
    with open_spool(tmp_path, disk) as spool:
        fill(spool, 8)
        before = state(spool)
        disk.fail(call, code, name, times=times)
        for _ in range(3 if times is None else 1):
            with pytest.raises(SpoolWriteError) as caught:
                spool.release_through(5)
            assert caught.value.disposition is Disposition.RETRY
            assert state(spool) == before
        disk.clear()
        spool.release_through(5)
        assert [e.seq for e in spool.entries_after(0)] == [6, 7, 8]
        assert spool.level().reports == 3
        assert segment_name(1) not in segments(tmp_path)
    with open_spool(tmp_path) as spool:  # no floor: the spool's own bookkeeping is complete
        assert [e.seq for e in spool.entries_after(0)] == [6, 7, 8]


def test_a_full_disk_frees_the_released_segments_to_make_room_for_the_mark(
    tmp_path: Path,
) -> None:
    disk = FaultyDisk()
    with open_spool(tmp_path, disk) as spool:
        fill(spool, 8)
        disk.fail("pwrite", ENOSPC, "released", times=1)
        spool.release_through(5)  # the first try found no room; unlinking made some
        assert segment_name(1) not in segments(tmp_path)
        assert [e.seq for e in spool.entries_after(0)] == [6, 7, 8]
        assert read_released(tmp_path / "released") == 5
        disk.fail("pwrite", ENOSPC, "released", times=None)  # still full after unlinking
        before = state(spool)
        with pytest.raises(SpoolWriteError, match="ENOSPC"):
            spool.release_through(7)
        assert state(spool) == before
        disk.clear()
        spool.release_through(7)
    with open_spool(tmp_path) as spool:
        assert [e.seq for e in spool.entries_after(0)] == [8]


def test_a_disk_too_full_for_a_new_file_overwrites_the_mark_in_place(tmp_path: Path) -> None:
    disk = FaultyDisk()
    with open_spool(tmp_path, disk) as spool:
        fill(spool, 8)
        spool.release_through(2)
        disk.fail("pwrite", ENOSPC, "released.tmp", times=None)  # no block for a new file
        spool.release_through(7)
        assert [e.seq for e in spool.entries_after(0)] == [8]
        assert read_released(tmp_path / "released") == 7
    with open_spool(tmp_path) as spool:
        assert [e.seq for e in spool.entries_after(0)] == [8]


def test_the_release_mark_is_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mark = tmp_path / "released"
    for text, expected in [("17", 17), (released_mark(42).decode(), 42), ("", 0)]:
        mark.write_text(text)
        assert read_released(mark) == expected
    mark.write_bytes(released_mark(42).replace(b"42", b"43"))  # a torn or flipped mark
    assert read_released(mark) == 0
    assert "no valid release mark" in caplog.text


SWITCH_FAULTS = [
    ("open", EROFS, ".seg"),  # the empty next segment cannot be created
    ("open", ENOSPC, ".seg"),
    ("fsync", EIO, ""),  # the directory cannot be synced after creating it
    ("unlink", EPERM, ".seg"),  # the old active segment cannot be deleted
]


@pytest.mark.parametrize(("call", "code", "name"), SWITCH_FAULTS)
def test_releasing_everything_survives_a_failed_segment_switch(
    tmp_path: Path, call: str, code: int, name: str
) -> None:
    disk = FaultyDisk()
    with open_spool(tmp_path, disk) as spool:
        fill(spool, 4)
        before = state(spool)
        disk.fail(call, code, name, times=1)
        with pytest.raises(SpoolWriteError):
            spool.release_through(4)
        assert state(spool) == before
        spool.release_through(4)
        assert spool.entries_after(0) == []
        assert segments(tmp_path) == [segment_name(5)]
        assert spool.append(b"next", fetched_at=0.0, reports=1).seq == 5
    with open_spool(tmp_path) as spool:
        assert [e.seq for e in spool.entries_after(0)] == [5]


APPEND_FAULTS = [
    ("pwrite", ENOSPC, ".seg"),
    ("fdatasync", EIO, ".seg"),
    ("open", EROFS, ".seg"),  # the next segment (a roll) cannot be created
    ("fsync", EIO, ""),  # nor its directory entry synced
]


@pytest.mark.parametrize(("call", "code", "name"), APPEND_FAULTS)
def test_a_failed_append_keeps_nothing_and_the_next_one_succeeds(
    tmp_path: Path, call: str, code: int, name: str
) -> None:
    disk = FaultyDisk()
    with open_spool(tmp_path, disk) as spool:
        fill(spool, 3)  # the next append rolls to a new segment
        before = state(spool)
        disk.fail(call, code, name, times=1)
        with pytest.raises(SpoolWriteError) as caught:
            spool.append(b"refused", fetched_at=0.0, reports=9)
        assert caught.value.disposition is Disposition.RETRY
        assert state(spool) == before
        assert spool.append(b"kept", fetched_at=0.0, reports=9).seq == 4
    with open_spool(tmp_path) as spool:
        assert spool.recovery.quarantined == ()
        assert [e.body for e in spool.entries_after(0)][-1] == b"kept"
        assert spool.level().reports == 12


def test_a_read_only_filesystem_at_open_is_a_write_error(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        fill(spool, 2)
        spool.release_through(2)
    disk = FaultyDisk().fail("open", EROFS, ".seg", times=None)
    with pytest.raises(SpoolWriteError, match="EROFS"):
        open_spool(tmp_path, disk)
    with open_spool(tmp_path) as spool:
        assert spool.last_seq == 2 and spool.entries_after(0) == []
