"""Reference figures the connector is measured against, on the same machine and broker.

* the librdkafka floor: a bare confluent-kafka producer sending pre-encoded Avro payloads with
  the connector's keys, headers and producer settings — idempotent (as at_least_once), and
  transactional with the connector's batch size (as exactly_once), and that again with each
  batch queued by one native call (`rpt_native.RecordSender`, as exactly_once does now);
* the simulator's serve rate: an httpx client draining a preloaded simulator, no Kafka.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import httpx
import msgspec
from confluent_kafka import KafkaError, Producer

from connector.codec.avro import record_headers, single_object_encoder
from connector.codec.report import Normalizer
from connector.config.settings import KafkaSettings
from connector.kafka.native_produce import record_sender, send_all
from connector.kafka.publisher import producer_config
from connector.platform.client import TOKEN_HEADER
from connector.simulator.server import ReportFactory

RETSIZE = 500
_POLL_EVERY = RETSIZE  # the connector calls poll(0) once per spool entry (one get-rpt answer)
_BODY = RETSIZE  # and the native floor queues that many records per call, as the connector does


@dataclass(frozen=True)
class Payloads:
    values: list[bytes]
    keys: list[bytes | None]
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Timed:
    seconds: float
    cpu_seconds: float  # this process, every thread (librdkafka's included)


def make_payloads(n: int, seed: int = 1) -> Payloads:
    """`n` simulator-shaped reports, normalized and Avro-encoded as the connector would."""
    factory = ReportFactory(random.Random(seed), 0.0)
    normalizer, encoder = Normalizer("main"), single_object_encoder()
    values: list[bytes] = []
    keys: list[bytes | None] = []
    now = time.time()
    for start in range(0, n, RETSIZE):
        raw = factory.make(min(RETSIZE, n - start), now)
        reports = msgspec.json.decode(b"[" + b",".join(raw) + b"]")
        records = normalizer.normalize_batch(reports, int(now * 1000)).records
        values.extend(encoder.encode_batch(records))
        keys.extend((r["custid"] or r["msgid"]).encode() for r in records)
    return Payloads(values, keys, record_headers("main", encoder))


def _producer(bootstrap: str, delivery: str, topic: str) -> Producer:
    return Producer(_config(bootstrap, delivery, topic))


def _config(bootstrap: str, delivery: str, topic: str) -> dict:
    kafka = KafkaSettings(
        topic=topic,
        delivery=delivery,
        transactional_id_prefix=f"bench-floor-{topic}-",
        producer={"bootstrap.servers": bootstrap},
    )
    return producer_config(kafka, "main", None, _raise)


def _raise(error: KafkaError) -> None:
    if error.fatal():
        raise RuntimeError(f"floor producer: {error.str()}")


def _produce_range(producer: Producer, topic: str, p: Payloads, lo: int, hi: int) -> None:
    produce, values, keys, headers = producer.produce, p.values, p.keys, p.headers
    for i in range(lo, hi):
        try:
            produce(topic, values[i], keys[i], headers=headers)
        except BufferError:
            producer.poll(0.05)
            produce(topic, values[i], keys[i], headers=headers)
        if i % _POLL_EVERY == 0:
            producer.poll(0)


def idempotent_floor(bootstrap: str, topic: str, payloads: Payloads) -> Timed:
    """Everything produced with the at_least_once settings, then one flush."""
    producer = _producer(bootstrap, "at_least_once", topic)
    producer.list_topics(topic, timeout=30)  # connect before timing
    t0, c0 = time.perf_counter(), time.process_time()
    _produce_range(producer, topic, payloads, 0, len(payloads.values))
    if producer.flush(120) != 0:
        raise RuntimeError("floor producer: messages left after flush")
    return Timed(time.perf_counter() - t0, time.process_time() - c0)


def transactional_floor(bootstrap: str, topic: str, payloads: Payloads, batch: int) -> Timed:
    """One transaction per `batch` records, with the exactly_once settings."""
    producer = _producer(bootstrap, "exactly_once", topic)
    producer.init_transactions(60)
    t0, c0 = time.perf_counter(), time.process_time()
    n = len(payloads.values)
    for lo in range(0, n, batch):
        producer.begin_transaction()
        _produce_range(producer, topic, payloads, lo, min(n, lo + batch))
        producer.commit_transaction(60)
    return Timed(time.perf_counter() - t0, time.process_time() - c0)


def transactional_native_floor(bootstrap: str, topic: str, payloads: Payloads, batch: int) -> Timed:
    """transactional_floor with the records of each get-rpt answer's worth (RETSIZE) queued
    by one native call, as the connector does."""
    config = _config(bootstrap, "exactly_once", topic)
    producer = Producer(config)
    sender = record_sender(producer, config, topic)
    if sender is None:
        raise RuntimeError("floor producer: no native sender (is rpt_native built?)")
    producer.init_transactions(60)
    t0, c0 = time.perf_counter(), time.process_time()
    n = len(payloads.values)
    for lo in range(0, n, batch):
        producer.begin_transaction()
        for at in range(lo, min(n, lo + batch), _BODY):
            to = min(n, lo + batch, at + _BODY)
            values, keys = payloads.values[at:to], payloads.keys[at:to]
            send_all(sender, producer.poll, values, keys, payloads.headers, -1, None)
            producer.poll(0)
        producer.commit_transaction(60)
    return Timed(time.perf_counter() - t0, time.process_time() - c0)


def drain_simulator(base_url: str, token: str, expected: int) -> Timed:
    """get-rpt (retsize 500, POST) as fast as one client can until `expected` reports came."""
    got = 0
    with httpx.Client(base_url=base_url, timeout=30) as client:
        t0, c0 = time.perf_counter(), time.process_time()
        while got < expected:
            response = client.post(
                "/client-sms/v2/sms/get-rpt",
                json={"retsize": str(RETSIZE)},
                headers={TOKEN_HEADER: token},
            )
            rpts = msgspec.json.decode(response.content)["rpts"]
            if not rpts:
                raise RuntimeError(f"simulator ran dry after {got} of {expected} reports")
            got += len(rpts)
        return Timed(time.perf_counter() - t0, time.process_time() - c0)
