"""Opening a spool: verify every frame, quarantine damage, find what is still pending.

Released are the entries at or below the highest of: the committed sequence the caller passes
(`floor_seq`), the `released` file, and the `origin` of any renumbered copy (a copy of entry X
proves every entry <= X was copied; see `renumber`). A staging file of an unfinished
renumbering is deleted: its originals are still pending.
"""

from __future__ import annotations

import logging

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
from connector.spool.ledger import Ledger
from connector.spool.release import replace_active_if_stale
from connector.spool.segments import SegmentFiles

log = logging.getLogger("connector.spool")


def recover(ledger: Ledger, files: SegmentFiles, floor_seq: int) -> RecoveryReport:
    """Load a freshly opened spool's segments into `files` and `ledger`; say what was found."""
    directory, index = files.directory, ledger.index
    floor_seq = max(floor_seq, read_released(directory / RELEASED_FILE))
    for staging in staging_files(directory):
        log.warning("spool %s: discarding unfinished renumbering %s", directory, staging)
        files.disk.unlink(staging)
    quarantined: list[Quarantine] = []
    after = 0
    for first_seq, path in segment_paths(directory):
        scan = scan_segment(path, max(after, first_seq - 1))
        if scan.damage is not None:
            quarantined.append(quarantine(path, scan))
            files.sync_directory()
        last = scan.entries[-1].seq if scan.entries else first_seq - 1
        segment = Segment(path, first_seq, scan.good_bytes, last)
        files.segments.append(segment)
        for frame in scan.entries:
            index.add(Located(frame.seq, segment, *frame[1:]))
            floor_seq = max(floor_seq, frame.meta.origin or 0)  # copied by a renumbering
        after = max(after, last)
    recovered = len(index.entries)
    ledger.next_seq = max(after, floor_seq) + 1
    files.open_active(ledger.next_seq)
    index.drop_through(floor_seq)
    ledger.released = floor_seq
    replace_active_if_stale(ledger, files, floor_seq)
    files.unlink_through(floor_seq)
    report = RecoveryReport(len(files.segments), recovered, tuple(quarantined))
    log.info(
        "spool %s opened: %d entries pending (%d bytes), next sequence %d",
        directory,
        len(index.entries),
        index.pending_bytes,
        ledger.next_seq,
    )
    return report
