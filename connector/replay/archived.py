"""`rpt-connector replay archive`: derive records again from the raw archive, exactly once.

Each archived body (connector.kafka.archive) goes through the same `RecordBuilder` as the live
pipeline — `report.parse_body`, the *current* normalizer, schema and value format, the same
keys and headers — and its records go to `--to-topic T`, its dead letters to T's dead-letter
topic (`--dlq-topic`, default `T.dlq`). The loop is `replay_loop.TransactionalCopy`: the
archive offsets commit in the producer's transaction, under the group.id and transactional.id
`rpt-replay-archive.T`; a rerun with the same flags resumes where a crash left off.
`--account`, `--since`, `--until` (ISO-8601 or epoch ms, on the `fetched_at` header) choose
bodies; the others are passed over (their offsets still commit). The run stops at the end
offsets the archive had when it started.

Parts are handed in (`ReplayParts`): tests give their own normalizer; the CLI builds the
configured one.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from confluent_kafka import Consumer, Message, Producer

from connector.codec.avro import ValueEncoder, make_value_encoder
from connector.codec.report import Normalizer
from connector.config.settings import Settings
from connector.kafka.archive import chunk_of
from connector.kafka.records import RecordBuilder, RecordTimestamps
from connector.kafka.topics import record_timestamps
from connector.replay.loop import (
    LoopHooks,
    Out,
    TransactionalCopy,
    consumer_config,
    producer_config,
    replay_ids,
)


def parse_time(text: str) -> int:
    """ISO-8601 (a zone-less time is UTC) or epoch milliseconds → epoch ms."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO-8601 nor epoch milliseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Window:
    """Which archived bodies a replay takes."""

    account: str | None = None
    since_ms: int | None = None  # fetched_at >= since
    until_ms: int | None = None  # fetched_at < until

    def admits(self, account: str, fetched_at_ms: int) -> bool:
        if self.account is not None and account != self.account:
            return False
        if self.since_ms is not None and fetched_at_ms < self.since_ms:
            return False
        return self.until_ms is None or fetched_at_ms < self.until_ms


@dataclass
class Summary:
    bodies: int = 0  # bodies (or dead letters) re-processed
    records: int = 0  # records written to the destination
    dead_letters: int = 0  # dead letters written (the replay's own)
    skipped: int = 0  # outside the window / not replayable
    seconds: float = 0.0
    left: dict[str, int] = field(default_factory=dict)  # replay dlq: still failing, per reason

    def line(self, what: str) -> str:
        text = (
            f"{what}: {self.bodies} bodies, {self.records} records, "
            f"{self.dead_letters} dead letters, {self.skipped} skipped, {self.seconds:.1f}s"
        )
        if self.left:
            text += "; still failing: " + ", ".join(
                f"{r}={n}" for r, n in sorted(self.left.items())
            )
        return text

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True, slots=True)
class ArchivedBody:
    """A body read back from the archive, shaped like a spool entry for the RecordBuilder."""

    seq: int
    fetched_at: float
    body: bytes
    note: None = None
    memo: None = None


def headers_of(message: Message) -> dict[str, bytes]:
    return {k: v or b"" for k, v in message.headers() or []}


class Builders:
    """One RecordBuilder per account, with the current normalizer and encoder."""

    def __init__(
        self,
        normalizer: Callable[[str], Normalizer],
        encoder: ValueEncoder,
        empty_key: str,
        timestamps: RecordTimestamps | None = None,  # kafka.record_timestamp, as live
        headers: bool = True,  # kafka.record_headers, as live
    ) -> None:
        self._normalizer, self._encoder, self._empty_key = normalizer, encoder, empty_key
        self._timestamps, self._headers = timestamps, headers
        self._cache: dict[str, RecordBuilder] = {}

    def __call__(self, account: str) -> RecordBuilder:
        if account not in self._cache:
            self._cache[account] = RecordBuilder(
                account, self._normalizer(account), self._encoder, self._empty_key,
                self._timestamps, self._headers,
            )  # fmt: skip
        return self._cache[account]


def derive(
    builder: RecordBuilder, entry: object, topic: str, dlq: str, summary: Summary
) -> list[Out]:
    """What the live pipeline's `_send` produces for one entry, as Out records."""
    built = builder.build(entry)
    stamps = built.timestamps or [0] * len(built.values)  # 0: the produce time
    records = zip(built.values, built.keys, stamps, strict=True)
    outs = [Out(topic, v, k, builder.headers, t) for v, k, t in records]
    outs += [Out(dlq, d.value, None, d.headers) for d in built.dead_letters]
    summary.bodies += 1
    summary.records += len(built.values)
    summary.dead_letters += len(built.dead_letters)
    return outs


