"""Opening a spool: verify every frame, quarantine damage, find what is still pending.

Released are the entries at or below the highest of: the committed sequence the caller passes
(`floor_seq`), the `released` file, and the `origin` of any renumbered copy (a copy of entry X
proves every entry <= X was copied; see `spool_renumber`). A staging file of an unfinished
renumbering is deleted: its originals are still pending.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from connector.spool.files import (
    RELEASED_FILE,
    Quarantine,
    RecoveryReport,
    quarantine,
    read_released,
    segment_paths,
    staging_files,
)
from connector.spool.format import scan_segment
from connector.spool.index import Located, Segment
from connector.spool.release import replace_active_if_stale, unlink_released

if TYPE_CHECKING:
    from connector.spool.spool import Spool

log = logging.getLogger("connector.spool")


def recover(spool: Spool, floor_seq: int) -> None:
    directory = spool.directory
    floor_seq = max(floor_seq, read_released(directory / RELEASED_FILE))
    for staging in staging_files(directory):
        log.warning("spool %s: discarding unfinished renumbering %s", directory, staging)
        spool.disk.unlink(staging)
    quarantined: list[Quarantine] = []
    after = 0
    for first_seq, path in segment_paths(directory):
        scan = scan_segment(path, max(after, first_seq - 1))
        if scan.damage is not None:
            quarantined.append(quarantine(path, scan))
            spool.sync_directory()
        last = scan.entries[-1].seq if scan.entries else first_seq - 1
        segment = Segment(path, first_seq, scan.good_bytes, last)
        spool.segments.append(segment)
        for frame in scan.entries:
            spool.index.add(Located(frame.seq, segment, *frame[1:]))
            floor_seq = max(floor_seq, frame.meta.origin or 0)  # copied by a renumbering
        after = max(after, last)
    recovered = len(spool.index.entries)
    spool.next_seq = max(after, floor_seq) + 1
    _open_active(spool)
    spool.index.drop_through(floor_seq)
    spool.released = floor_seq
    replace_active_if_stale(spool, floor_seq)
    unlink_released(spool, floor_seq)
    spool.recovery = RecoveryReport(len(spool.segments), recovered, tuple(quarantined))
    log.info(
        "spool %s opened: %d entries pending (%d bytes), next sequence %d",
        directory,
        len(spool.index.entries),
        spool.index.pending_bytes,
        spool.next_seq,
    )


def _open_active(spool: Spool) -> None:
    if not spool.segments:
        spool.roll(spool.next_seq)
        return
    spool.active = spool.segments[-1]
    spool.fd = spool.disk.open(spool.active.path, os.O_WRONLY)
