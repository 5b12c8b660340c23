from __future__ import annotations

import stat
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spool_faults import EIO, ENOSPC, FaultyDisk
from spool_support import (
    FRAME,
    add,
    fill,
    flip_byte,
    open_spool,
    pairs,
    payload,
    segment_files,
)

from connector.errors import SpoolError, SpoolFullError, SpoolLockedError, SpoolWriteError
from connector.observe.observer import PauseReason
from connector.spool.spool import HEADER, segment_name, spool_id

# -- round trips ---------------------------------------------------------------------------


def test_append_read_release_round_trip(tmp_path: Path) -> None:
    with open_spool(tmp_path / "acc", fsync=True) as spool:
        bodies = [payload(i) for i in range(5)]
        seqs = [add(spool, b) for b in bodies]
        assert seqs == [1, 2, 3, 4, 5]
        assert pairs(spool.entries_after(0)) == list(zip(seqs, bodies, strict=True))
        assert pairs(spool.entries_after(3)) == [(4, bodies[3]), (5, bodies[4])]
        assert spool.pending_records == 5
        assert spool.pending_bytes == 5 * (FRAME + 40)

        spool.release_through(2)
        assert pairs(spool.entries_after(0)) == list(zip(seqs[2:], bodies[2:], strict=True))
        assert spool.pending_records == 3
        assert spool.pending_bytes == 3 * (FRAME + 40)
        assert spool.last_seq == 5


