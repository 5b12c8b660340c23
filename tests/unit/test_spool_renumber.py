"""Renumbering a moved spool's tail: exactly once whatever step a crash interrupts.

A crash is modelled the faithful way: at the chosen fail point the hook copies the spool
folder as it is on disk at that instant (what a SIGKILL would leave), then the copy is opened
as a restart would open it (no floor: the account's progress names another spool) and
renumbered again. Every original body must be pending exactly once, in order, with its meta.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spool_faults import ENOSPC, EROFS, FaultyDisk

from connector.errors import SpoolWriteError
from connector.spool.files import RELEASED_FILE, read_released, staging_files
from connector.spool.io import (
    RENUMBER_AFTER_COPY,
    RENUMBER_AFTER_RELEASE,
    RENUMBER_AFTER_SWITCH,
    RENUMBER_BEFORE_CLEANUP,
    RENUMBER_BEFORE_SWITCH,
    RENUMBER_POINTS,
    NoHooks,
)
from connector.spool.spool import Spool, failpoints_from_env, inspect

FOREIGN_COMMIT = 50  # the account's committed sequence, written from another spool
ENTRIES = 6


def open_spool(directory: Path, **kwargs: object) -> Spool:
    options: dict = {"max_bytes": 2**20, "fsync": False, "segment_bytes": 300}
    options.update(kwargs)
    return Spool.open(directory, **options)


def body(i: int) -> bytes:
    return f'{{"result":0,"rpts":[{{"msgid":"m{i}"}}]}}'.encode()


def left_behind(directory: Path) -> list[tuple[bytes, float, int, str | None]]:
    """A spool with 2 released and ENTRIES pending entries over several segments."""
    with open_spool(directory) as spool:
        for i in range(ENTRIES + 2):
            note = "cut off after 12 bytes" if i == 4 else None
            spool.append(body(i), fetched_at=1_700_000_000.5 + i, reports=i, note=note)
        spool.release_through(2)
        return [(e.body, e.fetched_at, e.reports, e.note) for e in spool.entries_after(0)]


def pending(spool: Spool) -> list[tuple[bytes, float, int, str | None]]:
    return [(e.body, e.fetched_at, e.reports, e.note) for e in spool.entries_after(0)]


class Snapshot:
    """A hook that copies the spool folder the `count`-th time `point` is reached."""

    def __init__(self, directory: Path, target: Path, point: str, count: int = 1) -> None:
        self.directory, self.target, self.point, self.count = directory, target, point, count
        self.seen = 0

    def on(self, name: str) -> None:
        if name == self.point:
            self.seen += 1
            if self.seen == self.count:
                shutil.copytree(self.directory, self.target)


CRASH_POINTS = [(RENUMBER_AFTER_COPY, n) for n in range(1, ENTRIES + 1)] + [
    (point, 1) for point in RENUMBER_POINTS if point != RENUMBER_AFTER_COPY
]


@pytest.mark.parametrize(("point", "count"), CRASH_POINTS)
def test_a_crash_at_any_renumber_step_leaves_each_body_pending_once(
    tmp_path: Path, point: str, count: int
) -> None:
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    expected = left_behind(live)
    hook = Snapshot(live, crashed, point, count)
    with open_spool(live, hooks=hook) as spool:
        assert spool.renumber_above(FOREIGN_COMMIT) == ENTRIES
        assert pending(spool) == expected
    assert crashed.exists(), "the fail point was never reached"

    with open_spool(crashed) as restarted:  # the restart: floor 0, renumber again
        restarted.renumber_above(FOREIGN_COMMIT)
        assert pending(restarted) == expected
        assert all(e.seq > FOREIGN_COMMIT for e in restarted.entries_after(0))
        assert restarted.renumber_above(FOREIGN_COMMIT) == 0  # a third start moves nothing
    with open_spool(crashed) as reopened:
        assert pending(reopened) == expected
        assert staging_files(crashed) == []
        assert inspect(crashed)["entries"] == ENTRIES


@pytest.mark.parametrize("point", RENUMBER_POINTS)
def test_a_hook_that_raises_mid_renumber_is_a_crash_in_process_too(
    tmp_path: Path, point: str
) -> None:
    expected = left_behind(tmp_path)

    class Boom:
        def on(self, name: str) -> None:
            if name == point:
                raise KeyboardInterrupt(name)

    spool = open_spool(tmp_path, hooks=Boom())
    with pytest.raises(KeyboardInterrupt):
        spool.renumber_above(FOREIGN_COMMIT)
    spool.close()
    with open_spool(tmp_path) as restarted:
        restarted.renumber_above(FOREIGN_COMMIT)
        assert pending(restarted) == expected


def test_renumbering_keeps_order_meta_and_the_numbering_goes_on(tmp_path: Path) -> None:
    expected = left_behind(tmp_path)
    with open_spool(tmp_path) as spool:
        assert spool.renumber_above(FOREIGN_COMMIT) == ENTRIES
        seqs = [e.seq for e in spool.entries_after(0)]
        assert seqs == list(range(FOREIGN_COMMIT + 1, FOREIGN_COMMIT + 1 + ENTRIES))
        assert spool.level().reports == sum(r for _, _, r, _ in expected)
        after = spool.append(b"new", fetched_at=1.0, reports=1)
        assert after.seq == FOREIGN_COMMIT + ENTRIES + 1
        assert read_released(tmp_path / RELEASED_FILE) == ENTRIES + 2
    with open_spool(tmp_path) as spool:
        assert pending(spool)[:ENTRIES] == expected
        assert [e.body for e in spool.entries_after(0)][-1] == b"new"


def test_a_second_move_renumbers_the_copies_once_more(tmp_path: Path) -> None:
    expected = left_behind(tmp_path)
    with open_spool(tmp_path) as spool:
        spool.renumber_above(FOREIGN_COMMIT)
    with open_spool(tmp_path) as spool:
        assert spool.renumber_above(FOREIGN_COMMIT + 100) == ENTRIES
        assert spool.entries_after(0)[0].seq == FOREIGN_COMMIT + 101
    with open_spool(tmp_path) as spool:
        assert pending(spool) == expected


def test_no_room_for_the_copies_changes_nothing_and_can_be_retried(tmp_path: Path) -> None:
    expected = left_behind(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    disk = FaultyDisk().fail("pwrite", ENOSPC, ".renumbering", times=1)
    with open_spool(tmp_path, disk=disk) as spool:
        with pytest.raises(SpoolWriteError, match="ENOSPC"):
            spool.renumber_above(FOREIGN_COMMIT)
        assert sorted(p.name for p in tmp_path.iterdir()) == files  # staging file removed
        assert pending(spool) == expected
        assert spool.renumber_above(FOREIGN_COMMIT) == ENTRIES
        assert pending(spool) == expected


def test_a_refused_switch_changes_nothing(tmp_path: Path) -> None:
    expected = left_behind(tmp_path)
    disk = FaultyDisk().fail("replace", EROFS, ".seg", times=1)
    with open_spool(tmp_path, disk=disk) as spool:
        with pytest.raises(SpoolWriteError, match="EROFS"):
            spool.renumber_above(FOREIGN_COMMIT)
        assert [e.seq for e in spool.entries_after(0)] == list(range(3, 3 + ENTRIES))
        assert staging_files(tmp_path) == []
    with open_spool(tmp_path) as spool:
        spool.renumber_above(FOREIGN_COMMIT)
        assert pending(spool) == expected


def test_a_failed_cleanup_is_finished_by_the_next_release(tmp_path: Path) -> None:
    expected = left_behind(tmp_path)
    disk = FaultyDisk().fail("unlink", EROFS, ".seg", times=None)
    with open_spool(tmp_path, disk=disk) as spool:
        assert spool.renumber_above(FOREIGN_COMMIT) == ENTRIES  # cleanup failure only logged
        assert pending(spool) == expected
        disk.clear()
        spool.release_through(FOREIGN_COMMIT + 1)
        first = min(int(p.name[:20]) for p in tmp_path.glob("*.seg"))
        assert first == FOREIGN_COMMIT + 1  # the originals' segments are gone
    with open_spool(tmp_path) as spool:
        assert pending(spool) == expected[1:]


def test_failpoints_come_from_the_environment() -> None:
    assert isinstance(failpoints_from_env({}), NoHooks)
    hooks = failpoints_from_env({"RPT_FAILPOINT_SPOOL": "renumber.after_copy:3"})
    assert (hooks.name, hooks.count) == (RENUMBER_AFTER_COPY, 3)
    assert failpoints_from_env({"RPT_FAILPOINT_SPOOL": RENUMBER_BEFORE_SWITCH}).count == 1
    for bad in ("renumber.nowhere", "renumber.after_copy:x"):
        with pytest.raises(ValueError, match="RPT_FAILPOINT_SPOOL"):
            failpoints_from_env({"RPT_FAILPOINT_SPOOL": bad})
    assert {RENUMBER_AFTER_SWITCH, RENUMBER_BEFORE_CLEANUP, RENUMBER_AFTER_RELEASE} < set(
        RENUMBER_POINTS
    )


class SnapshotAtCall:
    """Copy the spool folder at the n-th fail point reached, whatever its name."""

    def __init__(self, directory: Path, target: Path, n: int) -> None:
        self.directory, self.target, self.n, self.calls = directory, target, n, 0

    def on(self, name: str) -> None:
        self.calls += 1
        if self.calls == self.n:
            shutil.copytree(self.directory, self.target)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 400), min_size=1, max_size=12),
    released=st.integers(0, 12),
    segment_bytes=st.sampled_from([60, 300, 5000]),
    crash_at=st.integers(1, 20),
    commit=st.integers(0, 40),
)
def test_a_crash_at_any_fail_point_of_any_tail_is_exactly_once(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    released: int,
    segment_bytes: int,
    crash_at: int,
    commit: int,
) -> None:
    base = tmp_path_factory.mktemp("renumber")
    live, crashed = base / "live", base / "crashed"
    with open_spool(live, segment_bytes=segment_bytes) as spool:
        for i, size in enumerate(sizes):
            spool.append(bytes([i]) * size, fetched_at=float(i), reports=i)
        spool.release_through(min(released, len(sizes)))
        expected = pending(spool)
    hook = SnapshotAtCall(live, crashed, crash_at)
    with open_spool(live, segment_bytes=segment_bytes, hooks=hook) as spool:
        spool.renumber_above(commit)
        assert pending(spool) == expected
    target = crashed if crashed.exists() else live  # fewer fail points than crash_at: no crash
    with open_spool(target, segment_bytes=segment_bytes) as restarted:
        restarted.renumber_above(commit)
        assert pending(restarted) == expected
        assert all(e.seq > commit for e in restarted.entries_after(0))
