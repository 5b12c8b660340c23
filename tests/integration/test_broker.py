"""The test broker is a real Kafka: transactions, isolation levels, lifecycle."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from kafka_helpers import consume_all, create_topic, produce, unique_topic

import devkafka

pytestmark = pytest.mark.integration


def _transactional_producer(bootstrap: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": unique_topic("txn"),
            "transaction.timeout.ms": 60_000,
        }
    )
    producer.init_transactions(30)
    return producer


def _values(records: list) -> list[bytes | None]:
    return [r.value for r in records]


def test_read_committed_sees_only_committed_transactions(kafka_bootstrap: str) -> None:
    topic = unique_topic("txn-isolation")
    create_topic(kafka_bootstrap, topic, partitions=2)
    producer = _transactional_producer(kafka_bootstrap)

    producer.begin_transaction()
    producer.produce(topic, key=b"k1", value=b"committed-1", partition=0)
    producer.produce(topic, key=b"k2", value=b"committed-2", partition=1)
    producer.commit_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, key=b"k3", value=b"aborted-1", partition=0)
    producer.flush(30)  # make sure the aborted records really reach the log
    producer.abort_transaction(30)

    committed = consume_all(kafka_bootstrap, topic, isolation="read_committed")
    uncommitted = consume_all(kafka_bootstrap, topic, isolation="read_uncommitted")

    assert sorted(_values(committed)) == [b"committed-1", b"committed-2"]
    assert sorted(_values(uncommitted)) == [b"aborted-1", b"committed-1", b"committed-2"]


def test_produce_and_consume_all_round_trip(kafka_bootstrap: str) -> None:
    topic = unique_topic("roundtrip")
    create_topic(kafka_bootstrap, topic, partitions=3)
    records = [(f"k{i}".encode(), f"v{i}".encode(), [("h", b"x")]) for i in range(30)]

    assert produce(kafka_bootstrap, topic, records) == 30
    got = consume_all(kafka_bootstrap, topic)

    assert sorted(_values(got)) == sorted(v for _, v, _ in records)
    assert {r.partition for r in got} <= {0, 1, 2}
    assert all(r.headers == [("h", b"x")] for r in got)


def test_empty_topic_consumes_nothing_quickly(kafka_bootstrap: str) -> None:
    topic = unique_topic("empty")
    create_topic(kafka_bootstrap, topic)
    assert consume_all(kafka_bootstrap, topic, timeout=10) == []


def test_start_is_idempotent(dev_broker: devkafka.Broker) -> None:
    pid = dev_broker.pid
    assert pid is not None and dev_broker.is_running()

    # A fresh handle knows nothing in memory; it must find the running broker via its files.
    again = devkafka.Broker(dev_broker.name)
    assert again.start() == dev_broker.bootstrap
    assert again.pid == pid


def test_restart_and_kill_keep_address_and_data(
    isolated_broker: Callable[..., devkafka.Broker],
) -> None:
    broker = isolated_broker()
    bootstrap = broker.bootstrap
    assert bootstrap is not None
    topic = unique_topic("durable")
    create_topic(bootstrap, topic)
    produce(bootstrap, topic, [b"before-restart"])

    assert broker.restart() == bootstrap
    produce(bootstrap, topic, [b"after-restart"])

    broker.kill()
    assert not broker.is_running()
    assert broker.start() == bootstrap

    values = _values(consume_all(bootstrap, topic))
    assert values == [b"before-restart", b"after-restart"]
    broker.stop()
    assert not broker.is_running()
    broker.stop()  # stopping a stopped broker is a no-op
