"""Membership.owns: the group's word, and no get-rpt after a gap in polling (a paused process)
until the group has had the chance to say who owns what now."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from connector.config.settings import settings_from_dict
from connector.errors import NotAssignedError
from connector.kafka.membership import Membership
from tests.fakes import FakeClock


class QuietConsumer:
    """No messages; `during_poll` stands for a rebalance callback librdkafka runs in poll()."""

    def __init__(self) -> None:
        self.during_poll = lambda: None

    def poll(self, timeout: float) -> None:
        self.during_poll()

    def consumer_group_metadata(self) -> str:
        return "member-metadata"

    def memberid(self) -> str:
        return "member-7"


def membership(clock: FakeClock) -> Membership:
    settings = settings_from_dict(
        {
            "accounts": [{"name": n, "token_env": "T"} for n in ("a1", "a2")],
            "kafka": {"producer": {"bootstrap.servers": "fake:9092"}},
            "cluster": {"group_id": "g", "session_timeout": "10s"},
        }
    )
    member = Membership(settings, lambda _n: None, lambda _n: None, clock=clock)
    member._consumer = QuietConsumer()
    return member


def test_owns_only_what_the_group_assigned() -> None:
    clock = FakeClock(frozen=True)
    member = membership(clock)
    assert not member.owns("a1")
    member._assign(None, [TopicPartition("control", 0)])
    assert member.owns("a1") and not member.owns("a2")
    member._revoke(None, [TopicPartition("control", 0)])
    assert not member.owns("a1")


def test_a_gap_in_polling_past_the_session_timeout_suspends_ownership() -> None:
    clock = FakeClock(frozen=True)
    member = membership(clock)
    member._assign(None, [TopicPartition("control", 0)])
    member.poll(1.0)
    clock.advance(30.0)  # SIGSTOP for 3 x session_timeout
    assert not member.owns("a1")  # the group may have moved it meanwhile
    member.poll(1.0)
    assert not member.owns("a1")  # one quiet poll proves nothing yet
    for _ in range(21):  # polling as usual again, every second
        clock.advance(1.0)
        member.poll(1.0)
    assert member.owns("a1")  # no revocation came within 2 x session_timeout: still ours


def test_a_fresh_assignment_ends_the_suspicion() -> None:
    clock = FakeClock(frozen=True)
    member = membership(clock)
    member._assign(None, [TopicPartition("control", 0)])
    clock.advance(30.0)
    assert not member.owns("a1")
    member._consumer.during_poll = lambda: member._assign(None, [TopicPartition("control", 0)])
    member.poll(1.0)  # the group re-assigns it to us in this poll
    assert member.owns("a1")


# --- the group fence of the shared producer (KIP-447) ----------------------------------------
class OffsetsConsumer(QuietConsumer):
    """committed() answers from a script: an exception to raise, or partitions to return."""

    def __init__(self, answers: list) -> None:
        super().__init__()
        self.answers, self.asked = answers, []

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list:
        self.asked.append([tp.partition for tp in partitions])
        answer = self.answers.pop(0) if self.answers else partitions
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.answers = []


def test_the_offsets_of_a_transaction_name_each_accounts_partition_and_its_writer() -> None:
    member = membership(FakeClock(frozen=True))
    member.poll(1.0)
    offsets = member.offsets(["a2", "a1"], "rpt-connector-member-x")
    assert [(tp.partition, tp.offset) for tp in offsets] == [(1, 0), (0, 0)]
    assert {tp.metadata for tp in offsets} == {"rpt-connector-member-x member-7"}
    assert not member.assigned("a1")
    member._assign(None, [TopicPartition("control", 0)])
    assert member.assigned("a1") and not member.assigned("a2")


def test_group_metadata_is_read_by_the_polling_thread_and_none_once_it_left() -> None:
    member = membership(FakeClock(frozen=True))
    member._consumer = OffsetsConsumer([])
    with pytest.raises(NotAssignedError, match="not joined the group, or left it"):
        member.metadata()  # before the first poll
    member.poll(1.0)
    assert member.metadata() == "member-metadata"
    member.close()
    with pytest.raises(NotAssignedError, match="not joined the group, or left it"):
        member.metadata()


@pytest.mark.parametrize(
    ("how", "during"),
    [
        ("_revoke", (False, True)),  # no get-rpt, but its last transaction may commit
        ("_lose", (False, False)),  # the group gave it away already: not even that
    ],
)
def test_a_revoked_account_may_commit_while_it_stops_a_lost_one_not(how, during) -> None:
    seen: list[tuple[bool, bool]] = []
    member = membership(FakeClock(frozen=True))
    member._on_revoked = lambda names: seen.append((member.owns("a1"), member.assigned("a1")))
    member._assign(None, [TopicPartition("control", 0)])
    getattr(member, how)(None, [TopicPartition("control", 0)])
    assert seen == [during]
    assert not member.assigned("a1")  # and never after


def test_a_pause_inside_a_poll_suspends_ownership_too() -> None:
    """The supervising thread spends its time inside the consumer's poll: a SIGSTOP lands there,
    and once the poll returns no gap between polls shows it (a zombie get-rpt, seen once in a
    fresh-clone run of test_paused_instance)."""
    clock = FakeClock(frozen=True)
    member = membership(clock)
    member._assign(None, [TopicPartition("control", 0)])
    member.poll(1.0)
    member._consumer.during_poll = lambda: clock.advance(30.0)  # stopped for 3 x session
    member.poll(1.0)
    member._consumer.during_poll = lambda: None
    assert not member.owns("a1")  # however soon after the poll a fetch thread asks
