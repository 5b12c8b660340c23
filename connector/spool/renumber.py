"""Renumbering a spool's pending tail above a foreign commit, as one atomic switch.

Steps (each a fail point, see `spool_io`): copy every pending entry, with its old sequence as
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
from typing import TYPE_CHECKING

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
    describe,
    pwrite_all,
)
from connector.spool.release import unlink_released, write_released
from connector.spool.segments import switch_active

if TYPE_CHECKING:
    from connector.spool.spool import Spool

log = logging.getLogger("connector.spool")

_READ_CHUNK_BYTES = 8 * 2**20


def renumber(spool: Spool, seq: int) -> int:
    """Move every pending entry above `seq` (see module docstring); return how many moved."""
    with spool.write_lock:  # no append while the tail is copied
        with spool.lock:
            spool.check_open()
            spool.next_seq = max(spool.next_seq, seq + 1)
            originals = list(spool.index.entries)
            if not originals or originals[0].seq > seq:
                return 0
            first_new = spool.next_seq
        segment = Segment(spool.directory / segment_name(first_new), first_new, 0, first_new - 1)
        fd, copies = _stage(spool, originals, segment)
        spool.hooks.on(RENUMBER_BEFORE_SWITCH)
        _switch(spool, segment, fd, copies)
    _clean_up(spool, originals[-1].seq)
    return len(originals)


def _stage(spool: Spool, originals: list[Located], segment: Segment) -> tuple[int, list[Located]]:
    """Write the copies to the staging file; on failure remove it, nothing else changed."""
    staging = segment.path.with_name(segment.path.name + STAGING_SUFFIX)
    disk = spool.disk
    try:
        fd = disk.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except OSError as exc:
        raise SpoolWriteError(describe("cannot renumber into", staging, exc)) from exc
    copies: list[Located] = []
    try:
        for chunk in _chunks(originals):
            read = read_entries(spool.disk, spool.directory, [(o, None) for o in chunk])
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
                spool.hooks.on(RENUMBER_AFTER_COPY)
        if spool.fsync:
            disk.fdatasync(fd)
    except (OSError, SpoolError) as exc:
        _discard(spool, fd, staging)
        if isinstance(exc, SpoolError):
            raise
        raise SpoolWriteError(describe("cannot renumber into", staging, exc)) from exc
    return fd, copies


def _switch(spool: Spool, segment: Segment, fd: int, copies: list[Located]) -> None:
    staging = segment.path.with_name(segment.path.name + STAGING_SUFFIX)
    try:
        spool.disk.replace(staging, segment.path)
    except OSError as exc:
        _discard(spool, fd, staging)
        raise SpoolWriteError(describe("cannot renumber into", segment.path, exc)) from exc
    try:
        spool.sync_directory()
    except OSError as exc:  # the rename is done: memory must follow it, whatever the disk says
        log.error("%s", describe("cannot fsync after renumbering", spool.directory, exc))
    spool.hooks.on(RENUMBER_AFTER_SWITCH)
    with spool.lock:
        last_original = spool.index.entries[-1].seq
        spool.index.drop_through(last_original)
        for located in copies:
            spool.index.add(located)
        spool.next_seq = segment.last_seq + 1
        spool.released = max(spool.released, last_original)
    switch_active(spool, segment, fd)


def _clean_up(spool: Spool, last_original: int) -> None:
    """Forget the originals on disk; a failure here only delays it (the copies prove it)."""
    try:
        spool.hooks.on(RENUMBER_BEFORE_CLEANUP)
        write_released(spool, spool.released)
        spool.hooks.on(RENUMBER_AFTER_RELEASE)
        unlink_released(spool, last_original)
    except OSError as exc:
        problem = describe("cannot clean up after renumbering", spool.directory, exc)
        log.warning("%s; retried at the next release", problem)


def _discard(spool: Spool, fd: int, staging: os.PathLike[str]) -> None:
    for step in (lambda: spool.disk.close(fd), lambda: spool.disk.unlink(staging)):
        try:
            step()
        except OSError as exc:
            log.error("%s", describe("cannot discard", spool.directory, exc))


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
