"""Native produce in-process: when AccountPublisher hands records to a native sender, what a
full local queue and a refusal become, when it is not used, and what RecordSender checks.
tests/integration/test_native_produce_e2e.py reads its records back from a real broker."""

from __future__ import annotations

import logging
import random
import tomllib
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from packaging.requirements import Requirement

from connector.codec.native import rpt_native
from connector.config.settings import KafkaSettings
from connector.errors import (
    Disposition,
    FencedError,
    KafkaUnreachableError,
    PublishError,
    TransactionAbortedError,
)
from connector.kafka import native_produce
from connector.kafka.native_produce import (
    VERIFIED_CONFLUENT_KAFKA,
    RecordQueue,
    record_sender,
    send_all,
)
from connector.kafka.publisher import AccountPublisher, Reachability
from connector.retry import Deadline
from tests.fakes import FakeClock, FakeKafka, FakeProducer, FakeProgress, Record

needs_native = pytest.mark.skipif(rpt_native is None, reason="rpt_native did not build")
Failure = tuple[int, str, bool, bool, bool]


class ScriptedSender:
    """A native sender over a FakeProducer: queues into its open transaction, and answers
    each call with the next scripted stop (index, failure) first, if any."""

    def __init__(self, producer: FakeProducer, topic: str, script: list) -> None:
        self.producer, self.topic, self.script = producer, topic, script
        self.calls: list[int] = []  # the start index of each call

    def send(self, values, keys, headers, partition, timestamps, start=0):
        self.calls.append(start)
        stop, failure = self.script.pop(0) if self.script else (len(values), None)
        for value, key in zip(values[start:stop], keys[start:stop], strict=True):
            self.producer._open.append(
                Record(self.topic, value, key, list(headers or []), partition)
            )
        return stop, failure


class Senders:
    """The sender_factory: records what it was asked for, makes ScriptedSenders."""

    def __init__(self, script: list | None = None) -> None:
        self.script = script or []
        self.made: list[ScriptedSender] = []
        self.asked: list[tuple[object, str]] = []

    def __call__(self, producer, config, topic):
        self.asked.append((producer, topic))
        self.made.append(ScriptedSender(producer, topic, self.script))
        return self.made[-1]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kafka(clock: FakeClock) -> FakeKafka:
    return FakeKafka(clock)


def publisher(kafka: FakeKafka, clock: FakeClock, senders: Senders, **kw) -> AccountPublisher:
    settings = KafkaSettings(producer={"bootstrap.servers": "fake:9092"}, **kw)
    pub = AccountPublisher(
        settings, "acme", spool_id="s1", reachability=Reachability(30.0, lambda *a: None, clock),
        producer_factory=kafka.producer, sender_factory=senders, progress=FakeProgress(kafka),
        clock=clock, rng=random.Random(1),
    )  # fmt: skip
    pub.init(Deadline.after(5, clock))
    return pub


def values(n: int) -> list[bytes]:
    return [f"v{i}".encode() for i in range(n)]


def test_exactly_once_sends_each_batch_in_one_native_call(kafka, clock) -> None:
    senders = Senders()
    pub = publisher(kafka, clock, senders)
    pub.begin()
    pub.produce_many("data", values(5), [b"k"] * 5, [("account", b"acme")])
    pub.produce_many("data", values(3), [None] * 3, None)
    pub.commit(1, Deadline.after(5, clock))
    assert [topic for _, topic in senders.asked] == ["data", "rpt-connector.progress"]
    assert all(producer is kafka.producers[0] for producer, _ in senders.asked)
    assert senders.made[0].calls == [0, 0]  # one call per batch, one sender per topic
    data = kafka.visible("data")
    assert [r.value for r in data] == values(5) + values(3)
    assert data[0].headers == [("account", b"acme")] and data[5].headers == []
    assert kafka.progress("acme")[-1]["spool_seq"] == 1


def test_a_full_queue_polls_then_resumes_at_the_refused_record(kafka, clock) -> None:
    full: Failure = (KafkaError._QUEUE_FULL, "Local: Queue full", False, False, False)
    senders = Senders([(2, full), (4, full)])
    pub = publisher(kafka, clock, senders)
    polls: list[float] = []
    producer = kafka.producers[-1]
    producer.poll = lambda timeout=0: polls.append(timeout) or 0
    pub.begin()
    pub.produce_many("data", values(6), [b"k"] * 6, None)
    assert senders.made[0].calls == [0, 2, 4]
    assert [p for p in polls if p > 0] == [0.05, 0.05]
    assert [r.value for r in producer._open] == values(6)  # each once, in order


