"""Prometheus metrics: every `rpt_*` series, kept in one CollectorRegistry.

The pipeline calls `Metrics` (through its `AccountObserver`) once per poll, per spool change and
per committed Kafka transaction, never per report: per-report values (lag, delivery latency,
status) arrive as `{value: count}` maps and go into `BatchHistogram`, which adds a count to a
bucket instead of looping `observe()`. Every labelled series of a known account exists from the
start at 0, so `increase()` and alerts see the first event. The registry is an `ExposedRegistry`:
/metrics writes it collector by collector, each series' text made once
(connector.observe.exposition).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Info, disable_created_metrics
from prometheus_client.process_collector import ProcessCollector

from connector import __version__
from connector.observe.collectors import (
    BatchHistogram,
    ProducerStatsCollector,
    UncommittedAgeCollector,
)
from connector.observe.exposition import ExposedRegistry
from connector.observe.health import HealthSeries
from connector.observe.metric_types import Counter, Gauge, Histogram
from connector.observe.observer import DeadLetterReason, PollOutcome, SpoolLevel, TimestampClamp

__all__ = ["BatchHistogram", "Metrics", "batch_size_buckets"]

# The text format would expose every `_created` timestamp as its own gauge series, doubling the
# series count for a value nothing here queries.
disable_created_metrics()

POLL_OUTCOMES = tuple(o.value for o in PollOutcome)
DEAD_LETTER_REASONS = tuple(r.value for r in DeadLetterReason)
TIMESTAMP_CLAMP_REASONS = tuple(r.value for r in TimestampClamp)
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


class Metrics:
    """All rpt_* metrics, in one CollectorRegistry. Called per poll / per committed batch."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        accounts: Iterable[str] = (),
        batch_capacities: Iterable[int] | Mapping[str, int] = (500,),
        clock: Callable[[], float] = time.time,
        stats_interval: float = 15.0,
    ) -> None:
        """`batch_capacities`: the retsizes, or better `{account: retsize}`, which also sets
        `rpt_batch_capacity{account}` (a full batch = the platform holds a backlog)."""
        self.registry = registry if registry is not None else ExposedRegistry()
        r = self.registry
        capacities = dict(batch_capacities) if isinstance(batch_capacities, Mapping) else {}
        retsizes = capacities.values() if capacities else batch_capacities
        ProcessCollector(registry=r)
        Info("rpt_build", "Version of the running connector.", registry=r).info(
            {"version": __version__}
        )
        self._init_counters(r)
        self._init_histograms(r, retsizes)
        self._init_gauges(r)
        self._producer = ProducerStatsCollector(r, interval=stats_interval, clock=clock)
        self._oldest = UncommittedAgeCollector(r, clock=clock)
        self.health = HealthSeries(r)
        started = clock()
        for account in accounts:
            self._ensure(account, started)
        for account, capacity in capacities.items():
            self._batch_capacity.labels(account).set(capacity)

    def _init_counters(self, r: CollectorRegistry) -> None:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, ["account", *labels], registry=r)

        self._polls = counter("rpt_polls", "get-rpt calls by outcome.", "outcome")
        self._fetched = counter("rpt_reports_fetched", "Reports taken from the platform.")
        self._published = counter(
            "rpt_records_published", "Report records committed to the data topic."
        )
        self._dead_letters = counter(
            "rpt_dead_letters",
            "Reports or responses sent to the dead-letter topic, by reason.",
            "reason",
        )
        self._by_status = counter(
            "rpt_reports_by_status", "Committed reports by delivery status.", "status"
        )
        self._spool_write_errors = counter("rpt_spool_write_errors", "Failed spool appends.")
        self._unknown_fields = counter(
            "rpt_unknown_fields", "Report fields not in the schema (dropped)."
        )
        # The raw archive topic (connector.kafka.archive): bodies and their raw bytes, per commit.
        self._archive_records = counter("rpt_archive_records", "get-rpt bodies archived.")
        self._archive_bytes = counter("rpt_archive_bytes", "Raw bytes of the archived bodies.")
        self._clamped = counter(
            "rpt_record_timestamp_clamped",
            'kafka.record_timestamp = "rtime": committed records given their produce time '
            "instead of rtime, by reason (future, past: beyond what the topic accepts; missing).",
            "reason",
        )

    def _init_histograms(self, r: CollectorRegistry, retsizes: Iterable[int]) -> None:
        (
            self._poll_duration, self._txn_duration, self._batch_size, self._lag,
            self._delivery_latency,
        ) = _histograms(r, retsizes)  # fmt: skip

    def _init_gauges(self, r: CollectorRegistry) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["account"], registry=r)

        self._spool_records = gauge(
            "rpt_spool_pending_records", "Uncommitted reports in the spool (reports, not answers)."
        )
        self._spool_entries = gauge(
            "rpt_spool_pending_entries", "Uncommitted get-rpt answers (spool entries)."
        )
        self._spool_bytes = gauge("rpt_spool_bytes", "Bytes held by the spool.")
        self._spool_capacity = gauge(
            "rpt_spool_capacity_bytes",
            "Room left in the spool: min(spool.max_bytes - bytes, filesystem free space); "
            "absent until the spool is open.",
        )
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
        self._batch_capacity = gauge(
            "rpt_batch_capacity", "The account's retsize: the most reports one get-rpt returns."
        )

    def _ensure(self, account: str, started: float) -> None:
        """Create every series of a known account at zero, so the first increase is seen."""
        for outcome in POLL_OUTCOMES:
            self._polls.labels(account, outcome)
        for reason in DEAD_LETTER_REASONS:
            self._dead_letters.labels(account, reason)
        for status in REPORT_STATUSES:
            self._by_status.labels(account, status)
        for reason in TIMESTAMP_CLAMP_REASONS:
            self._clamped.labels(account, reason)
        for metric in (
            self._fetched, self._published, self._spool_write_errors, self._unknown_fields,
            self._poll_duration, self._txn_duration, self._batch_size, self._spool_records,
            self._spool_entries, self._spool_bytes, self._committed_seq, self._retry_attempt,
        ):  # fmt: skip
            metric.labels(account)
        self._lag.ensure([account])
        self._delivery_latency.ensure([account])
        self._oldest.set_oldest(account, None)
        self.health.ensure(account)
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
        bad_reasons = set(dead_letters) - set(DEAD_LETTER_REASONS)
        if bad_reasons:
            raise ValueError(f"unknown dead-letter reasons {sorted(bad_reasons)}")
        self._published.labels(account).inc(records)
        for reason, count in dead_letters.items():
            self._dead_letters.labels(account, str(reason)).inc(count)
        for status, count in statuses.items():
            self._by_status.labels(account, status).inc(count)
        self._txn_duration.labels(account).observe(duration)
        self._committed_seq.labels(account).set(sequence)
        lags = ((commit_time - rtime_ms / 1000, n) for rtime_ms, n in rtimes_ms.items())
        self._lag.observe_many([account], _clamped(lags))
        self._delivery_latency.observe_many([account], _clamped(delivery_latency_s.items()))

    def archived(self, account: str, records: int, raw_bytes: int) -> None:
        """Bodies (and their raw bytes) one committed transaction wrote to the archive."""
        self._archive_records.labels(account).inc(records)
        self._archive_bytes.labels(account).inc(raw_bytes)

    def timestamps_clamped(self, account: str, reasons: Mapping[str, int]) -> None:
        """Records of one committed transaction whose rtime could not be their timestamp."""
        for reason, count in reasons.items():
            self._clamped.labels(account, TimestampClamp(reason).value).inc(count)

    def poll_succeeded(self, account: str, when: float) -> None:
        self._last_success.labels(account).set(when)

    def committed_sequence(self, account: str, sequence: int) -> None:
        self._committed_seq.labels(account).set(sequence)

    def spool_level(self, account: str, level: SpoolLevel) -> None:
        self._spool_records.labels(account).set(level.reports)
        self._spool_entries.labels(account).set(level.entries)
        self._spool_bytes.labels(account).set(level.bytes)
        self._spool_capacity.labels(account).set(level.capacity_bytes)
        self._oldest.set_oldest(account, level.oldest_fetched_at if level.entries else None)

    def spool_write_failed(self, account: str) -> None:
        self._spool_write_errors.labels(account).inc()

    def producer_statistics(self, account: str, stats_json: str) -> None:
        """Feed librdkafka's stats_cb JSON (statistics.interval.ms)."""
        self._producer.update(account, stats_json)

    def retry_attempt(self, account: str, attempt: int) -> None:
        self._retry_attempt.labels(account).set(attempt)

    def unknown_fields(self, account: str, n: int) -> None:
        self._unknown_fields.labels(account).inc(n)


