"""The spool folder around the segments: its lock, identity, quarantine and a read-only look.

(The segments themselves are in `segments`, the rules in `spool`.)
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.errors import SpoolLockedError, SpoolWriteError
from connector.spool.format import Scan, scan_segment
from connector.spool.io import Disk, describe, write_atomically

log = logging.getLogger("connector.spool")

ID_FILE = "spool.id"  # identity of this folder, written into each progress record
RELEASED_FILE = "released"  # the last released sequence: entries at or below it are done
STAGING_SUFFIX = ".renumbering"  # a renumbering's copies before the switch; never a segment
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")


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


def segment_paths(directory: Path) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(m, name) for name in names if (m := _SEGMENT_NAME.match(name))]
    return [(int(m.group(1)), directory / name) for m, name in sorted(found, key=lambda f: f[1])]


def staging_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*.seg{STAGING_SUFFIX}"))


def quarantine(path: Path, scan: Scan) -> Quarantine:
    """Copy the damaged tail of `path` aside (fsynced), then cut the segment back."""
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


def spool_id(directory: Path) -> str:
    """This spool folder's identity, created once (it travels in the progress records)."""
    path = Path(directory) / ID_FILE
    try:
        existing = read_text(path)
        if existing:
            return existing
        Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        new = uuid.uuid4().hex
        temporary = path.with_name(f"{ID_FILE}.{new}")
        write_atomically(Disk(), temporary, new.encode(), fsync=True)
        try:
            os.link(temporary, path)  # fails if another process created it first: use theirs
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
        return read_text(path)
    except OSError as exc:
        raise SpoolWriteError(describe("cannot create the spool id in", directory, exc)) from exc


def read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def released_mark(seq: int) -> bytes:
    """The `released` file's content: fixed width, so it can be overwritten in place."""
    digits = f"{seq:020d}"
    return f"{digits} {zlib.crc32(digits.encode()):08x}\n".encode()


def read_released(path: Path) -> int:
    """The last released sequence; 0 if none (the floor from Kafka then decides)."""
    text = read_text(path)
    if text.isdigit():  # written before the mark had a checksum
        return int(text)
    if (
        text
        and released_mark(int(text[:20]) if text[:20].isdigit() else 0).decode().strip() == text
    ):
        return int(text[:20])
    if text:
        log.warning("spool %s holds no valid release mark (%r): ignored", path, text[:40])
    return 0


def lock_directory(directory: Path, disk: Disk) -> int:
    """Create the directory 0700 if missing, open it and take an exclusive flock on it."""
    try:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        dir_fd = disk.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise SpoolWriteError(describe("cannot open spool directory", directory, exc)) from exc
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(dir_fd)
        raise SpoolLockedError(f"spool {directory} is in use by another pipeline") from exc
    return dir_fd


def inspect(directory: Path) -> dict[str, Any]:
    """A read-only summary of a spool directory for `rpt-connector spool inspect`."""
    directory = Path(directory)
    segments, frames = [], []
    after = 0
    for first_seq, path in segment_paths(directory):
        scan = scan_segment(path, max(after, first_seq - 1))
        seqs = [frame.seq for frame in scan.entries]
        frames += scan.entries
        segments.append(
            {
                "file": path.name,
                "bytes": scan.size,
                "entries": len(seqs),
                "reports": sum(frame.meta.reports for frame in scan.entries),
                "first_seq": seqs[0] if seqs else None,
                "last_seq": seqs[-1] if seqs else None,
                "corrupt_offset": scan.good_bytes if scan.damage else None,
                "corrupt_bytes": scan.size - scan.good_bytes,
                "corrupt_reason": scan.damage,
            }
        )
        after = max([after, first_seq - 1, *seqs])
    released = max(
        [read_released(directory / RELEASED_FILE), *(f.meta.origin or 0 for f in frames)]
    )
    pending = [f for f in frames if f.seq > released]
    quarantined = sorted(p.name for p in directory.glob("*.seg.corrupt-*"))
    return {
        "directory": str(directory),
        "exists": directory.is_dir(),
        "segments": segments,
        "entries": len(pending),  # above the released sequence: not yet committed
        "reports": sum(f.meta.reports for f in pending),  # as the fetcher counted them
        "released_seq": released,
        "first_seq": pending[0].seq if pending else None,
        "last_seq": pending[-1].seq if pending else None,
        "next_seq": after + 1,
        "pending_bytes": sum(s["bytes"] - s["corrupt_bytes"] for s in segments),
        "corrupt_segments": sum(1 for s in segments if s["corrupt_reason"]),
        "quarantine_files": quarantined,
        "renumbering_files": [p.name for p in staging_files(directory)],
    }
