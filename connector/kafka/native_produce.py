"""How records reach a producer's queue: a batch in one native call, or one produce() each.

`RecordQueue` is the publisher's way in: per topic, the native sender when there is one,
else `Producer.produce()` per record; both wait for room while the local queue is full.

`rpt_native.RecordSender` hands each record to `rd_kafka_produceva` on the librdkafka handle
of the account's confluent-kafka `Producer`: the same transaction, partitioner, settings and
queue as `Producer.produce()`, without a Python call per record (its argument parsing, its
conversion of the header list, its callback state). The records are byte for byte what
`produce()` would send (tests/integration/test_native_produce_e2e.py reads both back).

No delivery callback is attached to these records, so it is used for exactly_once only: a
failed delivery fails the transaction's commit, which is how that mode learns of it anyway.
at_least_once needs the failed record's report (AccountPublisher._on_delivery) and keeps
`produce()`.

The handle is the word after the Python object header of confluent-kafka's C object. That
is read only from a confluent-kafka release whose layout was verified (`VERIFIED_CONFLUENT_KAFKA`:
the native produce tests, unit and end to end, passed against it; pyproject.toml's bound admits
these and no other), and checked, not assumed: the word after it must be the very error
callback the producer was configured with, and librdkafka must name the handle after the
producer's client.id. Anything else (another confluent-kafka, another layout, a test's fake
producer, a second librdkafka in the process, RPT_NATIVE=0 or RPT_NATIVE_PRODUCE=0) leaves
`produce()` in place, said once in the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Protocol

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, Producer

from connector.codec.native import rpt_native

log = logging.getLogger("connector.native_produce")
Headers = list[tuple[str, bytes]]
QUEUE_FULL = KafkaError._QUEUE_FULL
_BUFFER_FULL_WAIT = 0.05  # each poll() while librdkafka's local queue is full
_said: set[str] = set()
_bound: str | None = None  # the librdkafka path bound, once per process
# The confluent-kafka releases (confluent_kafka.version(), the C extension's own) whose Producer
# layout native produce was run against: tests/unit/test_native_produce.py and
# tests/integration/test_native_produce_e2e.py passed on each. Add one only after both pass
# on it, and widen the bound in pyproject.toml with it.
VERIFIED_CONFLUENT_KAFKA = ("2.16.0", "2.16.1", "2.16.2")


class Sender(Protocol):
    def send(
        self,
        values: list[bytes],
        keys: list[bytes | None],
        headers: list[tuple[str, bytes]] | None,
        partition: int,
        timestamps: list[int] | None,
        start: int = 0,
    ) -> tuple[int, tuple[int, str, bool, bool, bool] | None]: ...


SenderFactory = Callable[[Producer, dict, str], "Sender | None"]  # (producer, its config, topic)


class RecordQueue:
    """The records of one producer: natively per topic where `senders` gives a sender (None:
    never), else one produce() per record."""

    def __init__(self, producer: Producer, config: dict, senders: SenderFactory | None) -> None:
        self._producer, self._config, self._senders_for = producer, config, senders
        self._senders: dict[str, Sender | None] = {}

    def put(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes | None],
        headers: Headers | None,
        partition: int,
        timestamps: list[int] | None,
    ) -> None:
        """Every record queued, or KafkaException as produce() raises it."""
        sender = self._sender(topic)
        if sender is None:
            _produce_all(self._producer, topic, values, keys, headers, partition, timestamps)
        else:
            send_all(sender, self._producer.poll, values, keys, headers, partition, timestamps)

    def _sender(self, topic: str) -> Sender | None:
        if self._senders_for is None:
            return None
        if topic not in self._senders:
            self._senders[topic] = self._senders_for(self._producer, self._config, topic)
        return self._senders[topic]


def record_sender(producer: object, config: dict, topic: str) -> Sender | None:
    """The native sender of `topic` for this producer (built from `config`), or None."""
    reason = _unusable(producer, config)
    if reason is None:
        try:
            sender = rpt_native.RecordSender(  # type: ignore[union-attr]
                producer, config["error_cb"], str(config["client.id"]), topic
            )
        except ValueError as exc:
            reason = str(exc)
        else:
            _say_once("native produce on: data records go to librdkafka in one call per batch")
            return sender
    _say_once(f"native produce off ({reason}): one Producer.produce() per record")
    return None


def send_all(
    sender: Sender,
    poll: Callable[[float], object],
    values: list[bytes],
    keys: list[bytes | None],
    headers: list[tuple[str, bytes]] | None,
    partition: int,
    timestamps: list[int] | None,
) -> None:
    """Every record queued; while the local queue is full, `poll(wait)` makes room. A
    refusal raises KafkaException, as `produce()` would."""
    start = 0
    while True:
        start, failure = sender.send(values, keys, headers, partition, timestamps, start)
        if failure is None:
            return
        code, reason, fatal, retriable, txn_requires_abort = failure
        if code != QUEUE_FULL:
            error = KafkaError(code, reason, fatal, retriable, txn_requires_abort)
            raise KafkaException(error)
        poll(_BUFFER_FULL_WAIT)


def _unusable(producer: object, config: dict) -> str | None:
    if os.environ.get("RPT_NATIVE", "1") == "0":
        return "RPT_NATIVE=0"
    if os.environ.get("RPT_NATIVE_PRODUCE", "1") == "0":
        return "RPT_NATIVE_PRODUCE=0"
    if rpt_native is None or not hasattr(rpt_native, "RecordSender"):
        return "the rpt_native extension is not installed"
    if type(producer) is not confluent_kafka.Producer:
        return f"the producer is a {type(producer).__name__}, not a confluent_kafka.Producer"
    if config.get("error_cb") is None or not config.get("client.id"):
        return "the producer's error_cb and client.id are not known"
    release = confluent_kafka_release()
    if release not in VERIFIED_CONFLUENT_KAFKA:
        verified = ", ".join(VERIFIED_CONFLUENT_KAFKA)
        return f"confluent-kafka {release}: its Producer layout is not one verified ({verified})"
    return _bind()


def confluent_kafka_release() -> str:
    """The version the loaded confluent-kafka C extension reports (older releases: a tuple)."""
    version = confluent_kafka.version()
    return str(version[0] if isinstance(version, tuple) else version)


def _bind() -> str | None:
    """Bind rpt_native to the librdkafka confluent-kafka loaded; the reason it cannot."""
    global _bound
    if _bound is not None:
        return None
    paths = _loaded_librdkafka()
    if len(paths) != 1:
        return f"{len(paths)} librdkafka libraries are loaded, not one: {sorted(paths)}"
    path = paths.pop()
    try:
        version = rpt_native.bind_librdkafka(path)  # type: ignore[union-attr]
    except RuntimeError as exc:
        return str(exc)
    expected = confluent_kafka.libversion()[1]
    if version != expected:
        return f"{path} is librdkafka {version:#x}, confluent-kafka runs {expected:#x}"
    _bound = path
    return None


def _loaded_librdkafka() -> set[str]:
    """The files mapped into this process whose name is librdkafka's."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return set()
    paths = {parts[5] for parts in (line.split(None, 5) for line in lines) if len(parts) == 6}
    return {p for p in paths if os.path.basename(p).startswith("librdkafka")}


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.info(message)


