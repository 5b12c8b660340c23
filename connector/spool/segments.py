"""The segment files on disk: which there are, the active one, writing frames, rolling, unlinking.

The methods that write are called with the spool's `write_lock` held (one writer at a time);
the state `lock` handed in is taken only to publish the new state, never across a write or an
fsync.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from connector.errors import SpoolError, SpoolWriteError
from connector.spool.files import segment_name
from connector.spool.format import HEADER, encode_frame
from connector.spool.index import Segment
from connector.spool.io import Disk, describe, pwrite_all

log = logging.getLogger("connector.spool")


class SegmentFiles:
    """The spool directory's segments, the open active one and the directory's (flocked) fd."""

    def __init__(
        self,
        directory: Path,
        dir_fd: int,
        disk: Disk,
        lock: threading.Lock,  # the spool's state lock (`Ledger.lock`): one lock for all state
        *,
        fsync: bool,
        segment_bytes: int,
    ) -> None:
        self.directory, self.disk = directory, disk
        self.fsync, self.segment_bytes = fsync, segment_bytes
        self._lock = lock
        self._dir_fd: int | None = dir_fd
        self.segments: list[Segment] = []
        self.retired: list[Segment] = []  # detached from the index, file not yet unlinked
        self.active: Segment | None = None
        self.fd: int | None = None

    def check_open(self) -> None:
        if self._dir_fd is None:
            raise SpoolError(f"spool {self.directory} is closed")

    def sync_directory(self) -> None:
        if self.fsync and self._dir_fd is not None:
            self.disk.fsync(self._dir_fd)

    def write_frame(self, seq: int, payload: bytes) -> tuple[Segment, int]:
        """Roll if the frame does not fit the active segment, then write and fsync it."""
        assert self.active is not None
        size = self.active.size
        try:
            if size > 0 and size + HEADER.size + len(payload) > self.segment_bytes:
                self.roll(seq)
        except OSError as exc:
            msg = describe("cannot create a segment in", self.directory, exc)
            raise SpoolWriteError(msg) from exc
        segment, fd, offset = self.active, self.fd, self.active.size
        assert fd is not None
        try:
            pwrite_all(self.disk, fd, encode_frame(seq, payload), offset)
            if self.fsync:
                self.disk.fdatasync(fd)
        except OSError as exc:
            self._cut_back(fd, segment.path, offset)
            raise SpoolWriteError(describe("cannot write to spool", segment.path, exc)) from exc
        return segment, offset

    def roll(self, first_seq: int) -> None:
        """Make a new, empty `<first_seq>.seg` (directory fsynced) the active segment."""
        path = self.directory / segment_name(first_seq)
        fd = self.disk.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            self.sync_directory()
        except OSError:
            self.disk.close(fd)
            self.disk.unlink(path)
            raise
        self.switch_active(Segment(path, first_seq, 0, first_seq - 1), fd)

    def switch_active(self, segment: Segment, fd: int) -> None:
        old_fd = self.fd
        with self._lock:
            self.segments.append(segment)
            self.active, self.fd = segment, fd
        if old_fd is not None:
            self.disk.close(old_fd)

    def open_active(self, next_seq: int) -> None:
        """On open: append to the last segment found, or start `<next_seq>.seg` if there is none."""
        if not self.segments:
            self.roll(next_seq)
            return
        self.active = self.segments[-1]
        self.fd = self.disk.open(self.active.path, os.O_WRONLY)

    def unlink_through(self, target: int) -> None:
        """Delete segments (never the active one) whose entries are all <= target, oldest first.

        Oldest first matters: a renumbered copy (newer) must outlive the originals it replaces."""
        with self._lock:
            doomed = [s for s in self.segments if s is not self.active and s.last_seq <= target]
            self.segments = [s for s in self.segments if s not in doomed]
            self.retired += doomed
        for segment in list(self.retired):
            self.disk.unlink(segment.path)
            with self._lock:
                self.retired.remove(segment)

    def close(self) -> None:
        """Close the active segment and the directory; the caller holds both locks."""
        for fd in (self.fd, self._dir_fd):
            if fd is not None:
                os.close(fd)  # closing the directory also drops the flock
        self.fd = self._dir_fd = None

    def _cut_back(self, fd: int, path: Path, size: int) -> None:
        """Remove a partly written frame; if that fails too, the next append overwrites it."""
        try:
            self.disk.ftruncate(fd, size)
        except OSError as exc:
            log.error("cannot cut spool segment %s back to %d bytes: %s", path, size, exc.strerror)
