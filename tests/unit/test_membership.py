"""Membership.owns: the group's word, and no get-rpt after a gap in polling (a paused process)
until the group has had the chance to say who owns what now."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from connector.config.settings import settings_from_dict
from connector.kafka.membership import Membership
from tests.fakes import FakeClock


class QuietConsumer:
    """No messages; `during_poll` stands for a rebalance callback librdkafka runs in poll()."""

    def __init__(self) -> None:
        self.during_poll = lambda: None

    def poll(self, timeout: float) -> None:
        self.during_poll()


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
