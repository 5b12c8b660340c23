"""The native hot path: one Rust call (rpt_native, built from native/) per get-rpt body.

`rpt_native.BodyEncoder.encode_body` reads the raw body and returns, per report, the Kafka
key and the Avro value (with the format's prefix), plus the batch's observations, without
building a dict per report; asked (`rtimes=True`, for kafka.record_timestamp = "rtime"), also
each report's rtime in epoch ms, so no report is parsed again in Python for its timestamp.
It only ever does what the Python path would do, byte for byte:

* a body it does not handle exactly (not a clean strict get-rpt answer: result ≠ 0, a
  duplicated key, a nested value in a report, a non-object entry, invalid UTF-8 ...) gives
  None, and the caller takes the Python path for the whole body;
* a report it does not normalize (every report Python would reject, floats, booleans, times
  before the zone's last offset change) comes back "slow": this module decodes that
  report's bytes and runs the Python normalizer and encoder on it, in its place. Rejects and
  their messages are therefore always Python's own.

Times are converted natively only where the zone has one fixed UTC offset: from its last
transition on, when the zone has no daylight-saving rule (Asia/Shanghai: from 1991-09-15;
UTC, Etc/GMT-8 ... always). Otherwise the native path is not used at all.

Set RPT_NATIVE=0 to force the pure-Python path. Without the extension (a failed build) the
connector runs the pure-Python path and says so once in the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple
from zoneinfo import TZPATH, ZoneInfo
from zoneinfo._common import load_data, load_tzdata  # the TZif reader zoneinfo itself uses

import msgspec

from connector.codec.avro import AvroEncoder, ValueEncoder, load_schema, record_keys
from connector.codec.report import FIELDS, Normalizer, Rejected
from connector.errors import CodecError

try:
    import rpt_native
except ImportError as exc:  # the extension did not build: the pure-Python path
    rpt_native = None
    _MISSING: str | None = f"{type(exc).__name__}: {exc}"
else:
    _MISSING = None

log = logging.getLogger("connector.native")
_DECODER = msgspec.json.Decoder()
_HOUR = 3600
_ALWAYS = -(2**62)
# The record layout rpt_native writes; any other schema file switches it off.
_OPTIONAL = {"msgid": False, "status": False}
_LAYOUT = (
    *((name, _OPTIONAL.get(name, True)) for name in FIELDS),
    ("account", False),
    ("fetched_at", False),
)
_said: set[str] = set()


class NativeBody(NamedTuple):
    """One body's output, in report order (rejects: the reports Python turned down)."""

    values: list[bytes]
    keys: list[bytes | None]
    observed: dict[tuple[int | None, int | None, int], int]
    unknown_fields: int
    rejected: list[Rejected]
    rtimes: list[int | None] | None = None  # per value, when the encoder was asked for them


class BodyEncoder:
    """The native call for one account, with the Python path for the reports it leaves."""

    def __init__(
        self,
        native: object,
        normalizer: Normalizer,
        encoder: ValueEncoder,
        empty_key: str,
        rtimes: bool = False,  # `native` was built with rtimes=True: its tuple has them last
    ) -> None:
        self._encode_body: Callable = native.encode_body  # type: ignore[attr-defined]
        self._normalizer, self._encoder, self._empty_key = normalizer, encoder, empty_key
        self._rtimes = rtimes

    def encode(self, body: bytes, fetched_at_ms: int, whole: bool = False) -> NativeBody | None:
        """The body's records, or None: the caller takes the Python path for this body.
        `whole`: None as well where a report would need the Python normalizer (the fetch
        thread's read-ahead leaves the Python normalizer and encoder to the publish thread)."""
        if type(body) is not bytes:  # rpt_native reads bytes only (e.g. not a memoryview)
            body = bytes(body)
        out = self._encode_body(body, fetched_at_ms)
        if out is None or (whole and out[2]):
            return None
        if self._rtimes:
            values, keys, slow, observed, unknown, rtimes = out
        else:
            (values, keys, slow, observed, unknown), rtimes = out, None
        native = NativeBody(values, keys, observed, unknown, [], rtimes)
        return self._with_slow(body, fetched_at_ms, native, slow) if slow else native

    def _with_slow(
        self, body: bytes, fetched_at_ms: int, out: NativeBody, slow: list[tuple[int, int, int]]
    ) -> NativeBody | None:
        """Fill in the reports the native code left to Python, each in its place."""
        spans = {index: (start, end) for index, start, end in slow}
        values: list[bytes] = []
        keys: list[bytes | None] = []
        rtimes: list[int | None] | None = None if out.rtimes is None else []
        for index, (value, key) in enumerate(zip(out.values, out.keys, strict=True)):
            if value is not None:
                values.append(value)
                keys.append(key)
                if rtimes is not None:
                    rtimes.append(out.rtimes[index])  # type: ignore[index]
                continue
            start, end = spans[index]
            try:
                report = _DECODER.decode(body[start:end])
                batch = self._normalizer.normalize_batch([report], fetched_at_ms)
                encoded = self._encoder.encode_batch(batch.records)
            except (msgspec.DecodeError, ValueError, RecursionError, CodecError):
                return None  # Python would not have taken this body strictly: its path decides
            out.rejected.extend(batch.rejected)
            for record in batch.records:
                seen = (record["rtime"], record["stime"], record["status"])
                out.observed[seen] = out.observed.get(seen, 0) + 1
            values += encoded
            keys += record_keys(batch.records, self._empty_key)
            if rtimes is not None:
                rtimes += [record["rtime"] for record in batch.records]
        return NativeBody(values, keys, out.observed, out.unknown_fields, out.rejected, rtimes)


