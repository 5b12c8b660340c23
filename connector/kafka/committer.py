"""One transactional producer for every account of an instance (`kafka.shared_producer`).

Each account hands in whole batches: the records of its open transaction and its progress
record (`SharedPublisher.commit`). The committer's one thread puts the batches handed in into
one Kafka transaction as they come, and commits it once no batch came for `linger` or it has
been open for `window` (`kafka.commit_interval`):

    wait for a batch ──► begin ──► produce it (records, then progress record) ──► more within
    `linger`, and the transaction younger than `window`? produce them too ──► commit ──►
    tell each batch its outcome

Producing as batches come, not all at commit time, keeps librdkafka sending while accounts are
still handing in: a transaction of 1,000 accounts' batches produced at once filled its local
queue and waited for acknowledgements, with nothing sent during the commit that followed.

An account's records enter a transaction together with its progress record or not at all, and
its bad data never reaches one (it is dead-lettered, or stops the account, while its records
are built in its own thread). Kafka's errors are the transaction's, so a batch's outcome is the
transaction's: every batch in a failed commit gets the same `PublishError` and its account acts
on the disposition as it does with a producer of its own (send the same spool entries again,
or stop when fenced). A commit that Kafka answers "retriable" is committed again until it
succeeds or fails: batches in it wait, and an account's own deadline only ends its wait (the
next `commit` waits on the same batch), never the transaction.

Zombies: the producer's `transactional.id` is the instance's, so a restarted instance fences
its predecessor once for all of its accounts (`init_transactions`); a fenced committer fails
every later batch with `FencedError`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Producer

from connector.config.settings import KafkaSettings
from connector.errors import (
    ConnectorError,
    Disposition,
    FencedError,
    KafkaUnreachableError,
    PublishError,
)
from connector.kafka.native_produce import RecordQueue, SenderFactory, record_sender
from connector.kafka.publisher import ProducerEvents, Reachability, call_until, translate
from connector.kafka.records import Headers
from connector.kafka.topics import producer_config, transaction_timeout
from connector.observe.logs import RepeatSummary
from connector.retry import Backoff, Clock, Deadline

log = logging.getLogger("connector.committer")

ProducerFactory = Callable[[dict], Producer]
WHO = "(shared producer)"  # how the committer names itself where an account would be named


@dataclass(frozen=True, slots=True)
class Send:
    """One produce call of an account, kept until its batch is committed."""

    topic: str
    values: list[bytes]
    keys: list[bytes | None]
    headers: Headers | None
    partition: int = -1
    timestamps: list[int] | None = None


@dataclass(eq=False)
class Batch:
    """An account's whole transaction: its records, then its progress record."""

    account: str
    sends: list[Send]
    on_done: Callable[[], None] | None = None  # told once the outcome is known
    done: threading.Event = field(default_factory=threading.Event)
    error: ConnectorError | None = None
    taken: bool = False  # in a transaction now: it can no longer be withdrawn

    def wait(self, deadline: Deadline) -> None:
        """Until the outcome is known: return when committed, raise its error when not;
        KafkaUnreachableError at `deadline` (the batch stays where it is: wait again)."""
        if not self.done.wait(max(0.0, deadline.remaining())):
            raise KafkaUnreachableError(
                f"account {self.account}: the shared transaction has not committed in time"
            )
        if self.error is not None:
            raise self.error

    def finish(self, error: ConnectorError | None) -> None:
        self.error = error
        self.done.set()
        if self.on_done is not None:
            try:
                self.on_done()
            except Exception:  # the other batches of the transaction must still hear theirs
                log.exception("account %s: telling the commit outcome failed", self.account)


class Handins:
    """The batches handed in and not yet taken into a transaction, in order; `taken` marks
    a batch no account can withdraw any more. Closing wakes the committer for good."""

    def __init__(self) -> None:
        self._queue: list[Batch] = []
        self._ready = threading.Condition()
        self.closing = threading.Event()

    def __len__(self) -> int:
        with self._ready:
            return len(self._queue)

    def submit(self, batch: Batch) -> Batch:
        with self._ready:
            self._queue.append(batch)
            self._ready.notify()
        return batch

    def withdraw(self, batch: Batch) -> bool:
        """Take a batch back that no transaction has taken yet; False when too late."""
        with self._ready:
            if batch.taken:
                return False
            if batch in self._queue:
                self._queue.remove(batch)
            return True

    def take(self, wait: float | None) -> list[Batch] | None:
        """The batches handed in so far, now taken. `wait` None: the first of a transaction,
        waited for as long as it takes, or None once closing (what is left fails); else up
        to `wait` seconds for one, [] if none came."""
        with self._ready:
            if wait is not None:
                if not self._queue:
                    self._ready.wait(wait)
            else:
                while not self._queue and not self.closing.is_set():
                    self._ready.wait()
                if self.closing.is_set():
                    return None
            batches, self._queue = self._queue, []
            for batch in batches:
                batch.taken = True
        return batches

    def close(self) -> None:
        self.closing.set()
        with self._ready:
            self._ready.notify()

    def left(self) -> list[Batch]:
        """What no transaction will take: every batch still queued, once closed."""
        with self._ready:
            left, self._queue = self._queue, []
        return left


