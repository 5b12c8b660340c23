"""The shared producer (kafka.shared_producer) in-process: the committer over the FakeKafka
model, and account pipelines that publish through it, counted against what was handed out."""

from __future__ import annotations

import json
import threading
import time

import pytest

from connector.codec.avro import decode_single_object
from connector.config.settings import KafkaSettings
from connector.errors import (
    FencedError,
    KafkaUnreachableError,
    PublishError,
    TransactionAbortedError,
    TransactionTimedOutError,
)
from connector.kafka.batches import Send
from connector.kafka.checkpoint import IDLE_RECHECK
from connector.kafka.committer import TransactionCommitter, shared_transactional_id
from connector.kafka.shared_publisher import SharedPublisher
from connector.retry import Deadline
from connector.turn_pool import TurnPool
from tests.fakes import (
    FakeClock,
    FakeKafka,
    FakeProgress,
    FaultySpool,
    ScriptedPlatform,
    kafka_error,
    report,
)
from tests.unit.pipeline_kit import TOPIC, make_rig

TXN_ID = "rpt-connector-instance-test"


def settings() -> KafkaSettings:
    return KafkaSettings(producer={"bootstrap.servers": "fake:9092"}, shared_producer=True)


def committer_over(kafka: FakeKafka, linger: float = 0.0) -> TransactionCommitter:
    return TransactionCommitter(
        settings(), TXN_ID, producer_factory=kafka.producer, clock=kafka.clock, linger=linger
    )


def send(topic: str, value: bytes) -> Send:
    return Send(topic, [value], [b"k"], None)


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka(FakeClock())


# --- the committer alone ---------------------------------------------------------------------
def test_batches_handed_in_together_commit_in_one_transaction(kafka) -> None:
    committer = committer_over(kafka)
    first = committer.submit("a", [send("t", b"a1"), send("p", b"a-progress")])
    second = committer.submit("b", [send("t", b"b1"), send("p", b"b-progress")])
    committer.start()
    first.wait(Deadline.after(5)), second.wait(Deadline.after(5))
    committer.close(Deadline.after(5))
    assert [r.value for r in kafka.committed] == [b"a1", b"a-progress", b"b1", b"b-progress"]
    assert kafka.calls.count("commit_transaction") == 1
    assert [p.config["transactional.id"] for p in kafka.producers] == [TXN_ID]


def test_a_batch_handed_in_while_a_transaction_is_open_joins_it(kafka) -> None:
    """Produced as they come: a batch within `linger` of the last joins the open transaction
    (its records produced before the commit), one that comes later begins the next."""
    committer = TransactionCommitter(
        settings(), TXN_ID, producer_factory=kafka.producer, clock=kafka.clock,
        linger=0.5, window=30.0,
    )  # fmt: skip
    committer.start()
    first = committer.submit("a", [send("t", b"a1")])
    deadline = time.monotonic() + 5
    while "produce" not in kafka.calls:  # the transaction is open, its first batch produced
        assert time.monotonic() < deadline
        time.sleep(0.005)
    second = committer.submit("b", [send("t", b"b1")])
    first.wait(Deadline.after(5)), second.wait(Deadline.after(5))
    assert kafka.calls.count("commit_transaction") == 1
    time.sleep(0.6)  # past the linger: the next batch is the next transaction's
    committer.submit("c", [send("t", b"c1")]).wait(Deadline.after(5))
    committer.close(Deadline.after(5))
    assert kafka.calls.count("commit_transaction") == 2
    assert [r.value for r in kafka.committed] == [b"a1", b"b1", b"c1"]


def test_a_transaction_open_for_its_window_commits_while_batches_still_come(kafka) -> None:
    committer = TransactionCommitter(
        settings(), TXN_ID, producer_factory=kafka.producer, clock=kafka.clock,
        linger=1.0, window=0.2,
    )  # fmt: skip
    committer.start()
    batches = []
    until = time.monotonic() + 1.0
    while time.monotonic() < until:  # a batch every 20 ms, never a pause of `linger`
        batches.append(committer.submit("a", [send("t", b"x")]))
        time.sleep(0.02)
    for batch in batches:
        batch.wait(Deadline.after(5))
    committer.close(Deadline.after(5))
    assert kafka.calls.count("commit_transaction") >= 3  # ~1 s of batches, 0.2 s windows
    assert len(kafka.committed) == len(batches)


