"""Cluster mode: which accounts this instance runs, decided by a Kafka consumer group.

Instances started with the same configuration and `[cluster] group_id` join one consumer group
on a control topic that has one partition per account: partition *i* belongs to the *i*-th
account in sorted name order. Owning partition *i* means running that account's pipeline. The
group uses cooperative-sticky assignment, so a rebalance moves only the accounts that must move,
and a revoked account is stopped (its open transaction finished or aborted) before the
partition is handed on. If an instance dies, the group reassigns its accounts after
`cluster.session_timeout`; the successor's `init_transactions` fences the dead (or zombie)
instance's producer, so it can never commit again. With `kafka.shared_producer` the group
fences instead (`connector.kafka.group_fence`): each transaction carries its accounts'
control-topic offsets under the member's generation.

The control topic carries no records: the group protocol, and with the shared producer the
group's transactional offsets (always offset 0; what counts is their generation, their being
pending, and their metadata naming the writer: `connector.kafka.takeover`), are all it carries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connector.config.settings import Settings
from connector.errors import ConfigError, NotAssignedError, PublishError
from connector.kafka.takeover import Takeover, writer_metadata
from connector.kafka.topics import client_config
from connector.retry import Clock, Deadline

log = logging.getLogger("connector.cluster")

Accounts = Callable[[list[str]], None]


def account_partitions(settings: Settings) -> list[str]:
    """The account of each control-topic partition: sorted names, so every instance agrees."""
    return sorted(account.name for account in settings.accounts)


class Membership:
    """A consumer-group member; `poll()` from the supervising thread delivers (re)assignments."""

    def __init__(
        self,
        settings: Settings,
        on_assigned: Accounts,
        on_revoked: Accounts,
        *,
        consumer_factory: Callable[[dict], Consumer] = Consumer,
        clock: Clock = time.monotonic,
        takeover: Takeover | None = None,
    ) -> None:
        self._settings = settings
        self._consumer_factory, self._clock = consumer_factory, clock
        self._session = settings.cluster.session_timeout
        self._owned: set[str] = set()  # may call get-rpt for (with owns()'s doubt)
        self._assigned: set[str] = set()  # may commit for: until a revocation has been served
        self._last_poll = clock()
        self._suspect_until = 0.0  # after a gap in polling: ownership unproven until then
        self._accounts = account_partitions(settings)
        self._partition = {name: index for index, name in enumerate(self._accounts)}
        self._on_assigned, self._on_revoked = on_assigned, on_revoked
        self._topic = settings.cluster.control_topic
        self._consumer: Consumer | None = None
        self._takeover = takeover or Takeover(settings, consumer_factory=consumer_factory)
        self._metadata: object | None = None  # the member's group metadata, as of the last poll
        self._member_id = ""  # ... and its member id

    def start(self) -> None:
        self._ensure_control_topic()
        self._consumer = self._consumer_factory(self._consumer_config())
        self._takeover.open()
        self._consumer.subscribe(
            [self._topic], on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lose
        )
        log.info(
            "joined group %r on %s (%d accounts)",
            self._settings.cluster.group_id,
            self._topic,
            len(self._accounts),
        )

    def owns(self, account: str) -> bool:
        """May this instance still call get-rpt for `account`? Not if the group took it away,
        and not while a gap in polling (a paused process) longer than the session timeout is
        unresolved: the group may have given it to another instance meanwhile."""
        now = self._clock()
        if now - self._last_poll >= self._session:
            self._suspect(now)
        return account in self._owned and now >= self._suspect_until

    def assigned(self, account: str) -> bool:
        """May a transaction of ours still carry `account`? Yes until its revocation has been
        served: the group hands it on only after the revocation callback returns, so what the
        account commits while it is being stopped lands before its successor starts. Not once
        the group has taken it away without asking (lost)."""
        return account in self._assigned

    # --- the group fence of the shared producer (connector.kafka.group_fence.Group) --------
    def offsets(self, accounts: Iterable[str], writer: str) -> list[TopicPartition]:
        named = writer_metadata(writer, self._member_id)
        return [
            TopicPartition(self._topic, self._partition[name], 0, metadata=named)
            for name in accounts
        ]

    def metadata(self) -> object:
        """As the supervising thread last read it (after each poll, and in each rebalance):
        the member's own `consumer_group_metadata()`, called from another thread while a
        rebalance callback ran, never returned in a test with librdkafka 2.16."""
        metadata = self._metadata
        if metadata is None:
            raise NotAssignedError("cluster: this instance has not joined the group, or left it")
        return metadata

    def wait_stable(self, accounts: Iterable[str], deadline: Deadline, writer: str) -> None:
        """Before a new owner reads their progress: see `connector.kafka.takeover`."""
        partitions = [TopicPartition(self._topic, self._partition[name]) for name in accounts]
        self._takeover.settle(partitions, deadline, writer)

    def _suspect(self, now: float) -> None:
        """Ownership unproven until the group has had two session timeouts to say otherwise."""
        self._suspect_until = now + 2 * self._session

    def _read_metadata(self) -> None:
        try:
            self._metadata = self._consumer.consumer_group_metadata()
            self._member_id = self._consumer.memberid() or ""
        except KafkaException as exc:
            log.warning("control topic %s: no group metadata: %s", self._topic, exc)
            self._metadata = None

    def poll(self, timeout: float) -> None:
        began = self._clock()
        if began - self._last_poll >= self._session:
            self._suspect(began)  # the broker tells us first
        message = self._consumer.poll(timeout)
        now = self._last_poll = self._clock()
        if now - began >= self._session:  # paused inside the poll, where this thread waits:
            self._suspect(now)  # the gap above never shows it
        self._read_metadata()
        if message is not None and message.error() is not None:
            log.warning("control topic %s: %s", self._topic, message.error().str())

    def close(self) -> None:
        """Leave the group (revoking every owned account first)."""
        self._metadata = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._takeover.close()

    def _assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        names = [self._accounts[p.partition] for p in partitions]
        if names:
            log.info("assigned accounts: %s", ", ".join(names))
            self._owned.update(names)
            self._assigned.update(names)
            self._suspect_until = 0.0  # the group just confirmed who owns what
            self._read_metadata()  # the new generation, before any of them commits
            self._on_assigned(names)

    def _revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        names = [self._accounts[p.partition] for p in partitions]
        if names:
            log.info("revoking accounts: %s", ", ".join(names))
            self._owned.difference_update(names)  # no get-rpt from now on
            self._read_metadata()  # the generation their last commits are sent under
            self._on_revoked(names)  # they stop, committing what they have
            self._assigned.difference_update(names)

    def _lose(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group gave them away already (our session expired): no commit either."""
        names = [self._accounts[p.partition] for p in partitions]
        if names:
            log.warning("lost accounts (the group's session expired): %s", ", ".join(names))
            self._owned.difference_update(names)
            self._assigned.difference_update(names)
            self._on_revoked(names)

    def _consumer_config(self) -> dict:
        cluster = self._settings.cluster
        session_ms = int(cluster.session_timeout * 1000)
        passthrough = client_config(self._settings.kafka, "group")
        static = {"group.instance.id": cluster.instance_id} if cluster.instance_id else {}
        return (
            passthrough
            | static
            | {
                "group.id": cluster.group_id,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(100, session_ms // 5),
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
            }
        )

    def _ensure_control_topic(self) -> None:
        admin = AdminClient(client_config(self._settings.kafka))
        wanted = len(self._accounts)
        futures = admin.create_topics([NewTopic(self._topic, num_partitions=wanted)])
        try:
            futures[self._topic].result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise PublishError(f"cannot create control topic {self._topic}: {exc}") from exc
        partitions = self._partition_count(admin)
        if partitions != wanted:
            raise ConfigError(
                f"cluster.control_topic {self._topic} has {partitions} partitions but "
                f"{wanted} accounts are configured: every instance must share one account "
                "list; use a new control_topic after changing it"
            )

    def _partition_count(self, admin: AdminClient) -> int:
        # Another instance may have created the topic a moment ago: its metadata can lag.
        for _ in range(50):
            topic = admin.list_topics(self._topic, timeout=10).topics.get(self._topic)
            if topic is not None and topic.error is None and topic.partitions:
                return len(topic.partitions)
            time.sleep(0.2)
        raise PublishError(f"control topic {self._topic} has no partitions after creation")
