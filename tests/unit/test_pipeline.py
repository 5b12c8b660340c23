"""The account pipeline in-process: real spool, records and publisher over a Kafka model.

Each test counts the records a read_committed consumer would see against what the scripted
platform handed out, the progress records, the account's final state and what was observed.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from connector.errors import (
    InvalidResponseError,
    PlatformResultError,
    RetriableError,
    TLSVerificationError,
)
from connector.fetcher import Hooks
from connector.kafka.checkpoint import IDLE_RECHECK, Checkpoint
from connector.kafka.records import EntryRecords
from connector.retry import Deadline
from connector.spool.spool import Spool
from connector.turn_pool import OwnThread
from tests.fakes import FakeClock, FakeKafka, FaultySpool, ScriptedPlatform, kafka_error, report
from tests.unit.pipeline_kit import ACCOUNT, DLQ, TOPIC, make_rig


def batches(*sizes: int) -> list[list[dict]]:
    out, n = [], 0
    for size in sizes:
        out.append([report(n + i) for i in range(size)])
        n += size
    return out


def test_every_report_once_and_one_progress_record_per_commit(tmp_path) -> None:
    platform = ScriptedPlatform(batches(3, 5, 2))
    rig = make_rig(tmp_path, platform)
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 10)
    rig.stop()
    assert sorted(rig.msgids()) == list(range(10))
    progress = rig.kafka.progress(ACCOUNT)
    commits = rig.observer.named("committed")
    assert len(progress) == len(commits) >= 1
    assert progress[-1]["spool_seq"] == 3
    assert sum(args[0].records for args, _ in commits) == 10
    assert rig.observer.states()[-1] == "stopped"
    assert rig.pipeline.failed is None


def test_platform_errors_back_off_and_lose_nothing(tmp_path) -> None:
    platform = ScriptedPlatform([RetriableError("HTTP 503"), *batches(4)])
    rig = make_rig(tmp_path, platform)
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 4)
    rig.stop()
    outcomes = [str(args[0]) for args, _ in rig.observer.named("polled")]
    assert outcomes[0] == "retriable_error" and "ok" in outcomes
    assert "backoff" in rig.observer.states()
    assert rig.kafka.visible(DLQ) == []


def faulty(append: int = 0, release: int = 0):
    def wrap(spool: object) -> FaultySpool:
        wrapped = FaultySpool(spool)
        wrapped.append_failures, wrapped.release_failures = append, release
        return wrapped

    return wrap


def run_until_published(rig, n: int) -> None:
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) >= n)
    rig.stop()


def assert_progress_names_what_committed_with_it(kafka, records_through: dict) -> None:
    """A retried commit takes no more entries: each progress record's spool_seq covers exactly
    the data records committed up to it (entry seq → data records through it)."""
    seen = 0
    for record in list(kafka.committed):
        if record.topic == TOPIC:
            seen += 1
        elif record.topic == "rpt-connector.progress":
            assert records_through[json.loads(record.value)["spool_seq"]] == seen


def assert_exactly_once(rig, n: int) -> None:
    assert sorted(rig.msgids()) == list(range(n)), "lost or duplicated reports"
    assert len(rig.kafka.progress(ACCOUNT)) == len(rig.observer.named("committed"))


@pytest.mark.parametrize("kind", ["retriable", "all_brokers_down"])
def test_kafka_errors_on_commit_that_are_retried(tmp_path, kind: str) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform(batches(3, 4)))
    rig.kafka.fail("commit_transaction", kafka_error(kind), kafka_error(kind))
    run_until_published(rig, 7)
    assert_exactly_once(rig, 7)
    assert_progress_names_what_committed_with_it(rig.kafka, {1: 3, 2: 7})
    assert rig.observer.named("producer_restarted") == []
    assert rig.observer.states()[-1] == "stopped"


def test_an_abortable_commit_error_aborts_and_sends_the_same_entries_again(tmp_path) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform(batches(5)))
    rig.kafka.fail("commit_transaction", kafka_error("abortable"))
    run_until_published(rig, 5)
    assert_exactly_once(rig, 5)
    assert len(rig.kafka.aborted) == 6  # the first try: 5 records and its progress record
    assert len(rig.observer.named("aborted")) == 1
    assert rig.observer.named("producer_restarted") == []


def test_a_failing_abort_recreates_the_producer(tmp_path) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform(batches(5)))
    rig.kafka.fail("commit_transaction", kafka_error("abortable"))
    rig.kafka.fail("abort_transaction", kafka_error("fatal"))
    run_until_published(rig, 5)
    assert_exactly_once(rig, 5)
    assert len(rig.observer.named("producer_restarted")) == 1
    assert rig.kafka.calls.count("init_transactions") == 2


def test_a_fatal_error_recreates_the_producer_and_replays_from_progress(tmp_path) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform(batches(2, 3)))
    rig.kafka.fail("commit_transaction", kafka_error("fatal"))
    run_until_published(rig, 5)
    assert_exactly_once(rig, 5)
    assert len(rig.observer.named("producer_restarted")) == 1
    assert len(rig.observer.named("recovered")) == 2  # at start and after the restart


def test_a_transaction_timed_out_by_a_partition_is_sent_again_without_an_operator(tmp_path):
    rig = make_rig(tmp_path, ScriptedPlatform(batches(4, 6)))
    rig.kafka.stall_next_commit(75.0)  # longer than transaction.timeout.ms
    run_until_published(rig, 10)
    assert_exactly_once(rig, 10)
    assert len(rig.kafka.aborted) >= 4  # the broker aborted the first transaction
    assert len(rig.observer.named("producer_restarted")) == 1
    assert rig.pipeline.failed is None and rig.observer.states()[-1] == "stopped"


def test_a_timed_out_instance_whose_account_moved_stops_instead_of_fencing_back(tmp_path):
    release = threading.Event()
    platform = ScriptedPlatform(batches(4), block=release)
    rig = make_rig(tmp_path, platform)
    rig.pipeline.start()
    rig.wait_for(platform.in_flight.is_set)  # recovered; the first get-rpt is under way
    rig.kafka.stall_next_commit(75.0)  # we are cut off past the transaction timeout ...
    rig.kafka.commit_progress_from(ACCOUNT, "spool-of-the-newer-instance", 9)  # ... it took over
    release.set()
    rig.wait_for(lambda: rig.pipeline.failed is not None)
    rig.stop()
    assert "another instance" in rig.pipeline.failed
    assert rig.kafka.calls.count("init_transactions") == 1  # never fenced the newer one
    assert rig.msgids() == []  # the entries stay in this spool for whoever runs it here
    assert rig.observer.states()[-1] == "failed"


def test_a_live_newer_instance_wins_and_no_get_rpt_call_follows(tmp_path) -> None:
    platform = ScriptedPlatform(batches(3))
    rig = make_rig(tmp_path, platform)
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 3)
    rig.kafka.newer_instance("rpt-connector-acme")
    platform._script.append([report(3)])  # the next call would hand out one more report
    rig.wait_for(lambda: rig.pipeline.failed is not None or platform.calls > 50)
    calls = platform.calls
    rig.stop()
    assert "fenced" in (rig.pipeline.failed or "")
    assert platform.calls == calls  # no get-rpt after the fence was seen
    assert rig.observer.states()[-1] == "failed"


def test_clock_driven_commit_interval(tmp_path) -> None:
    clock = FakeClock(frozen=True)
    rig = make_rig(tmp_path, ScriptedPlatform(batches(3)), clock=clock, commit_interval=5.0)
    rig.pipeline.start()
    rig.wait_for(lambda: rig.platform.calls >= 3)  # fetched and spooled; transaction open
    time.sleep(0.3)
    assert rig.msgids() == []  # the interval has not passed on the pipeline's clock
    clock.advance(5.0)
    rig.pipeline._wake.set()  # what the next append or a commit's outcome would do
    rig.wait_for(lambda: len(rig.msgids()) == 3)
    rig.stop()
    assert_exactly_once(rig, 3)


class RecordingThread(OwnThread):
    """A publish thread of its own that records how long each sleep between rounds was
    allowed to last, and which of them a wake-up cut short."""

    def __init__(self) -> None:
        super().__init__("publish")
        self.timeouts: list[float] = []
        self.woken: list[float] = []  # the timeouts of the sleeps something cut short
        self.task = None

    def submit(self, *args, **kwargs):
        self.task = super().submit(*args, **kwargs)
        return self.task

    def sleep(self, task, pause: float) -> None:
        self.timeouts.append(pause)
        if task._signal.wait(pause):
            self.woken.append(pause)
        task._signal.clear()

    def set(self) -> None:
        self.task.wake()


def test_the_publish_loop_sleeps_only_until_the_open_transaction_is_due(tmp_path) -> None:
    clock = FakeClock(frozen=True)
    wake = RecordingThread()
    rig = make_rig(
        tmp_path, ScriptedPlatform(batches(3)), clock=clock, commit_interval=5.0,
        publish_pool=wake,
    )  # fmt: skip
    rig.pipeline.start()
    rig.wait_for(lambda: rig.platform.calls >= 3)  # in the open transaction, begun at t0
    time.sleep(0.2)  # the loop is back in its wait
    assert wake.timeouts[-1] == pytest.approx(5.0)  # the whole interval is still ahead
    clock.advance(3.0)
    wake.set()  # as an append would: nothing is due yet, so the loop sleeps again
    rig.wait_for(lambda: wake.timeouts[-1] == pytest.approx(2.0))  # not a fresh 5 s
    assert rig.msgids() == []
    clock.advance(2.0)
    wake.set()
    rig.wait_for(lambda: len(rig.msgids()) == 3)
    rig.stop()
    assert_exactly_once(rig, 3)


def test_an_idle_publish_loop_sleeps_until_woken_not_every_interval(tmp_path) -> None:
    """Nothing fetched, nothing spooled: the loop waits IDLE_RECHECK, not commit_interval (an
    idle instance of many accounts spent most of its CPU waking every interval for nothing).
    Its first wait is 0: what recovery left in the spool is replayed at once."""
    wake = RecordingThread()
    rig = make_rig(tmp_path, ScriptedPlatform([]), commit_interval=0.05, publish_pool=wake)
    rig.pipeline.start()
    rig.wait_for(lambda: rig.platform.calls >= 3 and len(wake.timeouts) >= 2)
    time.sleep(0.3)  # six commit intervals: the old loop woke six more times
    assert wake.timeouts[0] == 0.0
    assert wake.timeouts[1:] == [IDLE_RECHECK] * (len(wake.timeouts) - 1)
    assert len(wake.timeouts) <= 3  # woken by the empty answers? no: they bring no work
    rig.stop()


def test_an_entry_wakes_the_idle_loop_and_is_committed_within_the_interval(tmp_path) -> None:
    platform = ScriptedPlatform([[], [], *batches(4)])
    wake = RecordingThread()
    rig = make_rig(tmp_path, platform, commit_interval=0.05, publish_pool=wake)
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 4)
    assert IDLE_RECHECK in wake.woken  # the append cut the idle wait short
    rig.stop()
    assert_exactly_once(rig, 4)


def test_not_owning_the_account_means_no_get_rpt_call(tmp_path) -> None:
    platform = ScriptedPlatform(batches(3))
    rig = make_rig(tmp_path, platform, owns=lambda: False)
    rig.pipeline.start()
    rig.wait_for(lambda: rig.observer.named("fetch_paused"))
    rig.stop()
    assert platform.calls == 0
    assert [str(a[0]) for a, _ in rig.observer.named("fetch_paused")] == ["not_owned"]


def test_an_append_that_keeps_failing_sends_the_body_straight_to_kafka(tmp_path) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform(batches(4)), spool_wrapper=faulty(append=10**6))
    rig.pipeline.start()  # the disk stays broken
    rig.wait_for(lambda: len(rig.msgids()) == 4)
    rig.stop()
    assert sorted(rig.msgids()) == [0, 1, 2, 3]
    assert [p["spool_seq"] for p in rig.kafka.progress(ACCOUNT)] == [0]  # claims no entry
    assert rig.spools[0].last_seq == 0
    assert "spool_error" in rig.observer.states()
    assert rig.observer.named("spool_write_failed")


def test_an_append_that_fails_then_recovers_keeps_the_body_exactly_once(tmp_path) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform(batches(4, 2)), spool_wrapper=faulty(append=3))
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 6)
    rig.stop()
    assert_exactly_once(rig, 6)


def test_release_write_failures_retry_and_never_end_the_account(tmp_path) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform(batches(2, 2)), spool_wrapper=faulty(release=3))
    rig.pipeline.start()
    # The releases come after the commits, retried with a backoff: wait for them, not only for
    # the records (a stop returns from a failing release at once, by design).
    rig.wait_for(lambda: len(rig.msgids()) == 4 and rig.spools[0].level().entries == 0)
    rig.stop()
    assert_exactly_once(rig, 4)
    assert len(rig.observer.named("spool_write_failed")) == 3
    assert rig.pipeline.failed is None
    assert rig.spools[0].level().entries == 0


def test_stop_during_a_fetch_keeps_what_the_exchange_brought(tmp_path) -> None:
    release = threading.Event()
    platform = ScriptedPlatform(batches(5), block=release)
    rig = make_rig(tmp_path, platform)
    rig.pipeline.start()
    rig.wait_for(platform.in_flight.is_set)
    deadline = Deadline.after(20)
    rig.pipeline.stop(deadline)
    release.set()  # the exchange in flight completes after the stop
    assert rig.pipeline.join(deadline)
    assert_exactly_once(rig, 5)
    assert platform.calls == 1


def test_stop_during_a_commit_that_retries_still_commits(tmp_path) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform(batches(3)))
    rig.kafka.fail("commit_transaction", *[kafka_error("retriable")] * 5)
    rig.pipeline.start()
    rig.wait_for(lambda: rig.kafka.calls.count("commit_transaction") >= 1)
    rig.stop()
    assert_exactly_once(rig, 3)


def test_stop_during_produce_commits_what_is_open(tmp_path) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform(batches(*[50] * 10)), commit_interval=3600)
    rig.pipeline.start()
    rig.wait_for(lambda: rig.kafka.calls.count("produce") >= 60)
    rig.stop()
    assert sorted(rig.msgids()) == list(range(len(rig.msgids())))
    assert len(rig.msgids()) == len(rig.platform.handed_out)  # every fetched report, once


def test_invalid_body_is_dead_lettered_with_the_reason_the_fetcher_saw(tmp_path) -> None:
    error = InvalidResponseError("cut off after 607 bytes (request_timeout)", raw=b'{"rpts":[{')
    rig = make_rig(tmp_path, ScriptedPlatform([error, *batches(2)]))
    run_until_published(rig, 2)
    [letter] = rig.kafka.visible(DLQ)
    headers = dict(letter.headers)
    assert letter.value == b'{"rpts":[{'
    assert headers["error.message"] == b"cut off after 607 bytes (request_timeout)"
    assert headers["reason"] == b"invalid_response"
    assert_exactly_once(rig, 2)


def test_non_zero_result_with_reports_is_kept_and_dead_lettered_whole(tmp_path) -> None:
    raw = json.dumps({"result": 501, "desc": "busy", "rpts": [report(99)]}).encode()
    error = PlatformResultError(501, "busy", raw=raw)
    rig = make_rig(tmp_path, ScriptedPlatform([error, *batches(1)]))
    run_until_published(rig, 1)
    [letter] = rig.kafka.visible(DLQ)
    assert letter.value == raw and dict(letter.headers)["reason"] == b"rejected_result"
    assert dict(rig.observer.named("committed")[0][0][0].dead_letters) == {"rejected_result": 1}


def test_tls_failure_has_its_own_state(tmp_path) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform([TLSVerificationError("certificate verify failed")]))
    rig.pipeline.start()
    rig.wait_for(lambda: "tls_paused" in rig.observer.states())
    rig.stop()


def test_the_crash_hook_runs_after_each_durable_append(tmp_path) -> None:
    seen: list[int] = []
    rig = make_rig(tmp_path, ScriptedPlatform(batches(1, 1)), hooks=Hooks(after_spool=seen.append))
    run_until_published(rig, 2)
    assert seen == [1, 2]


def test_a_restart_before_the_first_commit_after_a_move_does_not_stop_the_account(tmp_path):
    """At start the progress names another spool (the account moved here); a producer restart
    before this instance's first commit sees the same record: that is no newer instance."""
    rig = make_rig(tmp_path, ScriptedPlatform(batches(3)))
    rig.kafka.commit_progress_from(ACCOUNT, "spool-on-the-old-volume", 0)
    rig.kafka.fail("commit_transaction", kafka_error("fatal"))
    run_until_published(rig, 3)
    assert_exactly_once_after_move(rig, 3)
    assert rig.pipeline.failed is None
    assert len(rig.observer.named("producer_restarted")) == 1


