"""Reading an account's committed progress from the compacted progress topic.

The progress record commits in the same transaction as the reports it covers, so the last
one a read_committed consumer sees for an account's key is exactly what Kafka holds.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from connector.config.settings import KafkaSettings
from connector.errors import KafkaUnreachableError, PublishError
from connector.kafka.records import progress_partition
from connector.kafka.topics import client_config
from connector.retry import Deadline

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
        with self._reading() as consumer:
            partition = progress_partition(account, self.partitions)
            found = self._read_to_end(consumer, [partition], {account}, timeout)
        return found.get(account, Progress(0, ""))

    def read_all(self, accounts: set[str], timeout: float = 120.0) -> dict[str, Progress]:
        """The last committed progress of each of `accounts` that ever committed, in one read
        of every partition (for a start that recovers many accounts at once)."""
        with self._reading() as consumer:
            wanted = sorted({progress_partition(a, self.partitions) for a in accounts})
            return self._read_to_end(consumer, wanted, accounts, timeout)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Consumer]:
        consumer = self._consumer_factory(self._consumer_config("read_committed"))
        try:
            self.partitions = _partition_count(consumer, self.topic)
            yield consumer
        except KafkaException as exc:
            raise KafkaUnreachableError(f"cannot read progress topic {self.topic}: {exc}") from exc
        finally:
            consumer.close()

    def _read_to_end(
        self, consumer: Consumer, partitions: list[int], accounts: set[str], timeout: float
    ) -> dict[str, Progress]:
        ends = self._high_watermarks([TopicPartition(self.topic, p) for p in partitions])
        keys = {a.encode() for a in accounts}
        return _last_progress(consumer, self.topic, ends, keys, timeout)

    def _high_watermarks(self, partitions: list[TopicPartition]) -> dict[int, int]:
        # A read_committed consumer's watermark query answers the last *stable* offset, which
        # another account's open transaction can hold below our newest commit; ask for the
        # true end with a read_uncommitted consumer, then read (committed only) up to it.
        consumer = self._consumer_factory(self._consumer_config("read_uncommitted"))
        try:
            return {
                tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions
            }
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


def _last_progress(
    consumer: Consumer, name: str, ends: dict[int, int], keys: set[bytes], timeout: float
) -> dict[str, Progress]:
    """Read the partitions (read_committed) up to `ends`: the last progress of each key."""
    found: dict[str, Progress] = {}
    deadline = time.monotonic() + timeout
    to_read = {p: end for p, end in ends.items() if end > 0}
    if not to_read:
        return found
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in to_read])
    while True:
        for message in consumer.consume(1000, 0.2):
            key = message.key()
            if message.error() is None and key in keys and message.value():
                where = f"{message.topic()}[{message.partition()}]"
                found[key.decode()] = parse_progress(message.value(), where)
        positions = consumer.position([TopicPartition(name, p) for p in to_read])
        if all(tp.offset >= to_read[tp.partition] for tp in positions):
            return found
        if time.monotonic() > deadline:
            behind = [tp.partition for tp in positions if tp.offset < to_read[tp.partition]]
            raise KafkaUnreachableError(
                f"timed out reading {name} partitions {behind} to their end"
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


Settle = Callable[[list[str], Deadline], None]


class ProgressSnapshot:
    """The progress of many accounts, read in one pass (`ProgressTopic.read_all`) when the
    first of them asks, handed out once per account; a later read (after a producer restart,
    or for an account not in it) asks the topic for that account alone.

    Only sound once nothing else can still commit for these accounts: standalone, the shared
    producer's `init_transactions` has fenced the instance's predecessor before an account
    reads; in cluster mode `settle` first waits until no transaction holds their group offsets
    (their previous owner's last commit is decided)."""

    def __init__(
        self,
        topic: ProgressTopic,
        accounts: set[str],
        timeout: float = 120.0,
        settle: Settle | None = None,
    ) -> None:
        self._topic, self._timeout, self._settle = topic, timeout, settle
        self._found: dict[str, Progress] | None = None
        self._unread = set(accounts)
        self._lock = threading.Lock()

    @property
    def topic(self) -> str:
        return self._topic.topic

    @property
    def partitions(self) -> int | None:
        return self._topic.partitions

    def read(self, account: str, timeout: float = 60.0) -> Progress:
        with self._lock:
            if account in self._unread:
                if self._found is None:  # a failed read is tried again by the next account
                    self._settled(sorted(self._unread), self._timeout)
                    self._found = self._topic.read_all(self._unread, self._timeout)
                self._unread.discard(account)
                return self._found.get(account, Progress(0, ""))
        self._settled([account], timeout)
        return self._topic.read(account, timeout)

    def _settled(self, accounts: list[str], timeout: float) -> None:
        if self._settle is not None:
            self._settle(accounts, Deadline.after(timeout))