@pytest.mark.parametrize(
    ("failure", "expected", "disposition"),
    [
        ((KafkaError._STATE, "Operation not valid in state Ready", False, False, False),
         PublishError, Disposition.RESTART_PRODUCER),
        ((KafkaError._FATAL, "Fatal error", True, False, False),
         PublishError, Disposition.RESTART_PRODUCER),
        ((KafkaError._FENCED, "fenced by a newer instance", True, False, False),
         FencedError, Disposition.STOP_ACCOUNT),
        ((KafkaError._PURGE_QUEUE, "aborted", False, False, True),
         TransactionAbortedError, Disposition.ABORT_TRANSACTION),
        ((KafkaError._ALL_BROKERS_DOWN, "All broker connections are down", False, True, False),
         KafkaUnreachableError, Disposition.RETRY),
    ],
)  # fmt: skip
def test_a_refusal_is_translated_like_a_produce_error(
    kafka, clock, failure, expected, disposition
) -> None:
    pub = publisher(kafka, clock, Senders([(1, failure)]))
    pub.begin()
    with pytest.raises(expected) as raised:
        pub.produce_many("data", values(3), [b"k"] * 3, None)
    assert type(raised.value) is expected
    assert raised.value.disposition == disposition
    assert failure[1] in str(raised.value)


def test_at_least_once_never_asks_for_a_sender(kafka, clock) -> None:
    """Its records need their delivery reports, which the native path does not attach."""
    senders = Senders()
    pub = publisher(kafka, clock, senders, delivery="at_least_once")
    pub.produce_many("data", values(4), [b"k"] * 4, None)
    pub.commit(1, Deadline.after(5, clock))
    assert senders.asked == []
    assert [r.value for r in kafka.visible("data")] == values(4)


def test_a_new_producer_gets_new_senders_and_close_lets_them_go(kafka, clock) -> None:
    senders = Senders()
    pub = publisher(kafka, clock, senders)
    pub.begin()
    pub.produce_many("data", values(1), [b"k"], None)
    pub.abort(Deadline.after(5, clock))  # as the session restarts a producer
    pub.close(Deadline.after(5, clock))
    assert pub._queue is None  # its senders hold the producer: they go with it
    pub.init(Deadline.after(5, clock))
    pub.begin()
    pub.produce_many("data", values(1), [b"k"], None)
    first, second = (producer for producer, _ in senders.asked)
    assert first is kafka.producers[0] and second is kafka.producers[1]


def test_a_fake_producer_has_no_native_sender() -> None:
    producer = FakeKafka(FakeClock()).producer({})
    assert record_sender(producer, {"error_cb": print, "client.id": "x"}, "t") is None


def _real_producer() -> tuple[Producer, dict]:
    """A Producer without brokers: it never connects, so its queue holds only our records."""
    config = {
        "client.id": "rpt-connector-unit", "log_level": 0,
        "error_cb": lambda error: None, "message.timeout.ms": 600_000,
    }  # fmt: skip
    return Producer(config), config


@pytest.mark.parametrize(
    ("env", "reason"), [("RPT_NATIVE", "RPT_NATIVE=0"), ("RPT_NATIVE_PRODUCE", "=0")]
)
def test_the_environment_switches_it_off(monkeypatch, env: str, reason: str) -> None:
    producer, config = _real_producer()
    monkeypatch.setenv(env, "0")
    assert native_produce._unusable(producer, config).endswith(reason)
    assert record_sender(producer, config, "t") is None


def test_unknown_config_switches_it_off() -> None:
    producer, _ = _real_producer()
    assert "not known" in native_produce._unusable(producer, {"client.id": "x"})
    assert "not known" in native_produce._unusable(producer, {"error_cb": print})


@needs_native
def test_not_exactly_one_librdkafka_switches_it_off(monkeypatch) -> None:
    producer, config = _real_producer()
    monkeypatch.setattr(native_produce, "_bound", None)
    monkeypatch.setattr(native_produce, "_loaded_librdkafka", lambda: set())
    assert native_produce._unusable(producer, config).startswith("0 librdkafka libraries")
    two = {"/a/librdkafka.so.1", "/b/librdkafka.so.1"}
    monkeypatch.setattr(native_produce, "_loaded_librdkafka", lambda: set(two))
    assert native_produce._unusable(producer, config).startswith("2 librdkafka libraries")


@needs_native
def test_another_librdkafka_version_switches_it_off(monkeypatch) -> None:
    producer, config = _real_producer()
    monkeypatch.setattr(native_produce, "_bound", None)
    monkeypatch.setattr(native_produce.confluent_kafka, "libversion", lambda: ("0.0.1", 1))
    assert "confluent-kafka runs 0x1" in native_produce._unusable(producer, config)


@needs_native
def test_a_library_that_is_not_loaded_is_not_bound(monkeypatch) -> None:
    monkeypatch.setattr(native_produce, "_bound", None)
    monkeypatch.setattr(native_produce, "_loaded_librdkafka", lambda: {"/nowhere/librdkafka.so"})
    producer, config = _real_producer()
    reason = native_produce._unusable(producer, config)
    assert "is not loaded in this process" in reason or "is bound to" in reason, reason


