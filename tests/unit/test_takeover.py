"""A new owner's takeover in cluster mode with the shared producer (connector.kafka.takeover):
the transactional.id of a writer that left the group is fenced (its open transaction ends at
once), a live one is left alone, and the progress read waits until no transaction holds the
accounts' offsets."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from connector.config.settings import settings_from_dict
from connector.errors import KafkaUnreachableError, NotAssignedError
from connector.kafka.takeover import Takeover, parse_writer, writer_metadata
from connector.retry import Deadline

TIMED_OUT = KafkaException(KafkaError(KafkaError._TIMED_OUT, "Local: Timed out"))


class Scripted:
    """A consumer whose committed() answers from a script (an exception, or partitions)."""

    def __init__(self, answers: list) -> None:
        self.answers, self.asked, self.closed = answers, 0, False

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list:
        self.asked += 1
        answer = self.answers.pop(0) if self.answers else partitions
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


class Rig:
    def __init__(self, as_is: list, stable: list, members: set[str] | Exception) -> None:
        self.consumers = {"read_uncommitted": Scripted(as_is), "read_committed": Scripted(stable)}
        self.members, self.fenced = members, []
        settings = settings_from_dict({
            "accounts": [{"name": n, "token_env": "T"} for n in ("a1", "a2")],
            "kafka": {"producer": {"bootstrap.servers": "fake:9092"}},
            "cluster": {"group_id": "g"},
        })  # fmt: skip
        self.takeover = Takeover(
            settings, consumer_factory=lambda c: self.consumers[c["isolation.level"]],
            admin_factory=lambda _c: self, producer_factory=self.producer,
        )  # fmt: skip
        self.takeover.open()

    def describe_consumer_groups(self, groups: list[str]) -> dict[str, Future]:
        future: Future = Future()
        if isinstance(self.members, Exception):
            future.set_exception(self.members)
        else:
            members = [SimpleNamespace(member_id=m) for m in self.members]
            future.set_result(SimpleNamespace(members=members))
        return {groups[0]: future}

    def producer(self, config: dict) -> SimpleNamespace:
        tid = config["transactional.id"]
        return SimpleNamespace(init_transactions=lambda _timeout: self.fenced.append(tid))


def offset(partition: int, metadata: str | None) -> TopicPartition:
    if metadata is None:
        return TopicPartition("control", partition, -1001)  # never committed
    return TopicPartition("control", partition, 0, metadata=metadata)


PARTITIONS = [TopicPartition("control", 0), TopicPartition("control", 1)]
OWN = "tid-me~5e1f"  # this instance's transactional.id (it went on under a new one once)


def test_the_writer_of_a_member_that_left_is_fenced_a_live_one_is_not() -> None:
    committed = [offset(0, writer_metadata("tid-dead", "m-dead")),
                 offset(1, writer_metadata("tid-live", "m-live"))]  # fmt: skip
    rig = Rig([committed], [], {"m-live", "m-me"})
    rig.takeover.settle(PARTITIONS, Deadline.after(30), OWN)
    assert rig.fenced == ["tid-dead"]
    assert rig.consumers["read_committed"].asked == 1  # then the offsets were stable


def test_its_own_writes_under_a_member_id_it_had_before_are_never_fenced() -> None:
    """Dropped by the group (a pause), it rejoined under a new member id and got the account
    back: the offsets name its transactional.id and its old member. Fencing that would fence
    itself (seen once in a fresh-clone run of test_paused_instance)."""
    committed = [offset(0, writer_metadata("tid-me", "m-me-before")),
                 offset(1, writer_metadata("tid-me~5e1f", "m-me-before"))]  # fmt: skip
    rig = Rig([committed], [], {"m-me-now"})
    rig.takeover.settle(PARTITIONS, Deadline.after(30), OWN)
    assert rig.fenced == []


def test_accounts_never_committed_in_cluster_mode_fence_nothing() -> None:
    rig = Rig([[offset(0, None), offset(1, "")]], [], RuntimeError("not asked"))
    rig.takeover.settle(PARTITIONS, Deadline.after(30), OWN)
    assert rig.fenced == []


def test_when_the_group_cannot_be_described_it_still_waits_for_stable_offsets() -> None:
    committed = [offset(0, writer_metadata("tid-dead", "m-dead"))]
    rig = Rig([committed], [TIMED_OUT], KafkaException(KafkaError(KafkaError._TRANSPORT, "down")))
    rig.takeover.settle(PARTITIONS, Deadline.after(30), OWN)
    assert rig.fenced == []  # not sure who is gone: nobody is fenced
    assert rig.consumers["read_committed"].asked == 2  # pending once, then stable


def test_settling_waits_while_a_transaction_holds_the_offsets() -> None:
    unstable = (
        SimpleNamespace(  # a partition answered with an error (TopicPartition's is read-only)
            partition=1, error=KafkaError(KafkaError.UNSTABLE_OFFSET_COMMIT, "Broker: unstable")
        )
    )
    rig = Rig([[]], [TIMED_OUT, [unstable]], set())
    rig.takeover.settle(PARTITIONS, Deadline.after(30), OWN)
    assert rig.consumers["read_committed"].asked == 3  # the third answer is stable


def test_settling_gives_up_at_the_deadline_naming_what_holds_it() -> None:
    rig = Rig([[]], [TIMED_OUT], set())
    with pytest.raises(KafkaUnreachableError, match="held by an open transaction"):
        rig.takeover.settle(PARTITIONS, Deadline.after(0), OWN)


def test_closed_it_says_it_is_not_in_the_group() -> None:
    rig = Rig([], [], set())
    rig.takeover.close()
    assert all(consumer.closed for consumer in rig.consumers.values())
    with pytest.raises(NotAssignedError, match="not in the group"):
        rig.takeover.settle(PARTITIONS, Deadline.after(30), OWN)


def test_offset_metadata_names_the_writer_or_nothing() -> None:
    assert parse_writer(writer_metadata("rpt-member-x~1a2b", "rdkafka-9f")) == (
        "rpt-member-x~1a2b", "rdkafka-9f",
    )  # fmt: skip
    assert [parse_writer(m) for m in (None, "", "just-one", " member", "tid ")] == [None] * 5
