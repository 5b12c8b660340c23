"""Kept for the tests that import it: the Kafka helpers live in devharness/kafka.py."""

from devharness.kafka import (
    ConsumedRecord,
    RecordLike,
    consume_all,
    create_topic,
    delete_topics,
    produce,
    unique_topic,
)

__all__ = [
    "ConsumedRecord",
    "RecordLike",
    "consume_all",
    "create_topic",
    "delete_topics",
    "produce",
    "unique_topic",
]