def test_limit_bytes_caps_a_batch_but_always_returns_one(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for i in range(4):
            add(spool, payload(i, 100))
        assert [seq for seq, _ in pairs(spool.entries_after(0, limit_bytes=250))] == [1, 2]
        assert [seq for seq, _ in pairs(spool.entries_after(0, limit_bytes=10))] == [1]
        assert pairs(spool.entries_after(4)) == []


def test_entries_are_read_back_from_disk_after_reopen(tmp_path: Path) -> None:
    bodies = fill(tmp_path, 6, segment_bytes=150)
    with open_spool(tmp_path, segment_bytes=150) as spool:
        assert spool.recovery.entries == 6
        assert pairs(spool.entries_after(0)) == list(enumerate(bodies, start=1))
        assert pairs(spool.entries_after(4)) == [(5, bodies[4]), (6, bodies[5])]


def test_uncached_entries_come_from_disk_in_process(tmp_path: Path) -> None:
    with open_spool(tmp_path, cache_bytes=0) as spool:
        bodies = [payload(i) for i in range(3)]
        for body in bodies:
            add(spool, body)
        assert pairs(spool.entries_after(0)) == list(enumerate(bodies, start=1))


def test_damage_after_append_is_detected_on_read(tmp_path: Path) -> None:
    with open_spool(tmp_path, cache_bytes=0) as spool:
        add(spool, payload(1))
        flip_byte(tmp_path / segment_name(1), HEADER.size + 5)
        with pytest.raises(SpoolError, match=r"entry 1 .* damaged \(CRC mismatch\)"):
            pairs(spool.entries_after(0))


def test_release_beyond_the_last_sequence_is_refused(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        add(spool, b"x")
        with pytest.raises(ValueError, match="last sequence is 1"):
            spool.release_through(2)


# -- sequence numbers ----------------------------------------------------------------------


def test_sequence_continues_across_reopen(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    with open_spool(tmp_path) as spool:
        assert spool.last_seq == 3
        assert add(spool, b"next") == 4


def test_full_release_keeps_numbering_without_floor(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for i in range(3):
            add(spool, payload(i))
        spool.release_through(3)
        assert segment_files(tmp_path) == [segment_name(4)]
        assert (tmp_path / segment_name(4)).stat().st_size == 0
    with open_spool(tmp_path) as spool:
        assert spool.pending_records == 0  # released entries do not come back
        assert pairs(spool.entries_after(0)) == []
        assert add(spool, b"again") == 4


def test_floor_seq_raises_numbering_and_counts_as_released(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    with open_spool(tmp_path, floor_seq=2) as spool:
        assert [seq for seq, _ in pairs(spool.entries_after(0))] == [3]
        assert spool.pending_records == 1
        spool.release_through(3)
    with open_spool(tmp_path, floor_seq=10) as spool:
        assert spool.last_seq == 10
        assert add(spool, b"x") == 11
        assert segment_files(tmp_path) == [segment_name(11)]


def test_floor_seq_above_everything_on_disk_releases_it_all(tmp_path: Path) -> None:
    fill(tmp_path, 4, segment_bytes=100)
    with open_spool(tmp_path, floor_seq=7) as spool:
        assert spool.pending_records == 0
        assert spool.pending_bytes == 0
        assert segment_files(tmp_path) == [segment_name(8)]
        assert add(spool, b"x") == 8


# -- segments and limits -------------------------------------------------------------------


def test_segments_roll_and_are_named_by_their_first_sequence(tmp_path: Path) -> None:
    frame = FRAME + 40
    with open_spool(tmp_path, segment_bytes=2 * frame) as spool:
        for i in range(5):
            add(spool, payload(i))
        assert segment_files(tmp_path) == [segment_name(1), segment_name(3), segment_name(5)]
        sizes = [(tmp_path / name).stat().st_size for name in segment_files(tmp_path)]
        assert sizes == [2 * frame, 2 * frame, frame]

        spool.release_through(3)  # segment 1 fully released, segment 3 only half
        assert segment_files(tmp_path) == [segment_name(3), segment_name(5)]
        assert spool.pending_records == 2


def test_an_entry_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=50) as spool:
        add(spool, b"a")
        add(spool, b"b" * 500)
        add(spool, b"c")
        assert segment_files(tmp_path) == [segment_name(1), segment_name(2), segment_name(3)]


def test_max_bytes_refuses_without_writing(tmp_path: Path) -> None:
    frame = FRAME + 40
    with open_spool(tmp_path, max_bytes=3 * frame) as spool:
        for i in range(2):
            add(spool, payload(i))
        add(spool, payload(2))
        assert spool.room(0) is PauseReason.SPOOL_FULL
        size = (tmp_path / segment_name(1)).stat().st_size
        with pytest.raises(SpoolFullError, match="is full"):
            add(spool, b"y")
        assert (tmp_path / segment_name(1)).stat().st_size == size
        assert spool.last_seq == 3

        spool.release_through(1)
        assert spool.pending_bytes == 2 * frame
        assert add(spool, payload(3)) == 4


# -- permissions, locking and write errors -------------------------------------------------


def test_directory_and_files_are_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "spool" / "acc"
    with open_spool(directory, fsync=True) as spool:
        add(spool, b"138xxxxxxxx")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / segment_name(1)).stat().st_mode) == 0o600


def test_a_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    with open_spool(tmp_path), pytest.raises(SpoolLockedError, match="in use by another pipeline"):
        open_spool(tmp_path)
    open_spool(tmp_path).close()  # closing released the lock


class HalfWriteDisk(FaultyDisk):
    """Writes the first 10 bytes of a frame, then ENOSPC: a disk filling up mid-frame."""

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if self.faults and len(data) > 10:
            return super().pwrite(fd, bytes(data)[:10], offset)
        return super().pwrite(fd, data, offset)


def test_failed_write_leaves_no_half_frame(tmp_path: Path) -> None:
    disk = HalfWriteDisk()
    with open_spool(tmp_path, disk=disk) as spool:
        add(spool, payload(1))
        size = (tmp_path / segment_name(1)).stat().st_size
        disk.fail("pwrite", ENOSPC, ".seg", times=1)
        with pytest.raises(SpoolWriteError) as caught:
            add(spool, payload(2))
        assert str(tmp_path) in str(caught.value)
        assert "No space left on device (ENOSPC)" in str(caught.value)
        assert (tmp_path / segment_name(1)).stat().st_size == size
        assert spool.last_seq == 1 and spool.pending_records == 1

        disk.clear()
        assert add(spool, payload(2)) == 2
    with open_spool(tmp_path) as spool:
        assert spool.recovery.quarantined == ()
        assert pairs(spool.entries_after(0)) == [(1, payload(1)), (2, payload(2))]


def test_failed_fsync_is_a_write_error_and_the_frame_is_cut(tmp_path: Path) -> None:
    disk = FaultyDisk().fail("fdatasync", EIO, ".seg", times=None)
    with open_spool(tmp_path, fsync=True, disk=disk) as spool:
        with pytest.raises(SpoolWriteError, match=r"Input/output error \(EIO\)"):
            add(spool, b"x")
        assert (tmp_path / segment_name(1)).stat().st_size == 0
        assert spool.pending_records == 0


def test_unusable_segment_path_is_a_write_error(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=30) as spool:
        add(spool, b"a" * 20)
        (tmp_path / segment_name(2)).mkdir()  # the next segment cannot be created
        with pytest.raises(SpoolWriteError, match=r"cannot create a segment in .*EEXIST"):
            add(spool, b"b" * 20)
        assert spool.pending_records == 1


def test_unusable_directory_is_a_write_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(SpoolWriteError, match=f"{blocker}.*ENOTDIR"):
        open_spool(blocker / "acc")


# -- a model, and two threads --------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.binary(max_size=120)),
        st.tuples(st.just("release"), st.floats(0, 1)),
        st.tuples(st.just("reopen"), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, segment_bytes=st.sampled_from([40, 200, 10_000]))
def test_spool_matches_a_model(tmp_path_factory, ops: list, segment_bytes: int) -> None:
    directory = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    model: dict[int, bytes] = {}
    history: dict[int, bytes] = {}
    released = last = 0
    spool = open_spool(directory, segment_bytes=segment_bytes)
    try:
        for op, arg in ops:
            if op == "append":
                last = add(spool, arg)
                model[last] = history[last] = arg
            elif op == "release":
                released = max(released, int(arg * last))
                spool.release_through(released)
                model = {s: p for s, p in model.items() if s > released}
            else:
                spool.close()
                floor = released if arg else 0  # the pipeline passes Kafka's committed seq
                spool = open_spool(directory, segment_bytes=segment_bytes, floor_seq=floor)
                model = {s: p for s, p in model.items() if s > floor}
                # Without the floor, released entries that share a segment with pending ones
                # come back (to be published again): never anything else.
                back = dict(pairs(spool.entries_after(0))).items() - model.items()
                assert all(history[s] == p and s <= released for s, p in back)
                model.update(back)
            assert spool.last_seq == last
            assert pairs(spool.entries_after(0)) == sorted(model.items())
            assert spool.pending_bytes == sum(FRAME + len(p) for p in model.values())
    finally:
        spool.close()


def test_concurrent_appender_and_publisher_lose_nothing(tmp_path: Path) -> None:
    count = 3000
    bodies = [payload(i, 50 + i % 200) for i in range(count)]
    spool = open_spool(tmp_path, segment_bytes=4096, cache_bytes=64 * 1024)
    received: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            while len(received) < count:
                batch = pairs(spool.entries_after(received[-1][0] if received else 0, 8192))
                if batch:
                    received.extend(batch)
                    spool.release_through(batch[-1][0])
        except BaseException as exc:
            errors.append(exc)

    publisher = threading.Thread(target=publish)
    publisher.start()
    seqs = [add(spool, body) for body in bodies]
    publisher.join(timeout=60)
    spool.close()

    assert not errors and not publisher.is_alive()
    assert seqs == list(range(1, count + 1))
    assert received == list(zip(seqs, bodies, strict=True))
    assert segment_files(tmp_path) == [segment_name(count + 1)]


# --- identity, the persisted release mark, renumbering ---------------------------------------


def test_spool_id_is_created_once_and_kept(tmp_path: Path) -> None:
    first = spool_id(tmp_path / "acct")
    assert len(first) == 32
    assert spool_id(tmp_path / "acct") == first
    assert spool_id(tmp_path / "other") != first


def test_released_entries_stay_released_without_a_floor(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for n in range(1, 6):
            add(spool, payload(n))
        spool.release_through(3)
    with open_spool(tmp_path) as spool:  # no floor_seq: the spool remembers on its own
        assert [seq for seq, _ in pairs(spool.entries_after(0))] == [4, 5]


def test_renumber_above_moves_pending_entries_past_a_foreign_commit(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        for n in range(1, 6):
            add(spool, payload(n))
        spool.release_through(2)
        assert spool.renumber_above(4) == 3  # entries 3, 4, 5 were never published
        moved = pairs(spool.entries_after(0))
        assert [seq for seq, _ in moved] == [6, 7, 8]
        assert [body for _, body in moved] == [payload(3), payload(4), payload(5)]
        assert add(spool, payload(9)) == 9
    with open_spool(tmp_path) as spool:
        assert [seq for seq, _ in pairs(spool.entries_after(0))] == [6, 7, 8, 9]


def test_renumber_above_with_nothing_below_only_raises_the_numbering(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        add(spool, payload(1))
        assert spool.renumber_above(0) == 0
        assert spool.renumber_above(40) == 1
        assert add(spool, payload(2)) == 42
