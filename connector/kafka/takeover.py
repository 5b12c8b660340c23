"""Cluster mode with the shared producer: what a new owner does before it reads the progress of
the accounts the group just gave it.

Their previous owner may still have a transaction open that holds their group offsets (a
commit under way) or their progress records. Its outcome must be known first, or the progress
read would come too early. If that owner is alive it ends the transaction within a commit
interval. If it died (or the group dropped it), nothing ends it until the broker aborts it
after `transaction.timeout.ms` (60 s by default). So:

1. read the accounts' committed group offsets as they are (read_uncommitted): each names the
   transactional.id and the group member of the instance that last committed the account;
2. a writer whose member is no longer in the group is fenced: `init_transactions` under its
   transactional.id aborts its open transaction at once and ends its producer (a zombie that
   comes back goes on under a new transactional.id, and the group's generation fence stops
   its commits);
3. wait until no transaction holds the accounts' offsets (an OffsetFetch that requires stable
   offsets, which librdkafka sends for a read_committed consumer).

Both reads go through consumers of their own: the member's `committed()`, called while its
assignment was being applied, never answered (nor timed out) in a test with librdkafka 2.16.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connector.config.settings import Settings
from connector.errors import KafkaUnreachableError, NotAssignedError
from connector.kafka.topics import client_config
from connector.retry import Deadline

log = logging.getLogger("connector.cluster")

WRITER_SEPARATOR = " "  # offset metadata: "<transactional.id> <member id>"


def writer_metadata(transactional_id: str, member_id: str) -> str:
    return f"{transactional_id}{WRITER_SEPARATOR}{member_id}"


def lineage(transactional_id: str) -> str:
    """A transactional.id without the suffix a fenced instance goes on under (`~...`)."""
    return transactional_id.split("~", 1)[0]


def parse_writer(metadata: str | None) -> tuple[str, str] | None:
    """(transactional.id, member id) from an offset's metadata; None if it names none."""
    if not metadata or WRITER_SEPARATOR not in metadata:
        return None
    transactional_id, member_id = metadata.split(WRITER_SEPARATOR, 1)
    return (transactional_id, member_id) if transactional_id and member_id else None


class Takeover:
    """Settles accounts for their new owner: departed writers fenced, offsets stable."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer_factory: Callable[[dict], Consumer] = Consumer,
        admin_factory: Callable[[dict], AdminClient] = AdminClient,
        producer_factory: Callable[[dict], Producer] = Producer,
    ) -> None:
        self._settings, self._group = settings, settings.cluster.group_id
        self._consumer_factory, self._admin_factory = consumer_factory, admin_factory
        self._producer_factory = producer_factory
        self._stable: Consumer | None = None  # read_committed: waits while offsets are pending
        self._as_is: Consumer | None = None  # read_uncommitted: answers at once

    def open(self) -> None:
        self._stable = self._consumer_factory(self._config("read_committed"))
        self._as_is = self._consumer_factory(self._config("read_uncommitted"))

    def close(self) -> None:
        for consumer in (self._stable, self._as_is):
            if consumer is not None:
                consumer.close()
        self._stable = self._as_is = None

    def settle(self, partitions: list[TopicPartition], deadline: Deadline, own: str) -> None:
        """Departed writers fenced (never `own`, this instance's transactional.id, whatever
        member it wrote under), then no transaction holding these offsets; raises
        KafkaUnreachableError when one still does at `deadline`."""
        stable, as_is = self._stable, self._as_is
        if stable is None or as_is is None:
            raise NotAssignedError("cluster: not in the group (not started, or closed)")
        try:
            found = as_is.committed(partitions, timeout=deadline.cap(10.0))
            self._fence_departed(found, deadline, own)
        except (KafkaException, TimeoutError) as exc:  # the wait below still orders the reads
            log.warning("cluster: could not look for departed writers: %s", exc)
        self._wait_stable(stable, partitions, deadline)

    def _fence_departed(
        self, committed: list[TopicPartition], deadline: Deadline, own: str
    ) -> None:
        writers = {w for w in (parse_writer(tp.metadata) for tp in committed) if w is not None}
        # Ours under an earlier member id (the group dropped us and we rejoined): not departed.
        writers = {(tid, m) for tid, m in writers if lineage(tid) != lineage(own)}
        if not writers:
            return
        members = self._members(deadline)
        for transactional_id in sorted({tid for tid, member in writers if member not in members}):
            log.warning(
                "cluster: fencing %s, the transactional.id of an instance that left the group "
                "(its open transaction, if any, ends now)",
                transactional_id,
            )
            fencer = self._producer_factory(
                client_config(self._settings.kafka) | {"transactional.id": transactional_id}
            )
            fencer.init_transactions(max(1.0, deadline.cap(30.0)))

    def _members(self, deadline: Deadline) -> set[str]:
        admin = self._admin_factory(client_config(self._settings.kafka))
        future = admin.describe_consumer_groups([self._group])[self._group]
        return {member.member_id for member in future.result(timeout=deadline.cap(10.0)).members}

    def _wait_stable(
        self, stable: Consumer, partitions: list[TopicPartition], deadline: Deadline
    ) -> None:
        while True:
            try:
                answered = stable.committed(partitions, timeout=max(0.1, deadline.cap(5.0)))
                if not any(tp.error for tp in answered):
                    return
                reason = next(tp.error for tp in answered if tp.error).str()
            except KafkaException as exc:
                reason = exc.args[0].str()
            if deadline.expired:
                raise KafkaUnreachableError(
                    f"cluster: offsets of {len(partitions)} account(s) still held by an open "
                    f"transaction (another instance's, ended by its commit, its abort or "
                    f"transaction.timeout.ms): {reason}"
                )
            time.sleep(0.05)

    def _config(self, isolation: str) -> dict:
        return client_config(self._settings.kafka, "group") | {
            "group.id": self._group,
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
