"""What an entry carries (fetch time, report count, note, memo), old spools, levels and room."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from spool_faults import EIO, FaultyDisk

from connector.observe.observer import PauseReason, SpoolLevel
from connector.spool.format import MAGIC, MAGIC_V1, MAX_META_BYTES, MAX_NOTE_BYTES
from connector.spool.io import Disk
from connector.spool.spool import HEADER, Spool, inspect, segment_name

OLD_SPOOL = Path(__file__).parent / "data" / "spool_rps1"  # written by the spool of wave 1
OLD_FETCHED_MS = 1_764_547_200_000


def open_spool(directory: Path, **kwargs: object) -> Spool:
    options: dict = {"max_bytes": 2**20, "fsync": False}
    options.update(kwargs)
    return Spool.open(directory, **options)


@pytest.fixture
def old_spool(tmp_path: Path) -> Path:
    directory = tmp_path / "old"
    shutil.copytree(OLD_SPOOL, directory)
    return directory


def test_an_old_format_spool_is_read_after_the_upgrade(old_spool: Path) -> None:
    with open_spool(old_spool) as spool:
        entries = spool.entries_after(0)
        assert [e.seq for e in entries] == [3, 4, 5, 6, 7]  # 1-2 were released by the old code
        for entry in entries:
            assert entry.body.startswith(b'{"result":0,"rpts":[{"msgid":"old-%d"}' % entry.seq)
            assert entry.fetched_at == (OLD_FETCHED_MS + entry.seq * 1000 + 7) / 1000
            assert (entry.reports, entry.note, entry.memo) == (0, None, None)
        new = spool.append(b"new", fetched_at=1.5, reports=3)
        assert new.seq == 8
    assert (old_spool / segment_name(7)).read_bytes()[:4] == MAGIC_V1
    assert (old_spool / segment_name(7)).read_bytes()[88:92] == MAGIC  # appended after it
    with open_spool(old_spool) as spool:
        assert [e.body[:3] for e in spool.entries_after(6)] == [b'{"r', b"new"]
        assert spool.level().reports == 3
        spool.renumber_above(100)  # old frames are copied into the new format
        assert [e.seq for e in spool.entries_after(0)] == list(range(101, 107))
    report = inspect(old_spool)
    assert (report["entries"], report["reports"], report["first_seq"]) == (6, 3, 101)


def test_fetch_time_count_and_note_survive_a_reopen_the_memo_does_not(tmp_path: Path) -> None:
    memo = {"parsed": ["a", "b"]}
    with open_spool(tmp_path) as spool:
        good = spool.append(b"good", fetched_at=1_764_547_200.1234, reports=2, memo=memo)
        bad = spool.append(b"{cut", fetched_at=1_764_547_201.0, reports=0, note="cut off ä")
        assert good.fetched_at == 1_764_547_200.123  # stored in ms: the same before and after
        first, second = spool.entries_after(0)
        assert (first.body, first.reports, first.note, first.memo) == (b"good", 2, None, memo)
        assert (second.note, second.memo) == ("cut off ä", None)
        assert bad.seq == 2
    with open_spool(tmp_path) as spool:
        first, second = spool.entries_after(0)
        assert (first.fetched_at, first.reports, first.memo) == (1_764_547_200.123, 2, None)
        assert (second.body, second.note) == (b"{cut", "cut off ä")


def test_a_long_note_is_cut_on_a_character_boundary(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        spool.append(b"x", fetched_at=0.0, reports=0, note="é" * MAX_NOTE_BYTES)
    with open_spool(tmp_path) as spool:
        (entry,) = spool.entries_after(0)
        assert entry.note == "é" * (MAX_NOTE_BYTES // 2)


def test_the_memo_is_bounded_and_dropped_on_release(tmp_path: Path) -> None:
    with open_spool(tmp_path, memo_bytes=250) as spool:
        for i in range(4):
            spool.append(b"b" * 100, fetched_at=0.0, reports=1, memo=("parsed", i))
        assert [e.memo for e in spool.entries_after(0)] == [
            ("parsed", 0),
            ("parsed", 1),
            None,
            None,
        ]
        spool.release_through(1)
        spool.append(b"c" * 100, fetched_at=0.0, reports=1, memo=("parsed", 4))
        assert [e.memo for e in spool.entries_after(0)][-1] == ("parsed", 4)  # room again


def test_level_counts_entries_reports_bytes_and_the_oldest(tmp_path: Path) -> None:
    disk = FaultyDisk(free=10_000_000)
    with open_spool(tmp_path, max_bytes=500_000, disk=disk) as spool:
        assert spool.level() == SpoolLevel(0, 0, 0, None, 500_000)
        spool.append(b"a" * 10, fetched_at=100.0, reports=4)
        spool.append(b"b" * 10, fetched_at=200.0, reports=6)
        level = spool.level()
        assert (level.entries, level.reports, level.oldest_fetched_at) == (2, 10, 100.0)
        assert level.bytes == spool.pending_bytes
        assert level.capacity_bytes == 500_000 - level.bytes
        disk.free = 200_000
        assert spool.level().capacity_bytes == 200_000 - 64 * 1024  # less the reserve
        spool.release_through(1)
        assert spool.level().oldest_fetched_at == 200.0
        assert spool.level().reports == 6


def test_room_checks_max_bytes_then_the_filesystem(tmp_path: Path) -> None:
    disk = FaultyDisk(free=10 * 2**20)
    answer = 100_000
    needed = HEADER.size + MAX_META_BYTES + answer
    with open_spool(tmp_path, max_bytes=needed, disk=disk) as spool:
        assert spool.room(answer) is None
        assert spool.room(answer + 1) is PauseReason.SPOOL_FULL
        disk.free = needed + 64 * 1024 - 1
        assert spool.room(answer) is PauseReason.DISK_FULL
        disk.free = needed + 64 * 1024
        assert spool.room(answer) is None
        disk.fail("free_bytes", EIO, times=1)
        assert spool.room(answer) is PauseReason.SPOOL_ERROR


def test_room_asks_the_real_filesystem(tmp_path: Path) -> None:
    free = Disk().free_bytes(tmp_path)
    with open_spool(tmp_path, max_bytes=2**62) as spool:
        assert spool.room(1000) is None
        assert spool.room(free + 1) is PauseReason.DISK_FULL


def test_spool_inspect_shows_pending_entries_and_reports(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    with open_spool(directory / "main") as spool:
        for reports in (5, 7, 9):
            spool.append(b"{}", fetched_at=1.0, reports=reports)
        spool.release_through(1)
    config = tmp_path / "c.toml"
    config.write_text(
        '[platform]\nbase_url = "http://127.0.0.1:9"\n[[accounts]]\nname = "main"\n'
        'token_env = "RPT_TEST_INSPECT_TOKEN"\n[kafka]\ntopic = "t"\n[kafka.producer]\n'
        f'"bootstrap.servers" = "127.0.0.1:9"\n[spool]\ndir = "{directory}"\n'
    )
    command = [sys.executable, "-m", "connector", "spool", "inspect", "--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(done.stdout)["main"]
    assert (report["entries"], report["reports"], report["released_seq"]) == (2, 16, 1)
    assert (report["first_seq"], report["last_seq"], report["next_seq"]) == (2, 3, 4)
    assert [s["reports"] for s in report["segments"]] == [21]  # on disk: released ones too
