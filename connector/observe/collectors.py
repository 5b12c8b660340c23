"""Custom Prometheus collectors: values computed at scrape time rather than set by a call.

`BatchHistogram` takes `{value: count}` maps (one call per batch, not per report);
`ProducerStatsCollector` exposes librdkafka statistics only while they are fresh;
`UncommittedAgeCollector` turns "the oldest uncommitted body was fetched at t" into an age
that grows on every scrape while nothing commits. Each also has `expose()`, its text for /metrics
(connector.observe.exposition).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from connector.observe.exposition import Format, SeriesText
from connector.observe.metric_types import Histogram

Clock = Callable[[], float]
Row = tuple[tuple[str, ...], float]  # a series' label values and its value


def _add_metric(family: Metric, key: tuple[str, ...], values: Sequence[float]) -> None:
    family.add_metric(list(key), values[0])  # type: ignore[attr-defined]


def _expose(
    texts: dict[str, list[SeriesText]],
    families: Callable[[], list[Metric]],
    rows: list[list[Row]],
    fmt: Format,
    out: list[str],
) -> None:
    """Families of one value per series (in `families()` order, series in `rows`) as `fmt`."""
    per_family = texts.get(fmt.content_type)
    if per_family is None:
        count = len(families())
        per_family = texts[fmt.content_type] = [
            SeriesText(fmt, lambda i=i: families()[i], _add_metric) for i in range(count)
        ]
    for text, series in zip(per_family, rows, strict=True):
        out.append(text.header)
        with text.lock:
            for key, value in series:
                text.line(key, value, out)


class BatchHistogram(Histogram):
    """A labelled histogram fed `{value: count}` maps; thread-safe, O(distinct values)."""

    def observe_many(self, labels: Sequence[str], values: Mapping[float, int]) -> None:
        """Observe each value `count` times."""
        self.labels(*labels).observe_many(values)

    def ensure(self, labels: Sequence[str]) -> None:
        """Expose the series at zero before its first observation, so rate() sees the start."""
        self.labels(*labels)


class ProducerStatsCollector(Collector):
    """The last librdkafka statistics per account, as a few bounded-cardinality series.

    librdkafka emits statistics only while the producer is polled. A snapshot older than
    `2 × interval` says nothing about now: it is dropped from the exposition instead of being
    repeated as a flat line (an absent `rpt_broker_up` means "unknown", never "up").
    """

    def __init__(
        self, registry: CollectorRegistry, *, interval: float = 15.0, clock: Clock = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, dict] = {}
        self._max_age = 2 * interval
        self._clock = clock
        self._texts: dict[str, list[SeriesText]] = {}
        registry.register(self)

    def update(self, account: str, stats_json: str) -> None:
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return  # librdkafka wrote something unexpected: keep the last good snapshot
        brokers = {
            name: (b.get("state") == "UP", b.get("rtt", {}).get("avg", 0) / 1e6, b.get("txerrs", 0))
            for name, b in stats.get("brokers", {}).items()
            if b.get("nodeid", -1) >= 0  # bootstrap placeholders have nodeid -1
        }
        summary = {"msg_cnt": stats.get("msg_cnt", 0), "msg_size": stats.get("msg_size", 0)}
        with self._lock:
            self._stats[account] = {**summary, "brokers": brokers, "at": self._clock()}

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        return iter(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        families = self._families()
        for family, series in zip(families, self._rows(), strict=True):
            for key, value in series:
                family.add_metric(list(key), value)
        return iter(families)

    def expose(self, fmt: Format, out: list[str]) -> None:
        _expose(self._texts, self._families, self._rows(), fmt, out)

    def _rows(self) -> list[list[Row]]:
        """The fresh accounts' series of each family, in `_families()` order."""
        queue_msgs: list[Row] = []
        queue_bytes: list[Row] = []
        up: list[Row] = []
        rtt: list[Row] = []
        errors: list[Row] = []
        now = self._clock()
        with self._lock:
            fresh = [(a, s) for a, s in self._stats.items() if now - s["at"] <= self._max_age]
        for account, stats in fresh:
            queue_msgs.append(((account,), stats["msg_cnt"]))
            queue_bytes.append(((account,), stats["msg_size"]))
            for broker, (is_up, rtt_s, txerrs) in stats["brokers"].items():
                up.append(((account, broker), 1.0 if is_up else 0.0))
                rtt.append(((account, broker), rtt_s))
                errors.append(((account, broker), txerrs))
        return [queue_msgs, queue_bytes, up, rtt, errors]

    @staticmethod
    def _families() -> list[GaugeMetricFamily | CounterMetricFamily]:
        per_broker = ["account", "broker"]
        return [
            GaugeMetricFamily(
                "rpt_producer_queue_messages",
                "Messages in the producer queue, waiting for delivery (fresh statistics only).",
                labels=["account"],
            ),
            GaugeMetricFamily(
                "rpt_producer_queue_bytes",
                "Bytes of messages in the producer queue (fresh statistics only).",
                labels=["account"],
            ),
            GaugeMetricFamily(
                "rpt_broker_up",
                "1 while librdkafka's latest fresh statistics say the broker connection is UP; "
                "absent when no fresh statistics arrived.",
                labels=per_broker,
            ),
            GaugeMetricFamily(
                "rpt_broker_rtt_seconds",
                "Average broker round-trip time over the last statistics window.",
                labels=per_broker,
            ),
            CounterMetricFamily(
                "rpt_broker_request_errors",
                "Request transmission errors to the broker since the producer started.",
                labels=per_broker,
            ),
        ]


class UncommittedAgeCollector(Collector):
    """`rpt_oldest_uncommitted_age_seconds{account}`: now − fetched_at of the oldest spooled body.

    Computed at scrape time, so it keeps growing while nothing commits (during a Kafka outage
    the commit-time lag histogram has no observations and cannot show it). 0 when the spool
    holds nothing uncommitted.
    """

    NAME = "rpt_oldest_uncommitted_age_seconds"

    def __init__(self, registry: CollectorRegistry, *, clock: Clock = time.time) -> None:
        self._lock = threading.Lock()
        self._oldest: dict[str, float | None] = {}
        self._clock = clock
        self._texts: dict[str, list[SeriesText]] = {}
        registry.register(self)

    def set_oldest(self, account: str, fetched_at: float | None) -> None:
        with self._lock:
            self._oldest[account] = fetched_at

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        for key, age in self._rows():
            family.add_metric(list(key), age)
        yield family

    def expose(self, fmt: Format, out: list[str]) -> None:
        _expose(self._texts, lambda: [self._family()], [self._rows()], fmt, out)

    def _rows(self) -> list[Row]:
        now = self._clock()
        with self._lock:
            items = list(self._oldest.items())
        return [
            ((account,), 0.0 if oldest is None else max(0.0, now - oldest))
            for account, oldest in items
        ]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            self.NAME,
            "Seconds since the oldest uncommitted spooled get-rpt answer was fetched "
            "(0 when everything fetched is committed).",
            labels=["account"],
        )
