"""connector.observe.exposition: /metrics is byte for byte what prometheus_client's own encoders
write for the same registry and Accept header, while each series' text is made only once; the
families of connector.observe.metric_types count as prometheus_client's classes do."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as StockCounter
from prometheus_client import Gauge as StockGauge
from prometheus_client import Histogram as StockHistogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from connector.observe.exposition import (
    ExposedRegistry,
    SeriesText,
    encode,
    go_float,
    negotiate,
)
from connector.observe.metric_types import Counter, Gauge, Histogram
from connector.observe.metrics import Metrics
from connector.observe.observer import AccountState, PauseReason, SpoolLevel

PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
ACCEPTS = ["", "text/plain", "text/plain;version=1.0.0", "application/openmetrics-text",
           PROMETHEUS_2, PROMETHEUS_3]  # fmt: skip
# Account names come from the configuration: escaping is prometheus_client's business.
ACCOUNTS = ["main", 'we"ird\\name', "line\nbreak", "ünï"]


class Clock:
    now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def populated(clock: Clock) -> Metrics:
    metrics = Metrics(accounts=ACCOUNTS, batch_capacities=dict.fromkeys(ACCOUNTS, 500), clock=clock)
    for n, account in enumerate(ACCOUNTS):
        metrics.poll(account, "ok", 0.3 + n, 500)
        metrics.poll(account, "retriable_error", 5.0, 0)
        metrics.committed(
            account, records=498, dead_letters={"invalid_report": 1}, duration=0.08 * n,
            sequence=12 + n, commit_time=clock.now, rtimes_ms={int(clock.now * 1000) - 9000: 400},
            delivery_latency_s={3.0: 300, 45.0 * n: 198}, statuses={"delivered": 450},
        )  # fmt: skip
        metrics.spool_level(account, SpoolLevel(2, 500, 1_048_576, clock.now - 30 * n, 9 << 20))
        metrics.archived(account, 3, 123_456_789_012)
        metrics.timestamps_clamped(account, {"future": n})
        metrics.health.state(account, AccountState.BACKOFF)
        metrics.health.paused(account, PauseReason.DISK_FULL)
        metrics.health.reachable(account, n % 2 == 0)
        broker = {"nodeid": 1, "state": "UP", "rtt": {"avg": 1200 * n}, "txerrs": n}
        stats = {"msg_cnt": 5, "msg_size": 900, "brokers": {f'kafka "{n}":9092/1': broker}}
        metrics.producer_statistics(account, json.dumps(stats))
    return metrics


def without_process(body: bytes) -> list[str]:
    """The process collector's CPU and memory move between two encodes."""
    return [line for line in body.decode().split("\n") if not line.startswith("process_")]


@pytest.mark.parametrize("accept", ACCEPTS)
def test_the_body_is_prometheus_clients_own_for_every_accept_header(accept: str) -> None:
    clock = Clock()
    metrics = populated(clock)
    encoder, content_type = choose_encoder(accept)
    for _ in range(2):  # the second time from the kept text
        body, got_type = encode(metrics.registry, accept)
        assert got_type == content_type
        assert without_process(body) == without_process(encoder(metrics.registry))
        clock.now += 20  # the ages grow; the librdkafka statistics go stale after 30 s
    assert b"rpt_broker_up" not in encode(metrics.registry, accept)[0].split(b"# TYPE")[-1]


def test_series_that_come_and_go_are_exposed_as_they_are_now() -> None:
    registry = ExposedRegistry()
    counter = Counter("rpt_c", "c", ["account"], registry=registry)
    gauge = Gauge("rpt_g", "g", ["account", "kind"], registry=registry)
    stock = StockGauge("rpt_stock", "a collector without expose()", registry=registry)
    stock.set(3)
    counter.labels("a").inc()
    encode(registry, "")
    counter.labels("b").inc(2.5)  # a new series after the first scrape
    gauge.labels("a", "x").set(-0.0)
    gauge.labels(kind="y", account="a").set(1e22)
    counter.remove("a")
    body, _ = encode(registry, "")
    assert body == choose_encoder("")[0](registry)
    assert b'rpt_c_total{account="b"} 2.5\n' in body
    assert b'rpt_c_total{account="a"}' not in body
    gauge.clear()
    registry.unregister(stock)
    body, _ = encode(registry, "")
    assert body == choose_encoder("")[0](registry)
    assert b"rpt_g{" not in body and b"rpt_stock" not in body


