"""Cluster mode with the shared producer: the consumer group fences zombies (KIP-447).

Every instance of a group has a `transactional.id` of its own, so no successor's
`init_transactions` can fence a dead or paused instance's producer. The group does instead:

- each transaction carries its accounts' control-topic offsets, sent under the member's
  current group generation (`send_offsets_to_transaction`). The group coordinator refuses them
  from an instance the group has moved past (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID): a rebalance
  happened, or the instance was away longer than the session timeout. That transaction aborts;
- a batch of an account the group has revoked is refused before it enters a transaction, and
  one revoked while its transaction is open aborts that transaction;
- a new owner first waits until no transaction holds offsets of its accounts (an OffsetFetch
  that requires stable offsets), so its progress read comes after the last commit its
  predecessor could make.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from confluent_kafka import TopicPartition

from connector.errors import NotAssignedError, TransactionAbortedError
from connector.kafka.batches import Batch
from connector.retry import Deadline


class Group(Protocol):
    """The consumer group that assigns accounts to instances (`Membership`)."""

    def assigned(self, account: str) -> bool:
        """Is `account` assigned to this instance now (not yet revoked)?"""

    def offsets(self, accounts: Iterable[str], writer: str) -> list[TopicPartition]:
        """The control-topic offsets a transaction of these accounts carries; their metadata
        names the `writer` (transactional.id) and the member, for a successor to fence."""

    def metadata(self) -> object:
        """The member's current group metadata (`consumer_group_metadata()`)."""

    def wait_stable(self, accounts: Iterable[str], deadline: Deadline, writer: str) -> None:
        """Until no open transaction holds offsets of `accounts` (fencing departed writers
        other than `writer`, ours); KafkaUnreachableError when one still does at
        `deadline`."""


class GroupFence:
    """What the shared producer's committer asks of the group, transaction by transaction."""

    def __init__(self, group: Group) -> None:
        self._group = group

    def admit(self, batches: list[Batch]) -> list[Batch]:
        """The batches a transaction may take; a revoked account's fails (NotAssignedError:
        its pipeline is being stopped)."""
        kept = []
        for batch in batches:
            if self._group.assigned(batch.account):
                kept.append(batch)
            else:
                batch.finish(NotAssignedError(f"account {batch.account}: revoked by the group"))
        return kept

    def offsets(self, accounts: set[str], writer: str) -> tuple[list[TopicPartition], object]:
        """The offsets and group metadata to send with a transaction of `accounts`;
        TransactionAbortedError when one of them was revoked while it was open."""
        revoked = sorted(a for a in accounts if not self._group.assigned(a))
        if revoked:
            raise TransactionAbortedError(
                f"(shared producer): revoked by the group during the transaction: "
                f"{', '.join(revoked)}"
            )
        try:
            metadata = self._group.metadata()
        except NotAssignedError as exc:
            raise TransactionAbortedError(f"(shared producer): {exc}") from exc
        return self._group.offsets(sorted(accounts), writer), metadata

    def settle(self, accounts: list[str], deadline: Deadline, writer: str) -> None:
        """`writer`: this instance's transactional.id, which the takeover never fences."""
        self._group.wait_stable(accounts, deadline, writer)
