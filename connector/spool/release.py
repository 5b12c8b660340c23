"""Releasing committed entries: the `released` mark, the empty next segment, the unlinks.

Every step is idempotent and the pending entries are dropped from memory only after all of them
succeeded, so a `SpoolWriteError` (ENOSPC, EROFS, EPERM, EIO) leaves the spool as it was and
the same `release_through` can simply be called again.
"""

from __future__ import annotations

import errno

from connector.errors import SpoolWriteError
from connector.spool.files import RELEASED_FILE, released_mark
from connector.spool.io import describe, write_atomically, write_file
from connector.spool.ledger import Ledger
from connector.spool.segments import SegmentFiles


def release(ledger: Ledger, files: SegmentFiles, seq: int) -> None:
    with ledger.lock:
        files.check_open()
        if seq > ledger.last_seq:
            raise ValueError(f"cannot release through {seq}: last sequence is {ledger.last_seq}")
        target = max(ledger.released, seq)
    try:
        write_released(files, target)
        replace_active_if_stale(ledger, files, target)
        files.unlink_through(target)
    except OSError as exc:
        raise SpoolWriteError(describe("cannot release in spool", files.directory, exc)) from exc
    with ledger.lock:
        ledger.index.drop_through(seq)
        ledger.released = target


def write_released(files: SegmentFiles, target: int) -> None:
    """Write the mark by atomic replace; on a full disk, free the released segments first, and
    if even that leaves no room, overwrite the existing mark in place (same size: no new block)."""
    path, mark = files.directory / RELEASED_FILE, released_mark(target)
    try:
        write_atomically(files.disk, path, mark, fsync=files.fsync)
        return
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    files.unlink_through(target)
    try:
        write_atomically(files.disk, path, mark, fsync=files.fsync)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        # In place, same size: no new block. No O_CREAT: only an existing mark is reused.
        write_file(files.disk, path, mark, flags=0, fsync=files.fsync)


def replace_active_if_stale(ledger: Ledger, files: SegmentFiles, target: int) -> None:
    """With nothing left above `target`, start an empty `<next seq>.seg` (keeps numbering)."""
    with ledger.write_lock:
        with ledger.lock:
            active = files.active
            assert active is not None
            fresh = active.size == 0 and active.first_seq == ledger.next_seq
            if fresh or ledger.last_seq > target:
                return
        files.roll(ledger.next_seq)
