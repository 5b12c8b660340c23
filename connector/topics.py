"""librdkafka client settings, defined once, and the topics the connector writes.

`client_config` is the connection and security part of `kafka.producer`, shared by every
client (producer, progress consumer, admin, group member); each gets its own `logger`, so
librdkafka's lines go through Python logging. `producer_config` adds the producer defaults
for the delivery mode; the operator's own properties always win.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from connector.config import KafkaSettings
from connector.errors import KafkaUnreachableError, PublishError
from connector.logs import librdkafka_logger

log = logging.getLogger("connector.topics")
# One logger per client name for the whole process: clients that are created again and again
# (progress readers, a producer after a restart) share one summary of repeated errors.
client_logger = functools.cache(librdkafka_logger)

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
    else:
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
    return NewTopic(
        topic,
        num_partitions=kafka.topic_partitions,
        replication_factor=kafka.replication_factor,
        config=config,
    )
