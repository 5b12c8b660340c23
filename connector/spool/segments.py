"""Writing frames into the active segment, and starting a new one.

Both are called with the spool's `write_lock` held (one writer at a time); its `lock` is taken
only to publish the new state, never across a write or an fsync.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from connector.errors import SpoolWriteError
from connector.spool.files import segment_name
from connector.spool.format import HEADER, encode_frame
from connector.spool.index import Segment
from connector.spool.io import describe, pwrite_all

if TYPE_CHECKING:
    from connector.spool.spool import Spool

log = logging.getLogger("connector.spool")


def write_frame(spool: Spool, seq: int, payload: bytes) -> tuple[Segment, int]:
    """Roll if the frame does not fit the active segment, then write and fsync it."""
    assert spool.active is not None
    size = spool.active.size
    try:
        if size > 0 and size + HEADER.size + len(payload) > spool.segment_bytes:
            roll(spool, seq)
    except OSError as exc:
        msg = describe("cannot create a segment in", spool.directory, exc)
        raise SpoolWriteError(msg) from exc
    segment, fd, offset = spool.active, spool.fd, spool.active.size
    assert fd is not None
    try:
        pwrite_all(spool.disk, fd, encode_frame(seq, payload), offset)
        if spool.fsync:
            spool.disk.fdatasync(fd)
    except OSError as exc:
        _cut_back(spool, fd, segment.path, offset)
        raise SpoolWriteError(describe("cannot write to spool", segment.path, exc)) from exc
    return segment, offset


def roll(spool: Spool, first_seq: int) -> None:
    """Make a new, empty `<first_seq>.seg` (directory fsynced) the active segment."""
    path = spool.directory / segment_name(first_seq)
    fd = spool.disk.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        spool.sync_directory()
    except OSError:
        spool.disk.close(fd)
        spool.disk.unlink(path)
        raise
    switch_active(spool, Segment(path, first_seq, 0, first_seq - 1), fd)


def switch_active(spool: Spool, segment: Segment, fd: int) -> None:
    old_fd = spool.fd
    with spool.lock:
        spool.segments.append(segment)
        spool.active, spool.fd = segment, fd
    if old_fd is not None:
        spool.disk.close(old_fd)


def _cut_back(spool: Spool, fd: int, path: Path, size: int) -> None:
    """Remove a partly written frame; if that fails too, the next append overwrites it."""
    try:
        spool.disk.ftruncate(fd, size)
    except OSError as exc:
        log.error("cannot cut spool segment %s back to %d bytes: %s", path, size, exc.strerror)
