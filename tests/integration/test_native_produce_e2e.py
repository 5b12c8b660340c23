"""Native produce (connector/kafka/native_produce.py) against a real broker: the records one
`RecordSender.send` queues are, read back, exactly what one `Producer.produce()` per record
sends — keys (None and empty kept apart), values, headers, timestamps, partitions — inside
the producer's own transaction: an aborted transaction's records are never seen by a
read_committed consumer, a committed one's are."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import KafkaException, Producer
from kafka_helpers import consume_all, create_topic, unique_topic

from connector.config.settings import KafkaSettings
from connector.kafka import native_produce
from connector.kafka.native_produce import record_sender, send_all
from connector.kafka.topics import producer_config

pytestmark = pytest.mark.integration

HEADERS = [("account", b"main"), ("content-type", b"application/x"), ("empty", b"")]


def _producer(bootstrap: str, account: str) -> tuple[Producer, dict]:
    kafka = KafkaSettings(
        producer={"bootstrap.servers": bootstrap},
        transactional_id_prefix=f"native-produce-{uuid.uuid4().hex[:8]}-",
    )
    config = producer_config(kafka, account, None, lambda error: None)
    producer = Producer(config)
    producer.init_transactions(30)
    return producer, config


def _records(n: int) -> tuple[list[bytes], list[bytes | None], list[int]]:
    values = [f"value-{i}".encode() * (1 + i % 7) for i in range(n)]
    keys: list[bytes | None] = [f"custid-{i % 13}".encode() for i in range(n)]
    keys[3], keys[5] = None, b""  # no key, and an empty one: different records in Kafka
    stamps = [1_700_000_000_000 + i for i in range(n)]
    return values, keys, stamps


def _committed(bootstrap: str, topic: str, expected: int) -> list:
    """Every committed record of `topic`, read again until `expected` are there (or 60 s).

    commit_transaction returns once the coordinator has the commit; the markers reach the
    partitions just after, so a read_committed read at once can end at the old stable offset
    (seen on a freshly started broker)."""
    deadline = time.monotonic() + 60
    records = consume_all(bootstrap, topic, timeout=60)
    while len(records) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        records = consume_all(bootstrap, topic, timeout=60)
    return records


def _seen(bootstrap: str, topic: str, expected: int) -> list[tuple]:
    """(key, value, headers, timestamp, partition); the partition only where the key picks
    it (librdkafka places a record without a key, or with an empty one, at random)."""
    records = _committed(bootstrap, topic, expected)
    seen = [
        (r.key, r.value, tuple(r.headers), r.timestamp, r.partition if r.key else None)
        for r in records
    ]
    return sorted(seen, key=repr)


def test_native_records_are_those_of_produce(kafka_bootstrap: str) -> None:
    native_topic, python_topic = unique_topic("native"), unique_topic("python")
    for topic in (native_topic, python_topic):
        create_topic(kafka_bootstrap, topic, partitions=3)
    values, keys, stamps = _records(500)

    producer, config = _producer(kafka_bootstrap, "native")
    sender = record_sender(producer, config, native_topic)
    assert sender is not None, "the native sender must check out against a real Producer"
    producer.begin_transaction()
    send_all(sender, producer.poll, values, keys, HEADERS, -1, stamps)
    producer.commit_transaction(30)

    reference, _ = _producer(kafka_bootstrap, "python")
    reference.begin_transaction()
    for value, key, stamp in zip(values, keys, stamps, strict=True):
        reference.produce(python_topic, value, key, headers=HEADERS, timestamp=stamp)
    reference.commit_transaction(30)

    native = _seen(kafka_bootstrap, native_topic, 500)
    python = _seen(kafka_bootstrap, python_topic, 500)
    assert len(native) == 500
    assert native == python
    assert (None, values[3]) in {(k, v) for k, v, *_ in native}
    assert (b"", values[5]) in {(k, v) for k, v, *_ in native}


def test_an_aborted_native_batch_is_never_read(kafka_bootstrap: str) -> None:
    topic = unique_topic("native")
    create_topic(kafka_bootstrap, topic, partitions=1)
    producer, config = _producer(kafka_bootstrap, "abort")
    sender = record_sender(producer, config, topic)
    assert sender is not None
    producer.begin_transaction()
    send_all(sender, producer.poll, [b"aborted"] * 50, [b"k"] * 50, None, 0, None)
    producer.abort_transaction(30)
    producer.begin_transaction()
    send_all(sender, producer.poll, [b"kept"] * 20, [b"k"] * 20, None, 0, None)
    producer.commit_transaction(30)
    records = _committed(kafka_bootstrap, topic, 20)
    assert [r.value for r in records] == [b"kept"] * 20
    assert all(r.headers == [] for r in records)


def test_a_full_local_queue_is_waited_out(kafka_bootstrap: str) -> None:
    """queue.buffering.max.messages = 100, 1,000 records in one send_all: each refusal
    (_QUEUE_FULL) polls and resumes at the record that was refused, none twice."""
    topic = unique_topic("native")
    create_topic(kafka_bootstrap, topic, partitions=1)
    kafka = KafkaSettings(
        producer={"bootstrap.servers": kafka_bootstrap, "queue.buffering.max.messages": 100},
        transactional_id_prefix=f"native-produce-{uuid.uuid4().hex[:8]}-",
    )
    config = producer_config(kafka, "full", None, lambda error: None)
    producer = Producer(config)
    producer.init_transactions(30)
    sender = record_sender(producer, config, topic)
    assert sender is not None
    polls: list[float] = []

    def poll(wait: float) -> int:
        polls.append(wait)
        return producer.poll(wait)

    values = [str(i).encode() for i in range(1000)]
    producer.begin_transaction()
    send_all(sender, poll, values, [None] * 1000, None, 0, None)
    producer.commit_transaction(60)
    assert polls, "a 100-message queue must have been full at least once"
    records = consume_all(kafka_bootstrap, topic, timeout=60)
    assert [r.value for r in records] == values  # in order, each once


def test_a_refusal_is_a_kafka_exception_with_librdkafkas_error(kafka_bootstrap: str) -> None:
    """Outside a transaction a transactional producer refuses to produce: the error is
    librdkafka's own, as a KafkaException, like produce() raises."""
    topic = unique_topic("native")
    create_topic(kafka_bootstrap, topic, partitions=1)
    producer, config = _producer(kafka_bootstrap, "refused")
    sender = record_sender(producer, config, topic)
    assert sender is not None
    with pytest.raises(KafkaException) as python_error:
        producer.produce(topic, b"v", b"k")
    with pytest.raises(KafkaException) as native_error:
        send_all(sender, producer.poll, [b"v"], [b"k"], None, -1, None)
    assert native_error.value.args[0].code() == python_error.value.args[0].code()
    assert native_error.value.args[0].str()


def test_it_is_off_for_what_is_not_a_producer_handle(kafka_bootstrap: str) -> None:
    producer, config = _producer(kafka_bootstrap, "checks")
    assert record_sender(object(), config, "t") is None
    other = dict(config, error_cb=lambda error: None)  # not the callback it was built with
    assert record_sender(producer, other, "t") is None
    renamed = dict(config, **{"client.id": "somebody-else"})
    assert record_sender(producer, renamed, "t") is None
    assert native_produce._loaded_librdkafka(), "confluent-kafka's librdkafka is mapped"
