"""AccountPublisher against the FakeKafka model: what each librdkafka error class becomes,
and what a read_committed consumer sees after it."""

from __future__ import annotations

import random

import pytest

from connector.config.settings import KafkaSettings
from connector.errors import (
    Disposition,
    FencedError,
    KafkaUnreachableError,
    PublishError,
    TransactionAbortedError,
    TransactionTimedOutError,
)
from connector.kafka.publisher import AccountPublisher, Reachability
from connector.retry import Deadline
from tests.fakes import FakeClock, FakeKafka, FakeProgress, kafka_error

TID = "rpt-connector-acme"


class Reports:
    def __init__(self) -> None:
        self.changes: list[tuple[bool, str | None]] = []

    def __call__(self, reachable: bool, reason: str | None) -> None:
        self.changes.append((reachable, reason))


def publisher(kafka: FakeKafka, clock: FakeClock, reports: Reports | None = None, **kw):
    settings = KafkaSettings(producer={"bootstrap.servers": "fake:9092"}, **kw)
    reach = Reachability(30.0, reports or Reports(), clock)
    pub = AccountPublisher(
        settings, "acme", spool_id="s1", reachability=reach, producer_factory=kafka.producer,
        progress=FakeProgress(kafka), clock=clock, rng=random.Random(1),
    )  # fmt: skip
    pub.init(Deadline.after(5, clock))
    return pub


def send(pub: AccountPublisher, n: int, seq: int, clock: FakeClock) -> None:
    pub.begin()
    pub.produce_many("t", [f"v{i}".encode() for i in range(n)], [b"k"] * n, [])
    pub.commit(seq, Deadline.after(5, clock))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kafka(clock: FakeClock) -> FakeKafka:
    return FakeKafka(clock)


def test_retriable_commit_is_retried_and_commits_once(kafka, clock) -> None:
    pub = publisher(kafka, clock)
    kafka.fail("commit_transaction", kafka_error("retriable"), kafka_error("retriable"))
    send(pub, 3, 1, clock)
    assert len(kafka.visible("t")) == 3
    assert [p["spool_seq"] for p in kafka.progress("acme")] == [1]
    assert kafka.calls.count("commit_transaction") == 3


def test_a_commit_called_again_after_retry_does_not_repeat_the_progress_record(kafka, clock):
    pub = publisher(kafka, clock)
    kafka.fail("commit_transaction", kafka_error("retriable"))
    pub.begin()
    pub.produce("t", b"v", b"k", [])
    with pytest.raises(KafkaUnreachableError) as caught:
        pub.commit(1, Deadline.after(0, clock))  # out of time: the caller retries later
    assert caught.value.disposition == Disposition.RETRY
    pub.commit(1, Deadline.after(5, clock))
    assert [p["spool_seq"] for p in kafka.progress("acme")] == [1]


def test_txn_requires_abort_is_an_abort_and_nothing_becomes_visible(kafka, clock) -> None:
    pub = publisher(kafka, clock)
    kafka.fail("commit_transaction", kafka_error("abortable"))
    with pytest.raises(TransactionAbortedError) as caught:
        send(pub, 2, 1, clock)
    assert caught.value.disposition == Disposition.ABORT_TRANSACTION
    pub.abort(Deadline.after(5, clock))
    assert kafka.visible("t") == [] and len(kafka.aborted) == 3  # 2 records + progress
    assert kafka.progress("acme") == []


def test_fatal_error_restarts_the_producer(kafka, clock) -> None:
    pub = publisher(kafka, clock)
    kafka.fail("commit_transaction", kafka_error("fatal"))
    with pytest.raises(PublishError) as caught:
        send(pub, 1, 1, clock)
    assert caught.value.disposition == Disposition.RESTART_PRODUCER
    assert type(caught.value) is PublishError


def test_a_live_newer_instance_is_a_real_fence(kafka, clock) -> None:
    pub = publisher(kafka, clock)
    kafka.newer_instance(TID)
    with pytest.raises(FencedError) as caught:
        send(pub, 1, 1, clock)
    assert caught.value.disposition == Disposition.STOP_ACCOUNT
    assert kafka.visible("t") == []


def test_a_fence_after_our_transaction_outlived_its_timeout_is_ours(kafka, clock) -> None:
    pub = publisher(kafka, clock)
    kafka.stall_next_commit(75.0)  # a partition longer than transaction.timeout.ms (60 s)
    with pytest.raises(TransactionTimedOutError) as caught:
        send(pub, 2, 1, clock)
    assert caught.value.disposition == Disposition.RESTART_PRODUCER
    assert kafka.visible("t") == [] and len(kafka.aborted) == 3


def test_fenced_error_code_within_the_timeout_is_a_newer_instance(kafka, clock) -> None:
    pub = publisher(kafka, clock)
    kafka.fail("commit_transaction", kafka_error("fenced"))
    with pytest.raises(FencedError):
        send(pub, 1, 1, clock)


def test_all_brokers_down_is_unreachable_and_retried_by_the_loop(kafka, clock) -> None:
    reports = Reports()
    pub = publisher(kafka, clock, reports)
    kafka.fail("commit_transaction", kafka_error("all_brokers_down"))
    with pytest.raises(KafkaUnreachableError) as caught:
        send(pub, 1, 1, clock)
    assert caught.value.disposition == Disposition.RETRY
    pub.commit(1, Deadline.after(5, clock))
    assert len(kafka.visible("t")) == 1
    assert reports.changes[-1] == (True, None)


def test_at_least_once_commit_flushes_then_writes_progress(kafka, clock) -> None:
    pub = publisher(kafka, clock, delivery="at_least_once")
    send(pub, 4, 7, clock)
    assert len(kafka.visible("t")) == 4
    assert [p["spool_seq"] for p in kafka.progress("acme")] == [7]


def test_reachability_follows_what_happens(clock) -> None:
    reports = Reports()
    reach = Reachability(30.0, reports, clock)
    reach.ok()
    clock.advance(31)
    reach.check(pending=False)  # nothing to do: silence is no evidence
    assert reports.changes == [(True, None)]
    reach.check(pending=True)
    reach.check(pending=True)  # reported once
    assert [r for r, _ in reports.changes] == [True, False]
    reach.ok()
    assert [r for r, _ in reports.changes] == [True, False, True]


def test_no_producer_is_created_before_init(kafka, clock) -> None:
    settings = KafkaSettings(producer={"bootstrap.servers": "fake:9092"})
    AccountPublisher(
        settings, "acme", spool_id="s", reachability=Reachability(30, Reports(), clock),
        producer_factory=kafka.producer, progress=FakeProgress(kafka),
    )  # fmt: skip
    assert kafka.producers == []


def test_repeated_connection_errors_are_summarized_across_producers(kafka, clock, caplog) -> None:
    from connector.observe.logs import RepeatSummary

    summary = RepeatSummary(clock)
    settings = KafkaSettings(producer={"bootstrap.servers": "fake:9092"})
    reach = Reachability(30.0, Reports(), clock)
    for _ in range(3):  # the producer is recreated while Kafka is away
        pub = AccountPublisher(
            settings, "acme", spool_id="s", reachability=reach, producer_factory=kafka.producer,
            progress=FakeProgress(kafka), clock=clock, connection_errors=summary,
        )  # fmt: skip
        for _ in range(10):
            pub._on_error(kafka_error("all_brokers_down"))
    lines = [r for r in caplog.records if "All broker connections are down" in r.getMessage()]
    assert len(lines) == 1
    clock.advance(31)
    pub._on_error(kafka_error("all_brokers_down"))
    assert "(+29 more" in caplog.records[-1].getMessage()
