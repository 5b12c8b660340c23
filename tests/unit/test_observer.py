"""The concrete AccountObserver: every call moves its series and /status fields, together."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connector.observe.account import MetricsAndStatus, make_observer
from connector.observe.metrics import Metrics
from connector.observe.observer import (
    AccountObserver,
    AccountState,
    CommitSummary,
    DeadLetterReason,
    PauseReason,
    PollOutcome,
    SpoolLevel,
)
from connector.observe.status import StatusBoard


class Clock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class World:
    """One account's observer over a real Metrics and StatusBoard, with one fake clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics(accounts=["a", "b"], clock=self.clock)
        self.board = StatusBoard(["a", "b"], clock=self.clock)
        self.observer = MetricsAndStatus(self.metrics, self.board, "a", clock=self.clock)

    def value(self, name: str, **labels: str) -> float:
        return samples(self.metrics.registry)[(name, frozenset({"account": "a", **labels}.items()))]

    def has(self, name: str, **labels: str) -> bool:
        key = (name, frozenset({"account": "a", **labels}.items()))
        return key in samples(self.metrics.registry)

    def status(self) -> dict:
        return json.loads(json.dumps(self.board.snapshot()))["accounts"]["a"]


@pytest.fixture
def world() -> World:
    return World()


LEVEL = SpoolLevel(entries=3, reports=1200, bytes=64_000, oldest_fetched_at=9_990.0,
                   capacity_bytes=5_000_000)  # fmt: skip
EMPTY = SpoolLevel(entries=0, reports=0, bytes=0, oldest_fetched_at=None, capacity_bytes=5_064_000)


def test_make_observer_satisfies_the_protocol(world: World) -> None:
    observer: AccountObserver = make_observer(world.metrics, world.board, "a")
    assert isinstance(observer, MetricsAndStatus)
    observer.state(AccountState.POLLING)
    assert world.status()["state"] == "polling"


@pytest.mark.parametrize("state", list(AccountState))
def test_state_sets_the_gauge_and_status(world: World, state: AccountState) -> None:
    """(Pausing states also set rpt_fetch_paused: see the test below.)"""
    world.observer.state(state, error="why" if state is AccountState.FAILED else None)
    for other in AccountState:
        assert world.value("rpt_account_state", state=other.value) == (other is state)
    assert world.status()["state"] == state.value
    assert world.status()["last_error"] == ("why" if state is AccountState.FAILED else None)
    # The other account is untouched.
    assert world.board.snapshot()["accounts"]["b"]["state"] == "starting"


def test_a_successful_poll(world: World) -> None:
    world.observer.polled(PollOutcome.OK, duration=0.2, reports=500, attempt=0, next_in=0.0)
    assert world.value("rpt_polls_total", outcome="ok") == 1
    assert world.value("rpt_reports_fetched_total") == 500
    assert world.value("rpt_batch_size_count") == 1
    assert world.value("rpt_poll_duration_seconds_sum") == pytest.approx(0.2)
    assert world.value("rpt_last_success_timestamp_seconds") == 10_000.0
    assert world.value("rpt_poll_retry_attempt") == 0
    status = world.status()
    assert (status["last_success"], status["attempt"], status["next_poll_in"]) == (10_000, 0, 0)


def test_an_empty_poll_is_a_success_without_reports(world: World) -> None:
    world.clock.now += 5
    world.observer.polled(PollOutcome.EMPTY, duration=0.1, reports=0, attempt=0, next_in=1.0)
    assert world.value("rpt_polls_total", outcome="empty") == 1
    assert world.value("rpt_reports_fetched_total") == 0
    assert world.value("rpt_last_success_timestamp_seconds") == 10_005.0
    assert world.status()["last_success"] == 10_005.0


@pytest.mark.parametrize(
    "outcome", [o for o in PollOutcome if o not in (PollOutcome.OK, PollOutcome.EMPTY)]
)
def test_a_failed_poll_does_not_count_as_success(world: World, outcome: PollOutcome) -> None:
    started = world.value("rpt_last_success_timestamp_seconds")
    world.clock.now += 5
    world.observer.polled(outcome, duration=1.5, reports=0, attempt=3, next_in=4.0)
    assert world.value("rpt_polls_total", outcome=outcome.value) == 1
    assert world.value("rpt_poll_retry_attempt") == 3
    assert world.value("rpt_batch_size_count") == 0
    assert world.value("rpt_last_success_timestamp_seconds") == started
    status = world.status()
    assert (status["last_success"], status["attempt"], status["next_poll_in"]) == (None, 3, 4.0)