@needs_native
def test_records_go_into_the_producers_own_queue() -> None:
    producer, config = _real_producer()
    sender = record_sender(producer, config, "unit-topic")
    assert sender is not None
    send_all(sender, producer.poll, values(7), [b"k", None] * 3 + [b""], [("a", b"1")], -1, None)
    send_all(sender, producer.poll, values(2), [b"k"] * 2, None, 0, [1, 2])
    assert len(producer) == 9  # queued in this producer (nothing can be delivered)
    producer.purge()


@needs_native
def test_send_checks_its_arguments() -> None:
    producer, config = _real_producer()
    sender = record_sender(producer, config, "unit-topic")
    with pytest.raises(TypeError, match="a value must be bytes"):
        sender.send(["text"], [None], None, -1, None)
    with pytest.raises(TypeError, match="a key must be bytes"):
        sender.send([b"v"], ["k"], None, -1, None)
    with pytest.raises(ValueError, match="differ in length"):
        sender.send([b"v"], [], None, -1, None)
    with pytest.raises(ValueError, match="differ in length"):
        sender.send([b"v"], [None], None, -1, [1, 2])
    with pytest.raises(ValueError, match="more than 8 headers"):
        sender.send([b"v"], [None], [("h", b"")] * 9, -1, None)
    with pytest.raises(ValueError, match="NUL"):
        sender.send([b"v"], [None], [("h\0", b"")], -1, None)
    assert len(producer) == 0  # nothing was queued by a refused call


@needs_native
def test_a_producer_that_does_not_check_out_is_refused() -> None:
    producer, config = _real_producer()
    assert native_produce._unusable(producer, config) is None  # bound
    with pytest.raises(ValueError, match="layout"):
        rpt_native.RecordSender(producer, print, config["client.id"], "t")
    with pytest.raises(ValueError, match="is not this producer"):
        rpt_native.RecordSender(producer, config["error_cb"], "somebody-else", "t")


# The layout: native produce reads confluent-kafka's C object only on a release it was verified
# against, and only when that object checks out; otherwise produce(), said once.


def _fall_back(monkeypatch, caplog, configure) -> list[str]:
    """Three producers, two topics, two batches each, through RecordQueue with the real
    sender factory: every record queued by produce(); the log lines native produce wrote."""
    monkeypatch.setattr(native_produce, "_said", set())
    produced: list[str] = []
    produce_all = native_produce._produce_all

    def counted(producer, topic, *batch):
        produced.append(topic)
        produce_all(producer, topic, *batch)

    monkeypatch.setattr(native_produce, "_produce_all", counted)
    caplog.set_level(logging.INFO, logger="connector.native_produce")
    for _ in range(3):
        producer, config = _real_producer()
        queue = RecordQueue(producer, configure(config), record_sender)
        for topic in ("data", "rpt-connector.progress") * 2:
            queue.put(topic, values(4), [b"k"] * 4, [("account", b"acme")], -1, None)
        assert len(producer) == 16  # in the producer's own queue, by produce()
        producer.purge()
    assert len(produced) == 12  # every batch
    return [r.getMessage() for r in caplog.records if r.name == "connector.native_produce"]


@needs_native
def test_an_unverified_confluent_kafka_falls_back_to_produce_said_once(monkeypatch, caplog) -> None:
    """Before 2.12 confluent_kafka.version() was a tuple: the gate reads either form."""
    monkeypatch.setattr(native_produce.confluent_kafka, "version", lambda: ("2.11.1", 0x20B01FF))
    said = _fall_back(monkeypatch, caplog, lambda config: config)
    verified = ", ".join(VERIFIED_CONFLUENT_KAFKA)
    assert said == [
        f"native produce off (confluent-kafka 2.11.1: its Producer layout is not one verified"
        f" ({verified})): one Producer.produce() per record"
    ]


@needs_native
def test_a_layout_that_does_not_check_out_falls_back_to_produce_said_once(
    monkeypatch, caplog
) -> None:
    """The word after the handle is not the error_cb the producer was configured with, as in
    a confluent-kafka whose Producer object is laid out otherwise."""
    said = _fall_back(monkeypatch, caplog, lambda config: dict(config, error_cb=print))
    assert said == [
        "native produce off (not the Producer layout this build knows):"
        " one Producer.produce() per record"
    ]


def test_this_confluent_kafka_is_a_verified_one() -> None:
    """The suite's native tests ran against a verified layout (or the checks above would
    have switched native produce off for them)."""
    assert native_produce.confluent_kafka_release() in VERIFIED_CONFLUENT_KAFKA


def test_the_supported_confluent_kafka_is_what_was_verified() -> None:
    """pyproject.toml admits the releases native produce was verified against, and no other
    (on a grid of every x.y.z around them)."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (bound,) = (r for r in map(Requirement, dependencies) if r.name == "confluent-kafka")
    grid = {f"{x}.{y}.{z}" for x in (1, 2, 3) for y in range(30) for z in range(10)}
    admitted = {
        version for version in grid | set(VERIFIED_CONFLUENT_KAFKA) if version in bound.specifier
    }
    assert admitted == set(VERIFIED_CONFLUENT_KAFKA), bound