def body_encoder(
    account: str,
    normalizer: Normalizer,
    encoder: ValueEncoder,
    empty_custid_key: str,
    *,
    rtimes: bool = False,
) -> BodyEncoder | None:
    """The native encoder for an account, or None (the pure-Python path), logged once.
    `rtimes`: each body's output also holds every record's rtime (NativeBody.rtimes)."""
    reason = _unusable(normalizer, encoder)
    if reason is not None:
        level = logging.WARNING if rpt_native is None else logging.INFO
        _say_once(f"native hot path off ({reason}): reports are encoded in Python", level)
        return None
    offset, from_local = fixed_offset(normalizer.zone)  # type: ignore[misc]
    assert isinstance(encoder, AvroEncoder)  # checked by _unusable
    native = rpt_native.BodyEncoder(  # type: ignore[union-attr]
        account, encoder.prefix, empty_custid_key == "msgid", offset, from_local, rtimes=rtimes
    )
    _say_once("native hot path on: get-rpt bodies are encoded by rpt_native")
    return BodyEncoder(native, normalizer, encoder, empty_custid_key, rtimes)


def _unusable(normalizer: Normalizer, encoder: ValueEncoder) -> str | None:
    zone = normalizer.zone
    if os.environ.get("RPT_NATIVE", "1") == "0":
        return "RPT_NATIVE=0"
    if type(normalizer) is not Normalizer:  # e.g. a replay with a fixed normalizer handed in
        return f"normalizer {type(normalizer).__name__} is not the one rpt_native implements"
    if rpt_native is None:
        return f"the rpt_native extension is not installed: {_MISSING}"
    if not isinstance(encoder, AvroEncoder):
        return f"value encoder {type(encoder).__name__} is not the Avro encoder"
    if schema_layout() != _LAYOUT:
        return "the record schema is not the one rpt_native writes"
    if fixed_offset(zone) is None:
        return f"time zone {zone.key!r} has no fixed UTC offset since its last change"
    return None


def schema_layout() -> tuple[tuple[str, bool], ...]:
    """(name, optional) per field of the record schema, in order."""
    return tuple((f["name"], isinstance(f["type"], list)) for f in load_schema()["fields"])


def fixed_offset(zone: ZoneInfo) -> tuple[int, int] | None:
    """(UTC offset in seconds, first local wall-clock second it holds for), or None.

    From the zone's TZif data: after the last transition, when the zone's rule for later
    times (the TZif footer) has no daylight saving, one offset holds for ever. Local times
    from one hour past the transition's latest wall-clock reading on are unambiguous.
    """
    try:
        _, transitions, offsets, _, _, rule = _tzif(zone.key)
    except (OSError, ValueError, TypeError):
        return None
    if not rule or b"," in rule or not offsets:
        return None
    offset = zone.utcoffset(datetime(9999, 1, 1))
    if offset is None or any(zone.utcoffset(datetime(y, 1, 1)) != offset for y in (2100, 3000)):
        return None
    seconds = int(offset.total_seconds())
    if not transitions:
        return seconds, _ALWAYS
    latest = int(transitions[-1]) + max(int(o) for o in offsets)
    from_local = (latest // _HOUR + 2) * _HOUR
    return (seconds, from_local) if _agrees(zone, seconds, from_local) else None


def _agrees(zone: ZoneInfo, offset: int, from_local: int) -> bool:
    """The arithmetic and zoneinfo give the same instant at and after `from_local`."""
    for local in (from_local, from_local + 86_399, 1_800_000_000, 4_102_444_800):
        wall = datetime.fromtimestamp(local, UTC).replace(tzinfo=zone)  # that wall clock
        if int(wall.timestamp()) != local - offset:
            return False
    return True


def _tzif(key: str | None) -> tuple:
    if not key:
        raise ValueError("a zone without a key")
    for directory in TZPATH:
        path = os.path.join(directory, key)
        if os.path.isfile(path):
            with open(path, "rb") as file:
                return load_data(file)
    with load_tzdata(key) as file:
        return load_data(file)


def _say_once(message: str, level: int = logging.INFO) -> None:
    """Once per process and message: every account builds its encoder, the log says it once."""
    if message not in _said:
        _said.add(message)
        log.log(level, message)