def test_an_abortable_error_fails_every_batch_of_the_transaction(kafka) -> None:
    committer = committer_over(kafka)
    kafka.fail("commit_transaction", kafka_error("abortable"))
    batches = [committer.submit(a, [send("t", a.encode())]) for a in ("a", "b")]
    committer.start()
    for batch in batches:
        with pytest.raises(TransactionAbortedError):
            batch.wait(Deadline.after(5))
    assert kafka.committed == [] and len(kafka.aborted) == 2
    again = committer.submit("a", [send("t", b"a")])  # the same producer goes on
    again.wait(Deadline.after(5))
    committer.close(Deadline.after(5))
    assert [r.value for r in kafka.committed] == [b"a"] and len(kafka.producers) == 1


def test_a_retriable_commit_error_is_committed_again_not_failed(kafka) -> None:
    committer = committer_over(kafka)
    kafka.fail("commit_transaction", kafka_error("retriable"), kafka_error("all_brokers_down"))
    batch = committer.submit("a", [send("t", b"a")])
    committer.start()
    batch.wait(Deadline.after(10))
    committer.close(Deadline.after(5))
    assert [r.value for r in kafka.committed] == [b"a"]
    assert kafka.calls.count("commit_transaction") == 3


def test_a_fatal_error_fails_the_batches_and_the_next_gets_a_new_producer(kafka) -> None:
    committer = committer_over(kafka)
    kafka.fail("commit_transaction", kafka_error("fatal"))
    batch = committer.submit("a", [send("t", b"a")])
    committer.start()
    with pytest.raises(PublishError) as failed:
        batch.wait(Deadline.after(5))
    assert failed.value.disposition == "restart_producer"
    committer.submit("a", [send("t", b"a")]).wait(Deadline.after(5))
    committer.close(Deadline.after(5))
    assert len(kafka.producers) == 2 and kafka.calls.count("init_transactions") == 2


def test_a_dropped_producer_told_it_is_fenced_later_fences_nothing(kafka) -> None:
    """Seen after a broker outage: the dropped producer still held records; once the broker
    was back it sent them with its old epoch and its error_cb said "fenced" (by our own next
    producer). That must not be taken for the next producer's error: every account stopped."""
    committer = committer_over(kafka)
    kafka.fail("commit_transaction", kafka_error("fatal"))
    batch = committer.submit("a", [send("t", b"a")])
    committer.start()
    with pytest.raises(PublishError):
        batch.wait(Deadline.after(5))
    committer.submit("a", [send("t", b"a2")]).wait(Deadline.after(5))  # the second producer
    dropped = kafka.producers[0]
    dropped.config["error_cb"](kafka_error("fenced"))  # the old epoch's records, refused
    kafka.fail("commit_transaction", kafka_error("fatal"))  # a bare _FATAL: its cause is asked
    with pytest.raises(PublishError) as failed:
        committer.submit("a", [send("t", b"a3")]).wait(Deadline.after(5))
    assert failed.value.disposition == "restart_producer"  # not fenced: a new producer
    committer.submit("a", [send("t", b"a4")]).wait(Deadline.after(5))
    committer.close(Deadline.after(5))
    assert [r.value for r in kafka.committed] == [b"a2", b"a4"]
    assert dropped._queue == []  # purged when dropped


def test_an_init_that_timed_out_is_resumed_on_the_same_producer(kafka) -> None:
    """librdkafka goes on with a timed-out init_transactions; a new producer instead would be
    fenced by the old one's init completing later (seen in the partition fault suite)."""
    committer = committer_over(kafka)
    kafka.fail("init_transactions", kafka_error("retriable"))
    with pytest.raises(KafkaUnreachableError):
        committer.connect(Deadline.after(0))  # one slice, timed out: no time left
    committer.connect(Deadline.after(5))
    assert len(kafka.producers) == 1 and kafka.calls.count("init_transactions") >= 2


def test_an_init_that_failed_for_good_is_not_resumed(kafka) -> None:
    committer = committer_over(kafka)
    kafka.fail("init_transactions", kafka_error("fatal"))
    with pytest.raises(PublishError):
        committer.connect(Deadline.after(5))
    committer.connect(Deadline.after(5))
    assert len(kafka.producers) == 2


def test_a_newer_instance_fences_every_account_for_good(kafka) -> None:
    committer = committer_over(kafka)
    committer.connect(Deadline.after(5))
    kafka.newer_instance(TXN_ID)
    batch = committer.submit("a", [send("t", b"a")])
    committer.start()
    with pytest.raises(FencedError):
        batch.wait(Deadline.after(5))
    with pytest.raises(FencedError):
        committer.connect(Deadline.after(5))
    late = committer.submit("b", [send("t", b"b")])
    with pytest.raises(FencedError):
        late.wait(Deadline.after(5))
    committer.close(Deadline.after(5))
    assert kafka.committed == []


