"""Custom Prometheus collectors: values computed at scrape time rather than set by a call.

`BatchHistogram` takes `{value: count}` maps (one call per batch, not per report);
`ProducerStatsCollector` exposes librdkafka statistics only while they are fresh;
`UncommittedAgeCollector` turns "the oldest uncommitted body was fetched at t" into an age
that grows on every scrape while nothing commits.
"""

from __future__ import annotations

import json
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Clock = Callable[[], float]


class BatchHistogram(Collector):
    """A labelled histogram fed `{value: count}` maps; thread-safe, O(distinct values)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = (*(float(b) for b in sorted(buckets)), float("inf"))
        self._les = tuple(floatToGoString(b) for b in self._bounds)
        self._lock = threading.Lock()
        # labels → [per-bucket (non-cumulative) counts..., sum]
        self._series: dict[tuple[str, ...], list[float]] = {}
        if registry is not None:
            registry.register(self)

    def observe_many(self, labels: Sequence[str], values: Mapping[float, int]) -> None:
        """Observe each value `count` times."""
        key = self._key(labels)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self._bounds) + 1))
            for value, count in values.items():
                series[bisect_left(self._bounds, value)] += count
                series[-1] += value * count

    def ensure(self, labels: Sequence[str]) -> None:
        """Expose the series at zero before its first observation, so rate() sees the start."""
        self.observe_many(labels, {})

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            snapshot = [(key, list(series)) for key, series in self._series.items()]
        for key, series in snapshot:
            cumulative, buckets = 0.0, []
            for le, count in zip(self._les, series, strict=False):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(key, buckets, series[-1])
        yield family

    def _key(self, labels: Sequence[str]) -> tuple[str, ...]:
        if len(labels) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {labels!r}")
        return tuple(labels)


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
        queue_msgs, queue_bytes, up, rtt, errors = families
        now = self._clock()
        with self._lock:
            fresh = [(a, s) for a, s in self._stats.items() if now - s["at"] <= self._max_age]
        for account, stats in fresh:
            queue_msgs.add_metric([account], stats["msg_cnt"])
            queue_bytes.add_metric([account], stats["msg_size"])
            for broker, (is_up, rtt_s, txerrs) in stats["brokers"].items():
                up.add_metric([account, broker], 1.0 if is_up else 0.0)
                rtt.add_metric([account, broker], rtt_s)
                errors.add_metric([account, broker], txerrs)
        return iter(families)

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
        registry.register(self)

    def set_oldest(self, account: str, fetched_at: float | None) -> None:
        with self._lock:
            self._oldest[account] = fetched_at

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        now = self._clock()
        with self._lock:
            items = list(self._oldest.items())
        for account, oldest in items:
            family.add_metric([account], 0.0 if oldest is None else max(0.0, now - oldest))
        yield family

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            self.NAME,
            "Seconds since the oldest uncommitted spooled get-rpt answer was fetched "
            "(0 when everything fetched is committed).",
            labels=["account"],
        )
