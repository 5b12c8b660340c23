"""Kafka side of the pipeline: topics, the producer of one account, and committed progress.

Two delivery modes share one interface, so the pipeline loop has a single shape:

    exactly_once   begin() → produce()* → commit(progress)   one Kafka transaction; the progress
                   record {account, spool_seq, spool_id} commits atomically with the reports
                   (the pattern of KIP-618)
    at_least_once  begin() is a no-op; commit() flushes, checks every delivery, then writes the
                   progress record; a crash between the two re-sends (duplicates, never loss)

librdkafka's transactional errors are classified as it documents them: `retriable()` → call the
same operation again; `txn_requires_abort()` → abort and re-send the same spool entries;
`fatal()` (fenced, unknown producer id, …) → the producer is finished: a `PublishError`
makes the pipeline recreate it and re-read progress; a `FencedError` (another instance runs
this account) stops the account.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from connector.config import KafkaSettings
from connector.errors import FencedError, PublishError, TransactionAbortedError

log = logging.getLogger("connector.publisher")

Headers = list[tuple[str, bytes]]
_BUFFER_FULL_WAIT = 0.05
_RETRIABLE_ATTEMPTS = 20


def producer_config(
    kafka: KafkaSettings,
    account: str,
    on_stats: Callable[[str], None] | None,
    on_error: Callable[[KafkaError], None],
) -> dict:
    """librdkafka properties: the operator's, unchanged, over defaults that fit the mode."""
    config: dict = {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "statistics.interval.ms": 15_000,
        "client.id": f"rpt-connector-{account}",
    }
    if kafka.delivery == "exactly_once":
        config["transactional.id"] = f"{kafka.transactional_id_prefix}{account}"
        config["transaction.timeout.ms"] = 60_000
        config["message.timeout.ms"] = 45_000
    else:
        config["delivery.report.only.error"] = True
    config.update(kafka.producer)
    config["error_cb"] = on_error
    if on_stats is not None:
        config["stats_cb"] = on_stats
    return config


