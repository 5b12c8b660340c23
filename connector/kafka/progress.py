"""Reading an account's committed progress from the compacted progress topic.

The progress record commits in the same transaction as the reports it covers, so the last
one a read_committed consumer sees for an account's key is exactly what Kafka holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from connector.config.settings import KafkaSettings
from connector.errors import KafkaUnreachableError, PublishError
from connector.kafka.records import progress_partition
from connector.kafka.topics import client_config

MAX_OTHER_SPOOLS = 32  # how many other spools' last commits a progress record carries


@dataclass(frozen=True, slots=True)
class Progress:
    """What Kafka says is committed for an account: a sequence of the spool with this id, and
    the last sequence every other spool the account ran on committed (carried forward, so a
    spool that comes back knows which of its own entries were published before it left)."""

    sequence: int
    spool_id: str  # "" for no record, or one written before spool ids existed
    other_spools: tuple[tuple[str, int], ...] = ()  # (spool id, its last committed sequence)

    def committed_by(self, spool_id: str) -> int:
        """The last sequence of `spool_id`'s numbering that Kafka holds; 0 when none."""
        if spool_id == self.spool_id:
            return self.sequence
        return dict(self.other_spools).get(spool_id, 0)

    def carried_for(self, spool_id: str) -> dict[str, int]:
        """What the next progress record written from `spool_id` carries: every other spool's
        last commit (the newest MAX_OTHER_SPOOLS, the one read here last)."""
        carried = dict(self.other_spools)
        if self.spool_id:
            carried.pop(self.spool_id, None)
            carried[self.spool_id] = self.sequence
        carried.pop(spool_id, None)
        return dict(list(carried.items())[-MAX_OTHER_SPOOLS:])


class ProgressTopic:
    """The compacted topic that says, per account, which spool sequence is safely in Kafka."""

    def __init__(
        self, kafka: KafkaSettings, consumer_factory: Callable[[dict], Consumer] = Consumer
    ) -> None:
        self.topic = kafka.progress_topic
        self.partitions: int | None = None
        self._kafka = kafka
        self._consumer_factory = consumer_factory

    def read(self, account: str, timeout: float = 60.0) -> Progress:
        """The last committed progress of `account`; sequence 0 when it never committed."""
        consumer = self._consumer_factory(self._consumer_config("read_committed"))
        try:
            self.partitions = _partition_count(consumer, self.topic)
            partition = TopicPartition(self.topic, progress_partition(account, self.partitions))
            end = self._high_watermark(partition)
            return _last_sequence(consumer, partition, end, account.encode(), timeout)
        except KafkaException as exc:
            raise KafkaUnreachableError(f"cannot read progress topic {self.topic}: {exc}") from exc
        finally:
            consumer.close()

    def _high_watermark(self, partition: TopicPartition) -> int:
        # A read_committed consumer's watermark query answers the last *stable* offset, which
        # another account's open transaction can hold below our newest commit; ask for the
        # true end with a read_uncommitted consumer, then read (committed only) up to it.
        consumer = self._consumer_factory(self._consumer_config("read_uncommitted"))
        try:
            return consumer.get_watermark_offsets(partition, timeout=10)[1]
        finally:
            consumer.close()

    def _consumer_config(self, isolation: str) -> dict:
        return client_config(self._kafka, "progress") | {
            "group.id": "rpt-connector-progress-reader",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": False,
        }


def _partition_count(consumer: Consumer, topic: str) -> int:
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    if metadata.error is not None:
        raise PublishError(f"progress topic {topic}: {metadata.error.str()}")
    return len(metadata.partitions)


def _last_sequence(
    consumer: Consumer, partition: TopicPartition, end: int, key: bytes, timeout: float
) -> Progress:
    best, deadline = Progress(0, ""), time.monotonic() + timeout
    if end == 0:
        return best
    consumer.assign([TopicPartition(partition.topic, partition.partition, OFFSET_BEGINNING)])
    while True:
        for message in consumer.consume(1000, 0.2):
            if message.error() is None and message.key() == key and message.value():
                best = parse_progress(message.value(), f"{partition.topic}[{partition.partition}]")
        if consumer.position([partition])[0].offset >= end:
            return best
        if time.monotonic() > deadline:
            raise KafkaUnreachableError(
                f"timed out reading {partition.topic}[{partition.partition}] up to offset {end}"
                " (another instance's transaction still open?)"
            )


def parse_progress(value: bytes, where: str) -> Progress:
    """A progress record's value (JSON); `where` names the topic and partition in errors."""
    try:
        record = json.loads(value)
        sequence, spool_id = record["spool_seq"], str(record.get("spool_id", ""))
        others = record.get("other_spools") or {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PublishError(
            f"progress topic {where} holds a record that is not a progress record ({exc!r}); "
            "is another application writing to it?"
        ) from exc
    if not _is_sequence(sequence):
        raise PublishError(f"progress topic {where}: bad spool_seq {sequence!r}")
    if not isinstance(others, Mapping) or not all(map(_is_sequence, others.values())):
        raise PublishError(f"progress topic {where}: bad other_spools {others!r}")
    return Progress(sequence, spool_id, tuple((str(k), v) for k, v in others.items()))


def _is_sequence(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