@pytest.mark.parametrize("reason", list(PauseReason))
def test_fetch_paused_and_resumed(world: World, reason: PauseReason) -> None:
    world.board.set_kafka_reachable(True)
    world.observer.state(AccountState.POLLING)
    world.board.update("b", owned=False)
    world.observer.fetch_paused(reason)
    for other in PauseReason:
        assert world.value("rpt_fetch_paused", reason=other.value) == (other is reason)
    assert world.status()["paused"] == reason.value
    ready, why = world.board.readiness()
    assert not ready
    assert why["accounts_not_ready"] == {"a": f"fetching paused: {reason.value}"}
    world.observer.fetch_paused(None)
    assert all(world.value("rpt_fetch_paused", reason=r.value) == 0 for r in PauseReason)
    assert world.status()["paused"] is None
    assert world.board.readiness()[0]


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (AccountState.AUTH_PAUSED, PauseReason.AUTH),
        (AccountState.TLS_PAUSED, PauseReason.TLS),
        (AccountState.NOT_OWNED, PauseReason.NOT_OWNED),
    ],
)
def test_a_pausing_state_pauses_fetching_until_the_next_state(
    world: World, state: AccountState, reason: PauseReason
) -> None:
    world.observer.state(state)
    assert world.value("rpt_fetch_paused", reason=reason.value) == 1
    assert world.status()["paused"] == reason.value
    world.observer.state(AccountState.POLLING)
    assert world.value("rpt_fetch_paused", reason=reason.value) == 0
    assert world.status()["paused"] is None


def test_a_state_change_does_not_clear_a_pause_the_fetcher_reported(world: World) -> None:
    world.observer.fetch_paused(PauseReason.SPOOL_FULL)
    world.observer.state(AccountState.POLLING)
    assert world.value("rpt_fetch_paused", reason="spool_full") == 1
    world.observer.state(AccountState.AUTH_PAUSED)
    world.observer.fetch_paused(PauseReason.DISK_FULL)  # the fetcher's word wins
    world.observer.state(AccountState.BACKOFF)
    assert world.value("rpt_fetch_paused", reason="disk_full") == 1
    assert world.value("rpt_fetch_paused", reason="auth") == 0


def test_spooled_moves_every_spool_series_and_status_in_reports(world: World) -> None:
    world.observer.spooled(LEVEL)
    assert world.value("rpt_spool_pending_records") == 1200  # reports, not answers
    assert world.value("rpt_spool_pending_entries") == 3
    assert world.value("rpt_spool_bytes") == 64_000
    assert world.value("rpt_spool_capacity_bytes") == 5_000_000
    assert world.value("rpt_oldest_uncommitted_age_seconds") == 10
    status = world.status()
    assert status["spool_pending"] == 1200
    assert status["spool_pending_entries"] == 3
    assert status["spool_bytes"] == 64_000
    assert status["spool_capacity_bytes"] == 5_000_000
    assert status["oldest_uncommitted_age_s"] == 10
    world.clock.now += 50  # nothing commits: both ages grow without a call
    assert world.value("rpt_oldest_uncommitted_age_seconds") == 60
    assert world.status()["oldest_uncommitted_age_s"] == 60


def test_an_empty_spool_has_no_uncommitted_age(world: World) -> None:
    world.observer.spooled(LEVEL)
    world.observer.spooled(EMPTY)
    assert world.value("rpt_oldest_uncommitted_age_seconds") == 0
    assert world.status()["oldest_uncommitted_age_s"] is None
    assert world.status()["spool_pending"] == 0


def test_spool_write_failed(world: World) -> None:
    world.observer.spool_write_failed("spool write failed: No space left on device")
    assert world.value("rpt_spool_write_errors_total") == 1
    assert world.status()["last_error"] == "spool write failed: No space left on device"


def test_unknown_fields(world: World) -> None:
    world.observer.unknown_fields(7)
    world.observer.unknown_fields(2)
    assert world.value("rpt_unknown_fields_total") == 9


def summary(**overrides: object) -> CommitSummary:
    fields: dict = {
        "last_seq": 42,
        "records": 3,
        "dead_letters": Counter({DeadLetterReason.INVALID_REPORT: 2}),
        # (rtime ms, stime ms, status) → reports
        "observed": Counter({(9_998_000, 9_995_000, 0): 2, (9_990_000, None, 7): 1}),
        "duration": 0.05,
        "committed_at": 10_000.0,
    }
    return CommitSummary(**{**fields, **overrides})