class ArchiveTransform:
    """Archive message → the records and dead letters the current code derives from it."""

    def __init__(
        self, builders: Builders, topic: str, dlq: str, window: Window, dry_run: bool = False
    ) -> None:
        self.topic, self.dlq, self.window, self.dry_run = topic, dlq, window, dry_run
        self.summary = Summary()
        self._builders = builders
        self._parts: dict[int, list[bytes]] = {}  # partition → chunks of the body being read

    def __call__(self, message: Message) -> list[Out] | None:
        headers = headers_of(message)
        index, total = chunk_of(headers)
        parts = self._parts.setdefault(message.partition(), [])
        if index == 1:
            parts.clear()
        parts.append(message.value() or b"")
        if len(parts) != index:  # its first chunks are gone (retention): not a whole body
            parts.clear()
            self.summary.skipped += index == total  # one body skipped, counted at its end
            return []
        if index < total:
            return None  # the rest follows in the same partition, same transaction
        body = b"".join(parts)
        parts.clear()
        account = headers.get("account", b"").decode()
        fetched_at_ms = int(headers.get("fetched_at", b"0") or 0)
        if not self.window.admits(account, fetched_at_ms):
            self.summary.skipped += 1
            return []
        entry = ArchivedBody(
            int(headers.get("spool.sequence", b"0") or 0), fetched_at_ms / 1000, body
        )
        outs = derive(self._builders(account), entry, self.topic, self.dlq, self.summary)
        return [] if self.dry_run else outs


@dataclass
class ReplayParts:
    """What a replay uses; `from_settings` builds the configured ones."""

    normalizer: Callable[[str], Normalizer]
    encoder: Callable[[str], ValueEncoder]  # destination topic → encoder
    consumer_factory: Callable[[dict], Consumer] = Consumer
    producer_factory: Callable[[dict], Producer] = Producer
    hooks: LoopHooks = field(default_factory=LoopHooks)

    @classmethod
    def from_settings(cls, settings: Settings, hooks: LoopHooks | None = None) -> ReplayParts:
        timezone = settings.platform.timezone
        return cls(
            normalizer=lambda account: Normalizer(account, timezone),
            encoder=lambda topic: make_value_encoder(
                settings.kafka, settings.schema_registry, topic
            ),
            hooks=hooks or LoopHooks(),
        )


def run_copy(
    settings: Settings,
    parts: ReplayParts,
    source: str,
    ids: str,
    transform: Callable,
    *,
    batch: int,
    dry_run: bool,
) -> TransactionalCopy:
    """One TransactionalCopy of `source` under the group/transactional id `ids`."""
    kafka = settings.kafka
    consumer = parts.consumer_factory(consumer_config(kafka, ids))
    producer = parts.producer_factory(producer_config(kafka, ids))
    copy = TransactionalCopy(
        consumer, producer, source, batch_messages=batch, hooks=parts.hooks, dry_run=dry_run
    )
    try:
        copy.run(transform)
    finally:
        consumer.close()
        producer.flush(10)
    return copy


def replay_archive(
    settings: Settings,
    parts: ReplayParts,
    *,
    to_topic: str,
    dlq_topic: str | None = None,
    window: Window = Window(),
    dry_run: bool = False,
    batch: int = 200,
) -> Summary:
    """Derive records again from `kafka.archive_topic` into `to_topic`, exactly once."""
    source = settings.kafka.archive_topic
    if not source:
        raise ValueError("kafka.archive_topic is empty: there is no archive to replay")
    if to_topic in settings.topics:
        raise ValueError(f"--to-topic {to_topic} is a topic the connector writes; use a new one")
    dlq = dlq_topic or f"{to_topic}.dlq"
    if not dry_run:
        from connector.kafka.topics import ensure_topics

        ensure_topics(settings.kafka, [to_topic, dlq])
    began = time.monotonic()
    kafka = settings.kafka
    stamps = None if dry_run else record_timestamps(kafka, to_topic)
    builders = Builders(
        parts.normalizer, parts.encoder(to_topic), kafka.empty_custid_key, stamps,
        kafka.record_headers,
    )  # fmt: skip
    transform = ArchiveTransform(builders, to_topic, dlq, window, dry_run)
    ids = replay_ids("archive", to_topic)
    run_copy(settings, parts, source, ids, transform, batch=batch, dry_run=dry_run)
    transform.summary.seconds = time.monotonic() - began
    return transform.summary


class ProgressBar:
    """A one-line bar on stderr, drawn only on a terminal, at most 5 times a second."""

    def __init__(self, what: str, stream: TextIO = sys.stderr) -> None:
        self._what, self._stream = what, stream
        self._enabled = stream.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self._enabled or (now - self._last < 0.2 and done < total):
            return
        self._last = now
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        self._stream.write(f"\r{self._what} [{bar:<30}] {done}/{total} messages {share:6.1%}")
        self._stream.flush()

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\n")
