"""A real Kafka broker, talked to directly: create topics, produce, read everything back, delete.

The harness reads topics with this to judge a run; tests use it to set a broker up."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

Bytes = bytes | str | None
Headers = Sequence[tuple[str, Bytes]]
# A record to produce: a bare value, (key, value) or (key, value, headers).
RecordLike = Bytes | tuple[Bytes, Bytes] | tuple[Bytes, Bytes, Headers]


@dataclass(frozen=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp: tuple[int, int] | None = None  # (confluent_kafka.TIMESTAMP_* type, epoch ms)


def unique_topic(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create `name` and wait until every partition has a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
    futures = admin.create_topics([topic], operation_timeout=timeout, request_timeout=timeout)
    futures[name].result(timeout=timeout)
    # CreateTopics returns once the controller commits; brokers may serve metadata a moment later.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
        if (
            meta is not None
            and meta.error is None
            and len(meta.partitions) == partitions
            and all(p.leader >= 0 for p in meta.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has no leaders after {timeout}s")


def _split(record: RecordLike) -> tuple[Bytes, Bytes, Headers | None]:
    if isinstance(record, tuple):
        if len(record) == 2:
            return record[0], record[1], None
        return record[0], record[1], record[2]
    return None, record, None


def produce(
    bootstrap: str, topic: str, records: Iterable[RecordLike], timeout: float = 30.0
) -> int:
    """Produce non-transactionally (idempotent, acks=all); raise on any delivery failure."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    count = 0
    for record in records:
        key, value, headers = _split(record)
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        producer.poll(0)
        count += 1
    remaining = producer.flush(timeout)
    if remaining or errors:
        raise RuntimeError(f"produce to {topic}: {remaining} undelivered, errors={errors[:3]}")
    return count


def _partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    meta = consumer.list_topics(topic=topic, timeout=timeout).topics[topic]
    if meta.error is not None:
        raise RuntimeError(f"topic {topic}: {meta.error}")
    return sorted(meta.partitions)


def consume_all(
    bootstrap: str,
    topic: str,
    timeout: float = 30.0,
    isolation: str = "read_committed",
    quiet: float = 3.0,
) -> list[ConsumedRecord]:
    """Every record currently in `topic`, all partitions, from the beginning.

    The end of each partition is the watermark at call time, as seen under `isolation`: the
    high watermark for read_uncommitted, the last stable offset for read_committed (so an open
    transaction does not make this wait). Positions can stop short of that end when the tail
    is a transaction marker or aborted batch, so `quiet` seconds without data also ends it.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"consume-all-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        partitions = _partitions(consumer, topic, timeout)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        return _drain(consumer, topic, ends, timeout, quiet)
    finally:
        consumer.close()


def _drain(
    consumer: Consumer, topic: str, ends: dict[int, int], timeout: float, quiet: float
) -> list[ConsumedRecord]:
    records: list[ConsumedRecord] = []
    deadline = time.monotonic() + timeout
    last_data = time.monotonic()
    pending = {p for p, end in ends.items() if end > 0}
    while pending and time.monotonic() < deadline and time.monotonic() - last_data < quiet:
        msg = consumer.poll(0.2)
        if msg is not None:
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"consume from {topic}: {msg.error()}")
            last_data = time.monotonic()
            records.append(_record(msg))
        positions = consumer.position([TopicPartition(topic, p) for p in pending])
        pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
    if pending and time.monotonic() >= deadline:
        raise TimeoutError(f"consume from {topic}: partitions {sorted(pending)} not drained")
    return records


def _record(msg: Message) -> ConsumedRecord:
    return ConsumedRecord(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=list(msg.headers() or []),
        timestamp=msg.timestamp(),
    )


def delete_topics(bootstrap: str, topics: list[str], timeout: float = 30.0) -> None:
    """Delete `topics`; one that was never created (a clean run's dead-letter topic) is no error."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=timeout).values():
        with contextlib.suppress(KafkaException):
            future.result()