def _histograms(
    r: CollectorRegistry, retsizes: Iterable[int]
) -> tuple[Histogram, Histogram, Histogram, BatchHistogram, BatchHistogram]:
    """Per-poll and per-transaction histograms, and the per-report ones fed in batches."""
    poll_duration = Histogram(
        "rpt_poll_duration_seconds",
        "Duration of one get-rpt call, including reading the body.",
        ["account"],
        buckets=POLL_DURATION_BUCKETS,
        registry=r,
    )
    txn_duration = Histogram(
        "rpt_transaction_duration_seconds",
        "Duration of one Kafka transaction, begin to commit.",
        ["account"],
        buckets=TRANSACTION_DURATION_BUCKETS,
        registry=r,
    )
    batch_size = Histogram(
        "rpt_batch_size",
        "Reports per successful poll; a full batch means a backlog on the platform.",
        ["account"],
        buckets=batch_size_buckets(retsizes),
        registry=r,
    )
    lag = BatchHistogram(
        "rpt_report_lag_seconds",
        "Time from the platform's rtime of a report to its Kafka commit.",
        ["account"],
        LAG_BUCKETS,
        registry=r,
    )
    delivery_latency = BatchHistogram(
        "rpt_delivery_latency_seconds",
        "Time from sending an SMS (stime) to its status report (rtime).",
        ["account"],
        DELIVERY_LATENCY_BUCKETS,
        registry=r,
    )
    return poll_duration, txn_duration, batch_size, lag, delivery_latency


def _clamped(values: Iterable[tuple[float, int]]) -> dict[float, int]:
    """Negative durations are clock skew between the platform and us: count them as 0."""
    out: dict[float, int] = {}
    for value, count in values:
        key = max(0.0, value)
        out[key] = out.get(key, 0) + count
    return out
