"""Releasing committed entries: the `released` mark, the empty next segment, the unlinks.

Every step is idempotent and the pending entries are dropped from memory only after all of them
succeeded, so a `SpoolWriteError` (ENOSPC, EROFS, EPERM, EIO) leaves the spool as it was and
the same `release_through` can simply be called again.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

from connector.errors import SpoolWriteError
from connector.spool.files import RELEASED_FILE, released_mark
from connector.spool.io import describe, pwrite_all, write_atomically

if TYPE_CHECKING:
    from connector.spool.spool import Spool


def release(spool: Spool, seq: int) -> None:
    with spool.lock:
        spool.check_open()
        if seq > spool.last_seq:
            raise ValueError(f"cannot release through {seq}: last sequence is {spool.last_seq}")
        target = max(spool.released, seq)
    try:
        write_released(spool, target)
        replace_active_if_stale(spool, target)
        unlink_released(spool, target)
    except OSError as exc:
        raise SpoolWriteError(describe("cannot release in spool", spool.directory, exc)) from exc
    with spool.lock:
        spool.index.drop_through(seq)
        spool.released = target


def write_released(spool: Spool, target: int) -> None:
    """Write the mark by atomic replace; on a full disk, free the released segments first, and
    if even that leaves no room, overwrite the existing mark in place (same size: no new block)."""
    path, mark = spool.directory / RELEASED_FILE, released_mark(target)
    try:
        write_atomically(spool.disk, path, mark, fsync=spool.fsync)
        return
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    unlink_released(spool, target)
    try:
        write_atomically(spool.disk, path, mark, fsync=spool.fsync)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        _overwrite(spool, path, mark)


def _overwrite(spool: Spool, path: Path, mark: bytes) -> None:
    fd = spool.disk.open(path, os.O_WRONLY)  # no O_CREAT: only an existing mark is reused
    try:
        pwrite_all(spool.disk, fd, mark, 0)
        if spool.fsync:
            spool.disk.fdatasync(fd)
    finally:
        spool.disk.close(fd)


def unlink_released(spool: Spool, target: int) -> None:
    """Delete segments (never the active one) whose entries are all <= target, oldest first.

    Oldest first matters: a renumbered copy (newer) must outlive the originals it replaces."""
    with spool.lock:
        doomed = [s for s in spool.segments if s is not spool.active and s.last_seq <= target]
        spool.segments = [s for s in spool.segments if s not in doomed]
        spool.retired += doomed
    for segment in list(spool.retired):
        spool.disk.unlink(segment.path)
        with spool.lock:
            spool.retired.remove(segment)


def replace_active_if_stale(spool: Spool, target: int) -> None:
    """With nothing left above `target`, start an empty `<next seq>.seg` (keeps numbering)."""
    with spool.write_lock:
        with spool.lock:
            active = spool.active
            assert active is not None
            fresh = active.size == 0 and active.first_seq == spool.next_seq
            if fresh or spool.last_seq > target:
                return
        spool.roll(spool.next_seq)
