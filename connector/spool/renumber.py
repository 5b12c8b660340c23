"""Renumbering a spool's pending tail above a foreign commit, as one atomic switch.

Steps (each a fail point, see `io`): copy every pending entry, with its old sequence as
`origin`, into `<N>.seg.renumbering` (after each frame: `renumber.after_copy`), fdatasync it
(`renumber.before_switch`), rename it to `<N>.seg` and fsync the directory
(`renumber.after_switch`): from here a reopen drops the originals, because a frame with origin X
proves every entry <= X was copied. Then the in-memory switch (`renumber.before_cleanup`), the
`released` file (`renumber.after_release`) and the originals' segments unlinked. A crash before
the rename leaves only a staging file, which the next open deletes; the originals are copied
again by the next renumbering.
"""

from __future__ import annotations

import logging
import os

from connector.errors import SpoolError, SpoolWriteError
from connector.spool.files import STAGING_SUFFIX, segment_name
from connector.spool.format import HEADER, Meta, encode_frame, encode_payload
from connector.spool.index import Located, Segment, read_entries
from connector.spool.io import (
    RENUMBER_AFTER_COPY,
    RENUMBER_AFTER_RELEASE,
    RENUMBER_AFTER_SWITCH,
    RENUMBER_BEFORE_CLEANUP,
    RENUMBER_BEFORE_SWITCH,
    SpoolHooks,
    describe,
    pwrite_all,
)
from connector.spool.ledger import Ledger
from connector.spool.release import write_released
from connector.spool.segments import SegmentFiles

log = logging.getLogger("connector.spool")

_READ_CHUNK_BYTES = 8 * 2**20


def renumber(ledger: Ledger, files: SegmentFiles, hooks: SpoolHooks, seq: int) -> int:
    """Move every pending entry above `seq` (see module docstring); return how many moved."""
    with ledger.write_lock:  # no append while the tail is copied
        with ledger.lock:
            files.check_open()
            ledger.next_seq = max(ledger.next_seq, seq + 1)
            originals = list(ledger.index.entries)
            if not originals or originals[0].seq > seq:
                return 0
            first_new = ledger.next_seq
        segment = Segment(files.directory / segment_name(first_new), first_new, 0, first_new - 1)
        fd, copies = _stage(files, hooks, originals, segment)
        hooks.on(RENUMBER_BEFORE_SWITCH)
        _rename(files, segment, fd)
        hooks.on(RENUMBER_AFTER_SWITCH)
        _adopt(ledger, files, segment, fd, copies)
    _clean_up(ledger, files, hooks, originals[-1].seq)
    return len(originals)


def _stage(
    files: SegmentFiles, hooks: SpoolHooks, originals: list[Located], segment: Segment
) -> tuple[int, list[Located]]:
    """Write the copies to the staging file; on failure remove it, nothing else changed."""
    staging = segment.path.with_name(segment.path.name + STAGING_SUFFIX)
    disk = files.disk
    try:
        fd = disk.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except OSError as exc:
        raise SpoolWriteError(describe("cannot renumber into", staging, exc)) from exc
    copies: list[Located] = []
    try:
        for chunk in _chunks(originals):
            read = read_entries(disk, files.directory, [(o, None) for o in chunk])
            for located, entry in zip(chunk, read, strict=True):
                meta = Meta(
                    located.meta.fetched_at_ms, located.meta.reports, entry.note, located.seq
                )
                payload = encode_payload(meta, entry.body)
                new_seq = segment.first_seq + len(copies)
                pwrite_all(disk, fd, encode_frame(new_seq, payload), segment.size)
                body_at = len(payload) - len(entry.body)
                copies.append(Located(new_seq, segment, segment.size, len(payload), meta, body_at))
                segment.size += HEADER.size + len(payload)
                segment.last_seq = new_seq
                hooks.on(RENUMBER_AFTER_COPY)
        if files.fsync:
            disk.fdatasync(fd)
    except (OSError, SpoolError) as exc:
        _discard(files, fd, staging)
        if isinstance(exc, SpoolError):
            raise
        raise SpoolWriteError(describe("cannot renumber into", staging, exc)) from exc
    return fd, copies


def _rename(files: SegmentFiles, segment: Segment, fd: int) -> None:
    """The switch on disk: the staging file becomes a segment, the directory is fsynced."""
    staging = segment.path.with_name(segment.path.name + STAGING_SUFFIX)
    try:
        files.disk.replace(staging, segment.path)
    except OSError as exc:
        _discard(files, fd, staging)
        raise SpoolWriteError(describe("cannot renumber into", segment.path, exc)) from exc
    try:
        files.sync_directory()
    except OSError as exc:  # the rename is done: memory must follow it, whatever the disk says
        log.error("%s", describe("cannot fsync after renumbering", files.directory, exc))


def _adopt(
    ledger: Ledger, files: SegmentFiles, segment: Segment, fd: int, copies: list[Located]
) -> None:
    """Memory follows the switch: the copies replace the originals, their segment is active."""
    with ledger.lock:
        last_original = ledger.index.entries[-1].seq
        ledger.index.drop_through(last_original)
        for located in copies:
            ledger.index.add(located)
        ledger.next_seq = segment.last_seq + 1
        ledger.released = max(ledger.released, last_original)
    files.switch_active(segment, fd)


def _clean_up(ledger: Ledger, files: SegmentFiles, hooks: SpoolHooks, last_original: int) -> None:
    """Forget the originals on disk; a failure here only delays it (the copies prove it)."""
    try:
        hooks.on(RENUMBER_BEFORE_CLEANUP)
        write_released(files, ledger.released)
        hooks.on(RENUMBER_AFTER_RELEASE)
        files.unlink_through(last_original)
    except OSError as exc:
        problem = describe("cannot clean up after renumbering", files.directory, exc)
        log.warning("%s; retried at the next release", problem)


def _discard(files: SegmentFiles, fd: int, staging: os.PathLike[str]) -> None:
    for step in (lambda: files.disk.close(fd), lambda: files.disk.unlink(staging)):
        try:
            step()
        except OSError as exc:
            log.error("%s", describe("cannot discard", files.directory, exc))


def _chunks(entries: list[Located]) -> list[list[Located]]:
    chunks: list[list[Located]] = [[]]
    total = 0
    for located in entries:
        if chunks[-1] and total + located.length > _READ_CHUNK_BYTES:
            chunks.append([])
            total = 0
        chunks[-1].append(located)
        total += located.length
    return chunks
