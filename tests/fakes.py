"""In-process fakes for the pipeline tests: a Kafka that models transactions, a scripted
platform, a spool that can fail, a recording observer and a clock the test moves.

`FakeKafka` is what a broker does with a transactional producer, in the terms a
read_committed consumer sees: records of a committed transaction become visible, records of
an aborted one never do; `init_transactions` bumps the transactional.id's epoch and fences
the older producer; a transaction open longer than `transaction.timeout.ms` (on the fake
clock) is aborted by the "broker" and its producer sees `_FENCED`, as librdkafka reports it.
Faults are real `confluent_kafka.KafkaError` values raised from a named call.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from connector.codec.report import ParsedBody, parse_body
from connector.errors import SpoolWriteError
from connector.kafka.progress import Progress, parse_progress


class FakeClock:
    """Monotonic time the test moves with `advance`; with `frozen=False` it also follows real
    time (for tests that only need to jump ahead, e.g. past a transaction timeout)."""

    def __init__(self, start: float = 1000.0, *, frozen: bool = False) -> None:
        self._offset = start
        self._origin = None if frozen else time.monotonic()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            real = 0.0 if self._origin is None else time.monotonic() - self._origin
            return self._offset + real

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


def kafka_error(kind: str) -> KafkaError:
    """One librdkafka error of each class the publisher must tell apart."""
    return {
        "retriable": KafkaError(KafkaError._TIMED_OUT, "Local: Timed out", retriable=True),
        "abortable": KafkaError(
            KafkaError._MSG_TIMED_OUT, "Local: Message timed out", txn_requires_abort=True
        ),
        "fatal": KafkaError(KafkaError._FATAL, "Local: Fatal error: out of order", fatal=True),
        "fatal_after_fence": KafkaError(KafkaError._FATAL, "Local: Fatal error", fatal=True),
        "fenced": KafkaError(
            KafkaError._FENCED, "Local: This instance has been fenced", fatal=True
        ),
        "timed_out": KafkaError(KafkaError._TIMED_OUT, "Local: Timed out", retriable=True),
        "all_brokers_down": KafkaError(
            KafkaError._ALL_BROKERS_DOWN, "Local: All broker connections are down"
        ),
    }[kind]


@dataclass
class Record:
    topic: str
    value: bytes
    key: bytes | None
    headers: list
    partition: int


@dataclass
class FakeKafka:
    """The broker side, shared by every producer of a test."""

    clock: FakeClock
    committed: list[Record] = field(default_factory=list)  # read_committed view, in order
    aborted: list[Record] = field(default_factory=list)
    epochs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    faults: dict[str, list[KafkaError]] = field(default_factory=lambda: defaultdict(list))
    calls: list[str] = field(default_factory=list)
    producers: list[FakeProducer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stalls: list[float] = field(default_factory=list)  # next commits hang this long first
    transactions: list[list[Record]] = field(default_factory=list)  # each commit's records
    group: FakeGroup | None = None  # cluster mode: the group coordinator's view
    offset_commits: list[list[int]] = field(default_factory=list)  # control partitions, each

    def stall_next_commit(self, seconds: float) -> None:
        """The next commit hangs `seconds` on the clock first (a network partition)."""
        self.stalls.append(seconds)

    def newer_instance(self, transactional_id: str) -> FakeProducer:
        """Another live instance starts with the same transactional.id (fencing ours)."""
        other = FakeProducer(self, {"transactional.id": transactional_id})
        other.init_transactions(1.0)
        return other

    def commit_progress_from(self, account: str, spool_id: str, seq: int) -> None:
        value = json.dumps({"account": account, "spool_seq": seq, "spool_id": spool_id})
        with self.lock:
            self.committed.append(
                Record("rpt-connector.progress", value.encode(), account.encode(), [], 0)
            )

    def fail(self, call: str, *errors: KafkaError) -> None:
        """The next calls of `call` (e.g. "commit_transaction") raise these, in order."""
        self.faults[call].extend(errors)

    def producer(self, config: dict) -> FakeProducer:
        producer = FakeProducer(self, config)
        self.producers.append(producer)
        return producer

    def visible(self, topic: str) -> list[Record]:
        with self.lock:
            return [r for r in self.committed if r.topic == topic]

    def progress(self, account: str, topic: str = "rpt-connector.progress") -> list[dict]:
        return [json.loads(r.value) for r in self.visible(topic) if r.key == account.encode()]

    def _fault(self, call: str) -> None:
        self.calls.append(call)
        if self.faults[call]:
            raise KafkaException(self.faults[call].pop(0))


@dataclass
class FakeGroup:
    """The group coordinator of cluster mode (KIP-447): a member's metadata is (member id,
    generation); transactional offsets sent by a member the group no longer has, or under a
    generation the group has moved past, are refused (and the transaction must abort)."""

    generation: int = 1
    members: set[str] = field(default_factory=lambda: {"me"})

    def refusal(self, metadata: tuple[str, int]) -> KafkaError | None:
        member, generation = metadata
        if member not in self.members:
            return KafkaError(
                KafkaError.UNKNOWN_MEMBER_ID, "Broker: Unknown member", txn_requires_abort=True
            )
        if generation != self.generation:
            return KafkaError(
                KafkaError.ILLEGAL_GENERATION, "Broker: Illegal generation",
                txn_requires_abort=True,
            )  # fmt: skip
        return None


class FakeMember:
    """This instance's `Membership` as the committer sees it (connector.kafka.group_fence.Group):
    the accounts assigned here, and the generation it last joined with."""

    def __init__(self, group: FakeGroup, accounts: list[str], name: str = "me") -> None:
        self.group, self.name, self.accounts = group, name, accounts
        self.owned = set(accounts)
        self.generation = group.generation
        self.settled: list[list[str]] = []
        self.writers: list[str] = []  # the transactional.id each transaction's offsets named

    def assigned(self, account: str) -> bool:
        return account in self.owned

    def offsets(self, accounts, writer: str) -> list[TopicPartition]:
        self.writers.append(writer)
        return [TopicPartition("control", self.accounts.index(a), 0) for a in accounts]

    def metadata(self) -> tuple[str, int]:
        return (self.name, self.generation)

    def wait_stable(self, accounts, deadline, writer: str) -> None:
        self.settled.append(list(accounts))


class FakeProducer:
    """confluent_kafka.Producer's transactional API over a `FakeKafka`."""

    def __init__(self, kafka: FakeKafka, config: dict) -> None:
        self._kafka = kafka
        self.config = config
        self._tid = config.get("transactional.id")
        self._timeout = float(config.get("transaction.timeout.ms", 60_000)) / 1000
        self._epoch = -1
        self._open: list[Record] | None = None
        self._offsets: list[int] = []  # control partitions sent with the open transaction
        self._began = 0.0
        self._fatal: KafkaError | None = None
        self._queue: list[Record] = []  # at_least_once: produced, not yet flushed
        self._events: list[KafkaError] = []  # error_cb calls waiting for the next poll()

    def init_transactions(self, timeout: float) -> None:
        self._kafka._fault("init_transactions")
        with self._kafka.lock:
            self._kafka.epochs[self._tid] += 1
            self._epoch = self._kafka.epochs[self._tid]

    def begin_transaction(self) -> None:
        self._check()
        self._kafka._fault("begin_transaction")
        self._open, self._began = [], self._kafka.clock()

    def produce(self, topic, value=None, key=None, partition=-1, headers=None) -> None:
        self._check()
        self._kafka._fault("produce")
        record = Record(topic, value, key, list(headers or []), partition)
        if self._tid is None:
            self._queue.append(record)
        elif self._open is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "not in a transaction"))
        else:
            self._open.append(record)

    def poll(self, timeout: float = 0) -> int:
        """Serves queued error_cb events, as librdkafka does on poll()."""
        served, self._events = self._events, []
        for error in served:
            self.config["error_cb"](error)
        return len(served)

    def send_offsets_to_transaction(self, offsets: list, metadata: object, timeout: float) -> None:
        self._check()
        self._kafka._fault("send_offsets_to_transaction")
        refusal = self._kafka.group.refusal(metadata)
        if refusal is not None:
            raise KafkaException(refusal)
        self._offsets.extend(tp.partition for tp in offsets)

    def commit_transaction(self, timeout: float) -> None:
        self._check()
        if self._kafka.stalls:
            self._kafka.clock.advance(self._kafka.stalls.pop(0))
        if self._kafka.clock() - self._began >= self._timeout:  # the broker aborted it
            self._abort_open()
            self._fatal = kafka_error("fenced")
            raise KafkaException(self._fatal)
        self._kafka._fault("commit_transaction")
        with self._kafka.lock:
            self._kafka.committed.extend(self._open or [])
            self._kafka.transactions.append(list(self._open or []))
            if self._offsets:
                self._kafka.offset_commits.append(self._offsets)
        self._open, self._offsets = None, []

    def abort_transaction(self, timeout: float) -> None:
        self._kafka._fault("abort_transaction")
        self._abort_open()

    def flush(self, timeout: float = -1) -> int:
        self._kafka._fault("flush")
        with self._kafka.lock:
            self._kafka.committed.extend(self._queue)
        self._queue = []
        return 0

    def purge(self, in_queue: bool = True, in_flight: bool = True) -> None:
        self._queue = []

    def _abort_open(self) -> None:
        with self._kafka.lock:
            self._kafka.aborted.extend(self._open or [])
        self._open, self._offsets = None, []

    def _check(self) -> None:
        if self._fatal is not None:
            raise KafkaException(self._fatal)
        if self._tid is not None and self._kafka.epochs[self._tid] != self._epoch:
            # As librdkafka does: the call fails with a bare _FATAL; what it was (_FENCED)
            # arrives through error_cb on the next poll().
            self._abort_open()
            self._fatal = kafka_error("fatal_after_fence")
            self._events.append(kafka_error("fenced"))
            raise KafkaException(self._fatal)