def _produce_all(
    producer: Producer,
    topic: str,
    values: list[bytes],
    keys: list[bytes | None],
    headers: Headers | None,
    partition: int,
    timestamps: list[int] | None,
) -> None:
    """One produce() per record: each at its timestamp (kafka.record_timestamp = "rtime"),
    or, without timestamps, a loop that passes no timestamp at all (the hot path's default)."""
    produce = producer.produce
    if timestamps is None:
        for value, key in zip(values, keys, strict=True):
            try:
                produce(topic, value, key, partition, headers=headers)
            except BufferError:
                _produce_when_room(producer, topic, value, key, headers, partition)
        return
    for value, key, stamp in zip(values, keys, timestamps, strict=True):
        try:
            produce(topic, value, key, partition, headers=headers, timestamp=stamp)
        except BufferError:
            _produce_when_room(producer, topic, value, key, headers, partition, stamp)


def _produce_when_room(
    producer: Producer,
    topic: str,
    value: bytes,
    key: bytes | None,
    headers: Headers | None,
    partition: int,
    timestamp: int = 0,  # 0: the produce time
) -> None:
    """The local queue is full: serve delivery reports until there is room again."""
    while True:
        producer.poll(_BUFFER_FULL_WAIT)
        try:
            producer.produce(topic, value, key, partition, headers=headers, timestamp=timestamp)
            return
        except BufferError:
            continue