class AccountPublisher:
    """The producer of one account, in either delivery mode."""

    def __init__(
        self,
        kafka: KafkaSettings,
        account: str,
        *,
        on_stats: Callable[[str], None] | None = None,
        on_reachability: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        self.account = account
        self.transactional = kafka.delivery == "exactly_once"
        self._kafka = kafka
        self._on_reachability = on_reachability or (lambda _ok, _why: None)
        self._progress = ProgressTopic(kafka)
        self._delivery_error: KafkaError | None = None
        config = producer_config(kafka, account, on_stats, self._on_error)
        if not self.transactional:
            config["on_delivery"] = self._on_delivery
        self._producer = Producer(config)
        self._in_transaction = False
        self._fenced = False
        self.spool_id = ""  # the spool folder whose sequence numbers this producer commits

    def init(self, timeout: float = 60.0) -> Progress:
        """Fence older instances (exactly_once) and return the account's committed progress."""
        if self.transactional:
            self._call(self._producer.init_transactions, timeout)
        return self._progress.read(self.account)

    def begin(self) -> None:
        if self.transactional and not self._in_transaction:
            self._call(self._producer.begin_transaction)
        self._in_transaction = True

    def produce(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers, partition: int = -1
    ) -> None:
        try:
            try:
                self._producer.produce(topic, value, key, partition, headers=headers)
            except BufferError:
                self._wait_for_room(topic, value, key, headers, partition)
        except KafkaException as exc:
            raise self._translate(exc) from exc

    def produce_many(
        self, topic: str, values: list[bytes], keys: list[bytes | None], headers: Headers
    ) -> None:
        """The hot path: one produce() per record, one poll(0) per call."""
        produce = self._producer.produce
        try:
            for value, key in zip(values, keys, strict=True):
                try:
                    produce(topic, value, key, headers=headers)
                except BufferError:
                    self._wait_for_room(topic, value, key, headers)
        except KafkaException as exc:
            raise self._translate(exc) from exc
        self._producer.poll(0)

    def commit(self, sequence: int) -> None:
        """Make everything produced since begin() and the progress record durable together."""
        progress = self._progress.record(self.account, sequence, self.spool_id)
        if self.transactional:
            self._produce_progress(progress)
            self._call(self._producer.commit_transaction)
        else:
            self._flush_checked()
            self._produce_progress(progress)
            self._flush_checked()
        self._in_transaction = False
        self._on_reachability(True, None)

    def _produce_progress(self, progress: ProgressRecord) -> None:
        self.produce(self._progress.topic, progress.value, progress.key, [], progress.partition)

    def abort(self) -> None:
        """Drop the open transaction; its spool entries will be sent again."""
        if self.transactional and self._in_transaction:
            self._call(self._producer.abort_transaction)
        else:
            self._producer.purge(in_queue=True, in_flight=False)
            self._producer.flush(5)
        self._delivery_error = None
        self._in_transaction = False

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered within `timeout`; a failed producer just goes away."""
        try:
            self._producer.flush(timeout)
        except KafkaException as exc:
            log.debug("account %s: producer closed in error: %s", self.account, exc)

    def _wait_for_room(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers, partition: int = -1
    ) -> None:
        # The local queue is full: serve delivery reports until there is room again.
        while True:
            self._producer.poll(_BUFFER_FULL_WAIT)
            try:
                self._producer.produce(topic, value, key, partition, headers=headers)
                return
            except BufferError:
                continue

    def _flush_checked(self) -> None:
        timeout_ms = float(self._kafka.producer.get("message.timeout.ms", 300_000))
        remaining = self._producer.flush(timeout_ms / 1000)
        if remaining:
            raise TransactionAbortedError(
                f"{remaining} records still undelivered after the flush timeout"
            )
        if self._delivery_error is not None:
            error, self._delivery_error = self._delivery_error, None
            raise TransactionAbortedError(f"delivery failed: {error.str()}")

    def _call(self, operation: Callable, *args: object) -> None:
        """Run a transactional API call, retrying what librdkafka says is retriable."""
        for attempt in range(1, _RETRIABLE_ATTEMPTS + 1):
            try:
                operation(*args)
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.retriable() and not error.fatal() and attempt < _RETRIABLE_ATTEMPTS:
                    log.warning(
                        "account %s: %s is retriable (attempt %d): %s",
                        self.account,
                        operation.__name__,
                        attempt,
                        error.str(),
                    )
                    time.sleep(min(0.1 * 2**attempt, 5.0))
                    continue
                raise self._translate(exc) from exc

    def _translate(self, exc: KafkaException) -> PublishError:
        error: KafkaError = exc.args[0]
        if self._fenced or error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED):
            return FencedError(
                f"account {self.account}: fenced by a newer instance ({error.str()})"
            )
        if error.txn_requires_abort():
            return TransactionAbortedError(
                f"account {self.account}: transaction must abort: {error.str()}"
            )
        return PublishError(f"account {self.account}: Kafka error: {error.str()}")

    def _on_error(self, error: KafkaError) -> None:
        # A fatal fencing shows up here first; later calls only say "Local: Fatal error".
        if error.fatal() and "fenced" in error.str().lower():
            self._fenced = True
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._on_reachability(False, error.str())
        log.warning("account %s: Kafka: %s", self.account, error.str())

    def _on_delivery(self, error: KafkaError | None, _message: object) -> None:
        if error is not None and self._delivery_error is None:
            self._delivery_error = error


@dataclass(frozen=True, slots=True)
class Progress:
    """What Kafka says is committed for an account: a sequence of the spool with this id."""

    sequence: int
    spool_id: str  # "" for no record, or one written before spool ids existed


@dataclass(frozen=True, slots=True)
class ProgressRecord:
    key: bytes
    value: bytes
    partition: int


class ProgressTopic:
    """The compacted topic that says, per account, which spool sequence is safely in Kafka."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.topic = kafka.progress_topic
        self._kafka = kafka
        self._partitions: int | None = None

    def record(self, account: str, sequence: int, spool_id: str) -> ProgressRecord:
        if self._partitions is None:
            raise PublishError("progress topic not read yet: call init() first")
        value = json.dumps(
            {
                "account": account,
                "spool_seq": sequence,
                "spool_id": spool_id,
                "committed_at": time.time(),
            }
        )
        partition = progress_partition(account, self._partitions)
        return ProgressRecord(account.encode(), value.encode(), partition)

    def read(self, account: str, timeout: float = 60.0) -> Progress:
        """The last committed progress of `account`; sequence 0 when it never committed."""
        consumer = Consumer(self._consumer_config("read_committed"))
        try:
            self._partitions = _partition_count(consumer, self.topic)
            partition = TopicPartition(self.topic, progress_partition(account, self._partitions))
            end = self._high_watermark(partition)
            return _last_sequence(consumer, partition, end, account.encode(), timeout)
        except KafkaException as exc:
            raise PublishError(f"cannot read progress topic {self.topic}: {exc}") from exc
        finally:
            consumer.close()

    def _high_watermark(self, partition: TopicPartition) -> int:
        # A read_committed consumer's watermark query answers the last *stable* offset, which
        # another account's open transaction can hold below our newest commit; ask for the
        # true end with a read_uncommitted consumer, then read (committed only) up to it.
        consumer = Consumer(self._consumer_config("read_uncommitted"))
        try:
            return consumer.get_watermark_offsets(partition, timeout=10)[1]
        finally:
            consumer.close()

    def _consumer_config(self, isolation: str) -> dict:
        return client_config(self._kafka) | {
            "group.id": "rpt-connector-progress-reader",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": False,
        }


def _is_client_wide(key: str) -> bool:
    """librdkafka properties that also apply to the progress consumer (connection, security)."""
    return key.startswith(("bootstrap.", "security.", "ssl.", "sasl.", "client.dns", "socket."))


def client_config(kafka: KafkaSettings) -> dict:
    """The connection and security part of kafka.producer, for admin clients and consumers."""
    return {k: v for k, v in kafka.producer.items() if _is_client_wide(k)}


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
                best = _progress(message.value(), partition)
        if consumer.position([partition])[0].offset >= end:
            return best
        if time.monotonic() > deadline:
            raise PublishError(
                f"timed out reading {partition.topic}[{partition.partition}] up to offset {end}"
                " (another instance's transaction still open?)"
            )


def _progress(value: bytes, partition: TopicPartition) -> Progress:
    try:
        record = json.loads(value)
        sequence, spool_id = record["spool_seq"], str(record.get("spool_id", ""))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PublishError(
            f"progress topic {partition.topic}[{partition.partition}] holds a record that is not "
            f"a progress record ({exc!r}); is another application writing to it?"
        ) from exc
    if not isinstance(sequence, int) or sequence < 0:
        raise PublishError(f"progress topic {partition.topic}: bad spool_seq {sequence!r}")
    return Progress(sequence, spool_id)


def progress_partition(account: str, partitions: int) -> int:
    """Deterministic partition of an account's progress records (documented in the README)."""
    return zlib.crc32(account.encode()) % partitions


def ensure_topics(kafka: KafkaSettings, topics: list[str], timeout: float = 30.0) -> None:
    """Create the data, dead-letter and progress topics if absent, or fail naming the missing."""
    admin = AdminClient(client_config(kafka))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise PublishError(
            f"cannot reach Kafka at {kafka.producer['bootstrap.servers']}: {exc.args[0].str()}"
        ) from exc
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return
    if not kafka.create_topics:
        raise PublishError(f"topics missing and kafka.create_topics = false: {', '.join(missing)}")
    new = [_new_topic(kafka, t) for t in missing]
    for topic, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic %s", topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise PublishError(f"cannot create topic {topic}: {exc.args[0].str()}") from exc


def _new_topic(kafka: KafkaSettings, topic: str) -> NewTopic:
    config = {}
    if topic == kafka.progress_topic:
        config = {
            "cleanup.policy": "compact",
            "segment.ms": "600000",
            "min.cleanable.dirty.ratio": "0.1",
        }
    return NewTopic(
        topic,
        num_partitions=kafka.topic_partitions,
        replication_factor=kafka.replication_factor,
        config=config,
    )
