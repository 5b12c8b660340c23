"""The spool API of CONTRACTS.md over today's `Spool` — removed when the spool stream's
`SpoolEntry` API lands (their `Spool.open` then replaces `open_spool` in service.py).

Each frame's payload is `<q fetched_at ms><body>` (the format old spools already hold), the
fetcher's memo and note live in memory only, bounded like the old parsed-body cache.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from connector.observer import PauseReason, SpoolLevel
from connector.spool import HEADER, Spool

_FETCHED_AT = struct.Struct("<q")
_MEMO_ENTRIES = 16


@dataclass
class SpoolEntry:
    seq: int
    fetched_at: float
    body: bytes
    reports: int
    note: str | None
    memo: object | None = None


class EntrySpool:
    """`Spool` with entries that carry their fetch time, report count, note and memo."""

    def __init__(self, spool: Spool, max_bytes: int) -> None:
        self._spool = spool
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._extra: dict[int, tuple[int, str | None, object | None]] = {}

    @classmethod
    def open(cls, directory: Path, *, max_bytes: int, segment_bytes: int, fsync: bool,
             floor_seq: int, hooks: object = None) -> EntrySpool:  # fmt: skip
        spool = Spool.open(
            directory,
            max_bytes=max_bytes,
            segment_bytes=segment_bytes,
            fsync=fsync,
            floor_seq=floor_seq,
        )
        return cls(spool, max_bytes)

    @property
    def last_seq(self) -> int:
        return self._spool.last_seq

    def append(
        self,
        body: bytes,
        *,
        fetched_at: float,
        reports: int,
        note: str | None = None,
        memo: object | None = None,
    ) -> SpoolEntry:
        seq = self._spool.append(_FETCHED_AT.pack(int(fetched_at * 1000)) + body)
        with self._lock:
            if note is not None or len(self._extra) < _MEMO_ENTRIES:
                self._extra[seq] = (reports, note, memo)
        return SpoolEntry(seq, fetched_at, body, reports, note, memo)

    def entries_after(self, seq: int, limit_bytes: int | None = None) -> list[SpoolEntry]:
        out = []
        for number, payload in self._spool.entries_after(seq, limit_bytes):
            fetched_at = _FETCHED_AT.unpack_from(payload)[0] / 1000
            with self._lock:
                reports, note, memo = self._extra.get(number, (0, None, None))
            body = payload[_FETCHED_AT.size :]
            out.append(SpoolEntry(number, fetched_at, body, reports, note, memo))
        return out

    def release_through(self, seq: int) -> None:
        self._spool.release_through(seq)
        with self._lock:
            for number in [n for n in self._extra if n <= seq]:
                del self._extra[number]

    def room(self, needed_bytes: int) -> PauseReason | None:
        if not self._spool.has_room(needed_bytes + _FETCHED_AT.size):
            return PauseReason.SPOOL_FULL
        if _free_bytes(self._spool.directory) < needed_bytes + _FETCHED_AT.size + HEADER.size:
            return PauseReason.DISK_FULL
        return None

    def level(self) -> SpoolLevel:
        pending = self._spool.pending_bytes
        return SpoolLevel(
            entries=self._spool.pending_records,
            reports=0,
            bytes=pending,
            oldest_fetched_at=None,
            capacity_bytes=min(self._max_bytes - pending, _free_bytes(self._spool.directory)),
        )

    def renumber_above(self, seq: int) -> int:
        with self._lock:
            self._extra.clear()
        return self._spool.renumber_above(seq)

    def close(self) -> None:
        self._spool.close()


def _free_bytes(directory: Path) -> int:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return shutil.disk_usage(directory).free
    return stats.f_bavail * stats.f_frsize
