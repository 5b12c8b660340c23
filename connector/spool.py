"""The durable write-ahead spool: raw get-rpt bodies survive a crash until Kafka has them.

get-rpt is destructive, so the fetch thread appends each raw response body here and the append
returns only after the bytes are fsynced. The publish thread reads the entries above the last
sequence committed to Kafka, publishes them in one transaction with a progress record, and after
the commit calls `release_through(seq)`. One `Spool` per account directory; one thread appends
while another reads and releases.

On disk: `<dir>/<first seq, 20 digits>.seg` segment files (lexical order = numeric order), each
a run of frames; all integers big-endian:

    | offset | size | field                                                   |
    |--------|------|---------------------------------------------------------|
    | 0      | 4    | magic `RPS1`                                            |
    | 4      | 4    | payload length, u32                                     |
    | 8      | 4    | zlib.crc32 over bytes 4..7 and 12..19, then the payload |
    | 12     | 8    | sequence number, u64, strictly increasing               |
    | 20     | n    | payload: the raw response body                          |

Guarantees:
- When `append` returns, the frame and (for a new segment) its directory entry are fsynced.
  A failed append raises `SpoolWriteError` and leaves no half frame behind it (the file is cut
  back; if even that fails, the next append overwrites the same offset and recovery quarantines
  any leftover tail).
- Recovery on open verifies every frame. From the first bad frame of a segment (torn write,
  flipped byte, bad length or CRC, sequence not increasing) the rest of that segment is copied to
  `<segment>.corrupt-<UTC time>`, the segment is cut back to its last good frame, a WARNING names
  file, offset and bytes, and recovery goes on with the next segment. A damaged spool is never
  fatal on open, and a second open finds nothing more to quarantine.
- Sequence numbers never go backwards, even after every segment was released: a segment named N
  only holds sequences >= N, so its name alone proves N-1 was assigned. When a release leaves
  nothing pending, the active segment is replaced by an empty `<next seq>.seg` (created, directory
  fsynced, then the old one unlinked): that empty file is the next-sequence sidecar, and released
  entries cannot come back. `floor_seq` (the committed sequence read from Kafka) also raises the
  numbering, and entries <= floor_seq still on disk (their segment also held newer ones) are
  treated as released.
- The directory is 0700 and files 0600 (bodies hold phone numbers); an exclusive `flock` on the
  directory keeps a second process out.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import itertools
import logging
import os
import re
import shutil
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from connector.errors import SpoolError, SpoolFullError, SpoolLockedError, SpoolWriteError

log = logging.getLogger("connector.spool")

MAGIC = b"RPS1"
ID_FILE = "spool.id"  # identity of this folder, written into each progress record
RELEASED_FILE = "released"  # the last released sequence: entries at or below it are done
_READ_CHUNK_BYTES = 8 * 2**20
HEADER = struct.Struct(">4sIIQ")
_LENGTH_SEQ = struct.Struct(">IQ")
MAX_PAYLOAD = 2**32 - 1
DEFAULT_SEGMENT_BYTES = 64 * 2**20
DEFAULT_CACHE_BYTES = 32 * 2**20
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")


def encode_frame(seq: int, payload: bytes) -> bytes:
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(_LENGTH_SEQ.pack(length, seq)))
    return HEADER.pack(MAGIC, length, crc, seq) + payload


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.seg"


@dataclass(frozen=True)
class Quarantine:
    """The damaged tail of one segment, moved aside on open."""

    segment: Path
    file: Path
    offset: int
    bytes: int
    reason: str


@dataclass(frozen=True)
class RecoveryReport:
    segments: int
    entries: int
    quarantined: tuple[Quarantine, ...]

    @property
    def quarantined_bytes(self) -> int:
        return sum(q.bytes for q in self.quarantined)


class _Scan(NamedTuple):
    entries: list[tuple[int, int, int]]  # (seq, frame offset, payload length)
    good_bytes: int  # end of the last intact frame
    size: int
    damage: str | None  # why the bytes from good_bytes on cannot be trusted


@dataclass
class _Segment:
    path: Path
    first_seq: int
    size: int
    last_seq: int  # first_seq - 1 while empty


class _Entry(NamedTuple):
    seq: int
    segment: _Segment
    offset: int
    length: int


def _header_damage(header: bytes, room: int, after_seq: int) -> str | None:
    """Why the frame starting with `header` cannot be intact, or None; `room` = bytes after it."""
    if len(header) < HEADER.size:
        return f"torn frame header ({len(header)} of {HEADER.size} bytes)"
    magic, length, _, seq = HEADER.unpack(header)
    if magic != MAGIC:
        return "bad magic"
    if length > room:
        return f"frame length {length} runs past the end of the file"
    if seq <= after_seq:
        return f"sequence {seq} does not follow {after_seq}"
    return None


def _crc_matches(header: bytes, payload: bytes) -> bool:
    return zlib.crc32(payload, zlib.crc32(header[4:8] + header[12:20])) == HEADER.unpack(header)[2]


def _scan_segment(path: Path, after_seq: int) -> _Scan:
    """Verify every frame of one segment, stopping at the first damaged one."""
    entries: list[tuple[int, int, int]] = []
    offset = 0
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        while offset < size:
            header = file.read(HEADER.size)
            damage = _header_damage(header, size - offset - HEADER.size, after_seq)
            if damage is None and not _crc_matches(header, file.read(HEADER.unpack(header)[1])):
                damage = "CRC mismatch"
            if damage is not None:
                return _Scan(entries, offset, size, damage)
            _, length, _, after_seq = HEADER.unpack(header)
            entries.append((after_seq, offset, length))
            offset += HEADER.size + length
    return _Scan(entries, offset, size, None)


def _segment_paths(directory: Path) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(m, name) for name in names if (m := _SEGMENT_NAME.match(name))]
    return [(int(m.group(1)), directory / name) for m, name in sorted(found, key=lambda f: f[1])]


def _describe(action: str, path: Path, exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "?")
    return f"{action} {path}: {exc.strerror or exc} ({code})"


class Spool:
    """Segments of fsynced, CRC-framed entries with monotonically increasing sequence numbers."""

    def __init__(
        self,
        directory: Path,
        dir_fd: int,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: bool,
        cache_bytes: int,
    ) -> None:
        self.directory = directory
        self._dir_fd: int | None = dir_fd
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._cache_limit = cache_bytes
        # _write_lock serializes appenders (held across write + fsync); _lock guards the state
        # and is never held during an fsync, so the publisher is not stalled by the disk.
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._fd: int | None = None
        self._index: list[_Entry] = []
        self._cache: dict[int, bytes] = {}
        self._cache_bytes = 0
        self._pending_bytes = 0
        self._next_seq = 1
        self._released = 0
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
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> Spool:
        """Open (creating it 0700 if needed) and recover the spool; fsync=False only for tests."""
        directory = Path(directory)
        dir_fd = _lock_directory(directory)
        spool = cls(
            directory,
            dir_fd,
            max_bytes=max_bytes,
            segment_bytes=segment_bytes,
            fsync=fsync,
            cache_bytes=cache_bytes,
        )
        try:
            spool._recover(floor_seq)
        except OSError as exc:
            spool.close()
            raise SpoolWriteError(_describe("cannot recover spool", directory, exc)) from exc
        except BaseException:
            spool.close()
            raise
        return spool

    # -- properties ------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The highest sequence number assigned so far (or the floor it started from)."""
        return self._next_seq - 1

    @property
    def pending_records(self) -> int:
        return len(self._index)

    @property
    def pending_bytes(self) -> int:
        """On-disk bytes (headers included) of the entries not yet released."""
        return self._pending_bytes

    @property
    def is_full(self) -> bool:
        return self._pending_bytes >= self._max_bytes

    def has_room(self, payload_bytes: int) -> bool:
        """Whether a payload this large would be accepted now: ask before a destructive fetch."""
        return self._pending_bytes + HEADER.size + payload_bytes <= self._max_bytes

    # -- append ----------------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Write, fsync and index one entry; return its sequence number."""
        return self._append(payload, check_room=True)

    def _append(self, payload: bytes, *, check_room: bool) -> int:
        frame_bytes = HEADER.size + len(payload)
        with self._write_lock:
            with self._lock:
                self._check_open()
                if len(payload) > MAX_PAYLOAD:
                    raise SpoolError(f"a spool entry holds at most {MAX_PAYLOAD} bytes")
                if check_room and self._pending_bytes + frame_bytes > self._max_bytes:
                    raise SpoolFullError(
                        f"spool {self.directory} is full: {self._pending_bytes} bytes pending, "
                        f"max_bytes {self._max_bytes}, entry of {frame_bytes} bytes refused"
                    )
                seq = self._next_seq
            segment, offset = self._write(seq, payload)
            with self._lock:
                segment.size = offset + frame_bytes
                segment.last_seq = seq
                self._index.append(_Entry(seq, segment, offset, len(payload)))
                self._pending_bytes += frame_bytes
                self._next_seq = seq + 1
                if self._cache_bytes + len(payload) <= self._cache_limit:
                    self._cache[seq] = payload
                    self._cache_bytes += len(payload)
        return seq

    def _write(self, seq: int, payload: bytes) -> tuple[_Segment, int]:
        """Roll if needed, then write and fsync the frame; called with _write_lock held."""
        assert self._active is not None
        size = self._active.size
        try:
            if size > 0 and size + HEADER.size + len(payload) > self._segment_bytes:
                self._roll(seq)
        except OSError as exc:
            msg = _describe("cannot create a segment in", self.directory, exc)
            raise SpoolWriteError(msg) from exc
        segment, fd, offset = self._active, self._fd, self._active.size
        assert fd is not None
        try:
            _pwrite_all(fd, encode_frame(seq, payload), offset)
            if self._fsync:
                os.fdatasync(fd)
        except OSError as exc:
            _cut_back(fd, segment.path, offset)
            raise SpoolWriteError(_describe("cannot write to spool", segment.path, exc)) from exc
        return segment, offset

    def _roll(self, first_seq: int) -> None:
        segment, fd = self._create_segment(first_seq)
        old_fd = self._fd
        with self._lock:
            self._segments.append(segment)
            self._active, self._fd = segment, fd
        if old_fd is not None:
            os.close(old_fd)

    def _create_segment(self, first_seq: int) -> tuple[_Segment, int]:
        path = self.directory / segment_name(first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            self._sync_directory()
        except OSError:
            os.close(fd)
            raise
        return _Segment(path, first_seq, 0, first_seq - 1), fd

    def _sync_directory(self) -> None:
        if self._fsync and self._dir_fd is not None:
            os.fsync(self._dir_fd)

    # -- read ------------------------------------------------------------------------------

    def entries_after(self, seq: int, limit_bytes: int | None = None) -> list[tuple[int, bytes]]:
        """Pending entries with a sequence above `seq`, in order.

        With `limit_bytes`, stop before the payloads would exceed it (but return at least one).
        Recent entries come from memory; older ones are read back and verified from disk.
        """
        with self._lock:
            start = bisect.bisect_right(self._index, seq, key=lambda e: e.seq)
            picked: list[tuple[_Entry, bytes | None]] = []
            total = 0
            for entry in itertools.islice(self._index, start, None):
                if limit_bytes is not None and picked and total + entry.length > limit_bytes:
                    break
                picked.append((entry, self._cache.get(entry.seq)))
                total += entry.length
        return self._fill_from_disk(picked)

    def _fill_from_disk(self, picked: list[tuple[_Entry, bytes | None]]) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        files: dict[Path, int] = {}
        try:
            for entry, payload in picked:
                if payload is None:
                    path = entry.segment.path
                    if path not in files:
                        files[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    payload = _read_entry(files[path], entry)
                out.append((entry.seq, payload))
        except OSError as exc:
            raise SpoolError(_describe("cannot read spool", self.directory, exc)) from exc
        finally:
            for fd in files.values():
                os.close(fd)
        return out

    # -- release ---------------------------------------------------------------------------

    def release_through(self, seq: int) -> None:
        """Forget every entry <= seq (committed to Kafka) and delete the segments that emptied."""
        with self._lock:
            self._check_open()
            if seq > self._next_seq - 1:
                raise ValueError(f"cannot release through {seq}: last sequence is {self.last_seq}")
            doomed = self._drop_through(seq)
            stale = self._active_is_stale()
        try:
            _write_atomically(self.directory / RELEASED_FILE, str(seq).encode())
            for segment in doomed:
                segment.path.unlink(missing_ok=True)
            if stale:
                self._replace_active_if_stale()
        except OSError as exc:
            raise SpoolWriteError(
                _describe("cannot release in spool", self.directory, exc)
            ) from exc

    def _drop_through(self, seq: int) -> list[_Segment]:
        """Drop entries <= seq from the index and detach the released segments; holds _lock."""
        cut = bisect.bisect_right(self._index, seq, key=lambda e: e.seq)
        for entry in self._index[:cut]:
            self._pending_bytes -= HEADER.size + entry.length
            payload = self._cache.pop(entry.seq, None)
            if payload is not None:
                self._cache_bytes -= len(payload)
        del self._index[:cut]
        self._released = max(self._released, seq)
        doomed = [
            s for s in self._segments if s is not self._active and s.last_seq <= self._released
        ]
        self._segments = [s for s in self._segments if s not in doomed]
        return doomed

    def _active_is_stale(self) -> bool:
        """Nothing pending, and the active segment is not an empty `<next seq>.seg`."""
        active = self._active
        assert active is not None
        return not self._index and (active.size > 0 or active.first_seq != self._next_seq)

    def _replace_active_if_stale(self) -> None:
        with self._write_lock:
            with self._lock:
                if not self._active_is_stale():
                    return  # an append slipped in
                old = self._active
                next_seq = self._next_seq
            assert old is not None
            self._roll(next_seq)
            with self._lock:
                self._segments.remove(old)
            old.path.unlink(missing_ok=True)

    def renumber_above(self, seq: int) -> int:
        """Give every pending entry a new number above `seq`, in order; return how many moved.

        For a spool whose account another spool has committed past (the account ran elsewhere
        meanwhile): its pending entries were never published, but their numbers are now at or
        below the account's committed sequence and would be taken for released.
        """
        with self._lock:
            self._check_open()
            self._next_seq = max(self._next_seq, seq + 1)
            if not self._index or self._index[0].seq > seq:
                return 0
            first, last = self._index[0].seq, self._index[-1].seq
        after, moved = first - 1, 0
        while after < last:
            for old_seq, payload in self.entries_after(after, _READ_CHUNK_BYTES):
                if old_seq > last:
                    break
                self._append(payload, check_room=False)  # the copies replace, not add
                after, moved = old_seq, moved + 1
        self.release_through(last)
        return moved

    # -- open / close ----------------------------------------------------------------------

    def _recover(self, floor_seq: int) -> None:
        floor_seq = max(floor_seq, _read_int(self.directory / RELEASED_FILE))
        quarantined: list[Quarantine] = []
        after = 0
        for first_seq, path in _segment_paths(self.directory):
            scan = _scan_segment(path, max(after, first_seq - 1))
            if scan.damage is not None:
                quarantined.append(self._quarantine(path, scan))
            last = scan.entries[-1][0] if scan.entries else first_seq - 1
            segment = _Segment(path, first_seq, scan.good_bytes, last)
            self._segments.append(segment)
            for seq, offset, length in scan.entries:
                self._index.append(_Entry(seq, segment, offset, length))
                self._pending_bytes += HEADER.size + length
            after = max(after, last)
        recovered = len(self._index)
        self._next_seq = max(after, floor_seq) + 1
        self._open_active()
        for segment in self._drop_through(floor_seq):
            segment.path.unlink(missing_ok=True)
        if self._active_is_stale():
            self._replace_active_if_stale()
        self.recovery = RecoveryReport(len(self._segments), recovered, tuple(quarantined))
        log.info(
            "spool %s opened: %d entries pending (%d bytes), next sequence %d",
            self.directory,
            len(self._index),
            self._pending_bytes,
            self._next_seq,
        )

    def _open_active(self) -> None:
        if not self._segments:
            self._roll(self._next_seq)
            return
        self._active = self._segments[-1]
        self._fd = os.open(self._active.path, os.O_WRONLY | os.O_CLOEXEC)

    def _quarantine(self, path: Path, scan: _Scan) -> Quarantine:
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9)) + f"{now % 10**9:09d}Z"
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        lost = scan.size - scan.good_bytes
        with open(path, "r+b") as source:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as sink:
                source.seek(scan.good_bytes)
                shutil.copyfileobj(source, sink)
                sink.flush()
                os.fsync(sink.fileno())
            source.truncate(scan.good_bytes)
            os.fsync(source.fileno())
        self._sync_directory()
        log.warning(
            "spool segment %s is damaged at offset %d (%s): quarantined %d bytes to %s; "
            "kept %d intact entries before it",
            path,
            scan.good_bytes,
            scan.damage,
            lost,
            target.name,
            len(scan.entries),
        )
        return Quarantine(path, target, scan.good_bytes, lost, scan.damage or "")

    def _check_open(self) -> None:
        if self._dir_fd is None:
            raise SpoolError(f"spool {self.directory} is closed")

    def close(self) -> None:
        with self._write_lock, self._lock:
            for fd in (self._fd, self._dir_fd):
                if fd is not None:
                    os.close(fd)  # closing the directory also drops the flock
            self._fd = self._dir_fd = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def spool_id(directory: Path) -> str:
    """This spool folder's identity, created once (it travels in the progress records)."""
    path = Path(directory) / ID_FILE
    try:
        existing = _read_text(path)
        if existing:
            return existing
        Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        new = uuid.uuid4().hex
        temporary = path.with_name(f"{ID_FILE}.{new}")
        _write_atomically(temporary, new.encode())
        try:
            os.link(temporary, path)  # fails if another process created it first: use theirs
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
        return _read_text(path)
    except OSError as exc:
        raise SpoolWriteError(_describe("cannot create the spool id in", directory, exc)) from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _read_int(path: Path) -> int:
    text = _read_text(path)
    return int(text) if text.isdigit() else 0


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _pwrite_all(fd, data, 0)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _lock_directory(directory: Path) -> int:
    """Create the directory 0700 if missing, open it and take an exclusive flock on it."""
    try:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SpoolWriteError(_describe("cannot open spool directory", directory, exc)) from exc
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(dir_fd)
        raise SpoolLockedError(f"spool {directory} is in use by another pipeline") from exc
    return dir_fd


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _cut_back(fd: int, path: Path, size: int) -> None:
    """Remove a partly written frame; if that fails too, the next append overwrites it."""
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        log.error("cannot cut spool segment %s back to %d bytes: %s", path, size, exc.strerror)


