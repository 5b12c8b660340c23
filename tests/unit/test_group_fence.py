"""Cluster mode with the shared producer (KIP-447) in-process: the committer over the FakeKafka
model with its group coordinator. Every transaction carries its accounts' control-topic offsets
under this member's generation; a generation the group moved past, or a member it dropped (a
zombie), commits nothing; a revoked account's batch never enters a transaction."""

from __future__ import annotations

import pytest

from connector.config.settings import ClusterSettings, KafkaSettings
from connector.errors import Disposition, NotAssignedError, TransactionAbortedError
from connector.kafka.batches import Send
from connector.kafka.committer import TransactionCommitter, shared_transactional_id
from connector.kafka.group_fence import GroupFence
from connector.retry import Deadline
from tests.fakes import FakeClock, FakeGroup, FakeKafka, FakeMember

ACCOUNTS = ["a1", "a2", "a3"]


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka(FakeClock(), group=FakeGroup())


@pytest.fixture
def member(kafka: FakeKafka) -> FakeMember:
    return FakeMember(kafka.group, ACCOUNTS)


def committer_over(kafka: FakeKafka, member: FakeMember) -> TransactionCommitter:
    settings = KafkaSettings(producer={"bootstrap.servers": "fake:9092"}, shared_producer=True)
    committer = TransactionCommitter(
        settings, "rpt-connector-member-test", producer_factory=kafka.producer,
        clock=kafka.clock, linger=0.0, fence=GroupFence(member),
    )  # fmt: skip
    committer.start()
    return committer


def hand_in(committer: TransactionCommitter, *accounts: str) -> list:
    """Each account's batch (a record and its progress record), handed in together."""
    with committer.handins._ready:  # held: the committer takes them in one transaction
        return [
            committer.submit(a, [Send("t", [a.encode()], [b"k"], None),
                                 Send("p", [b"progress-" + a.encode()], [a.encode()], None)])
            for a in accounts
        ]  # fmt: skip


def outcome(batch) -> Exception | None:
    try:
        batch.wait(Deadline.after(5))
    except Exception as exc:
        return exc
    return None


def test_a_transaction_carries_the_group_offsets_of_its_accounts(kafka, member) -> None:
    committer = committer_over(kafka, member)
    batches = hand_in(committer, "a1", "a3")
    assert [outcome(b) for b in batches] == [None, None]
    committer.close(Deadline.after(5))
    assert kafka.offset_commits == [[0, 2]]  # a1 and a3's control partitions, with the data
    assert [r.value for r in kafka.visible("t")] == [b"a1", b"a3"]


def test_a_transaction_sent_under_a_passed_generation_aborts_then_the_rejoined_commits(
    kafka, member
) -> None:
    kafka.group.generation += 1  # a rebalance this member has not rejoined yet
    committer = committer_over(kafka, member)
    failed = [outcome(b) for b in hand_in(committer, "a1", "a2")]
    assert all(isinstance(e, TransactionAbortedError) for e in failed), failed
    assert {e.disposition for e in failed} == {Disposition.ABORT_TRANSACTION}  # sent again
    assert "consumer group moved on" in str(failed[0])
    assert kafka.visible("t") == [] and len(kafka.aborted) == 4
    member.generation = kafka.group.generation  # the member rejoined
    assert [outcome(b) for b in hand_in(committer, "a1", "a2")] == [None, None]
    committer.close(Deadline.after(5))
    assert [r.value for r in kafka.visible("t")] == [b"a1", b"a2"]
    assert kafka.offset_commits == [[0, 1]]


def test_a_zombie_the_group_dropped_commits_nothing(kafka, member) -> None:
    """A paused instance comes back after the group removed it: whatever it hands in aborts,
    however often, until its own group poll tells it the accounts are gone."""
    kafka.group.members.discard("me")
    committer = committer_over(kafka, member)
    for _ in range(3):
        errors = [outcome(b) for b in hand_in(committer, *ACCOUNTS)]
        assert all(isinstance(e, TransactionAbortedError) for e in errors), errors
    committer.close(Deadline.after(5))
    assert kafka.visible("t") == [] and kafka.visible("p") == []
    assert kafka.offset_commits == []