def test_a_transaction_that_outlived_its_timeout_is_no_fence(kafka) -> None:
    committer = committer_over(kafka)
    kafka.stall_next_commit(75.0)
    batch = committer.submit("a", [send("t", b"a")])
    committer.start()
    with pytest.raises(TransactionTimedOutError):
        batch.wait(Deadline.after(5))
    committer.submit("a", [send("t", b"a")]).wait(Deadline.after(5))
    committer.close(Deadline.after(5))
    assert [r.value for r in kafka.committed] == [b"a"]


def test_a_batch_can_be_taken_back_only_before_a_transaction_takes_it(kafka) -> None:
    committer = committer_over(kafka)
    batch = committer.submit("a", [send("t", b"a")])
    assert committer.withdraw(batch)
    kept = committer.submit("b", [send("t", b"b")])
    committer.start()
    kept.wait(Deadline.after(5))
    assert not committer.withdraw(kept)
    committer.close(Deadline.after(5))
    assert [r.value for r in kafka.committed] == [b"b"]


def test_a_wait_past_its_deadline_is_retried_on_the_same_batch(kafka) -> None:
    committer = committer_over(kafka)  # not started: nothing commits
    batch = committer.submit("a", [send("t", b"a")])
    with pytest.raises(KafkaUnreachableError, match="has not committed in time"):
        batch.wait(Deadline.after(0.01))
    committer.start()
    batch.wait(Deadline.after(5))
    committer.close(Deadline.after(5))


def test_closing_fails_what_is_still_queued_as_retriable(kafka) -> None:
    committer = committer_over(kafka)
    committer.close(Deadline.after(1))
    batch = committer.submit("a", [send("t", b"a")])
    committer._run()  # what the thread does once closed: fail the rest, end
    with pytest.raises(KafkaUnreachableError, match="shutting down"):
        batch.wait(Deadline.after(1))


# --- an account's publisher over it ------------------------------------------------------------
def publisher(kafka: FakeKafka, committer: TransactionCommitter) -> SharedPublisher:
    from connector.kafka.publisher import Reachability

    reach = Reachability(30.0, lambda *_: None, kafka.clock)
    return SharedPublisher(
        committer, "a", spool_id="s", reachability=reach, progress=FakeProgress(kafka)
    )


def test_a_commit_retried_after_the_committer_gave_up_sends_the_records_again(kafka) -> None:
    """A batch failed as retriable (shutting down) keeps its records: the next commit hands
    in records and progress again, never the progress record alone."""
    committer = committer_over(kafka)
    pub = publisher(kafka, committer)
    pub.init(Deadline.after(5))
    pub.begin()
    pub.produce_many("t", [b"r1", b"r2"], [b"k", b"k"], None)
    with pytest.raises(KafkaUnreachableError, match="not committed in time"):
        pub.commit(1, Deadline.after(0.01))  # queued; the committer is not running
    committer.close(Deadline.after(1))
    committer._run()  # closed: it fails what is queued
    with pytest.raises(KafkaUnreachableError, match="shutting down"):
        pub.commit(1, Deadline.after(1))
    fresh = committer_over(kafka)
    pub._committer = fresh
    fresh.start()
    pub.commit(1, Deadline.after(5))
    fresh.close(Deadline.after(5))
    assert [r.value for r in kafka.visible("t")] == [b"r1", b"r2"]
    assert [p["spool_seq"] for p in kafka.progress("a")] == [1]


def test_producing_into_a_batch_under_commit_is_refused(kafka) -> None:
    committer = committer_over(kafka)
    pub = publisher(kafka, committer)
    pub.produce("t", b"r", b"k", None)
    with pytest.raises(KafkaUnreachableError):
        pub.commit(1, Deadline.after(0.01))  # not started: it waits
    with pytest.raises(PublishError, match="produce while a commit is under way"):
        pub.produce("t", b"r2", b"k", None)
    pub.abort(Deadline.after(1))  # not yet taken: taken back, nothing commits
    committer.start()
    committer.close(Deadline.after(5))
    assert kafka.committed == []


def test_an_abort_of_a_batch_already_committing_waits_and_says_so(kafka) -> None:
    committer = committer_over(kafka)
    pub = publisher(kafka, committer)
    pub.produce("t", b"r", b"k", None)
    committer.start()
    pub.commit(1, Deadline.after(5))
    pub.produce("t", b"r2", b"k", None)
    pub._batch = committer.submit("a", list(pub._sends))
    pub._batch.done.wait(5)
    with pytest.raises(PublishError, match="committed after all"):
        pub.abort(Deadline.after(5))
    committer.close(Deadline.after(5))