def assert_exactly_once_after_move(rig, n: int) -> None:
    assert sorted(rig.msgids()) == list(range(n))
    ours = [p for p in rig.kafka.progress(ACCOUNT) if p["spool_id"] == "spool-of-this-instance"]
    assert len(ours) == len(rig.observer.named("committed"))


def test_an_empty_checkpoint_waits_an_interval_only_while_entries_wait() -> None:
    ckpt = Checkpoint(0.2, 100)
    assert ckpt.wait_time(10.0, waiting=True) == pytest.approx(0.2)
    assert ckpt.wait_time(10.0, waiting=False) == IDLE_RECHECK
    ckpt.add(1, EntryRecords(values=[b"v"], keys=[b"k"]), now=10.0)
    assert ckpt.wait_time(10.15, waiting=False) == pytest.approx(0.05)  # open: until due


def test_a_spool_that_comes_back_after_a_move_resends_only_what_it_never_published(tmp_path):
    """Volume A committed entries 1-3 but crashed with its release mark at 1; the account then
    ran on volume B; back on A, entries 2 and 3 are published already (B's progress record
    carries A's last commit forward) and only entry 4 is sent again."""
    kafka = FakeKafka(FakeClock())
    on_a = tmp_path / "volume-a"
    spool = Spool.open(on_a / ACCOUNT, max_bytes=2**30, segment_bytes=2**20, fsync=False)
    for reports in batches(2, 2, 2, 2):  # msgids 0-7, two per entry
        spool.append(body_of(reports), fetched_at=time.time(), reports=len(reports))
    spool.release_through(1)
    spool.close()
    kafka.commit_progress_from(ACCOUNT, "volume-a", 3)  # entries 1-3 are in Kafka

    on_b = make_rig(tmp_path / "volume-b", ScriptedPlatform([[report(100)]]), kafka=kafka,
                    spool_id="volume-b")  # fmt: skip
    run_until_published(on_b, 1)
    b_committed = kafka.progress(ACCOUNT)[-1]
    assert b_committed["other_spools"] == {"volume-a": 3}

    back_on_a = make_rig(on_a, ScriptedPlatform([]), kafka=kafka, spool_id="volume-a")
    run_until_published(back_on_a, 3)
    assert sorted(back_on_a.msgids()) == [6, 7, 100]  # entry 4 once; entries 2 and 3 not again
    last = kafka.progress(ACCOUNT)[-1]
    carried = {"volume-b": b_committed["spool_seq"]}
    assert (last["spool_id"], last["other_spools"]) == ("volume-a", carried)