def test_a_revoked_accounts_batch_never_enters_a_transaction(kafka, member) -> None:
    member.owned.discard("a2")  # the group revoked it; its pipeline is being stopped
    committer = committer_over(kafka, member)
    first, second, third = (outcome(b) for b in hand_in(committer, *ACCOUNTS))
    assert first is None and third is None
    assert isinstance(second, NotAssignedError)
    assert second.disposition == Disposition.STOP_ACCOUNT  # its pipeline ends, spool unlocked
    committer.close(Deadline.after(5))
    assert [r.value for r in kafka.visible("t")] == [b"a1", b"a3"]
    assert b"a2" not in [r.value for r in kafka.aborted]  # never produced at all
    assert kafka.offset_commits == [[0, 2]]


class RevokedMidway(FakeMember):
    """`a2` is revoked after its batch entered the transaction, before the offsets are sent."""

    def __init__(self, group: FakeGroup, accounts: list[str]) -> None:
        super().__init__(group, accounts)
        self.asked = 0

    def assigned(self, account: str) -> bool:
        if account == "a2":
            self.asked += 1
            return self.asked == 1
        return super().assigned(account)


def test_an_account_revoked_while_its_transaction_is_open_aborts_it(kafka) -> None:
    member = RevokedMidway(kafka.group, ACCOUNTS)
    committer = committer_over(kafka, member)
    errors = [outcome(b) for b in hand_in(committer, "a1", "a2")]
    assert all(isinstance(e, TransactionAbortedError) for e in errors), errors
    assert "revoked by the group during the transaction: a2" in str(errors[0])
    assert outcome(hand_in(committer, "a1")[0]) is None  # a1 goes again without a2
    committer.close(Deadline.after(5))
    assert [r.value for r in kafka.visible("t")] == [b"a1"]
    assert kafka.calls.count("abort_transaction") == 1


def test_a_new_owner_settles_an_account_before_it_reads_progress(kafka, member) -> None:
    committer = committer_over(kafka, member)
    committer.settle(["a2"], Deadline.after(5))
    committer.close(Deadline.after(5))
    assert member.settled == [["a2"]]


def test_in_cluster_mode_each_instance_has_a_transactional_id_of_its_own() -> None:
    kafka = KafkaSettings(producer={"bootstrap.servers": "fake:9092"}, shared_producer=True)
    group = ClusterSettings(group_id="g")
    first, second = (shared_transactional_id(kafka, ACCOUNTS, group) for _ in range(2))
    assert first != second and first.startswith("rpt-connector-member-")
    pod = ClusterSettings(group_id="g", instance_id="pod-7")
    assert shared_transactional_id(kafka, ACCOUNTS, pod) == "rpt-connector-member-pod-7"
    standalone = shared_transactional_id(kafka, ACCOUNTS, ClusterSettings())
    assert standalone == shared_transactional_id(kafka, ACCOUNTS)  # same configuration, same id


class Left(FakeMember):
    def metadata(self) -> tuple[str, int]:
        raise NotAssignedError("cluster: this instance has not joined the group, or left it")


def test_without_group_metadata_the_transaction_aborts_and_the_producer_stays(kafka) -> None:
    committer = committer_over(kafka, Left(kafka.group, ACCOUNTS))
    error = outcome(hand_in(committer, "a1")[0])
    committer.close(Deadline.after(5))
    assert isinstance(error, TransactionAbortedError) and "left it" in str(error)
    assert kafka.calls.count("abort_transaction") == 1 and len(kafka.producers) == 1


def test_fenced_in_cluster_mode_it_goes_on_under_a_new_transactional_id(kafka, member) -> None:
    """A successor fenced our transactional.id, taking us for a departed member: the open
    transaction's batches go again, on a new producer with a transactional.id of its own."""
    committer = committer_over(kafka, member)
    assert outcome(hand_in(committer, "a1")[0]) is None
    kafka.newer_instance("rpt-connector-member-test")
    error = outcome(hand_in(committer, "a2")[0])
    assert isinstance(error, TransactionAbortedError) and "new producer" in str(error)
    assert outcome(hand_in(committer, "a2")[0]) is None
    committer.close(Deadline.after(5))
    first, *_, last = member.writers
    assert first == "rpt-connector-member-test" and last.startswith("rpt-connector-member-test~")
    assert [p.config["transactional.id"] for p in kafka.producers] == [first, last]
    assert [r.value for r in kafka.visible("t")] == [b"a1", b"a2"]