def _read_entry(fd: int, entry: _Entry) -> bytes:
    frame = os.pread(fd, HEADER.size + entry.length, entry.offset)
    header, payload = frame[: HEADER.size], frame[HEADER.size :]
    damage = _header_damage(header, len(payload), entry.seq - 1)
    if damage is None and (HEADER.unpack(header)[3] != entry.seq or len(payload) != entry.length):
        damage = "not the frame the index expects"
    if damage is None and not _crc_matches(header, payload):
        damage = "CRC mismatch"
    if damage is not None:
        raise SpoolError(
            f"spool entry {entry.seq} in {entry.segment.path} at offset {entry.offset} is "
            f"damaged ({damage}); restart the connector to quarantine it"
        )
    return payload


def inspect(directory: Path) -> dict[str, Any]:
    """A read-only summary of a spool directory for `rpt-connector spool inspect`."""
    directory = Path(directory)
    segments = []
    after = 0
    for first_seq, path in _segment_paths(directory):
        scan = _scan_segment(path, max(after, first_seq - 1))
        seqs = [seq for seq, _, _ in scan.entries]
        segments.append(
            {
                "file": path.name,
                "bytes": scan.size,
                "entries": len(seqs),
                "first_seq": seqs[0] if seqs else None,
                "last_seq": seqs[-1] if seqs else None,
                "corrupt_offset": scan.good_bytes if scan.damage else None,
                "corrupt_bytes": scan.size - scan.good_bytes,
                "corrupt_reason": scan.damage,
            }
        )
        after = max([after, first_seq - 1, *seqs])
    seqs_found = [s for s in segments if s["entries"]]
    quarantine = sorted(p.name for p in directory.glob("*.seg.corrupt-*"))
    return {
        "directory": str(directory),
        "exists": directory.is_dir(),
        "segments": segments,
        "entries": sum(s["entries"] for s in segments),
        "first_seq": seqs_found[0]["first_seq"] if seqs_found else None,
        "last_seq": seqs_found[-1]["last_seq"] if seqs_found else None,
        "next_seq": after + 1,
        "pending_bytes": sum(s["bytes"] - s["corrupt_bytes"] for s in segments),
        "corrupt_segments": sum(1 for s in segments if s["corrupt_reason"]),
        "quarantine_files": quarantine,
    }