def test_a_registry_of_prometheus_client_is_encoded_by_prometheus_client() -> None:
    registry = CollectorRegistry()
    StockCounter("rpt_x", "x", ["account"], registry=registry).labels("a").inc()
    body, content_type = encode(registry, PROMETHEUS_2)
    assert body.endswith(b"# EOF\n") and b'rpt_x_total{account="a"} 1.0' in body
    assert content_type.startswith("application/openmetrics-text")


def test_the_text_of_a_series_is_made_once_per_format() -> None:
    made = []
    text = SeriesText(
        negotiate(""),
        lambda: Gauge("rpt_t", "t", ["account"])._empty(),
        lambda family, key, values: (
            made.append(key),
            family.add_sample("rpt_t", {"account": key[0]}, values[0]),
        ),
    )
    out: list[str] = []
    for value in (1.0, 2.0, float("inf")):
        text.lines(("a",), (value,), out)
    assert out == [
        'rpt_t{account="a"} 1.0\n',
        'rpt_t{account="a"} 2.0\n',
        'rpt_t{account="a"} +Inf\n',
    ]
    assert made == [("a",)]
    assert text.header == "# HELP rpt_t t\n# TYPE rpt_t gauge\n"


BOUNDS = (0.5, 1, 2.5, 10)


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=30))
def test_histogram_counts_as_prometheus_clients_does(values: list[float]) -> None:
    registry = ExposedRegistry()
    ours = Histogram("rpt_h", "h", ["account"], buckets=BOUNDS, registry=registry)
    stock = StockHistogram("rpt_h", "h", ["account"], buckets=BOUNDS, registry=CollectorRegistry())
    ours.labels("a")
    stock.labels("a")
    for value in values:
        ours.labels("a").observe(value)
        stock.labels("a").observe(value)
    assert list(ours.collect()) == list(stock.collect())


def test_counters_and_gauges_behave_as_prometheus_clients() -> None:
    counter = Counter("rpt_n_total", "n", ["account"])
    stock = StockCounter("rpt_n_total", "n", ["account"])
    for metric in (counter, stock):
        metric.labels("a").inc(2)
        metric.labels("a").inc()
        with pytest.raises(ValueError, match="non-negative"):
            metric.labels("a").inc(-1)
    assert list(counter.collect()) == list(stock.collect())
    gauge, stock_gauge = Gauge("rpt_v", "v", ["account"]), StockGauge("rpt_v", "v", ["account"])
    for metric in (gauge, stock_gauge):
        metric.labels(7).set(4)  # label values are exposed as str
        metric.labels("7").inc(2)
        metric.labels(7).dec(0.5)
    assert list(gauge.collect()) == list(stock_gauge.collect())
    with pytest.raises(ValueError, match="labels"):
        gauge.labels("a", "b")
    with pytest.raises(ValueError, match="below 0"):
        Histogram("rpt_neg", "n", ["account"], buckets=(-1, 1))


@given(st.one_of(st.floats(), st.integers(min_value=-(10**20), max_value=10**20)))
def test_numbers_read_as_the_encoders_write_them(value: float) -> None:
    assert go_float(value) == floatToGoString(value)


@pytest.mark.parametrize(
    "value", [0.0, -0.0, 1.0, 999_999.5, 1_000_000.0, 1.5e-07, 1e22, -1e22, 1_700_000_000.123]
)
def test_numbers_at_the_edges_of_the_common_case(value: float) -> None:
    assert go_float(value) == floatToGoString(value)
