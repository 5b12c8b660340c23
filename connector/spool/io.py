"""What the spool does to the filesystem, behind two seams tests can replace.

`Disk` is every system call the spool makes on its files (the default one is plain `os`); a
test hands in a subclass that fails with ENOSPC, EROFS, EPERM or EIO on the call it picks.
`SpoolHooks.on(name)` is called at each fail point (the steps of a renumbering); a test raises
from it to model a crash at that step, and `failpoints_from_env` builds the hooks a real process
test installs: `RPT_FAILPOINT_SPOOL=renumber.after_copy:3` ends the process with `os._exit(137)`
(as a SIGKILL would) the third time that point is reached.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

FAILPOINT_ENV = "RPT_FAILPOINT_SPOOL"

# Fail points, in the order a renumbering reaches them.
RENUMBER_AFTER_COPY = "renumber.after_copy"  # after each frame copied into the staging file
RENUMBER_BEFORE_SWITCH = "renumber.before_switch"  # staging file complete and fsynced
RENUMBER_AFTER_SWITCH = "renumber.after_switch"  # staging file renamed to a segment, dir fsynced
RENUMBER_BEFORE_CLEANUP = "renumber.before_cleanup"  # in memory switched; originals still on disk
RENUMBER_AFTER_RELEASE = "renumber.after_release"  # `released` written, originals not yet unlinked
RENUMBER_POINTS = (
    RENUMBER_AFTER_COPY,
    RENUMBER_BEFORE_SWITCH,
    RENUMBER_AFTER_SWITCH,
    RENUMBER_BEFORE_CLEANUP,
    RENUMBER_AFTER_RELEASE,
)


class SpoolHooks(Protocol):
    def on(self, name: str) -> None:
        """Called when the spool reaches fail point `name`."""


class NoHooks:
    def on(self, name: str) -> None:
        return None


class FailPoints:
    """Exit the process (code 137, no cleanup) the `count`-th time point `name` is reached."""

    def __init__(self, name: str, count: int) -> None:
        self.name, self.count = name, count
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def on(self, name: str) -> None:
        with self._lock:
            self._seen[name] += 1
            hit = name == self.name and self._seen[name] == self.count
        if hit:
            os._exit(137)


def failpoints_from_env(environ: Mapping[str, str] | None = None) -> SpoolHooks:
    """`RPT_FAILPOINT_SPOOL=<point>[:<count>]` as hooks; no variable → hooks that do nothing."""
    value = (os.environ if environ is None else environ).get(FAILPOINT_ENV, "").strip()
    if not value:
        return NoHooks()
    name, _, count = value.partition(":")
    if name not in RENUMBER_POINTS or (count and not count.isdigit()):
        raise ValueError(
            f"{FAILPOINT_ENV}={value!r}: expected <point>[:<count>] with a point among "
            f"{', '.join(RENUMBER_POINTS)}"
        )
    return FailPoints(name, int(count or 1))


class Disk:
    """The system calls the spool makes on its files; tests subclass it to inject faults."""

    def open(self, path: Path, flags: int, mode: int = 0o600) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def unlink(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def free_bytes(self, directory: Path) -> int:
        """Bytes an unprivileged writer may still use on the filesystem of `directory`."""
        stats = os.statvfs(directory)
        return stats.f_bavail * stats.f_frsize


def describe(action: str, path: Path, exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, "?")
    return f"{action} {path}: {exc.strerror or exc} ({code})"


def pwrite_all(disk: Disk, fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = disk.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def write_file(disk: Disk, path: Path, data: bytes, *, flags: int, fsync: bool) -> None:
    """Write `data` from offset 0 of `path` opened with `flags` (O_WRONLY added), then
    fdatasync it if asked; the descriptor is closed whatever happens."""
    fd = disk.open(path, os.O_WRONLY | flags)
    try:
        pwrite_all(disk, fd, data, 0)
        if fsync:
            disk.fdatasync(fd)
    finally:
        disk.close(fd)


def write_atomically(disk: Disk, path: Path, data: bytes, *, fsync: bool) -> None:
    """Replace `path` by `data`: a reader (or a crash) sees the old or the new bytes, whole."""
    temporary = path.with_name(path.name + ".tmp")
    write_file(disk, temporary, data, flags=os.O_CREAT | os.O_TRUNC, fsync=fsync)
    disk.replace(temporary, path)
