"""librdkafka client settings, defined once, and the topics the connector writes.

`client_config` is the connection and security part of `kafka.producer`, shared by every
client (producer, progress consumer, admin, group member); each gets its own `logger`, so
librdkafka's lines go through Python logging. `producer_config` adds the producer defaults
for the delivery mode; the operator's own properties always win. `record_timestamps` reads
how far from the broker's clock a data topic accepts a record timestamp
(kafka.record_timestamp = "rtime").
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from connector.config.settings import KafkaSettings
from connector.errors import KafkaUnreachableError, PublishError
from connector.kafka.records import RecordTimestamps, TimestampLimits
from connector.observe.logs import librdkafka_logger

log = logging.getLogger("connector.topics")
# One logger per client name for the whole process: clients that are created again and again
# (progress readers, a producer after a restart) share one summary of repeated errors.
client_logger = functools.cache(librdkafka_logger)

_AFTER, _BEFORE = "message.timestamp.after.max.ms", "message.timestamp.before.max.ms"
_DIFFERENCE = "message.timestamp.difference.max.ms"  # brokers before 3.6: both directions
UNREAD_LIMIT_MS = 3_600_000  # either way, when the topic's limits cannot be read
TRANSACTION_TIMEOUT_MS = 60_000  # librdkafka default is 60 s too; said here because we rely on it
MESSAGE_TIMEOUT_MS = 45_000  # below the transaction timeout: no delivery outlives its txn


def _is_client_wide(key: str) -> bool:
    """librdkafka properties that also apply to consumers and admin clients."""
    return key.startswith(("bootstrap.", "security.", "ssl.", "sasl.", "client.dns", "socket."))


def client_config(kafka: KafkaSettings, client: str = "admin") -> dict:
    """The connection and security part of kafka.producer, plus this client's logger."""
    config = {k: v for k, v in kafka.producer.items() if _is_client_wide(k)}
    config["logger"] = client_logger(client)
    return config


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
        config["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
        config["message.timeout.ms"] = MESSAGE_TIMEOUT_MS
    # No delivery report per delivered record: exactly_once learns a failed delivery from the
    # commit, at_least_once from the reports of failures alone (AccountPublisher._on_delivery).
    config["delivery.report.only.error"] = True
    config.update(kafka.producer)
    config["error_cb"] = on_error
    config["logger"] = client_logger(f"producer-{account}")
    if on_stats is not None:
        config["stats_cb"] = on_stats
    return config


def transaction_timeout(kafka: KafkaSettings) -> float:
    """transaction.timeout.ms as the broker applies it to our transactions, in seconds."""
    return float(kafka.producer.get("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)) / 1000


def ensure_topics(kafka: KafkaSettings, topics: list[str], timeout: float = 30.0) -> None:
    """Create the data, dead-letter and progress topics if absent, or fail naming the missing."""
    admin = AdminClient(client_config(kafka))
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnreachableError(
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
    elif topic == kafka.archive_topic:  # raw JSON bodies: zstd makes them small (README)
        config = {
            "compression.type": "zstd",
            "cleanup.policy": "delete",
            "retention.ms": str(round(kafka.archive_retention * 1000)),
        }
    return NewTopic(
        topic,
        num_partitions=kafka.topic_partitions,
        replication_factor=kafka.replication_factor,
        config=config,
    )


def record_timestamps(
    kafka: KafkaSettings,
    topic: str,
    timeout: float = 5.0,
    admin_factory: Callable[[dict], AdminClient] = AdminClient,
) -> RecordTimestamps | None:
    """What sets the data records' timestamps: None (their produce time), or, for
    kafka.record_timestamp = "rtime", their rtimes within the limits `topic` has now."""
    if kafka.record_timestamp != "rtime":
        return None
    return RecordTimestamps(timestamp_limits(admin_factory(client_config(kafka)), topic, timeout))


def timestamp_limits(admin: AdminClient, topic: str, timeout: float) -> TimestampLimits:
    """The topic's message.timestamp.after/before.max.ms (or difference.max.ms on a broker
    before 3.6). Unreadable: 1 h both ways, Kafka 4's default ahead and, behind, a guess on
    the safe side (a refused timestamp would fail the transaction at every retry)."""
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        future = admin.describe_configs([resource], request_timeout=timeout)[resource]
        entries = {name: entry.value for name, entry in future.result(timeout).items()}
        after = int(entries[_AFTER] if _AFTER in entries else entries[_DIFFERENCE])
        before = int(entries[_BEFORE] if _BEFORE in entries else entries[_DIFFERENCE])
    except (KafkaException, KeyError, ValueError, TypeError, TimeoutError) as exc:
        limits = TimestampLimits(after_ms=UNREAD_LIMIT_MS, before_ms=UNREAD_LIMIT_MS)
        log.warning(
            "topic %s: cannot read %s/%s (%s): records get their rtime only within %d ms of "
            "now, else their produce time", topic, _AFTER, _BEFORE, exc, UNREAD_LIMIT_MS,
        )  # fmt: skip
        return limits
    log.info("topic %s accepts record timestamps %d ms ahead, %d ms behind", topic, after, before)
    return TimestampLimits(after_ms=after, before_ms=before)
