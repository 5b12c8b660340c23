"""Helpers shared by the spool's unit tests: a spool in a temp folder, numbered bodies."""

from __future__ import annotations

from pathlib import Path

from connector.spool.format import Meta, encode_payload
from connector.spool.spool import HEADER, Spool, SpoolEntry

MiB = 2**20
META = len(encode_payload(Meta(0, 0), b""))  # the payload header of an entry without a note
FRAME = HEADER.size + META  # what an entry costs on disk besides its body


def add(spool: Spool, body: bytes, **kwargs: object) -> int:
    options: dict = {"fetched_at": 1_700_000_000.0, "reports": 1}
    options.update(kwargs)
    return spool.append(body, **options).seq


def pairs(entries: list[SpoolEntry]) -> list[tuple[int, bytes]]:
    return [(e.seq, e.body) for e in entries]


def open_spool(directory: Path, **kwargs: object) -> Spool:
    options: dict = {"max_bytes": 10 * MiB, "fsync": False}
    options.update(kwargs)
    return Spool.open(directory, **options)


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.seg"))


def quarantine_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.corrupt-*"))


def payload(i: int, size: int = 40) -> bytes:
    return (f"body-{i}-".encode() * size)[:size]


def fill(directory: Path, count: int, **kwargs: object) -> list[bytes]:
    bodies = [payload(i) for i in range(1, count + 1)]
    with open_spool(directory, **kwargs) as spool:
        assert [add(spool, b) for b in bodies] == list(range(1, count + 1))
    return bodies


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))