# --- account pipelines through it --------------------------------------------------------------
def accounts_published(kafka: FakeKafka) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for record in kafka.visible(TOPIC):
        value = decode_single_object(record.value)
        out.setdefault(value["account"], []).append(int(value["msgid"]))
    return {account: sorted(ids) for account, ids in out.items()}


def run_accounts(tmp_path, kafka, committer, names, per_account: int, pool=None) -> list:
    rigs = []
    for i, name in enumerate(names):
        reports = [[report(i * 1000 + n) for n in range(per_account)]]
        rig = make_rig(tmp_path, ScriptedPlatform(reports), kafka=kafka, clock=kafka.clock,
                       committer=committer, account=name, publish_pool=pool)  # fmt: skip
        rigs.append(rig)
    committer.start()
    for rig in rigs:
        rig.pipeline.start()
    total = per_account * len(names)
    rigs[0].wait_for(lambda: sum(map(len, accounts_published(kafka).values())) >= total)
    for rig in rigs:
        rig.stop()
    committer.close(Deadline.after(5))
    if pool is not None:
        assert pool.close(timeout=5)
    return rigs


@pytest.mark.parametrize("pooled", [False, True], ids=["own-threads", "publish-pool"])
@pytest.mark.parametrize(
    "fault", [None, "abortable", "fatal", "retriable", "timed_out_transaction"]
)
def test_accounts_through_one_producer_publish_every_report_once(
    tmp_path, kafka, fault, pooled
) -> None:
    names = [f"acct{i}" for i in range(5)]
    if fault == "timed_out_transaction":
        kafka.stall_next_commit(75.0)
    elif fault is not None:
        kafka.fail("commit_transaction", kafka_error(fault))
    committer = committer_over(kafka, linger=0.02)
    pool = TurnPool(2, role="publish") if pooled else None
    rigs = run_accounts(tmp_path, kafka, committer, names, per_account=7, pool=pool)
    published = accounts_published(kafka)
    assert published == {n: [i * 1000 + k for k in range(7)] for i, n in enumerate(names)}
    for name in names:  # and the progress of each says all of its one entry is in
        assert kafka.progress(name)[-1]["spool_seq"] == 1
    assert {p.config["transactional.id"] for p in kafka.producers} == {TXN_ID}
    assert all(rig.pipeline.failed is None for rig in rigs)
    assert all(t for t in transactions(kafka)), "a transaction without a progress record"


def test_a_round_whose_commit_is_under_way_holds_no_publish_thread(tmp_path, kafka) -> None:
    """One publish thread, three accounts, the committer not yet running: every account hands
    its batch in and the thread goes on to the next (a round that waited for its commit would
    hold the only thread: one batch queued, and one account per transaction)."""
    committer = committer_over(kafka)
    pool = TurnPool(1, role="publish")
    names = ["a1", "a2", "a3"]
    rigs = []
    for i, name in enumerate(names):
        platform = ScriptedPlatform([[report(i)]])
        rigs.append(make_rig(tmp_path, platform, kafka=kafka, clock=kafka.clock,
                             committer=committer, account=name, publish_pool=pool))  # fmt: skip
    for rig in rigs:
        rig.pipeline.start()
    rigs[0].wait_for(lambda: len(committer.handins) == 3)
    committer.start()
    rigs[0].wait_for(lambda: sum(map(len, accounts_published(kafka).values())) == 3)
    for rig in rigs:
        rig.stop()
    committer.close(Deadline.after(5))
    assert pool.close(timeout=5) and pool.threads == 1
    assert transactions(kafka)[0] == set(names)  # all three in the first transaction
    assert accounts_published(kafka) == {"a1": [0], "a2": [1], "a3": [2]}


@pytest.mark.parametrize("pooled", [False, True], ids=["own-thread", "publish-pool"])
def test_a_stop_during_a_commit_ends_with_its_outcome_not_an_idle_recheck(
    tmp_path, kafka, pooled
) -> None:
    """The round that sees the commit's outcome after a stop must end the account then (it
    slept the idle recheck instead, 5 s then, 60 s now, before it looked again)."""
    committer = committer_over(kafka)  # not started yet: the commit stays under way
    pool = TurnPool(1, role="publish") if pooled else None
    rig = make_rig(tmp_path, ScriptedPlatform([[report(1)]]), kafka=kafka, clock=kafka.clock,
                   committer=committer, publish_pool=pool)  # fmt: skip
    rig.pipeline.start()
    rig.wait_for(lambda: len(committer.handins) == 1)
    rig.pipeline.stop(Deadline.after(120))
    committer.start()
    assert rig.pipeline.join(Deadline.after(IDLE_RECHECK / 2)), "slept an idle recheck"
    committer.close(Deadline.after(5))
    assert accounts_published(kafka) == {"acme": [1]}
    assert rig.observer.states()[-1] == "stopped"


