"""The spool's memory (which entries are pending, where, the recent ones' bodies) and reads.

Bodies of recent entries are kept (bounded by `cache_bytes`) so the publisher does not read
back what was just written; the fetcher's memo (its parsed body) is kept for recent entries
too, bounded by `memo_bytes` counted in body bytes (a parsed body is a few times larger than
its raw form). Both are dropped when the entry is released. Not thread-safe: the spool holds
its state lock (`Ledger.lock`) around every call.
"""

from __future__ import annotations

import bisect
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from connector.errors import SpoolError
from connector.spool.format import HEADER, Meta, check_frame
from connector.spool.io import Disk, describe


@dataclass
class SpoolEntry:
    """One fetched get-rpt body and what the fetcher knew about it."""

    seq: int
    fetched_at: float  # epoch seconds (millisecond precision, as stored)
    body: bytes  # the raw get-rpt body, as received
    reports: int  # how many reports the fetcher counted (0 if unknown or invalid)
    note: str | None  # the fetcher's reason the body is bad (the dead letter's message)
    memo: object | None = None  # in memory only: the fetcher's parsed body; None from disk


@dataclass
class Segment:
    path: Path
    first_seq: int
    size: int
    last_seq: int  # first_seq - 1 while empty


class Located(NamedTuple):
    seq: int
    segment: Segment
    offset: int  # of the frame
    length: int  # payload bytes
    meta: Meta
    body_offset: int


class Index:
    def __init__(self, cache_bytes: int, memo_bytes: int) -> None:
        self.entries: list[Located] = []
        self.pending_bytes = 0  # on disk, headers included
        self.pending_reports = 0
        self._cache: dict[int, SpoolEntry] = {}
        self._cache_bytes, self._cache_limit = 0, cache_bytes
        self._memo_bytes, self._memo_limit = 0, memo_bytes

    def memo_room(self) -> int:
        """Body bytes whose memo would still be kept."""
        return max(0, self._memo_limit - self._memo_bytes)

    def add(self, located: Located, entry: SpoolEntry | None = None) -> None:
        self.entries.append(located)
        self.pending_bytes += HEADER.size + located.length
        self.pending_reports += located.meta.reports
        if entry is None or self._cache_bytes + len(entry.body) > self._cache_limit:
            return
        self._cache_bytes += len(entry.body)
        if entry.memo is not None and self._memo_bytes + len(entry.body) <= self._memo_limit:
            self._memo_bytes += len(entry.body)
        else:
            entry = SpoolEntry(entry.seq, entry.fetched_at, entry.body, entry.reports, entry.note)
        self._cache[entry.seq] = entry

    def drop_through(self, seq: int) -> None:
        cut = bisect.bisect_right(self.entries, seq, key=lambda e: e.seq)
        for located in self.entries[:cut]:
            self.pending_bytes -= HEADER.size + located.length
            self.pending_reports -= located.meta.reports
            cached = self._cache.pop(located.seq, None)
            if cached is not None:
                self._cache_bytes -= len(cached.body)
                if cached.memo is not None:
                    self._memo_bytes -= len(cached.body)
        del self.entries[:cut]

    def after(self, seq: int, limit_bytes: int | None) -> list[tuple[Located, SpoolEntry | None]]:
        """Pending entries above `seq` (at least one, then up to `limit_bytes` of payload)."""
        start = bisect.bisect_right(self.entries, seq, key=lambda e: e.seq)
        picked: list[tuple[Located, SpoolEntry | None]] = []
        total = 0
        for located in itertools.islice(self.entries, start, None):
            if limit_bytes is not None and picked and total + located.length > limit_bytes:
                break
            picked.append((located, self._cache.get(located.seq)))
            total += located.length
        return picked


def entry_from(located: Located, payload: bytes) -> SpoolEntry:
    meta = located.meta
    body = payload[located.body_offset :]
    return SpoolEntry(located.seq, meta.fetched_at_ms / 1000, body, meta.reports, meta.note)


def read_entries(
    disk: Disk, directory: Path, picked: list[tuple[Located, SpoolEntry | None]]
) -> list[SpoolEntry]:
    """The picked entries, from memory where cached, else read back and verified from disk."""
    out: list[SpoolEntry] = []
    files: dict[Path, int] = {}
    try:
        for located, cached in picked:
            if cached is None:
                path = located.segment.path
                if path not in files:
                    files[path] = disk.open(path, os.O_RDONLY)
                cached = _read_entry(disk, files[path], located)
            out.append(cached)
    except OSError as exc:
        raise SpoolError(describe("cannot read spool", directory, exc)) from exc
    finally:
        for fd in files.values():
            disk.close(fd)
    return out


def _read_entry(disk: Disk, fd: int, located: Located) -> SpoolEntry:
    frame = disk.pread(fd, HEADER.size + located.length, located.offset)
    header, payload = frame[: HEADER.size], frame[HEADER.size :]
    damage, _, _ = check_frame(header, payload, located.seq - 1)
    if damage is None and HEADER.unpack(header)[3] != located.seq:
        damage = "not the frame the index expects"
    if damage is not None:
        raise SpoolError(
            f"spool entry {located.seq} in {located.segment.path} at offset "
            f"{located.offset} is damaged ({damage}); restart the connector to quarantine it"
        )
    return entry_from(located, payload)
