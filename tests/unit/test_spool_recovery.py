"""Opening a damaged spool: torn writes, flipped bytes and garbage are quarantined, once."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from spool_support import (
    FRAME,
    add,
    fill,
    flip_byte,
    open_spool,
    pairs,
    quarantine_files,
)

from connector.spool.spool import HEADER, inspect, segment_name

# -- damage and recovery -------------------------------------------------------------------


def test_torn_last_write_is_quarantined_once(tmp_path: Path, caplog) -> None:
    bodies = fill(tmp_path, 4)
    segment = tmp_path / segment_name(1)
    original = segment.read_bytes()
    os.truncate(segment, len(original) - 3)
    good = 3 * (FRAME + 40)

    with caplog.at_level(logging.WARNING, logger="connector.spool"), open_spool(tmp_path) as spool:
        assert pairs(spool.entries_after(0)) == list(enumerate(bodies[:3], start=1))
        assert spool.recovery.quarantined_bytes == FRAME + 37
        assert add(spool, b"after") == 4
    (quarantined,) = quarantine_files(tmp_path)
    assert quarantined.name.startswith(segment.name + ".corrupt-")
    assert quarantined.read_bytes() == original[good:-3]
    assert stat.S_IMODE(quarantined.stat().st_mode) == 0o600
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert segment.name in message and f"offset {good}" in message
    assert f"quarantined {FRAME + 37} bytes" in message

    caplog.clear()
    for _ in range(2):
        with open_spool(tmp_path) as spool:
            assert [seq for seq, _ in pairs(spool.entries_after(0))] == [1, 2, 3, 4]
            assert spool.recovery.quarantined == ()
    assert len(quarantine_files(tmp_path)) == 1
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        (HEADER.size + 7, "CRC mismatch"),  # a payload byte
        (12 + 7, "CRC mismatch"),  # the sequence number's low byte
        (4, "runs past the end"),  # the length's high byte
        (0, "bad magic"),
    ],
)
def test_damaged_middle_frame_quarantines_the_rest_of_its_segment(
    tmp_path: Path, where: int, reason: str
) -> None:
    frame = FRAME + 40
    bodies = fill(tmp_path, 9, segment_bytes=3 * frame)  # segments 1-3, 4-6, 7-9
    middle = tmp_path / segment_name(4)
    flip_byte(middle, frame + where)  # entry 5

    with open_spool(tmp_path, segment_bytes=3 * frame) as spool:
        kept = [seq for seq, _ in pairs(spool.entries_after(0))]
        assert kept == [1, 2, 3, 4, 7, 8, 9]
        assert dict(pairs(spool.entries_after(0)))[8] == bodies[7]
        (q,) = spool.recovery.quarantined
        assert (q.segment, q.offset, q.bytes) == (middle, frame, 2 * frame)
        assert reason in q.reason
        assert add(spool, b"x") == 10
    assert middle.stat().st_size == frame


def test_garbage_after_the_last_frame_is_quarantined(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    with open(tmp_path / segment_name(1), "ab") as file:
        file.write(b"\0" * 4096)  # a crash can leave zero-filled blocks
    with open_spool(tmp_path) as spool:
        assert spool.pending_records == 2
        assert spool.recovery.quarantined_bytes == 4096


def test_a_fully_damaged_last_segment_keeps_numbering(tmp_path: Path) -> None:
    fill(tmp_path, 4, segment_bytes=2 * (FRAME + 40))
    flip_byte(tmp_path / segment_name(3), 0)
    with open_spool(tmp_path) as spool:
        assert [seq for seq, _ in pairs(spool.entries_after(0))] == [1, 2]
        assert add(spool, b"x") == 3  # 3 and 4 were never published: their numbers are free


def test_inspect_reports_damage_and_changes_nothing(tmp_path: Path) -> None:
    fill(tmp_path, 4, segment_bytes=2 * (FRAME + 40))
    flip_byte(tmp_path / segment_name(3), HEADER.size + 1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    report = inspect(tmp_path)

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert (report["entries"], report["reports"], report["released_seq"]) == (2, 2, 0)
    assert (report["first_seq"], report["last_seq"]) == (1, 2)
    assert report["corrupt_segments"] == 1
    damaged = report["segments"][1]
    assert damaged["file"] == segment_name(3)
    assert (damaged["corrupt_offset"], damaged["corrupt_reason"]) == (0, "CRC mismatch")
    assert report["pending_bytes"] == 2 * (FRAME + 40)
    assert inspect(tmp_path / "missing")["exists"] is False