def test_a_spool_that_cannot_release_holds_no_publish_thread(tmp_path, kafka) -> None:
    """One publish thread; account a1's spool refuses every release (a broken volume): its
    release is owed and retried by its later rounds, and a2 publishes meanwhile (a release
    retried in a loop held the only thread until a1 was stopped)."""

    def broken(spool: object) -> FaultySpool:
        wrapped = FaultySpool(spool)
        wrapped.release_failures = 10**6
        return wrapped

    committer, pool = committer_over(kafka), TurnPool(1, role="publish")
    shared = {"kafka": kafka, "clock": kafka.clock, "committer": committer, "publish_pool": pool}
    a1 = make_rig(tmp_path, ScriptedPlatform([[report(1)]]), account="a1", spool_wrapper=broken,
                  **shared)  # fmt: skip
    committer.start()
    a1.pipeline.start()
    a1.wait_for(lambda: len(a1.observer.named("spool_write_failed")) >= 2)
    a2 = make_rig(tmp_path, ScriptedPlatform([[report(2)], [report(3)]]), account="a2", **shared)
    a2.pipeline.start()
    a2.wait_for(lambda: accounts_published(kafka).get("a2") == [2, 3])
    assert a1.spools[0].level().entries == 1  # still owed, still retried
    a1.wait_for(lambda: len(a1.observer.named("spool_write_failed")) >= 5)
    a1.stop(), a2.stop()
    committer.close(Deadline.after(5))
    assert pool.close(timeout=5)
    assert a1.pipeline.failed is None and accounts_published(kafka)["a1"] == [1]


def test_a_commit_that_does_not_wait_calls_back_with_the_outcome(kafka) -> None:
    committer = committer_over(kafka)
    pub = publisher(kafka, committer)
    pub.init(Deadline.after(5))
    pub.produce("t", b"r", b"k", None)
    told = threading.Event()
    assert pub.commit(1, Deadline.after(5), then=told.set) is False  # handed in, not waited
    assert pub.commit(1, Deadline.after(5), then=told.set) is False  # the same batch, once
    committer.start()
    assert told.wait(5)
    assert pub.commit(1, Deadline.after(5), then=told.set) is True  # its outcome, now known
    committer.close(Deadline.after(5))
    assert [r.value for r in kafka.visible("t")] == [b"r"]
    assert kafka.calls.count("commit_transaction") == 1


def test_a_commit_that_does_not_wait_still_fails_at_its_deadline(kafka) -> None:
    committer = committer_over(kafka)  # not started: nothing commits
    pub = publisher(kafka, committer)
    pub.produce("t", b"r", b"k", None)
    assert pub.commit(1, Deadline.after(5), then=lambda: None) is False
    with pytest.raises(KafkaUnreachableError, match="not committed in time"):
        pub.commit(1, Deadline.after(0), then=lambda: None)


def transactions(kafka: FakeKafka) -> list[set[str]]:
    """The accounts whose progress each committed transaction carried."""
    return [
        {json.loads(r.value)["account"] for r in records if r.topic == "rpt-connector.progress"}
        for records in kafka.transactions
    ]


def test_a_fence_stops_every_account_and_publishes_nothing_more(tmp_path, kafka) -> None:
    committer = committer_over(kafka)
    committer.connect(Deadline.after(5))
    kafka.newer_instance(TXN_ID)
    names = ["a1", "a2"]
    rigs = []
    for name in names:
        platform = ScriptedPlatform([[report(1)]])
        rigs.append(make_rig(tmp_path, platform, kafka=kafka, clock=kafka.clock,
                             committer=committer, account=name))  # fmt: skip
    committer.start()
    for rig in rigs:
        rig.pipeline.start()
    for rig in rigs:
        rig.wait_for(lambda r=rig: r.pipeline.failed is not None)
        rig.stop()
    committer.close(Deadline.after(5))
    assert all("fenced" in rig.pipeline.failed for rig in rigs)
    assert kafka.visible(TOPIC) == []


def test_the_instance_transactional_id() -> None:
    kafka = settings()
    one = shared_transactional_id(kafka, ["b", "a"])
    assert one == shared_transactional_id(kafka, ["a", "b"])
    assert (
        one.startswith("rpt-connector-instance-") and len(one) == len("rpt-connector-instance-") + 8
    )
    assert one != shared_transactional_id(kafka, ["a", "c"])
