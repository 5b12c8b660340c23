"""A fault-injecting `Disk` for spool tests: the real system calls, failing where told.

A fault names the call (`open`, `pwrite`, `fdatasync`, `fsync`, `ftruncate`, `replace`,
`unlink`, `free_bytes`), the errno it raises and a piece of the file name it applies to; it fires
`times` times (None: until `clear()`), the way a full or read-only filesystem keeps failing.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from connector.spool.io import Disk


@dataclass
class Fault:
    call: str
    code: int
    name: str  # a substring of the file name; "" = every file
    times: int | None


class FaultyDisk(Disk):
    def __init__(self, free: int | None = None) -> None:
        self.faults: list[Fault] = []
        self.free = free  # free bytes the filesystem reports; None = the real statvfs
        self.calls: list[tuple[str, str]] = []  # (call, file name) that failed
        self._paths: dict[int, Path] = {}

    def fail(self, call: str, code: int, name: str = "", times: int | None = 1) -> FaultyDisk:
        self.faults.append(Fault(call, code, name, times))
        return self

    def clear(self) -> None:
        self.faults.clear()

    def _check(self, call: str, path: Path | None) -> None:
        name = path.name if path is not None else ""
        for fault in self.faults:
            if fault.call == call and fault.name in name and fault.times != 0:
                if fault.times is not None:
                    fault.times -= 1
                self.calls.append((call, name))
                raise OSError(fault.code, os.strerror(fault.code), str(path))

    def open(self, path: Path, flags: int, mode: int = 0o600) -> int:
        self._check("open", Path(path))
        fd = super().open(path, flags, mode)
        self._paths[fd] = Path(path)
        return fd

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        super().close(fd)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self._check("pwrite", self._paths.get(fd))
        return super().pwrite(fd, data, offset)

    def fdatasync(self, fd: int) -> None:
        self._check("fdatasync", self._paths.get(fd))
        super().fdatasync(fd)

    def fsync(self, fd: int) -> None:
        self._check("fsync", self._paths.get(fd))
        super().fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        self._check("ftruncate", self._paths.get(fd))
        super().ftruncate(fd, size)

    def replace(self, source: Path, target: Path) -> None:
        self._check("replace", Path(target))
        super().replace(source, target)

    def unlink(self, path: Path) -> None:
        self._check("unlink", Path(path))
        super().unlink(path)

    def free_bytes(self, directory: Path) -> int:
        self._check("free_bytes", Path(directory))
        return super().free_bytes(directory) if self.free is None else self.free


ENOSPC, EROFS, EPERM, EIO = errno.ENOSPC, errno.EROFS, errno.EPERM, errno.EIO
