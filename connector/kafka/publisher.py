"""Kafka side of the pipeline: the producer of one account, and what its errors mean.

Two delivery modes share one interface, so the pipeline loop has a single shape:

    exactly_once   begin() → produce()* → commit(seq) one Kafka transaction; the progress
                   record {account, spool_seq, spool_id} commits atomically with the reports
                   (the pattern of KIP-618)
    at_least_once  begin() is a no-op; commit() flushes, checks every delivery, then writes the
                   progress record; a crash between the two re-sends (duplicates, never loss)

librdkafka's errors become one `PublishError` subclass each, whose `disposition` the loop acts
on: `retriable()` → the same call again (with backoff, within the call's deadline; past it
`KafkaUnreachableError`); `txn_requires_abort()` → `TransactionAbortedError`; a fence →
`FencedError`, unless it is the broker aborting *our* transaction for outliving
`transaction.timeout.ms` (librdkafka reports both as `_FENCED`), which is
`TransactionTimedOutError`: a new producer sends the same entries again; other fatal errors →
`PublishError` (new producer). Every librdkafka call runs with a short timeout under the
caller's `Deadline`, so a shutdown or a revoke is never stuck in one.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Producer

from connector.config.settings import KafkaSettings
from connector.errors import (
    FencedError,
    KafkaUnreachableError,
    PublishError,
    TransactionAbortedError,
    TransactionTimedOutError,
)
from connector.kafka.native_produce import RecordQueue, SenderFactory, record_sender
from connector.kafka.progress import Progress, ProgressTopic
from connector.kafka.records import Headers, progress_partition, progress_value
from connector.kafka.topics import (
    _is_client_wide,  # noqa: F401  (re-exported: tests and tools import them from here)
    client_config,  # noqa: F401
    ensure_topics,  # noqa: F401
    producer_config,
    transaction_timeout,
)
from connector.observe.logs import RepeatSummary
from connector.retry import Backoff, Clock, Deadline

log = logging.getLogger("connector.publisher")

__all__ = ["AccountPublisher", "Progress", "ProgressTopic", "Reachability"]

ProducerFactory = Callable[[dict], Producer]
_FENCE_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
# send_offsets_to_transaction refused (KIP-447): the group has a newer generation, or this
# instance is no longer a member of it. The transaction aborts; the group decides what is ours.
_GROUP_FENCE_CODES = frozenset(
    {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_INSTANCE_ID}
)
_UNREACHABLE_CODES = frozenset(
    {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._TIMED_OUT}
)
_FATAL_CAUSE_POLLS = 10  # x 50 ms: how long to wait for error_cb to name a fatal error's cause
_CALL_SLICE = 1.0  # each librdkafka call waits at most this long, then the deadline is checked


class Reachability:
    """Is Kafka reachable? Decided by what happens: a success says yes; no success for
    `after` seconds while work is pending says no. Reports each change once."""

    def __init__(
        self,
        after: float,
        report: Callable[[bool, str | None], None],
        clock: Clock = time.monotonic,
    ) -> None:
        self.after = after
        self._report, self._clock = report, clock
        self._lock = threading.Lock()
        self.last_ok = clock()
        self._reachable: bool | None = None

    def ok(self) -> None:
        with self._lock:
            self.last_ok = self._clock()
            changed, self._reachable = self._reachable is not True, True
        if changed:
            self._report(True, None)

    def failed(self, reason: str) -> None:
        """A definite failure (no broker up): not reachable now, whatever `after` says."""
        with self._lock:
            changed, self._reachable = self._reachable is not False, False
        if changed:
            self._report(False, reason)

    def check(self, pending: bool) -> None:
        if pending and self.silent_for() >= self.after:
            self.failed(f"no successful Kafka request for {self.silent_for():.0f}s")

    def silent_for(self) -> float:
        return self._clock() - self.last_ok


def translate(
    error: KafkaError, account: str, silent_for: float, txn_timeout: float
) -> PublishError:
    """What a librdkafka error means. `silent_for`: how long our open transaction, or Kafka's
    silence, has lasted. A fence after that outlived the transaction timeout is the broker
    aborting our transaction, not a newer instance: a live newer instance fences a producer
    that is still answering, inside the timeout."""
    text = error.str()
    if error.code() in _FENCE_CODES:
        if silent_for >= txn_timeout:
            return TransactionTimedOutError(
                f"account {account}: transaction aborted by the broker after {silent_for:.0f}s "
                f"(transaction.timeout.ms is {txn_timeout:.0f}s): {text}"
            )
        return FencedError(f"account {account}: fenced by a newer instance ({text})")
    if error.code() in _GROUP_FENCE_CODES:
        return TransactionAbortedError(
            f"account {account}: the consumer group moved on (a rebalance, or this instance "
            f"left the group); the transaction aborts: {text}"
        )
    if error.txn_requires_abort():
        return TransactionAbortedError(f"account {account}: transaction must abort: {text}")
    if error.code() in _UNREACHABLE_CODES and not error.fatal():
        return KafkaUnreachableError(f"account {account}: {text}")
    return PublishError(f"account {account}: Kafka error: {text}")


def call_until(
    operation: Callable[[float], None],
    deadline: Deadline,
    who: str,
    reachability: Reachability,
    translate_error: Callable[[KafkaError], PublishError],
    backoff: Backoff,
    interrupt: threading.Event | None = None,
) -> None:
    """A transactional call in short slices, retried while librdkafka says retriable,
    until `deadline` (then KafkaUnreachableError) or `interrupt`."""
    while True:
        try:
            operation(max(0.001, deadline.cap(_CALL_SLICE)))
            return
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if not error.retriable() or error.fatal() or error.txn_requires_abort():
                raise translate_error(error) from exc
            reachability.check(pending=True)
            if deadline.expired or (interrupt is not None and interrupt.is_set()):
                raise KafkaUnreachableError(
                    f"account {who}: {operation.__name__} did not succeed in time: {error.str()}"
                ) from exc
            log.debug("account %s: %s retriable: %s", who, operation.__name__, error)
            if error.code() != KafkaError._TIMED_OUT and backoff.wait():
                raise KafkaUnreachableError(f"account {who}: stopped") from exc


class ProducerEvents:
    """What librdkafka's error_cb says about an account's producers: a fatal fence (kept:
    later calls only say "Local: Fatal error"), whether Kafka is reachable, and a log line
    (connection errors summarized, one line per 30 s while Kafka is away)."""

    def __init__(self, account: str, reachability: Reachability, summary: RepeatSummary) -> None:
        self.account, self.reachability, self._summary = account, reachability, summary
        self.fence: KafkaError | None = None

    def cause_of(self, error: KafkaError, producer: Producer | None) -> KafkaError:
        """What `error` really is. librdkafka fails the call with a bare _FATAL and queues the
        real cause (a fence?) for error_cb: serve it before deciding, or a fence would look
        like any fatal error and a new producer would fence the newer instance back."""
        if error.code() == KafkaError._FATAL and producer is not None:
            for _ in range(_FATAL_CAUSE_POLLS):
                if self.fence is not None:
                    break
                producer.poll(0.05)
        return self.fence or error

    def on_error(self, error: KafkaError) -> None:
        if error.fatal() and error.code() in _FENCE_CODES:
            self.fence = error
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.reachability.failed(error.str())
        if error.code() in _UNREACHABLE_CODES:
            held_back = self._summary.admit()
            if held_back is None:
                return
            more = f" (+{held_back} more since the last one logged)" if held_back else ""
            log.warning("account %s: Kafka: %s%s", self.account, error.str(), more)
            return
        log.warning("account %s: Kafka: %s", self.account, error.str())


class AccountPublisher:
    """The producer of one account, in either delivery mode. No I/O until `init()`."""

    def __init__(
        self,
        kafka: KafkaSettings,
        account: str,
        *,
        spool_id: str,
        reachability: Reachability,
        producer_factory: ProducerFactory = Producer,
        sender_factory: SenderFactory = record_sender,
        progress: ProgressTopic | None = None,
        clock: Clock = time.monotonic,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
        on_stats: Callable[[str], None] | None = None,
        connection_errors: RepeatSummary | None = None,
    ) -> None:
        self.account = account
        # error_cb of the account's successive producers (which share its log summary).
        self._events = ProducerEvents(account, reachability, connection_errors or RepeatSummary())
        self._on_error = self._events.on_error
        self.spool_id = spool_id  # the spool folder whose sequence numbers this producer commits
        self.transactional = kafka.delivery == "exactly_once"
        self.reachability = reachability
        self._kafka = kafka
        self._factory = producer_factory
        self._sender_factory = sender_factory
        self._progress = progress or ProgressTopic(kafka)
        self._clock = clock
        self._stop = stop or threading.Event()
        self._rng = rng or random.Random()
        self._on_stats = on_stats
        self._producer: Producer | None = None
        self._queue: RecordQueue | None = None  # how records reach self._producer
        self._delivery_error: KafkaError | None = None
        self._txn_began: float | None = None  # clock() at begin(); None outside a transaction
        self._progress_sent = False
        self._other_spools: dict[str, int] = {}  # carried forward in every progress record

    # --- lifecycle ------------------------------------------------------------------------
    def read_progress(self) -> Progress:
        progress = self._progress.read(self.account)
        self.reachability.ok()
        return progress

    def init(self, deadline: Deadline) -> Progress:
        """Create the producer, fence older instances (exactly_once), return the progress."""
        config = producer_config(self._kafka, self.account, self._on_stats, self._on_error)
        if not self.transactional:
            config["on_delivery"] = self._on_delivery
        self._producer = self._factory(config)
        # No native sender for at_least_once: it needs each failed record's delivery report.
        senders = self._sender_factory if self.transactional else None
        self._queue = RecordQueue(self._producer, config, senders)
        if self.transactional:
            self._call(self._producer.init_transactions, deadline, interrupt=self._stop)
        self.reachability.ok()
        progress = self.read_progress()
        self._other_spools = progress.carried_for(self.spool_id)
        return progress

    def begin(self) -> None:
        if self._txn_began is not None:
            return
        if self.transactional:
            try:
                self._producer.begin_transaction()
            except KafkaException as exc:
                raise self._translate(exc.args[0]) from exc
        self._txn_began = self._clock()
        self._progress_sent = False

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers | None,
        partition: int = -1,
    ) -> None:
        self.produce_many(topic, [value], [key], headers, partition)

    def produce_many(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes | None],
        headers: Headers | None,  # None: no headers (kafka.record_headers = false)
        partition: int = -1,
        timestamps: list[int] | None = None,
    ) -> None:
        """The hot path: every record queued, at `timestamps` (epoch ms) if given; in one
        native call where there is a sender (exactly_once), else one produce() per record."""
        try:
            self._queue.put(topic, values, keys, headers, partition, timestamps)
            self._producer.poll(0)
        except KafkaException as exc:
            raise self._translate(exc.args[0]) from exc

    def commit(
        self, sequence: int, deadline: Deadline, then: Callable[[], None] | None = None
    ) -> bool:
        """Make everything produced since begin() and the progress record durable together.
        Safe to call again after a RETRY error: the progress record is produced only once.
        Always waits for the outcome (True), so `then` is never needed: a producer of its own
        commits on the account's own thread (`SharedPublisher.commit` may not wait)."""
        if not self._progress_sent:
            self._produce_progress(sequence)
            self._progress_sent = True
        if self.transactional:
            self._call(self._producer.commit_transaction, deadline)
        else:
            self._flush_checked(deadline)
        self._txn_began = None
        self.reachability.ok()
        return True

    def abort(self, deadline: Deadline) -> None:
        """Drop the open transaction; its spool entries will be sent again."""
        if self.transactional and self._txn_began is not None:
            self._call(self._producer.abort_transaction, deadline)
        elif self._producer is not None:
            self._producer.purge(in_queue=True, in_flight=False)
            self._producer.flush(deadline.cap(_CALL_SLICE))
        self._delivery_error = None
        self._txn_began = None

    def close(self, deadline: Deadline) -> None:
        """Deliver what can be delivered before `deadline`; a failed producer just goes away."""
        if self._producer is None:
            return
        try:
            self._producer.flush(deadline.remaining())
        except KafkaException as exc:
            log.debug("account %s: producer closed in error: %s", self.account, exc)
        self._producer = self._queue = None  # (a native sender holds its producer)

    # --- internals ------------------------------------------------------------------------
    def _produce_progress(self, sequence: int) -> None:
        partition = progress_partition(self.account, self._progress.partitions or 1)
        value = progress_value(
            self.account, sequence, self.spool_id, time.time(), self._other_spools
        )
        self.produce(self._progress.topic, value, self.account.encode(), [], partition)

    def _flush_checked(self, deadline: Deadline) -> None:
        remaining = self._producer.flush(deadline.remaining())
        if remaining:
            raise KafkaUnreachableError(f"{remaining} records still undelivered at the deadline")
        if self._delivery_error is not None:
            error, self._delivery_error = self._delivery_error, None
            raise TransactionAbortedError(f"delivery failed: {error.str()}")

    def _call(
        self,
        operation: Callable[[float], None],
        deadline: Deadline,
        interrupt: threading.Event | None = None,
    ) -> None:
        call_until(
            operation, deadline, self.account, self.reachability, self._translate,
            Backoff(0.1, 5.0, stop=interrupt, rng=self._rng), interrupt,
        )  # fmt: skip

    def _translate(self, error: KafkaError) -> PublishError:
        open_for = self._clock() - self._txn_began if self._txn_began is not None else 0.0
        silent = max(open_for, self.reachability.silent_for())
        timeout = transaction_timeout(self._kafka)
        cause = self._events.cause_of(error, self._producer)
        return translate(cause, self.account, silent, timeout)

    def _on_delivery(self, error: KafkaError | None, _message: object) -> None:
        if error is not None and self._delivery_error is None:
            self._delivery_error = error