class FakeProgress:
    """ProgressTopic over a FakeKafka: the last committed progress record of the account."""

    topic = "rpt-connector.progress"
    partitions = 1

    def __init__(self, kafka: FakeKafka) -> None:
        self._kafka = kafka

    def read(self, account: str) -> Progress:
        values = [r.value for r in self._kafka.visible(self.topic) if r.key == account.encode()]
        return parse_progress(values[-1], self.topic) if values else Progress(0, "")


@dataclass
class FakeFetch:
    raw: bytes
    body: ParsedBody
    fetched_at: float
    duration: float = 0.01


class ScriptedPlatform:
    """get-rpt answers from a script (bodies or exceptions), then empty answers; counts calls
    and hands out each report once, like the real, destructive API."""

    def __init__(self, script: list, *, block: threading.Event | None = None) -> None:
        self._script = list(script)
        self.calls = 0
        self.handed_out: list[dict] = []
        self.block = block  # while set... cleared: fetch() waits (an exchange in flight)
        self.in_flight = threading.Event()
        self.closed = False
        self.read_aheads: list[bool] = []  # what each call was told

    def fetch(self, read_ahead: bool = True) -> FakeFetch:
        self.calls += 1
        self.read_aheads.append(read_ahead)
        if self.block is not None and not self.block.is_set():
            self.in_flight.set()
            self.block.wait(10)
        step = self._script.pop(0) if self._script else []
        if isinstance(step, BaseException):
            raise step
        body = json.dumps({"result": 0, "desc": "ok", "rpts": step}).encode()
        self.handed_out.extend(step)
        return FakeFetch(body, parse_body(body), time.time())

    def close(self) -> None:
        self.closed = True