def test_a_progress_record_without_other_spools_floors_a_foreign_spool_at_zero(tmp_path):
    """Records written before other_spools existed: the old behaviour, everything left in the
    spool is renumbered and sent."""
    kafka = FakeKafka(FakeClock())
    spool = Spool.open(tmp_path / ACCOUNT, max_bytes=2**30, segment_bytes=2**20, fsync=False)
    spool.append(body_of([report(0)]), fetched_at=time.time(), reports=1)
    spool.close()
    kafka.commit_progress_from(ACCOUNT, "spool-on-the-old-volume", 5)
    rig = make_rig(tmp_path, ScriptedPlatform([]), kafka=kafka)
    run_until_published(rig, 1)
    assert rig.msgids() == [0] and kafka.progress(ACCOUNT)[-1]["spool_seq"] == 6


def body_of(reports: list[dict]) -> bytes:
    return json.dumps({"result": 0, "desc": "ok", "rpts": reports}).encode()


def test_aborts_in_a_row_back_off_instead_of_spinning(tmp_path) -> None:
    """A transaction that aborts every time (a consumer group that has moved on, while the
    account is being stopped): the first abort sends the entries again at once, the next ones
    only after a backoff (1-10 ms here), never in a busy loop."""
    rig = make_rig(tmp_path, ScriptedPlatform(batches(5)), commit_interval=0.0)
    rig.kafka.fail("commit_transaction", *[kafka_error("abortable")] * 100_000)
    rig.pipeline.start()
    rig.wait_for(lambda: rig.kafka.calls.count("abort_transaction") >= 2)
    first = rig.kafka.calls.count("abort_transaction")
    time.sleep(0.5)
    in_half_a_second = rig.kafka.calls.count("abort_transaction") - first
    rig.kafka.faults["commit_transaction"].clear()
    rig.wait_for(lambda: len(rig.msgids()) == 5)
    rig.stop()
    assert_exactly_once(rig, 5)
    assert 0 < in_half_a_second < 300, in_half_a_second  # ~100 with the backoff
