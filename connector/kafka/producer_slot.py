"""The shared producer's one transactional producer, as the committer holds it.

Made and initialized once (`init_transactions` fences older holders of the
`transactional.id`); an init that timed out is resumed on the same producer, since librdkafka
completes it in the background and a new producer would then be fenced by it; dropped (and
purged) after a failure, a new one made on the next `connect`; fenced for good once a newer
instance has taken the transactional.id. In cluster mode (`renew`) a fence is not the end: the
group fences zombies, and a new owner fences the transactional.id of a member that left with a
transaction open (to end it at once); this instance goes on under a new transactional.id.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from confluent_kafka import KafkaException, Producer

from connector.config.settings import KafkaSettings
from connector.errors import ConnectorError, Disposition, FencedError
from connector.kafka.native_produce import RecordQueue, SenderFactory
from connector.kafka.publisher import ProducerEvents, Reachability
from connector.kafka.takeover import lineage
from connector.kafka.topics import producer_config
from connector.observe.logs import RepeatSummary
from connector.retry import Deadline

log = logging.getLogger("connector.committer")

WHO = "(shared producer)"  # how the committer names itself where an account would be named
Call = Callable[..., None]  # (operation, deadline, interrupt=): retried while retriable


class ProducerSlot:
    """The producer, its record queue and its error events; None while there is none."""

    def __init__(
        self,
        kafka: KafkaSettings,
        transactional_id: str,
        factory: Callable[[dict], Producer],
        senders: SenderFactory,
        reachability: Reachability,
        call: Call,
        renew: bool = False,  # cluster mode: a fence means a new transactional.id
    ) -> None:
        self._kafka, self._tid, self._factory, self._senders = (
            kafka,
            transactional_id,
            factory,
            senders,
        )
        self._reachability, self._call, self._renew = reachability, call, renew
        self._connection_errors = RepeatSummary()  # one summary over successive producers
        self.events = self._new_events()
        self.producer: Producer | None = None
        self.records: RecordQueue | None = None
        self._starting: tuple[Producer, dict] | None = None  # its init_transactions timed out
        self._lock = threading.Lock()  # creation and init_transactions, once each
        self._fenced: FencedError | None = None

    def connect(self, deadline: Deadline, interrupt: threading.Event) -> None:
        """A producer whose `init_transactions` has fenced older instances; raises when it
        cannot be had by `deadline` (or this instance is fenced)."""
        with self._lock:
            if self._fenced is not None:
                raise self._fenced
            if self.producer is not None:
                return
            if self._starting is None:
                self.events = self._new_events()  # a dropped producer's error_cb goes unheard
                config = producer_config(self._kafka, "shared", None, self.events.on_error)
                config["transactional.id"] = self._tid
                self._starting = (self._factory(config), config)
            producer, config = self._starting
            try:
                self._call(producer.init_transactions, deadline, interrupt=interrupt)
            except ConnectorError as exc:
                # Timed out: librdkafka goes on with it, and the next call resumes it. A new
                # producer instead would be fenced when this one's init completed after all.
                if exc.disposition != Disposition.RETRY:
                    self._starting = None
                    _purge(producer)
                raise
            self._starting = None
            self.producer, self.records = producer, RecordQueue(producer, config, self._senders)
            self._reachability.ok()
            log.info("shared producer %s ready", self._tid)

    def drop(self) -> None:
        """Forget the producer. Its queue is purged: once the broker is back it would send
        them with its old epoch, be told it is fenced (by our own next producer), and that
        error must not be taken for the next producer's (it has events of its own)."""
        with self._lock:
            producer, self.producer, self.records = self.producer, None, None
        if producer is not None:
            _purge(producer)

    @property
    def transactional_id(self) -> str:
        return self._tid

    def fence(self, error: FencedError) -> None:
        """Another producer took the transactional.id: no producer again; in cluster mode,
        the next one under a new transactional.id."""
        self.drop()
        if not self._renew:
            self._fenced = error
            return
        self._tid = f"{lineage(self._tid)}~{uuid.uuid4().hex[:8]}"
        log.warning("shared producer: %s; going on as %s", error, self._tid)

    def flush(self, deadline: Deadline) -> None:
        """At close: deliver what is queued, then forget the producer."""
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.flush(max(0.0, deadline.remaining()))

    def _new_events(self) -> ProducerEvents:
        return ProducerEvents(WHO, self._reachability, self._connection_errors)


def _purge(producer: Producer) -> None:
    try:
        producer.purge(in_queue=True, in_flight=True)
    except KafkaException as exc:  # a producer in a fatal state may refuse: dropped anyway
        log.debug("shared producer: purging a dropped producer: %s", exc)