class TransactionCommitter:
    """The instance's transactional producer and the thread that commits accounts' batches."""

    def __init__(
        self,
        kafka: KafkaSettings,
        transactional_id: str,
        *,
        producer_factory: ProducerFactory = Producer,
        sender_factory: SenderFactory = record_sender,
        clock: Clock = time.monotonic,
        linger: float = 0.005,
        window: float | None = None,  # default: kafka.commit_interval
        rng: random.Random | None = None,
    ) -> None:
        self.transactional_id = transactional_id
        self._kafka, self._factory, self._senders = kafka, producer_factory, sender_factory
        self._clock, self._linger, self._rng = clock, linger, rng or random.Random()
        self._window = kafka.commit_interval if window is None else window
        self.reachability = Reachability(kafka.unreachable_after, _log_reachability, clock)
        self._connection_errors = RepeatSummary()  # one summary over successive producers
        self._events = self._new_events()
        self.handins = Handins()
        self._producer: Producer | None = None
        self._starting: tuple[Producer, dict] | None = None  # its init_transactions timed out
        self._records: RecordQueue | None = None
        self._producer_lock = threading.Lock()  # creation and init_transactions, once each
        self._fenced: FencedError | None = None
        self._txn_began: float | None = None
        self._thread = threading.Thread(target=self._run, name="txn-committer", daemon=True)

    # --- what accounts call ---------------------------------------------------------------
    def connect(self, deadline: Deadline) -> None:
        """A producer whose `init_transactions` has fenced older instances; raises when it
        cannot be had by `deadline` (or this instance is fenced)."""
        with self._producer_lock:
            if self._fenced is not None:
                raise self._fenced
            if self._producer is not None:
                return
            if self._starting is None:
                self._events = self._new_events()  # a dropped producer's error_cb goes unheard
                config = producer_config(self._kafka, "shared", None, self._events.on_error)
                config["transactional.id"] = self.transactional_id
                self._starting = (self._factory(config), config)
            producer, config = self._starting
            try:
                self._call(producer.init_transactions, deadline, interrupt=self.handins.closing)
            except ConnectorError as exc:
                # Timed out: librdkafka goes on with it, and the next call resumes it. A new
                # producer instead would be fenced when this one's init completed after all.
                if exc.disposition != Disposition.RETRY:
                    self._starting = None
                    _purge(producer)
                raise
            self._starting = None
            self._producer, self._records = producer, RecordQueue(producer, config, self._senders)
            self.reachability.ok()
            log.info("shared producer %s ready", self.transactional_id)

    def submit(
        self, account: str, sends: list[Send], on_done: Callable[[], None] | None = None
    ) -> Batch:
        return self.handins.submit(Batch(account, sends, on_done))

    def withdraw(self, batch: Batch) -> bool:
        """Take a batch back that no transaction has taken yet; False when too late."""
        return self.handins.withdraw(batch)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self, deadline: Deadline) -> None:
        """After the accounts have stopped: fail what is still queued, end the thread."""
        self.handins.close()
        if self._thread.ident is not None:
            self._thread.join(deadline.remaining())
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(max(0.0, deadline.remaining()))

    # --- the committing thread --------------------------------------------------------------
    def _run(self) -> None:
        while (batches := self.handins.take(None)) is not None:
            try:
                self._commit_all(batches)  # adds the batches it takes meanwhile
            except ConnectorError as error:
                for batch in batches:
                    batch.finish(error)
            except Exception as exc:  # a bug: each account sees it as a failed commit
                log.exception("shared producer: commit failed unexpectedly")
                error = PublishError(f"shared producer failed unexpectedly: {exc!r}")
                self._drop_producer()
                for batch in batches:
                    batch.finish(error)
            else:
                for batch in batches:
                    batch.finish(None)
        for batch in self.handins.left():
            batch.finish(KafkaUnreachableError(f"account {batch.account}: shutting down"))

    def _commit_all(self, batches: list[Batch]) -> None:
        """One transaction of `batches` and of every batch handed in while it is open (added
        to `batches`); retriable commit errors are retried until it ends."""
        self.connect(Deadline.after(self._kafka.unreachable_after, self._clock))
        producer = self._producer
        try:
            producer.begin_transaction()
            self._txn_began = self._clock()
            self._produce(batches)
            until = self._txn_began + self._window
            while (left := until - self._clock()) > 0 and (
                more := self.handins.take(min(left, self._linger))
            ):
                batches.extend(more)
                self._produce(more)
        except KafkaException as exc:
            self._end_failed(self._translate(exc.args[0]))
        self._commit_until_done()

    def _produce(self, batches: list[Batch]) -> None:
        for batch in batches:
            for send in batch.sends:
                self._records.put(
                    send.topic, send.values, send.keys, send.headers, send.partition,
                    send.timestamps,
                )  # fmt: skip
            self._producer.poll(0)

    def _commit_until_done(self) -> None:
        backoff = Backoff(0.5, 30.0, stop=self.handins.closing, rng=self._rng)
        while True:
            deadline = Deadline.after(self._kafka.unreachable_after, self._clock)
            try:
                self._call(self._producer.commit_transaction, deadline)
                self._txn_began = None
                self.reachability.ok()
                return
            except KafkaUnreachableError as exc:
                if self.handins.closing.is_set() or backoff.wait():
                    self._drop_producer()  # the broker aborts it; the spools keep the entries
                    raise
                log.warning("shared producer: %s; committing again", exc)
            except PublishError as error:
                self._end_failed(error)

    def _end_failed(self, error: PublishError) -> None:
        """After a failed begin, produce or commit: abort (or drop a dead producer), raise."""
        self._txn_began = None
        if isinstance(error, FencedError):
            self._fenced = error
            self._drop_producer()
        elif error.disposition == Disposition.ABORT_TRANSACTION:
            try:
                self._call(
                    self._producer.abort_transaction,
                    Deadline.after(self._kafka.unreachable_after, self._clock),
                )
            except ConnectorError as failed:
                log.error("shared producer: the abort failed too (%s); a new producer", failed)
                self._drop_producer()
        else:
            self._drop_producer()
        raise error

    def _new_events(self) -> ProducerEvents:
        return ProducerEvents(WHO, self.reachability, self._connection_errors)

    def _drop_producer(self) -> None:
        """Forget the producer. Its queue is purged: once the broker is back it would send
        them with its old epoch, be told it is fenced (by our own next producer), and that
        error must not be taken for the next producer's (it has events of its own)."""
        with self._producer_lock:
            producer, self._producer, self._records = self._producer, None, None
        if producer is not None:
            _purge(producer)

    def _call(self, operation: Callable[[float], None], deadline: Deadline, interrupt=None) -> None:
        backoff = Backoff(0.1, 5.0, stop=interrupt, rng=self._rng)
        call_until(operation, deadline, WHO, self.reachability, self._translate, backoff, interrupt)

    def _translate(self, error: KafkaError) -> PublishError:
        open_for = self._clock() - self._txn_began if self._txn_began is not None else 0.0
        silent = max(open_for, self.reachability.silent_for())
        cause = self._events.cause_of(error, self._producer)
        return translate(cause, WHO, silent, transaction_timeout(self._kafka))


def _purge(producer: Producer) -> None:
    try:
        producer.purge(in_queue=True, in_flight=True)
    except KafkaException as exc:  # a producer in a fatal state may refuse: dropped anyway
        log.debug("shared producer: purging a dropped producer: %s", exc)


def shared_transactional_id(kafka: KafkaSettings, accounts: list[str]) -> str:
    """The instance's transactional.id: kafka.transactional_id_prefix + "instance-" + a digest
    of its account names, so that a restart of the same configuration fences its predecessor
    while standalone instances that split the accounts between them do not fence each other."""
    digest = zlib.crc32("\n".join(sorted(accounts)).encode())
    return f"{kafka.transactional_id_prefix}instance-{digest:08x}"


def _log_reachability(reachable: bool, reason: str | None) -> None:
    if not reachable:
        log.warning("shared producer: Kafka not reachable: %s", reason)
