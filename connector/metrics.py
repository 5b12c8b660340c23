"""Prometheus metrics: every `rpt_*` series, kept in one CollectorRegistry.

The pipeline calls `Metrics` once per poll and once per committed Kafka transaction, never per
report: per-report values (lag, delivery latency, status) arrive as `{value: count}` maps and
go into `BatchHistogram`, which adds a count to a bucket instead of looping `observe()`.
"""

from __future__ import annotations

import json
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from connector import __version__

# The text format would expose every `_created` timestamp as its own gauge series, doubling the
# series count for a value nothing here queries.
disable_created_metrics()

POLL_OUTCOMES = (
    "ok",
    "empty",
    "retriable_error",
    "auth_error",
    "platform_error",
    "invalid_response",
)
REPORT_STATUSES = ("delivered", "failed", "unknown")

# The platform stamps rtime to the second, so sub-second lag buckets only tell "fresh".
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
DELIVERY_LATENCY_BUCKETS = (
    1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400,
)  # fmt: skip
POLL_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TRANSACTION_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_SIZE_BUCKETS = (0, 1, 10, 50, 100, 250, 499, 500)


def batch_size_buckets(capacities: Iterable[int]) -> tuple[float, ...]:
    """Batch-size buckets with `retsize - 1` and `retsize` for every configured retsize.

    A full batch means the platform holds a backlog; with both bounds present,
    `bucket{le=r} - bucket{le=r-1}` counts full batches for an account whose retsize is r.
    """
    bounds = set(BATCH_SIZE_BUCKETS)
    for capacity in capacities:
        bounds.update({capacity - 1, capacity} if capacity > 1 else {capacity})
    return tuple(sorted(bounds))


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
    """The last librdkafka statistics per account, exposed as a few bounded-cardinality series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, dict] = {}
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
            self._stats[account] = {**summary, "brokers": brokers}

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        return iter(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        families = self._families()
        queue_msgs, queue_bytes, up, rtt, errors = families
        with self._lock:
            items = list(self._stats.items())
        for account, stats in items:
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
                "Messages in the producer queue, waiting for delivery.",
                labels=["account"],
            ),
            GaugeMetricFamily(
                "rpt_producer_queue_bytes",
                "Bytes of messages in the producer queue.",
                labels=["account"],
            ),
            GaugeMetricFamily(
                "rpt_broker_up",
                "1 while the producer's broker connection is up.",
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


class Metrics:
    """All rpt_* metrics, in one CollectorRegistry. Called per poll / per committed batch."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        accounts: Iterable[str] = (),
        batch_capacities: Iterable[int] = (500,),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        Info("rpt_build", "Version of the running connector.", registry=r).info(
            {"version": __version__}
        )
        self._polls = Counter(
            "rpt_polls", "get-rpt calls by outcome.", ["account", "outcome"], registry=r
        )
        self._fetched = Counter(
            "rpt_reports_fetched", "Reports taken from the platform.", ["account"], registry=r
        )
        self._published = Counter(
            "rpt_records_published",
            "Report records committed to the data topic.",
            ["account"],
            registry=r,
        )
        self._dead_letters = Counter(
            "rpt_dead_letters",
            "Reports or responses sent to the dead-letter topic, by reason.",
            ["account", "reason"],
            registry=r,
        )
        self._by_status = Counter(
            "rpt_reports_by_status",
            "Committed reports by delivery status.",
            ["account", "status"],
            registry=r,
        )
        self._spool_write_errors = Counter(
            "rpt_spool_write_errors", "Failed spool appends.", ["account"], registry=r
        )
        self._unknown_fields = Counter(
            "rpt_unknown_fields",
            "Report fields not in the schema (dropped).",
            ["account"],
            registry=r,
        )
        self._poll_duration = Histogram(
            "rpt_poll_duration_seconds",
            "Duration of one get-rpt call, including reading the body.",
            ["account"],
            buckets=POLL_DURATION_BUCKETS,
            registry=r,
        )
        self._txn_duration = Histogram(
            "rpt_transaction_duration_seconds",
            "Duration of one Kafka transaction, begin to commit.",
            ["account"],
            buckets=TRANSACTION_DURATION_BUCKETS,
            registry=r,
        )
        self._batch_size = Histogram(
            "rpt_batch_size",
            "Reports per successful poll; a full batch means a backlog on the platform.",
            ["account"],
            buckets=batch_size_buckets(batch_capacities),
            registry=r,
        )
        self._lag = BatchHistogram(
            "rpt_report_lag_seconds",
            "Time from the platform's rtime of a report to its Kafka commit.",
            ["account"],
            LAG_BUCKETS,
            registry=r,
        )
        self._delivery_latency = BatchHistogram(
            "rpt_delivery_latency_seconds",
            "Time from sending an SMS (stime) to its status report (rtime).",
            ["account"],
            DELIVERY_LATENCY_BUCKETS,
            registry=r,
        )
        self._init_gauges(r)
        self._producer = ProducerStatsCollector(r)
        started = clock()
        for account in accounts:
            self._ensure(account, started)

    def _init_gauges(self, r: CollectorRegistry) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["account"], registry=r)

        self._spool_records = gauge("rpt_spool_pending_records", "Spooled, uncommitted reports.")
        self._spool_bytes = gauge("rpt_spool_bytes", "Bytes held by the spool.")
        self._last_success = gauge(
            "rpt_last_success_timestamp_seconds",
            "When the last get-rpt call succeeded (process start before the first).",
        )
        self._committed_seq = gauge(
            "rpt_committed_sequence", "Last spool sequence committed to Kafka."
        )
        self._retry_attempt = gauge(
            "rpt_poll_retry_attempt", "Consecutive failed get-rpt attempts (0 after a success)."
        )

    def _ensure(self, account: str, started: float) -> None:
        """Create every series of a known account at zero, so the first increase is seen."""
        for outcome in POLL_OUTCOMES:
            self._polls.labels(account, outcome)
        for status in REPORT_STATUSES:
            self._by_status.labels(account, status)
        for metric in (
            self._fetched, self._published, self._spool_write_errors, self._unknown_fields,
            self._poll_duration, self._txn_duration, self._batch_size, self._spool_records,
            self._spool_bytes, self._committed_seq, self._retry_attempt,
        ):  # fmt: skip
            metric.labels(account)
        self._lag.ensure([account])
        self._delivery_latency.ensure([account])
        # Without a success yet, "no success for 5 minutes" counts from the start.
        self._last_success.labels(account).set(started)

    def poll(self, account: str, outcome: str, duration: float, n_reports: int) -> None:
        if outcome not in POLL_OUTCOMES:
            raise ValueError(f"unknown poll outcome {outcome!r}")
        self._polls.labels(account, outcome).inc()
        self._poll_duration.labels(account).observe(duration)
        if outcome in ("ok", "empty"):
            self._batch_size.labels(account).observe(n_reports)
        if n_reports:
            self._fetched.labels(account).inc(n_reports)

    def committed(
        self,
        account: str,
        *,
        records: int,
        dead_letters: Mapping[str, int],
        duration: float,
        sequence: int,
        commit_time: float,
        rtimes_ms: Mapping[int, int],
        delivery_latency_s: Mapping[float, int],
        statuses: Mapping[str, int],
    ) -> None:
        """Account for one committed Kafka transaction (or at-least-once flush)."""
        unknown = set(statuses) - set(REPORT_STATUSES)
        if unknown:
            raise ValueError(f"unknown report statuses {sorted(unknown)}")
        self._published.labels(account).inc(records)
        for reason, count in dead_letters.items():
            self._dead_letters.labels(account, reason).inc(count)
        for status, count in statuses.items():
            self._by_status.labels(account, status).inc(count)
        self._txn_duration.labels(account).observe(duration)
        self._committed_seq.labels(account).set(sequence)
        lags = ((commit_time - rtime_ms / 1000, n) for rtime_ms, n in rtimes_ms.items())
        self._lag.observe_many([account], _clamped(lags))
        self._delivery_latency.observe_many([account], _clamped(delivery_latency_s.items()))

    def poll_succeeded(self, account: str, when: float) -> None:
        self._last_success.labels(account).set(when)

    def spool(self, account: str, pending_records: int, pending_bytes: int) -> None:
        self._spool_records.labels(account).set(pending_records)
        self._spool_bytes.labels(account).set(pending_bytes)

    def spool_write_failed(self, account: str) -> None:
        self._spool_write_errors.labels(account).inc()

    def producer_statistics(self, account: str, stats_json: str) -> None:
        """Feed librdkafka's stats_cb JSON (statistics.interval.ms)."""
        self._producer.update(account, stats_json)

    def retry_attempt(self, account: str, attempt: int) -> None:
        self._retry_attempt.labels(account).set(attempt)

    def unknown_fields(self, account: str, n: int) -> None:
        self._unknown_fields.labels(account).inc(n)


def _clamped(values: Iterable[tuple[float, int]]) -> dict[float, int]:
    """Negative durations are clock skew between the platform and us: count them as 0."""
    out: dict[float, int] = {}
    for value, count in values:
        key = max(0.0, value)
        out[key] = out.get(key, 0) + count
    return out
