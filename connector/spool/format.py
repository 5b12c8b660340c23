"""The spool's bytes on disk: frames, the versioned entry payload, and the scan that checks them.

The table of every field is in `connector/spool/spool.py`'s docstring; this module is its only
reader and writer, so the two frame versions (`RPS1` from before this wave, `RPS2`) are
decoded in one place.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

MAGIC_V1 = b"RPS1"  # payload: <q fetched_at ms (little-endian)><body>; read, never written
MAGIC = b"RPS2"  # payload: meta (flags, fetched_at, reports, origin?, note?), then the body
HEADER = struct.Struct(">4sIIQ")
_LENGTH_SEQ = struct.Struct(">IQ")
_V1_FETCHED_AT = struct.Struct("<q")
_META = struct.Struct(">BqI")  # flags, fetched_at epoch ms, reports
_ORIGIN = struct.Struct(">Q")
_NOTE_LENGTH = struct.Struct(">H")
FLAG_ORIGIN = 0x01  # a renumbered copy: carries the sequence it had before
FLAG_NOTE = 0x02  # the fetcher's reason why the body is bad
_KNOWN_FLAGS = FLAG_ORIGIN | FLAG_NOTE
MAX_NOTE_BYTES = 4096  # longer notes are cut (on a character boundary)
# The most a payload header adds to a body: what `room` must reserve on top of the answer.
MAX_META_BYTES = _META.size + _ORIGIN.size + _NOTE_LENGTH.size + MAX_NOTE_BYTES
MAX_PAYLOAD = 2**32 - 1


@dataclass(frozen=True)
class Meta:
    """What the spool stores about a body besides the body itself."""

    fetched_at_ms: int
    reports: int
    note: str | None = None
    origin: int | None = None  # the sequence this entry had before a renumbering


class FrameInfo(NamedTuple):
    seq: int
    offset: int  # of the frame in its segment
    length: int  # payload bytes
    meta: Meta
    body_offset: int  # of the body inside the payload


class Scan(NamedTuple):
    entries: list[FrameInfo]
    good_bytes: int  # end of the last intact frame
    size: int
    damage: str | None  # why the bytes from good_bytes on cannot be trusted


def clip_note(note: str | None) -> bytes | None:
    if note is None:
        return None
    return note.encode("utf-8", "replace")[:MAX_NOTE_BYTES].decode("utf-8", "ignore").encode()


def encode_payload(meta: Meta, body: bytes) -> bytes:
    flags = (FLAG_ORIGIN if meta.origin is not None else 0) | (
        FLAG_NOTE if meta.note is not None else 0
    )
    parts = [_META.pack(flags, meta.fetched_at_ms, min(meta.reports, 2**32 - 1))]
    if meta.origin is not None:
        parts.append(_ORIGIN.pack(meta.origin))
    note = clip_note(meta.note)
    if note is not None:
        parts += [_NOTE_LENGTH.pack(len(note)), note]
    parts.append(body)
    return b"".join(parts)


def decode_meta(magic: bytes, payload: bytes | memoryview) -> tuple[Meta, int]:
    """The payload's meta and where its body starts; ValueError for a malformed header."""
    if magic == MAGIC_V1:
        if len(payload) < _V1_FETCHED_AT.size:
            raise ValueError("old-format entry shorter than its fetch time")
        return Meta(_V1_FETCHED_AT.unpack_from(payload)[0], 0), _V1_FETCHED_AT.size
    if len(payload) < _META.size:
        raise ValueError("payload shorter than its header")
    flags, fetched_at_ms, reports = _META.unpack_from(payload)
    if flags & ~_KNOWN_FLAGS:
        raise ValueError(f"unknown payload flags {flags:#04x}")
    at, origin, note = _META.size, None, None
    if flags & FLAG_ORIGIN:
        (origin,) = _ORIGIN.unpack_from(payload, at)
        at += _ORIGIN.size
    if flags & FLAG_NOTE:
        (length,) = _NOTE_LENGTH.unpack_from(payload, at)
        at += _NOTE_LENGTH.size
        if at + length > len(payload):
            raise ValueError("note runs past the payload")
        note = bytes(payload[at : at + length]).decode("utf-8", "replace")
        at += length
    return Meta(fetched_at_ms, reports, note, origin), at


def encode_frame(seq: int, payload: bytes, magic: bytes = MAGIC) -> bytes:
    length = len(payload)
    crc = zlib.crc32(payload, zlib.crc32(_LENGTH_SEQ.pack(length, seq)))
    return HEADER.pack(magic, length, crc, seq) + payload


def header_damage(header: bytes, room: int, after_seq: int) -> str | None:
    """Why the frame starting with `header` cannot be intact, or None; `room` = bytes after it."""
    if len(header) < HEADER.size:
        return f"torn frame header ({len(header)} of {HEADER.size} bytes)"
    magic, length, _, seq = HEADER.unpack(header)
    if magic not in (MAGIC, MAGIC_V1):
        return "bad magic"
    if length > room:
        return f"frame length {length} runs past the end of the file"
    if seq <= after_seq:
        return f"sequence {seq} does not follow {after_seq}"
    return None


def crc_matches(header: bytes, payload: bytes) -> bool:
    return zlib.crc32(payload, zlib.crc32(header[4:8] + header[12:20])) == HEADER.unpack(header)[2]


def check_frame(header: bytes, payload: bytes, after_seq: int) -> tuple[str | None, Meta, int]:
    """(damage or None, meta, body offset) of one frame read whole."""
    damage = header_damage(header, len(payload), after_seq)
    if damage is None and not crc_matches(header, payload):
        damage = "CRC mismatch"
    if damage is not None:
        return damage, Meta(0, 0), 0
    try:
        meta, body_offset = decode_meta(header[:4], payload)
    except (ValueError, struct.error) as exc:
        return f"bad payload header ({exc})", Meta(0, 0), 0
    return None, meta, body_offset


def scan_segment(path: Path, after_seq: int) -> Scan:
    """Verify every frame of one segment, stopping at the first damaged one."""
    entries: list[FrameInfo] = []
    offset = 0
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        while offset < size:
            header = file.read(HEADER.size)
            damage = header_damage(header, size - offset - HEADER.size, after_seq)
            if damage is None:
                payload = file.read(HEADER.unpack(header)[1])
                damage, meta, body_offset = check_frame(header, payload, after_seq)
            if damage is not None:
                return Scan(entries, offset, size, damage)
            _, length, _, after_seq = HEADER.unpack(header)
            entries.append(FrameInfo(after_seq, offset, length, meta, body_offset))
            offset += HEADER.size + length
    return Scan(entries, offset, size, None)
