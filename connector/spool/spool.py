"""The durable write-ahead spool: raw get-rpt bodies survive a crash until Kafka has them.

get-rpt is destructive, so the fetch thread appends each raw response body here and the append
returns only after the bytes are fsynced. The publish thread reads the entries above the last
sequence committed to Kafka, publishes them in one transaction with a progress record, and after
the commit calls `release_through(seq)`. One `Spool` per account directory; one thread appends
while another reads and releases.

On disk: `<dir>/<first seq, 20 digits>.seg` segment files (lexical order = numeric order), each
a run of frames; all integers big-endian unless marked:

    | offset | size | field                                                        |
    |--------|------|--------------------------------------------------------------|
    | 0      | 4    | magic `RPS2` (written) or `RPS1` (before 2026-12; still read)|
    | 4      | 4    | payload length, u32                                          |
    | 8      | 4    | zlib.crc32 over bytes 4..7 and 12..19, then the payload      |
    | 12     | 8    | sequence number, u64, strictly increasing                    |
    | 20     | n    | payload                                                      |

    `RPS2` payload:                            `RPS1` payload:
    | size | field                          |   | size | field                         |
    |------|--------------------------------|   |------|-------------------------------|
    | 1    | flags: 1 = origin, 2 = note    |   | 8    | fetched_at epoch ms, i64 LE   |
    | 8    | fetched_at epoch ms, i64       |   | n    | the raw body                  |
    | 4    | reports the fetcher counted    |   (reports read as 0: not known)
    | 8    | origin: the entry's sequence before a renumbering (flag 1)
    | 2+k  | note: u16 length, UTF-8 (flag 2): the fetcher's reason the body is bad
    | n    | the raw body, as received      |

Guarantees:
- When `append` returns, the frame and (for a new segment) its directory entry are fsynced.
  A failed append raises `SpoolWriteError` and leaves no half frame behind it (the file is cut
  back; if even that fails, the next append overwrites the same offset and recovery quarantines
  any leftover tail). A failed `release_through` raises `SpoolWriteError` with the pending
  entries unchanged in memory; the same call can be repeated (each step is idempotent).
- Recovery on open verifies every frame. From the first bad frame of a segment (torn write,
  flipped byte, bad length, CRC or payload header, sequence not increasing) the rest of that
  segment is copied to `<segment>.corrupt-<UTC time>`, the segment is cut back to its last good
  frame, a WARNING names file, offset and bytes. A damaged spool is never fatal on open.
- Sequence numbers never go backwards, even after every segment was released: a segment named N
  only holds sequences >= N. When a release leaves nothing pending, the active segment is
  replaced by an empty `<next seq>.seg`. The `released` file (`<20 digits> <crc32 hex>`,
  fsynced; plain digits from older spools are read too) and `floor_seq` (the committed sequence
  read from Kafka) mark entries at or below them as released. On a full disk the released
  segments are unlinked first, and if a new file still does not fit, the mark (fixed width) is
  overwritten in place, so a release completes even while the fetcher is paused for room.
- Renumbering (`renumber_above`, for a tail left here while the account committed from another
  spool) is an atomic switch: every pending entry is copied, in order and with its fetch time,
  count and note, into `<N>.seg.renumbering` (N above the foreign commit) with its old sequence
  as `origin`; the file is fsynced, then renamed to `<N>.seg` and the directory fsynced. That
  rename is the switch: a frame with origin X proves every entry <= X was copied, so recovery
  treats them as released. A crash before the switch leaves a staging file that the next open
  deletes (the originals are still pending and are copied again); a crash after it leaves
  originals that recovery drops. Either way each body is pending exactly once. The copies
  need as much free space as the tail; without it the renumbering fails and is retried.
- `room(n)` says whether an answer of n bytes fits both `max_bytes` and the filesystem's free
  space (statvfs f_bavail * f_frsize, less a reserve for the bookkeeping files).
- The directory is 0700 and files 0600 (bodies hold phone numbers); an exclusive `flock` on the
  directory keeps a second process out.

Modules: `format` (the bytes), `index` (memory, reads), `ledger` (numbering and the locks),
`segments` (the segment files: writing, rolling, unlinking), `release`, `renumber`, `recovery`
(functions over a `Ledger` and the `SegmentFiles`), `files` (lock, id, quarantine, `inspect`),
`io` (the `Disk` seam and fail-point hooks); this `Spool` composes them.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from connector.errors import SpoolError, SpoolFullError, SpoolWriteError
from connector.observe.observer import PauseReason, SpoolLevel
from connector.spool.files import (
    ID_FILE,
    Quarantine,
    RecoveryReport,
    inspect,
    lock_directory,
    segment_name,
    spool_id,
)
from connector.spool.format import (
    HEADER,
    MAX_META_BYTES,
    MAX_PAYLOAD,
    Meta,
    encode_payload,
)
from connector.spool.index import Located, SpoolEntry, read_entries
from connector.spool.io import Disk, NoHooks, SpoolHooks, describe
from connector.spool.io import failpoints_from_env as failpoints_from_env
from connector.spool.ledger import Ledger
from connector.spool.recovery import recover
from connector.spool.release import release
from connector.spool.renumber import renumber
from connector.spool.segments import SegmentFiles

__all__ = [
    "HEADER",
    "ID_FILE",
    "Quarantine",
    "RecoveryReport",
    "Spool",
    "SpoolEntry",
    "failpoints_from_env",
    "inspect",
    "segment_name",
    "spool_id",
]

log = logging.getLogger("connector.spool")

DEFAULT_SEGMENT_BYTES = 64 * 2**20
DEFAULT_CACHE_BYTES = 32 * 2**20
DEFAULT_MEMO_BYTES = 8 * 2**20  # body bytes whose parsed form is kept for the publisher
ROOM_RESERVE_BYTES = 64 * 2**10  # free space kept for `released`, a new segment's first block


class Spool:
    """Segments of fsynced, CRC-framed entries with monotonically increasing sequence numbers."""

    def __init__(self, directory: Path, dir_fd: int, disk: Disk, hooks: SpoolHooks, **sizes: int):
        self.directory = directory
        self.disk, self.hooks = disk, hooks
        self._max_bytes = sizes["max_bytes"]
        # One state lock for both parts (see `ledger`): the ledger's numbering and the segment
        # set change together, and a reader must see them agree.
        self._ledger = Ledger(sizes["cache_bytes"], sizes["memo_bytes"])
        fsync, segment_bytes = bool(sizes["fsync"]), sizes["segment_bytes"]
        lock = self._ledger.lock
        self._files = SegmentFiles(
            directory, dir_fd, disk, lock, fsync=fsync, segment_bytes=segment_bytes
        )
        self.recovery = RecoveryReport(0, 0, ())

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True,
        floor_seq: int = 0,
        hooks: SpoolHooks | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        memo_bytes: int = DEFAULT_MEMO_BYTES,
        disk: Disk | None = None,
    ) -> Spool:
        """Open (creating it 0700 if needed) and recover the spool; fsync=False only for tests."""
        directory, disk = Path(directory), disk or Disk()
        dir_fd = lock_directory(directory, disk)
        spool = cls(
            directory, dir_fd, disk, hooks or NoHooks(), max_bytes=max_bytes,
            segment_bytes=segment_bytes, fsync=fsync, cache_bytes=cache_bytes,
            memo_bytes=memo_bytes,
        )  # fmt: skip
        try:
            spool.recovery = recover(spool._ledger, spool._files, floor_seq)
        except OSError as exc:
            spool.close()
            raise SpoolWriteError(describe("cannot recover spool", directory, exc)) from exc
        except BaseException:
            spool.close()
            raise
        return spool

    # -- levels ----------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest sequence number assigned so far (or the floor it started from)."""
        return self._ledger.last_seq

    @property
    def pending_records(self) -> int:
        """Pending entries (bodies), not reports: see `level().reports`."""
        return len(self._ledger.index.entries)

    @property
    def pending_bytes(self) -> int:
        """On-disk bytes (headers included) of the entries not yet released."""
        return self._ledger.index.pending_bytes

    def room(self, needed_bytes: int) -> PauseReason | None:
        """None if an answer of `needed_bytes` would be kept now: ask before a destructive fetch."""
        frame = HEADER.size + MAX_META_BYTES + needed_bytes
        if self._ledger.index.pending_bytes + frame > self._max_bytes:
            return PauseReason.SPOOL_FULL
        try:
            free = self.disk.free_bytes(self.directory)
        except OSError as exc:
            log.error("%s", describe("cannot read the free space of", self.directory, exc))
            return PauseReason.SPOOL_ERROR
        return PauseReason.DISK_FULL if free < frame + ROOM_RESERVE_BYTES else None

    def memo_room(self) -> int:
        """Body bytes of entries appended now whose memo (the fetcher's parse) stays in memory."""
        with self._ledger.lock:
            return self._ledger.index.memo_room()

    def level(self) -> SpoolLevel:
        with self._ledger.lock:
            index = self._ledger.index
            entries = len(index.entries)
            oldest = index.entries[0].meta.fetched_at_ms / 1000 if entries else None
            reports, pending = index.pending_reports, index.pending_bytes
        capacity = self._max_bytes - pending
        with contextlib.suppress(OSError):  # room() says so; the level reports what it knows
            capacity = min(capacity, self.disk.free_bytes(self.directory) - ROOM_RESERVE_BYTES)
        return SpoolLevel(entries, reports, pending, oldest, max(0, capacity))

    # -- append ----------------------------------------------------------------------------

    def append(
        self,
        body: bytes,
        *,
        fetched_at: float,
        reports: int,
        note: str | None = None,
        memo: object | None = None,
    ) -> SpoolEntry:
        """Write, fsync and index one body; SpoolFullError above max_bytes, else SpoolWriteError."""
        meta = Meta(round(fetched_at * 1000), max(0, reports), note)
        return self.append_meta(meta, body, memo, check_room=True)

    def append_meta(
        self, meta: Meta, body: bytes, memo: object | None, *, check_room: bool
    ) -> SpoolEntry:
        payload = encode_payload(meta, body)
        frame_bytes = HEADER.size + len(payload)
        ledger, index = self._ledger, self._ledger.index
        with ledger.write_lock:
            with ledger.lock:
                self._files.check_open()
                if len(payload) > MAX_PAYLOAD:
                    raise SpoolError(f"a spool entry holds at most {MAX_PAYLOAD} bytes")
                if check_room and index.pending_bytes + frame_bytes > self._max_bytes:
                    raise SpoolFullError(
                        f"spool {self.directory} is full: {index.pending_bytes} bytes "
                        f"pending, max_bytes {self._max_bytes}, entry of {frame_bytes} refused"
                    )
                seq = ledger.next_seq
            segment, offset = self._files.write_frame(seq, payload)
            located = Located(seq, segment, offset, len(payload), meta, len(payload) - len(body))
            entry = SpoolEntry(seq, meta.fetched_at_ms / 1000, body, meta.reports, meta.note, memo)
            with ledger.lock:
                segment.size = offset + frame_bytes
                segment.last_seq = seq
                index.add(located, entry)
                ledger.next_seq = seq + 1
        return entry

    def roll(self, first_seq: int) -> None:
        """Make a new, empty `<first_seq>.seg` (directory fsynced) the active segment."""
        self._files.roll(first_seq)

    def sync_directory(self) -> None:
        self._files.sync_directory()

    # -- read ------------------------------------------------------------------------------

    def entries_after(self, seq: int, limit_bytes: int | None = None) -> list[SpoolEntry]:
        """Pending entries with a sequence above `seq`, in order.

        With `limit_bytes`, stop before the payloads would exceed it (but return at least one).
        Recent entries come from memory (with their memo); older ones are read back and
        verified from disk (memo None).
        """
        with self._ledger.lock:
            picked = self._ledger.index.after(seq, limit_bytes)
        return read_entries(self.disk, self.directory, picked)

    # -- release ---------------------------------------------------------------------------

    def release_through(self, seq: int) -> None:
        """Forget every entry <= seq (committed to Kafka) and delete the segments that emptied.

        On SpoolWriteError the pending entries are unchanged and the same call can be repeated.
        """
        release(self._ledger, self._files, seq)

    def renumber_above(self, seq: int) -> int:
        """Give every pending entry a new number above `seq`, in order; return how many moved.

        For a spool whose account another spool has committed past (the account ran elsewhere
        meanwhile): its pending entries were never published, but their numbers are now at or
        below the account's committed sequence and would be taken for released. Crash-safe at
        every step (see the module docstring); raises SpoolWriteError with nothing changed.
        """
        return renumber(self._ledger, self._files, self.hooks, seq)

    # -- open / close ----------------------------------------------------------------------

    def close(self) -> None:
        with self._ledger.write_lock, self._ledger.lock:
            self._files.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
