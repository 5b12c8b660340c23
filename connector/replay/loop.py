"""Exactly-once consume-transform-produce: the engine under `rpt-connector replay`.

One source topic is read (read_committed) from the group's committed offsets up to the end
offsets it had when the run started; every batch of messages is transformed and produced in
one producer transaction together with the consumer offsets past it
(`send_offsets_to_transaction`). A crash anywhere aborts the open transaction (the broker
does, at the next `init_transactions` with the same transactional.id, or at its timeout);
the rerun starts from the committed offsets: nothing twice, nothing missing.

A message whose outputs are not complete yet (one chunk of a split body) returns `None`
from the transform: the offsets committed stop before it until the body is complete, so a
body is never half-replayed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from connector.config.settings import KafkaSettings
from connector.kafka.records import Headers
from connector.kafka.topics import client_config

log = logging.getLogger("connector.replay")

# Fail point for the crash tests: die like kill -9 before the Nth commit (its batch produced).
CRASH_BEFORE_COMMIT_ENV = "RPT_FAILPOINT_REPLAY_CRASH_BEFORE_COMMIT"
# Fail point for the tests that look at a running replay: "N:PATH" = before the Nth commit,
# while the file PATH exists, wait (and say so by creating PATH.held).
HOLD_BEFORE_COMMIT_ENV = "RPT_FAILPOINT_REPLAY_HOLD_BEFORE_COMMIT"
_POLL = 0.5
_IDLE_LIMIT = 30.0  # no message nor end for this long: the broker is gone, stop with an error


@dataclass(frozen=True, slots=True)
class Out:
    """One record the transform wants produced."""

    topic: str
    value: bytes
    key: bytes | None
    headers: Headers | None  # None: no headers (kafka.record_headers = false)
    timestamp: int = 0  # epoch ms; 0: the produce time


Transform = Callable[[Message], "list[Out] | None"]


@dataclass
class LoopHooks:
    """Fail points, injected (the CLI reads them from the environment)."""

    before_commit: Callable[[int], None] = lambda _n: None  # n = commits made so far + 1
    progress: Callable[[int, int], None] = lambda _done, _total: None  # messages


def hooks_from_env(environ: dict[str, str]) -> LoopHooks:
    crash_at = environ.get(CRASH_BEFORE_COMMIT_ENV)
    hold_at, _, switch = environ.get(HOLD_BEFORE_COMMIT_ENV, "").partition(":")
    if not crash_at and not hold_at:
        return LoopHooks()

    def before_commit(n: int) -> None:
        if crash_at and n >= int(crash_at):
            os._exit(137)
        if hold_at and n == int(hold_at):
            _hold_while(Path(switch))

    return LoopHooks(before_commit=before_commit)


def _hold_while(switch: Path) -> None:
    if switch.exists():
        switch.with_name(switch.name + ".held").touch()
    while switch.exists():
        time.sleep(0.05)


def replay_ids(kind: str, name: str) -> str:
    """The group.id and transactional.id of a replay: stable, so a rerun resumes it."""
    return f"rpt-replay-{kind}.{name}"


def consumer_config(kafka: KafkaSettings, group: str) -> dict:
    return client_config(kafka, "replay") | {
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    }


def producer_config(kafka: KafkaSettings, transactional_id: str) -> dict:
    return client_config(kafka, "replay") | {
        "transactional.id": transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
        "transaction.timeout.ms": 60_000,
        "message.timeout.ms": 45_000,
    }


@dataclass
class _Partition:
    start: int  # first offset this run reads
    end: int  # the end offset seen at start: stop there
    safe: int  # offsets below this are processed (whole bodies)
    seen: int  # offsets below this were read
    done: bool = False

    @property
    def read(self) -> int:
        """Offsets read so far; a partition at its end counts whole (the last offsets are
        transaction markers, which are never delivered)."""
        return (self.end if self.done else self.seen) - self.start


@dataclass
class TransactionalCopy:
    """Read `source` from the group's offsets to the end seen at start, transform, produce,
    commit the offsets in the same transaction. Parts handed in; `run()` does the I/O."""

    consumer: Consumer
    producer: Producer
    source: str
    batch_messages: int = 500
    dry_run: bool = False  # abort every transaction: nothing written, no offsets moved
    hooks: LoopHooks = field(default_factory=LoopHooks)
    clock: Callable[[], float] = time.monotonic
    commits: int = 0
    messages: int = 0
    _open: bool = False  # a transaction is begun and not yet committed

    def run(self, transform: Transform) -> None:
        self.producer.init_transactions(30)
        partitions = self._assign()
        total = sum(p.end - p.start for p in partitions.values())
        pending = 0
        last_activity = self.clock()
        self._begin()
        while not all(p.done for p in partitions.values()):
            message = self.consumer.poll(_POLL)
            if message is None:
                self._check_positions(partitions)
                if self.clock() - last_activity > _IDLE_LIMIT:
                    raise TimeoutError(f"no progress reading {self.source} for {_IDLE_LIMIT:.0f}s")
                continue
            last_activity = self.clock()
            pending += self._take(message, partitions, transform)
            self.hooks.progress(sum(p.read for p in partitions.values()), total)
            if pending >= self.batch_messages:
                self._commit(partitions)
                pending = 0
        self.hooks.progress(sum(p.read for p in partitions.values()), total)  # = total
        if self._open:  # not when the last batch's commit already reached the end
            self._commit(partitions)

    def _assign(self) -> dict[int, _Partition]:
        metadata = self.consumer.list_topics(self.source, timeout=10).topics[self.source]
        if metadata.error is not None:
            raise ValueError(f"cannot read topic {self.source}: {metadata.error.str()}")
        tps = [TopicPartition(self.source, p) for p in sorted(metadata.partitions)]
        committed = {tp.partition: tp.offset for tp in self.consumer.committed(tps, timeout=10)}
        out, assignment = {}, []
        for tp in tps:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=10)
            start = committed[tp.partition] if committed[tp.partition] >= 0 else low
            out[tp.partition] = _Partition(start, high, start, start, done=start >= high)
            assignment.append(TopicPartition(self.source, tp.partition, start or OFFSET_BEGINNING))
        self.consumer.assign(assignment)
        return out

    def _take(
        self, message: Message, partitions: dict[int, _Partition], transform: Transform
    ) -> int:
        state = partitions[message.partition()]
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                state.done = state.done or message.offset() >= state.end
                return 0
            raise RuntimeError(f"reading {self.source}: {error.str()}")
        if state.done or message.offset() >= state.end:
            state.done = True  # written after this run started: the next run's business
            return 0
        state.seen = message.offset() + 1
        outputs = transform(message)
        if outputs is not None:
            for out in outputs:
                self._produce(out)
            state.safe = state.seen
        state.done = state.seen >= state.end
        self.messages += 1
        return 1

    def _produce(self, out: Out) -> None:
        while True:
            try:
                self.producer.produce(
                    out.topic, out.value, out.key, headers=out.headers, timestamp=out.timestamp
                )
                return
            except BufferError:
                self.producer.poll(0.05)

    def _check_positions(self, partitions: dict[int, _Partition]) -> None:
        # Control records (transaction markers) are never delivered: the position says more.
        live = [TopicPartition(self.source, n) for n, p in partitions.items() if not p.done]
        for tp in self.consumer.position(live) if live else []:
            if tp.offset >= partitions[tp.partition].end:
                partitions[tp.partition].done = True

    def _commit(self, partitions: dict[int, _Partition]) -> None:
        self.hooks.before_commit(self.commits + 1)
        offsets = [TopicPartition(self.source, n, p.safe) for n, p in partitions.items()]
        metadata = self.consumer.consumer_group_metadata()
        if self.dry_run:
            self.producer.abort_transaction(30)
        else:
            self.producer.send_offsets_to_transaction(offsets, metadata, 30)
            self.producer.commit_transaction(60)
        self.commits += 1
        self._open = False
        if not all(p.done for p in partitions.values()):
            self._begin()

    def _begin(self) -> None:
        self.producer.begin_transaction()
        self._open = True
