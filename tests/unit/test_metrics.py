"""Metrics: the rpt_* contract (names, types, labels) and BatchHistogram's arithmetic."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connector import __version__
from connector.observe.metrics import (
    LAG_BUCKETS,
    BatchHistogram,
    Metrics,
    batch_size_buckets,
)
from connector.observe.observer import (
    AccountState,
    DeadLetterReason,
    PauseReason,
    PollOutcome,
    SpoolLevel,
)

# name (as exposed, without _total/_bucket suffixes) → (type, label names)
CONTRACT = {
    "rpt_polls": ("counter", {"account", "outcome"}),
    "rpt_reports_fetched": ("counter", {"account"}),
    "rpt_records_published": ("counter", {"account"}),
    "rpt_dead_letters": ("counter", {"account", "reason"}),
    "rpt_poll_duration_seconds": ("histogram", {"account"}),
    "rpt_transaction_duration_seconds": ("histogram", {"account"}),
    "rpt_batch_size": ("histogram", {"account"}),
    "rpt_report_lag_seconds": ("histogram", {"account"}),
    "rpt_delivery_latency_seconds": ("histogram", {"account"}),
    "rpt_spool_pending_records": ("gauge", {"account"}),
    "rpt_spool_bytes": ("gauge", {"account"}),
    "rpt_last_success_timestamp_seconds": ("gauge", {"account"}),
    "rpt_committed_sequence": ("gauge", {"account"}),
    "rpt_reports_by_status": ("counter", {"account", "status"}),
    "rpt_build": ("info", {"version"}),
    "rpt_spool_write_errors": ("counter", {"account"}),
    "rpt_unknown_fields": ("counter", {"account"}),
    "rpt_archive_records": ("counter", {"account"}),
    "rpt_archive_bytes": ("counter", {"account"}),
    "rpt_poll_retry_attempt": ("gauge", {"account"}),
    "rpt_producer_queue_messages": ("gauge", {"account"}),
    "rpt_producer_queue_bytes": ("gauge", {"account"}),
    "rpt_broker_up": ("gauge", {"account", "broker"}),
    "rpt_broker_rtt_seconds": ("gauge", {"account", "broker"}),
    "rpt_broker_request_errors": ("counter", {"account", "broker"}),
    # issue 16
    "rpt_spool_pending_entries": ("gauge", {"account"}),
    "rpt_spool_capacity_bytes": ("gauge", {"account"}),
    "rpt_oldest_uncommitted_age_seconds": ("gauge", {"account"}),
    "rpt_kafka_reachable": ("gauge", {"account"}),
    "rpt_transaction_aborts": ("counter", {"account"}),
    "rpt_producer_restarts": ("counter", {"account"}),
    "rpt_account_state": ("gauge", {"account", "state"}),
    "rpt_fetch_paused": ("gauge", {"account", "reason"}),
    "rpt_batch_capacity": ("gauge", {"account"}),
    # issue 17: kafka.record_timestamp = "rtime"
    "rpt_record_timestamp_clamped": ("counter", {"account", "reason"}),
}

STATS = {
    "msg_cnt": 12,
    "msg_size": 3456,
    "brokers": {
        "localhost:9092/bootstrap": {"nodeid": -1, "state": "INIT", "rtt": {"avg": 0}},
        "localhost:9092/1": {"nodeid": 1, "state": "UP", "rtt": {"avg": 2500}, "txerrs": 3},
    },
}


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return samples(registry)[(name, frozenset(labels.items()))]


def commit(metrics: Metrics, account: str = "a", **overrides: object) -> None:
    args: dict = {
        "records": 3,
        "dead_letters": {"invalid_report": 1},
        "duration": 0.04,
        "sequence": 17,
        "commit_time": 1_000.0,
        "rtimes_ms": {998_000: 2, 990_000: 1},
        "delivery_latency_s": {4.0: 2, 700.0: 1},
        "statuses": {"delivered": 2, "failed": 1},
    }
    metrics.committed(account, **{**args, **overrides})


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics(accounts=["a"], batch_capacities={"a": 500, "b": 200}, clock=lambda: 1234.5)
    m.poll("a", "ok", 0.2, 500)
    m.poll("a", "auth_error", 0.1, 0)
    commit(m)
    m.poll_succeeded("a", 2000.0)
    m.spool_level("a", SpoolLevel(3, 40, 8192, 1200.0, 10_000))
    m.health.reachable("a", True)
    m.spool_write_failed("a")
    m.retry_attempt("a", 2)
    m.unknown_fields("a", 5)
    m.archived("a", 2, 4096)
    m.producer_statistics("a", json.dumps(STATS))
    return m


def test_every_contract_metric_has_its_type_and_labels(metrics: Metrics) -> None:
    families = {
        f.name: f
        for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
    }
    for name, (kind, labels) in CONTRACT.items():
        exposed = "rpt_build_info" if kind == "info" else name
        assert exposed in families, name
        family = families[exposed]
        assert family.type == ("gauge" if kind == "info" else kind), name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    assert not {n for n in families if n.startswith("rpt_")} - {
        "rpt_build_info",
        *CONTRACT,
    }


def test_values_after_a_poll_and_a_commit(metrics: Metrics) -> None:
    r = metrics.registry
    assert value(r, "rpt_build_info", version=__version__) == 1
    assert value(r, "rpt_polls_total", account="a", outcome="ok") == 1
    assert value(r, "rpt_polls_total", account="a", outcome="auth_error") == 1
    assert value(r, "rpt_polls_total", account="a", outcome="retriable_error") == 0
    assert value(r, "rpt_reports_fetched_total", account="a") == 500
    assert value(r, "rpt_records_published_total", account="a") == 3
    assert value(r, "rpt_dead_letters_total", account="a", reason="invalid_report") == 1
    assert value(r, "rpt_reports_by_status_total", account="a", status="delivered") == 2
    assert value(r, "rpt_reports_by_status_total", account="a", status="unknown") == 0
    assert value(r, "rpt_committed_sequence", account="a") == 17
    assert value(r, "rpt_last_success_timestamp_seconds", account="a") == 2000.0
    assert value(r, "rpt_spool_pending_records", account="a") == 40
    assert value(r, "rpt_spool_pending_entries", account="a") == 3
    assert value(r, "rpt_spool_capacity_bytes", account="a") == 10_000
    assert value(r, "rpt_oldest_uncommitted_age_seconds", account="a") == 34.5
    assert value(r, "rpt_batch_capacity", account="a") == 500
    assert value(r, "rpt_spool_bytes", account="a") == 8192
    assert value(r, "rpt_spool_write_errors_total", account="a") == 1
    assert value(r, "rpt_poll_retry_attempt", account="a") == 2
    assert value(r, "rpt_unknown_fields_total", account="a") == 5
    assert value(r, "rpt_poll_duration_seconds_count", account="a") == 2
    # Only ok/empty polls say anything about the batch size.
    assert value(r, "rpt_batch_size_count", account="a") == 1


def test_report_lag_is_commit_time_minus_rtime_per_report(metrics: Metrics) -> None:
    r = metrics.registry
    assert value(r, "rpt_report_lag_seconds_count", account="a") == 3
    assert value(r, "rpt_report_lag_seconds_sum", account="a") == pytest.approx(2 * 2 + 10)
    assert value(r, "rpt_report_lag_seconds_bucket", account="a", le="1.0") == 0
    assert value(r, "rpt_report_lag_seconds_bucket", account="a", le="2.5") == 2
    assert value(r, "rpt_report_lag_seconds_bucket", account="a", le="10.0") == 3
    assert value(r, "rpt_delivery_latency_seconds_bucket", account="a", le="5.0") == 2
    assert value(r, "rpt_delivery_latency_seconds_sum", account="a") == pytest.approx(708)


def test_reports_stamped_after_the_commit_count_as_zero_lag() -> None:
    m = Metrics()
    commit(m, commit_time=100.0, rtimes_ms={101_000: 1, 102_000: 2}, delivery_latency_s={-3.0: 1})
    assert value(m.registry, "rpt_report_lag_seconds_bucket", account="a", le="0.05") == 3
    assert value(m.registry, "rpt_report_lag_seconds_sum", account="a") == 0
    assert value(m.registry, "rpt_delivery_latency_seconds_sum", account="a") == 0


def test_known_accounts_are_exposed_at_zero_before_any_call() -> None:
    m = Metrics(accounts=["x"], clock=lambda: 777.0)
    r = m.registry
    for outcome in ("ok", "empty", "retriable_error", "auth_error", "platform_error"):
        assert value(r, "rpt_polls_total", account="x", outcome=outcome) == 0
    assert value(r, "rpt_report_lag_seconds_count", account="x") == 0
    assert value(r, "rpt_records_published_total", account="x") == 0
    # "No successful poll for 5 minutes" counts from the start until the first success.
    assert value(r, "rpt_last_success_timestamp_seconds", account="x") == 777.0


def test_full_batches_are_visible_for_every_configured_retsize(metrics: Metrics) -> None:
    assert {199, 200, 499, 500} <= set(batch_size_buckets([500, 200]))
    assert batch_size_buckets([1]) == batch_size_buckets([])
    metrics.poll("a", "ok", 0.1, 200)
    metrics.poll("a", "ok", 0.1, 199)
    r = metrics.registry
    full_200 = value(r, "rpt_batch_size_bucket", account="a", le="200.0") - value(
        r, "rpt_batch_size_bucket", account="a", le="199.0"
    )
    full_500 = value(r, "rpt_batch_size_bucket", account="a", le="500.0") - value(
        r, "rpt_batch_size_bucket", account="a", le="499.0"
    )
    assert (full_200, full_500) == (1, 1)


def test_unknown_outcome_or_status_is_a_programming_error() -> None:
    m = Metrics()
    with pytest.raises(ValueError, match="outcome"):
        m.poll("a", "weird", 0.1, 0)
    with pytest.raises(ValueError, match="statuses"):
        commit(m, statuses={"0": 1})


def test_producer_statistics_skip_bootstrap_brokers_and_convert_rtt(metrics: Metrics) -> None:
    r = metrics.registry
    broker = "localhost:9092/1"
    assert value(r, "rpt_producer_queue_messages", account="a") == 12
    assert value(r, "rpt_producer_queue_bytes", account="a") == 3456
    assert value(r, "rpt_broker_rtt_seconds", account="a", broker=broker) == 0.0025
    assert value(r, "rpt_broker_up", account="a", broker=broker) == 1
    assert value(r, "rpt_broker_request_errors_total", account="a", broker=broker) == 3
    assert not any(
        dict(labels).get("broker") == "localhost:9092/bootstrap" for _, labels in samples(r)
    )


def test_unparseable_producer_statistics_keep_the_last_good_snapshot(metrics: Metrics) -> None:
    metrics.producer_statistics("a", "{not json")
    assert value(metrics.registry, "rpt_producer_queue_messages", account="a") == 12


def test_two_metrics_objects_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.unknown_fields("a", 1)
    assert ("rpt_unknown_fields_total", frozenset({("account", "a")})) not in samples(
        second.registry
    )


BOUNDS = (0.5, 1.0, 2.5, 10.0)
values_with_counts = st.dictionaries(
    st.one_of(
        st.sampled_from(BOUNDS),  # exactly on a bound: `le` is inclusive
        st.floats(min_value=-5, max_value=50, allow_nan=False),
    ),
    st.integers(min_value=0, max_value=40),
    max_size=12,
)


@given(st.lists(values_with_counts, max_size=4))
def test_batch_histogram_matches_repeated_observe(batches: list[dict[float, int]]) -> None:
    registry = CollectorRegistry()
    batch = BatchHistogram("b", "batch", ["account"], BOUNDS, registry=registry)
    stock = Histogram("s", "stock", ["account"], buckets=BOUNDS, registry=registry)
    batch.ensure(["acc"])
    stock.labels("acc")
    for values in batches:
        batch.observe_many(["acc"], values)
        for v, count in values.items():
            for _ in range(count):
                stock.labels("acc").observe(v)
    got = samples(registry)
    for le in ("0.5", "1.0", "2.5", "10.0", "+Inf"):
        key = frozenset({("account", "acc"), ("le", le)})
        assert got[("b_bucket", key)] == got[("s_bucket", key)], le
    key = frozenset({("account", "acc")})
    assert got[("b_count", key)] == got[("s_count", key)]
    assert got[("b_sum", key)] == pytest.approx(got[("s_sum", key)], abs=1e-6)


def test_batch_histogram_is_thread_safe() -> None:
    hist = BatchHistogram("t", "t", ["account"], LAG_BUCKETS, registry=CollectorRegistry())

    def work() -> None:
        for _ in range(2000):
            hist.observe_many(["a"], {0.07: 1, 4000.0: 2})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    family = next(iter(hist.collect()))
    by_name = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert by_name[("t_count", None)] == 4 * 2000 * 3
    assert by_name[("t_bucket", "0.1")] == 4 * 2000
    assert by_name[("t_sum", None)] == pytest.approx(4 * 2000 * (0.07 + 8000.0))


def test_batch_histogram_rejects_wrong_label_count() -> None:
    hist = BatchHistogram("w", "w", ["account"], LAG_BUCKETS)
    with pytest.raises(ValueError, match="labels"):
        hist.observe_many(["a", "b"], {1.0: 1})


def test_batch_histogram_name_clash_is_caught_at_registration() -> None:
    registry = CollectorRegistry()
    BatchHistogram("dup_seconds", "d", ["account"], LAG_BUCKETS, registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Histogram("dup_seconds", "d", ["account"], registry=registry)


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "path", ["config/prometheus/alerts.yml", "config/grafana/rpt-connector.json"]
)
def test_alerts_and_dashboard_name_only_exposed_metrics(metrics: Metrics, path: str) -> None:
    exposed = {name for name, _ in samples(metrics.registry)}
    referenced = set(re.findall(r"\brpt_[a-z_]+[a-z]", (REPO / path).read_text()))
    assert referenced
    assert referenced - exposed == set()


# --- issue 16: series that tell the truth during an incident ---------------------------------


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_every_labelled_counter_exists_at_zero_for_every_label_value_the_code_emits() -> None:
    r = Metrics(accounts=["x"]).registry
    for reason in DeadLetterReason:
        assert value(r, "rpt_dead_letters_total", account="x", reason=reason.value) == 0
    for outcome in PollOutcome:
        assert value(r, "rpt_polls_total", account="x", outcome=outcome.value) == 0
    assert value(r, "rpt_transaction_aborts_total", account="x") == 0
    assert value(r, "rpt_producer_restarts_total", account="x") == 0
    for reason in PauseReason:
        assert value(r, "rpt_fetch_paused", account="x", reason=reason.value) == 0
    assert value(r, "rpt_account_state", account="x", state="starting") == 1


def test_unknown_dead_letter_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="dead-letter reasons"):
        commit(Metrics(), dead_letters={"bad_msgid": 1})


def test_exactly_one_account_state_is_one() -> None:
    m = Metrics(accounts=["x"])
    m.health.state("x", AccountState.TLS_PAUSED)
    states = {
        dict(labels)["state"]: v
        for (name, labels), v in samples(m.registry).items()
        if name == "rpt_account_state"
    }
    assert set(states) == {s.value for s in AccountState}
    assert {s for s, v in states.items() if v == 1} == {"tls_paused"}
    assert sum(states.values()) == 1


def test_fetch_paused_marks_one_reason_and_clears_on_resume() -> None:
    m = Metrics(accounts=["x"])
    m.health.paused("x", PauseReason.DISK_FULL)
    assert value(m.registry, "rpt_fetch_paused", account="x", reason="disk_full") == 1
    assert value(m.registry, "rpt_fetch_paused", account="x", reason="spool_full") == 0
    m.health.paused("x", None)
    assert value(m.registry, "rpt_fetch_paused", account="x", reason="disk_full") == 0


def test_oldest_uncommitted_age_grows_at_scrape_time_until_a_commit_empties_the_spool() -> None:
    clock = Clock(1000.0)
    m = Metrics(accounts=["x"], clock=clock)
    assert value(m.registry, "rpt_oldest_uncommitted_age_seconds", account="x") == 0
    m.spool_level("x", SpoolLevel(2, 900, 4096, 990.0, 1 << 20))
    assert value(m.registry, "rpt_oldest_uncommitted_age_seconds", account="x") == 10
    clock.now += 60  # nothing commits: no call at all, the age still grows
    assert value(m.registry, "rpt_oldest_uncommitted_age_seconds", account="x") == 70
    m.spool_level("x", SpoolLevel(0, 0, 0, None, 1 << 20))
    assert value(m.registry, "rpt_oldest_uncommitted_age_seconds", account="x") == 0


def test_capacity_and_reachability_are_absent_until_known() -> None:
    m = Metrics(accounts=["x"])
    names = {name for name, labels in samples(m.registry) if ("account", "x") in labels}
    assert "rpt_kafka_reachable" not in names
    assert "rpt_spool_capacity_bytes" not in names
    m.health.reachable("x", False)
    assert value(m.registry, "rpt_kafka_reachable", account="x") == 0


def test_stale_producer_statistics_are_dropped_not_repeated() -> None:
    clock = Clock(1000.0)
    m = Metrics(accounts=["x"], clock=clock, stats_interval=15.0)
    m.producer_statistics("x", json.dumps(STATS))
    clock.now += 30.0  # 2 × statistics.interval.ms: still the latest window
    assert value(m.registry, "rpt_broker_up", account="x", broker="localhost:9092/1") == 1
    clock.now += 0.5
    exposed = {name for name, _ in samples(m.registry)}
    assert not exposed & {
        "rpt_broker_up", "rpt_producer_queue_messages", "rpt_broker_rtt_seconds",
    }  # fmt: skip
    m.producer_statistics("x", json.dumps(STATS))  # fresh again
    assert value(m.registry, "rpt_producer_queue_messages", account="x") == 12


def test_a_broker_librdkafka_does_not_see_up_is_zero() -> None:
    m = Metrics(accounts=["x"])
    down = {"brokers": {"k:9092/1": {"nodeid": 1, "state": "TRY_CONNECT", "rtt": {"avg": 0}}}}
    m.producer_statistics("x", json.dumps(down))
    assert value(m.registry, "rpt_broker_up", account="x", broker="k:9092/1") == 0
