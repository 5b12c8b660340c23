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

Zombies, standalone: the producer's `transactional.id` is the instance's, so a restarted
instance fences its predecessor once for all of its accounts (`init_transactions`); a fenced
committer fails every later batch with `FencedError`.

Zombies, cluster mode: every instance has a `transactional.id` of its own, and the consumer
group fences instead (KIP-447, `connector.kafka.group_fence`): each transaction carries its
accounts' group offsets under the current generation, and a revoked account's batch is refused.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Producer

from connector.config.settings import ClusterSettings, KafkaSettings
from connector.errors import (
    ConnectorError,
    Disposition,
    FencedError,
    KafkaUnreachableError,
    PublishError,
    TransactionAbortedError,
)
from connector.kafka.batches import Batch, Handins, Send
from connector.kafka.group_fence import GroupFence
from connector.kafka.native_produce import SenderFactory, record_sender
from connector.kafka.producer_slot import WHO, ProducerSlot
from connector.kafka.publisher import Reachability, call_until, translate
from connector.kafka.topics import transaction_timeout
from connector.retry import Backoff, Clock, Deadline

log = logging.getLogger("connector.committer")

ProducerFactory = Callable[[dict], Producer]


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
        fence: GroupFence | None = None,  # cluster mode
    ) -> None:
        self._fence = fence
        self._kafka = kafka
        self._clock, self._linger, self._rng = clock, linger, rng or random.Random()
        self._window = kafka.commit_interval if window is None else window
        self.reachability = Reachability(kafka.unreachable_after, _log_reachability, clock)
        self._slot = ProducerSlot(
            kafka, transactional_id, producer_factory, sender_factory, self.reachability,
            self._call, renew=fence is not None,
        )  # fmt: skip
        self.handins = Handins()
        self._txn_began: float | None = None
        self._thread = threading.Thread(target=self._run, name="txn-committer", daemon=True)

    @property
    def transactional_id(self) -> str:
        return self._slot.transactional_id

    # --- what accounts call ---------------------------------------------------------------
    def connect(self, deadline: Deadline) -> None:
        """A producer whose `init_transactions` has fenced older instances; raises when it
        cannot be had by `deadline` (or this instance is fenced)."""
        self._slot.connect(deadline, self.handins.closing)

    def settle(self, accounts: list[str], deadline: Deadline) -> None:
        """Cluster mode: before a new owner reads the accounts' progress, wait until no
        transaction (their predecessors') still holds their group offsets."""
        if self._fence is not None:
            self._fence.settle(accounts, deadline, self._slot.transactional_id)

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
        self._slot.flush(deadline)

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
                self._slot.drop()
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
        self.connect(self._deadline())
        batches[:] = self._admit(batches)
        if not batches:
            return
        try:
            self._slot.producer.begin_transaction()
            self._txn_began = self._clock()
            self._produce(batches)
            until = self._txn_began + self._window
            while (left := until - self._clock()) > 0 and (
                more := self.handins.take(min(left, self._linger))
            ):
                more = self._admit(more)
                batches.extend(more)
                self._produce(more)
        except KafkaException as exc:
            self._end_failed(self._translate(exc.args[0]))
        self._send_offsets({batch.account for batch in batches})
        self._commit_until_done()

    def _send_offsets(self, accounts: set[str]) -> None:
        """Cluster mode: the accounts' group offsets join the transaction (see GroupFence)."""
        if self._fence is None:
            return
        try:
            offsets, metadata = self._fence.offsets(accounts, self._slot.transactional_id)

            def send_offsets_to_transaction(timeout: float) -> None:
                self._slot.producer.send_offsets_to_transaction(offsets, metadata, timeout)

            self._call(send_offsets_to_transaction, self._deadline())
        except PublishError as error:
            self._end_failed(error)

    def _produce(self, batches: list[Batch]) -> None:
        for batch in batches:
            for send in batch.sends:
                self._slot.records.put(
                    send.topic, send.values, send.keys, send.headers, send.partition,
                    send.timestamps,
                )  # fmt: skip
            self._slot.producer.poll(0)

    def _commit_until_done(self) -> None:
        backoff = Backoff(0.5, 30.0, stop=self.handins.closing, rng=self._rng)
        while True:
            deadline = self._deadline()
            try:
                self._call(self._slot.producer.commit_transaction, deadline)
                self._txn_began = None
                self.reachability.ok()
                return
            except KafkaUnreachableError as exc:
                if self.handins.closing.is_set() or backoff.wait():
                    self._slot.drop()  # the broker aborts it; the spools keep the entries
                    raise
                log.warning("shared producer: %s; committing again", exc)
            except PublishError as error:
                self._end_failed(error)

    def _end_failed(self, error: PublishError) -> None:
        """After a failed begin, produce or commit: abort (or drop a dead producer), raise."""
        self._txn_began = None
        if isinstance(error, FencedError):
            self._slot.fence(error)
            if self._fence is not None:  # cluster mode: the batches go again, on a new producer
                error = TransactionAbortedError(f"{error}; sent again on a new producer")
        elif error.disposition == Disposition.ABORT_TRANSACTION:
            try:
                self._call(self._slot.producer.abort_transaction, self._deadline())
            except ConnectorError as failed:
                log.error("shared producer: the abort failed too (%s); a new producer", failed)
                self._slot.drop()
        else:
            self._slot.drop()
        raise error

    def _admit(self, batches: list[Batch]) -> list[Batch]:
        return batches if self._fence is None else self._fence.admit(batches)

    def _deadline(self) -> Deadline:
        return Deadline.after(self._kafka.unreachable_after, self._clock)

    def _call(self, operation: Callable[[float], None], deadline: Deadline, interrupt=None) -> None:
        backoff = Backoff(0.1, 5.0, stop=interrupt, rng=self._rng)
        call_until(operation, deadline, WHO, self.reachability, self._translate, backoff, interrupt)

    def _translate(self, error: KafkaError) -> PublishError:
        open_for = self._clock() - self._txn_began if self._txn_began is not None else 0.0
        silent = max(open_for, self.reachability.silent_for())
        cause = self._slot.events.cause_of(error, self._slot.producer)
        return translate(cause, WHO, silent, transaction_timeout(self._kafka))


def shared_transactional_id(
    kafka: KafkaSettings, accounts: list[str], cluster: ClusterSettings | None = None
) -> str:
    """The instance's transactional.id: kafka.transactional_id_prefix + "instance-" + a digest
    of its account names, so that a restart of the same configuration fences its predecessor
    while standalone instances that split the accounts between them do not fence each other.

    Cluster mode: "member-" + `cluster.instance_id` (a restarted pod fences its predecessor at
    once), else a random one; the group's generation fences zombies (KIP-447)."""
    if cluster is not None and cluster.group_id is not None:
        member = cluster.instance_id or uuid.uuid4().hex[:16]
        return f"{kafka.transactional_id_prefix}member-{member}"
    digest = zlib.crc32("\n".join(sorted(accounts)).encode())
    return f"{kafka.transactional_id_prefix}instance-{digest:08x}"


def _log_reachability(reachable: bool, reason: str | None) -> None:
    if not reachable:
        log.warning("shared producer: Kafka not reachable: %s", reason)
