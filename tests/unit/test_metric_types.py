"""connector.observe.metric_types: labels() keeps each child, and what is exposed stays right; the
health gauges skip a call that changes nothing, and still show every change. (That the families
count and expose as prometheus_client's own classes do: tests/unit/test_exposition.py.)"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from connector.observe.health import HealthSeries
from connector.observe.metric_types import Counter, Gauge, Histogram
from connector.observe.observer import AccountState, PauseReason


def test_a_child_is_made_once_and_is_the_same_by_name() -> None:
    registry = CollectorRegistry()
    counter = Counter("rpt_t", "t", ["account", "kind"], registry=registry)
    first = counter.labels("a", "x")
    assert counter.labels("a", "x") is first
    assert counter.labels(account="a", kind="x") is first  # by name
    first.inc(2)
    counter.labels("b", "x").inc()
    assert registry.get_sample_value("rpt_t_total", {"account": "a", "kind": "x"}) == 2
    assert registry.get_sample_value("rpt_t_total", {"account": "b", "kind": "x"}) == 1


def test_remove_and_clear_forget_the_kept_children() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("rpt_g", "g", ["account"], registry=registry)
    gauge.labels("a").set(5)
    gauge.remove("a")
    assert registry.get_sample_value("rpt_g", {"account": "a"}) is None
    gauge.labels("a").set(7)  # a new child, exposed again
    assert registry.get_sample_value("rpt_g", {"account": "a"}) == 7
    gauge.clear()
    gauge.labels("a").set(1)
    assert registry.get_sample_value("rpt_g", {"account": "a"}) == 1


def test_histogram_children_observe() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("rpt_h", "h", ["account"], buckets=(1, 2), registry=registry)
    histogram.labels("a").observe(1.5)
    histogram.labels("a").observe(0.5)
    assert registry.get_sample_value("rpt_h_count", {"account": "a"}) == 2
    assert b'rpt_h_bucket{account="a",le="1.0"} 1.0' in generate_latest(registry)


def test_state_and_pause_gauges_follow_every_change() -> None:
    registry = CollectorRegistry()
    health = HealthSeries(registry)

    def shown(metric: str, label: str) -> dict[str, float]:
        samples = registry.get_sample_value
        members = AccountState if label == "state" else PauseReason
        return {m.value: samples(metric, {"account": "a", label: m.value}) for m in members}

    health.state("a", AccountState.POLLING)
    health.state("a", AccountState.POLLING)  # nothing changes
    assert [k for k, v in shown("rpt_account_state", "state").items() if v == 1] == ["polling"]
    health.state("a", AccountState.BACKOFF)
    assert [k for k, v in shown("rpt_account_state", "state").items() if v == 1] == ["backoff"]
    health.paused("a", None)
    assert set(shown("rpt_fetch_paused", "reason").values()) == {0}
    health.paused("a", PauseReason.SPOOL_FULL)
    health.paused("a", PauseReason.SPOOL_FULL)
    assert shown("rpt_fetch_paused", "reason")["spool_full"] == 1
    health.paused("a", None)
    assert set(shown("rpt_fetch_paused", "reason").values()) == {0}