def report(msgid: int, custid: str = "c1") -> dict:
    return {
        "msgid": msgid,
        "custid": custid,
        "pknum": 1,
        "pktotal": 1,
        "mobile": "13800000000",
        "countrycode": 86,
        "spno": "1000",
        "exno": "",
        "stime": "2026-12-01 10:00:00",
        "rtime": "2026-12-01 10:00:05",
        "status": 0,
        "errcode": "DELIVRD",
        "errdesc": "success",
        "exdata": "",
    }


class FaultySpool:
    """A real spool whose append / release fail with SpoolWriteError the next N times."""

    def __init__(self, spool: object) -> None:
        self._spool = spool
        self.append_failures = 0
        self.release_failures = 0

    def append(self, body: bytes, **kwargs: object) -> object:
        if self.append_failures:
            self.append_failures -= 1
            raise SpoolWriteError("cannot write spool segment: [Errno 28] No space left on device")
        return self._spool.append(body, **kwargs)

    def release_through(self, seq: int) -> None:
        if self.release_failures:
            self.release_failures -= 1
            raise SpoolWriteError("cannot write released marker: [Errno 30] Read-only file system")
        self._spool.release_through(seq)

    def __getattr__(self, name: str) -> object:
        return getattr(self._spool, name)


class RecordingObserver:
    """An AccountObserver that keeps every call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        def record(*args: object, **kwargs: object) -> None:
            with self._lock:
                self.calls.append((name, args, kwargs))

        return record

    def named(self, name: str) -> list[tuple[tuple, dict]]:
        with self._lock:
            return [(a, k) for n, a, k in self.calls if n == name]

    def states(self) -> list[str]:
        return [str(args[0]) for args, _ in self.named("state")]
