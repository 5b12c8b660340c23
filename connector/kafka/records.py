"""What a Kafka record of the connector is: data records, dead letters, the progress record.

One spool entry (a raw get-rpt body) becomes, in one transaction:

    data records   value = Avro (encoder), key = custid (or msgid / none: empty_custid_key),
                   headers = account, content-type, schema-fingerprint (unless
                   kafka.record_headers = false), timestamp = the
                   produce time, or (kafka.record_timestamp = "rtime") the report's rtime
                   where the topic accepts it (RecordTimestamps)
    dead letters   value = the raw bytes that could not become a record, headers =
                   error.class, error.message, account, spool.sequence, reason (+ chunk "i/n")
    progress       key = account, value = {account, spool_seq, spool_id, committed_at} (JSON),
                   + other_spools {spool id: its last spool_seq} once the account has run on
                   another spool; on partition crc32(account) % partitions of the progress topic

Nothing here talks to Kafka; the publisher sends what this module builds.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from connector.codec.avro import ValueEncoder, record_headers, record_keys
from connector.codec.native import body_encoder
from connector.codec.report import Normalizer, ParsedBody, parse_body
from connector.errors import CodecError, PlatformError, PlatformResultError
from connector.observe.observer import DeadLetterReason, TimestampClamp

Headers = list[tuple[str, bytes]]
# Above the broker's message size the transaction would fail for ever while the spool entry
# is released at its commit: a larger dead letter is split into numbered chunks instead.
DLQ_MAX_VALUE_BYTES = 900 * 1024  # under Kafka's default 1 MiB message limit
# A record timestamp the broker refuses (INVALID_TIMESTAMP) fails the whole transaction, again
# at every retry: rtimes are kept this far inside the topic's limits, for clock skew between
# this host and the broker and for the time a record waits in the producer before it is sent.
TIMESTAMP_MARGIN_MS = 300_000
PRODUCE_TIME = 0  # librdkafka's timestamp 0: the time the record is produced (CreateTime)


class EntryLike(Protocol):
    """The part of a spool entry (connector.spool.spool.SpoolEntry) that records are built from."""

    seq: int
    fetched_at: float
    body: bytes
    note: str | None
    memo: object | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    value: bytes
    headers: Headers


@dataclass
class EntryRecords:
    """Everything one spool entry becomes."""

    values: list[bytes] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)  # DeadLetterReason → dead letters
    observed: Counter = field(default_factory=Counter)  # (rtime, stime, status) → reports
    unknown_fields: int = 0
    archive_records: int = 0  # bodies archived with this entry (connector.kafka.archive)
    archive_bytes: int = 0
    timestamps: list[int] | None = None  # per value, epoch ms (0: produce time); None: all 0
    clamped: Counter = field(default_factory=Counter)  # TimestampClamp → records


@dataclass(frozen=True)
class TimestampLimits:
    """How far a record timestamp may be from the broker's clock, in ms: the topic's
    message.timestamp.after.max.ms and before.max.ms (the defaults: Kafka 4's)."""

    after_ms: int = 3_600_000
    before_ms: int = 2**63 - 1


class RecordTimestamps:
    """kafka.record_timestamp = "rtime": each data record's timestamp is its report's rtime,
    or its produce time (0) where the rtime is missing or beyond what the topic accepts."""

    def __init__(self, limits: TimestampLimits, wall_clock: Callable[[], float] = time.time):
        self.limits = limits
        self._ahead = limits.after_ms - min(TIMESTAMP_MARGIN_MS, limits.after_ms // 2)
        self._behind = limits.before_ms - min(TIMESTAMP_MARGIN_MS, limits.before_ms // 2)
        self._clock = wall_clock

    def stamp(self, rtimes: list[int | None], clamped: Counter) -> list[int]:
        """The timestamps of records with these rtimes; counts each clamp in `clamped`."""
        now = round(self._clock() * 1000)
        low, high = max(1, now - self._behind), now + self._ahead  # 0 and below: never a time
        stamps = [t if t is not None and low <= t <= high else PRODUCE_TIME for t in rtimes]
        if PRODUCE_TIME in stamps:  # rare: say why, per record
            for rtime in rtimes:
                if rtime is None:
                    clamped[TimestampClamp.MISSING] += 1
                elif rtime > high:
                    clamped[TimestampClamp.FUTURE] += 1
                elif rtime < low:
                    clamped[TimestampClamp.PAST] += 1
        return stamps


def dead_letters(
    raw: bytes, error_class: str, message: str, account: str, seq: int, reason: str
) -> list[DeadLetter]:
    """The dead letter(s) of `raw`: one record, or numbered chunks above the message size."""
    headers: Headers = [
        ("error.class", error_class.encode()),
        ("error.message", message.encode("utf-8", "replace")),
        ("account", account.encode()),
        ("spool.sequence", str(seq).encode()),
        ("reason", str(reason).encode()),
    ]
    starts = range(0, max(len(raw), 1), DLQ_MAX_VALUE_BYTES)
    out = []
    for index, start in enumerate(starts):
        extra = [("chunk", f"{index + 1}/{len(starts)}".encode())] if len(starts) > 1 else []
        out.append(DeadLetter(raw[start : start + DLQ_MAX_VALUE_BYTES], headers + extra))
    return out


def progress_value(
    account: str,
    sequence: int,
    spool_id: str,
    committed_at: float,
    other_spools: Mapping[str, int] | None = None,
) -> bytes:
    """The progress record; `other_spools` (other spools' last commits, carried forward) only
    when the account has run on another spool."""
    record = {
        "account": account,
        "spool_seq": sequence,
        "spool_id": spool_id,
        "committed_at": committed_at,
    }
    if other_spools:
        record["other_spools"] = dict(other_spools)
    return json.dumps(record).encode()


def progress_partition(account: str, partitions: int) -> int:
    """Deterministic partition of an account's progress records (documented in the README)."""
    return zlib.crc32(account.encode()) % partitions


def rejected_reason(raw: bytes) -> DeadLetterReason:
    """Why a body the fetcher noted as bad is dead-lettered whole: a non-zero result, or not
    a get-rpt answer at all. Decided from the bytes, so it survives a restart."""
    try:
        document = json.loads(raw)
    except ValueError:
        return DeadLetterReason.INVALID_RESPONSE
    result = document.get("result") if isinstance(document, dict) else None
    if result not in (None, 0, "0") and isinstance(document.get("rpts"), list):
        return DeadLetterReason.REJECTED_RESULT
    return DeadLetterReason.INVALID_RESPONSE


def parsed_body(entry: EntryLike) -> ParsedBody:
    """The reports of an entry: the fetcher's memo, or the body parsed again (same bytes, same
    reports). Raises PlatformError when the body is not a get-rpt answer."""
    if isinstance(entry.memo, ParsedBody):
        return entry.memo
    return parse_body(entry.body)


class RecordBuilder:
    """Turns spool entries of one account into records; stateless between entries."""

    def __init__(
        self,
        account: str,
        normalizer: Normalizer,
        encoder: ValueEncoder,
        empty_custid_key: str,
        timestamps: RecordTimestamps | None = None,  # None: every record at its produce time
        headers: bool = True,  # kafka.record_headers
    ) -> None:
        self.account = account
        self.headers: Headers | None = record_headers(account, encoder) if headers else None
        self._normalizer, self._encoder = normalizer, encoder
        self._empty_custid_key = empty_custid_key
        self._timestamps = timestamps
        rtimes = timestamps is not None
        self._native = body_encoder(account, normalizer, encoder, empty_custid_key, rtimes=rtimes)

    def build(self, entry: EntryLike) -> EntryRecords:
        out = EntryRecords()
        if entry.note is not None:  # the fetcher already knew: the whole body, its reason
            reason = rejected_reason(entry.body)
            error = "InvalidResponseError"
            if reason == DeadLetterReason.REJECTED_RESULT:
                error = "PlatformResultError"
            self._dead_letter(out, entry, entry.body, error, entry.note, reason)
            return out
        if self._native is not None and self._native_build(out, entry):
            return out

        try:
            parsed = parsed_body(entry)
        except PlatformError as exc:
            reason = DeadLetterReason.INVALID_RESPONSE
            if isinstance(exc, PlatformResultError):
                reason = DeadLetterReason.REJECTED_RESULT
            self._dead_letter(out, entry, entry.body, type(exc).__name__, str(exc), reason)
            return out
        batch = self._normalizer.normalize_batch(parsed.reports, round(entry.fetched_at * 1000))
        records = self._encode(out, entry, batch.records)
        out.keys = record_keys(records, self._empty_custid_key)
        out.observed.update((r["rtime"], r["stime"], r["status"]) for r in records)
        if self._timestamps is not None:
            out.timestamps = self._timestamps.stamp([r["rtime"] for r in records], out.clamped)
        for rejected in [*parsed.rejects, *batch.rejected]:  # the parser's, the normalizer's
            error = rejected.error
            reason = DeadLetterReason.INVALID_REPORT
            self._dead_letter(out, entry, rejected.raw, type(error).__name__, str(error), reason)
        out.unknown_fields = batch.unknown_fields
        return out

    def read_ahead(self, raw: bytes, fetched_at_ms: int) -> tuple[int, object] | None:
        """For the fetch thread (PlatformClient's read_ahead): a body's records, built natively
        in the one pass that also judges it, where no report needs Python; (count, memo) for
        connector.codec.body, or None. build() takes the memo of an entry fetched at that time."""
        if self._native is None:
            return None
        body = self._native.encode(raw, fetched_at_ms, whole=True)
        return None if body is None else (len(body.values), (fetched_at_ms, body))

    def _native_build(self, out: EntryRecords, entry: EntryLike) -> bool:
        """The native path (connector.codec.native); False when it leaves this body to Python."""
        if getattr(entry.memo, "rejects", None):
            return False  # the parser set reports apart: the Python path keeps their order
        fetched_at_ms = round(entry.fetched_at * 1000)
        ahead = getattr(entry.memo, "ahead", None)
        if ahead is not None and ahead[0] == fetched_at_ms:
            body = ahead[1]  # read ahead on the fetch thread
        else:
            body = self._native.encode(entry.body, fetched_at_ms)
        if body is None:
            return False
        out.values, out.keys, out.unknown_fields = body.values, body.keys, body.unknown_fields
        out.observed.update(body.observed)
        if self._timestamps is not None:
            out.timestamps = self._timestamps.stamp(body.rtimes, out.clamped)
        for rejected in body.rejected:
            error, reason = rejected.error, DeadLetterReason.INVALID_REPORT
            self._dead_letter(out, entry, rejected.raw, type(error).__name__, str(error), reason)
        return True

    def _encode(self, out: EntryRecords, entry: EntryLike, records: list[dict]) -> list[dict]:
        """Encode a batch; should a record not fit the schema, dead-letter it, keep the rest."""
        try:
            out.values = self._encoder.encode_batch(records)
            return records
        except CodecError:
            kept = []
            for record in records:
                try:
                    out.values.extend(self._encoder.encode_batch([record]))
                    kept.append(record)
                except CodecError as exc:
                    raw = repr(record).encode()
                    reason = DeadLetterReason.UNENCODABLE_RECORD
                    self._dead_letter(out, entry, raw, type(exc).__name__, str(exc), reason)
            return kept

    def _dead_letter(
        self,
        out: EntryRecords,
        entry: EntryLike,
        raw: bytes,
        error_class: str,
        message: str,
        reason: DeadLetterReason,
    ) -> None:
        out.dead_letters += dead_letters(raw, error_class, message, self.account, entry.seq, reason)
        out.reasons[str(reason)] += 1