def test_committed_moves_the_counters_histograms_spool_and_status(world: World) -> None:
    world.observer.spooled(LEVEL)
    world.observer.committed(summary(), EMPTY)
    assert world.value("rpt_records_published_total") == 3
    assert world.value("rpt_dead_letters_total", reason="invalid_report") == 2
    assert world.value("rpt_dead_letters_total", reason="invalid_response") == 0
    assert world.value("rpt_reports_by_status_total", status="delivered") == 2
    assert world.value("rpt_reports_by_status_total", status="failed") == 1
    assert world.value("rpt_transaction_duration_seconds_count") == 1
    assert world.value("rpt_committed_sequence") == 42
    # Lag = commit time − rtime: 2 reports at 2 s, 1 at 10 s.
    assert world.value("rpt_report_lag_seconds_count") == 3
    assert world.value("rpt_report_lag_seconds_sum") == pytest.approx(14)
    # Delivery latency = rtime − stime, only where both are known.
    assert world.value("rpt_delivery_latency_seconds_count") == 2
    assert world.value("rpt_delivery_latency_seconds_sum") == pytest.approx(6)
    assert world.value("rpt_spool_pending_records") == 0
    assert world.value("rpt_oldest_uncommitted_age_seconds") == 0
    assert world.value("rpt_kafka_reachable") == 1  # a commit is a Kafka request that worked
    status = world.status()
    assert (status["committed_sequence"], status["spool_pending"]) == (42, 0)
    assert status["kafka_reachable"] is True


def test_a_commit_without_its_own_time_uses_the_clock(world: World) -> None:
    world.clock.now = 10_010.0
    world.observer.committed(summary(committed_at=0.0), EMPTY)
    assert world.value("rpt_report_lag_seconds_sum") == pytest.approx(2 * 12 + 20)


def test_aborts_and_producer_restarts_are_counted(world: World) -> None:
    world.observer.aborted("transaction timed out")
    world.observer.aborted("broker down")
    world.observer.producer_restarted("abort failed")
    assert world.value("rpt_transaction_aborts_total") == 2
    assert world.value("rpt_producer_restarts_total") == 1


def test_kafka_reachability_per_account(world: World) -> None:
    assert not world.has("rpt_kafka_reachable")  # unknown until Kafka answered or did not
    world.board.set_kafka_reachable(True)
    world.observer.kafka_reachable(False, "no Kafka request succeeded for 30s")
    assert world.value("rpt_kafka_reachable") == 0
    status = world.status()
    assert (status["kafka_reachable"], status["kafka_error"]) == (
        False,
        "no Kafka request succeeded for 30s",
    )
    ready, why = world.board.readiness()
    assert not ready
    assert why["kafka"]["reason"] == "account a: no Kafka request succeeded for 30s"
    world.observer.kafka_reachable(True)
    assert world.value("rpt_kafka_reachable") == 1
    assert world.status()["kafka_error"] is None


def test_producer_statistics_reach_the_collector(world: World) -> None:
    broker = {"nodeid": 1, "state": "UP", "rtt": {"avg": 3000}, "txerrs": 0}
    world.observer.producer_statistics(json.dumps({"msg_cnt": 4, "brokers": {"k/1": broker}}))
    assert world.value("rpt_producer_queue_messages") == 4
    assert world.value("rpt_broker_up", broker="k/1") == 1


def test_recovered_sets_the_committed_sequence_and_spool(world: World) -> None:
    world.observer.recovered(17, LEVEL)
    assert world.value("rpt_committed_sequence") == 17
    assert world.value("rpt_spool_pending_records") == 1200
    status = world.status()
    assert (status["committed_sequence"], status["spool_pending_entries"]) == (17, 3)


def test_concurrent_calls_leave_both_sinks_at_the_same_last_level(world: World) -> None:
    """The fetch and publish threads both report levels; the last one wins in both sinks."""
    levels = [SpoolLevel(n, n * 100, n * 1000, 9_990.0, 1) for n in range(1, 400)]

    def write(chunk: list[SpoolLevel]) -> None:
        for level in chunk:
            world.observer.spooled(level)

    for _ in range(5):
        writers = [threading.Thread(target=write, args=(levels[i::2],)) for i in range(2)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        gauge = world.value("rpt_spool_pending_records")
        assert gauge == world.status()["spool_pending"]
        assert world.value("rpt_spool_pending_entries") * 100 == gauge
