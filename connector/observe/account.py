"""The concrete `AccountObserver`: one call feeds both `Metrics` and the `StatusBoard`.

`make_observer` builds it; the pipeline never sees prometheus-client or the
board. Both sinks get the same value from the same call, so `/status` and the gauges tell one
story (issue 16: the spool gauge once counted answers while `/status` said 0 in an outage).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from connector.observe.metrics import Metrics
from connector.observe.observer import (
    AccountObserver,
    AccountState,
    CommitSummary,
    PauseReason,
    PollOutcome,
    SpoolLevel,
)
from connector.observe.status import StatusBoard

_SUCCESSFUL_POLLS = frozenset({PollOutcome.OK, PollOutcome.EMPTY})
# States that are themselves a pause of get-rpt: rpt_fetch_paused follows them, so the panel and
# alert on paused fetching see a bad token as clearly as a full disk.
_STATE_PAUSES = {
    AccountState.AUTH_PAUSED: PauseReason.AUTH,
    AccountState.TLS_PAUSED: PauseReason.TLS,
    AccountState.NOT_OWNED: PauseReason.NOT_OWNED,
}


def make_observer(metrics: Metrics, board: StatusBoard, account: str) -> AccountObserver:
    """The observer the service hands each account's pipeline: metrics and /status at once."""
    return MetricsAndStatus(metrics, board, account)


class MetricsAndStatus:
    """Feeds `Metrics` and the `StatusBoard` from each call, so a gauge and /status agree.

    Both sinks are thread-safe on their own; the lock serialises calls from the fetch and the
    publish thread, so the two sinks always end at the same last value (never one thread's
    level in the gauge and the other's in /status).
    """

    def __init__(
        self,
        metrics: Metrics,
        board: StatusBoard,
        account: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._board = board
        self._account = account
        self._clock = clock
        self._lock = threading.Lock()
        self._state_pause: PauseReason | None = None  # a pause set by state(), not fetch_paused()

    def state(self, state: AccountState, *, error: str | None = None) -> None:
        state = AccountState(state)
        fields: dict = {"state": state.value}
        if error is not None:
            fields["last_error"] = error
        with self._lock:
            self._metrics.health.state(self._account, state)
            self._board.update(self._account, **fields)
            pause = _STATE_PAUSES.get(state)
            if pause is not None:
                self._pause(pause)
                self._state_pause = pause
            elif self._state_pause is not None:  # the state that paused fetching is over
                self._pause(None)
                self._state_pause = None

    def polled(
        self, outcome: PollOutcome, *, duration: float, reports: int, attempt: int, next_in: float
    ) -> None:
        outcome = PollOutcome(outcome)
        fields: dict = {"attempt": attempt, "next_poll_in": next_in}
        with self._lock:
            self._metrics.poll(self._account, outcome.value, duration, reports)
            self._metrics.retry_attempt(self._account, attempt)
            if outcome in _SUCCESSFUL_POLLS:
                fields["last_success"] = now = self._clock()
                self._metrics.poll_succeeded(self._account, now)
            self._board.update(self._account, **fields)

    def fetch_paused(self, reason: PauseReason | None) -> None:
        reason = PauseReason(reason) if reason is not None else None
        with self._lock:
            self._pause(reason)
            self._state_pause = None

    def _pause(self, reason: PauseReason | None) -> None:
        """Lock held."""
        self._metrics.health.paused(self._account, reason)
        self._board.update(self._account, paused=reason.value if reason else None)

    def spooled(self, level: SpoolLevel) -> None:
        with self._lock:
            self._level(level)

    def spool_write_failed(self, error: str) -> None:
        with self._lock:
            self._metrics.spool_write_failed(self._account)
            self._board.update(self._account, last_error=error)

    def unknown_fields(self, count: int) -> None:
        self._metrics.unknown_fields(self._account, count)

    def committed(self, summary: CommitSummary, level: SpoolLevel) -> None:
        rtimes, latencies, statuses = _split_observed(summary.observed)
        with self._lock:
            self._metrics.committed(
                self._account,
                records=summary.records,
                dead_letters=summary.dead_letters,
                duration=summary.duration,
                sequence=summary.last_seq,
                commit_time=summary.committed_at or self._clock(),
                rtimes_ms=rtimes,
                delivery_latency_s=latencies,
                statuses=statuses,
            )
            if summary.timestamps_clamped:
                self._metrics.timestamps_clamped(self._account, summary.timestamps_clamped)
            if summary.archive_records:
                self._metrics.archived(
                    self._account, summary.archive_records, summary.archive_bytes
                )
            self._board.update(self._account, committed_sequence=summary.last_seq)
            self._level(level)
            self._reachable(True, None)  # a commit is a Kafka request that succeeded

    def aborted(self, reason: str) -> None:
        self._metrics.health.aborted(self._account)

    def producer_restarted(self, reason: str) -> None:
        self._metrics.health.producer_restarted(self._account)

    def kafka_reachable(self, reachable: bool, reason: str | None = None) -> None:
        with self._lock:
            self._reachable(reachable, reason)

    def producer_statistics(self, stats_json: str) -> None:
        self._metrics.producer_statistics(self._account, stats_json)

    def recovered(self, committed_sequence: int, level: SpoolLevel) -> None:
        with self._lock:
            self._metrics.committed_sequence(self._account, committed_sequence)
            self._board.update(self._account, committed_sequence=committed_sequence)
            self._level(level)

    def _level(self, level: SpoolLevel) -> None:
        """Lock held."""
        self._metrics.spool_level(self._account, level)
        self._board.update(
            self._account,
            spool_pending=level.reports,
            spool_pending_entries=level.entries,
            spool_bytes=level.bytes,
            spool_capacity_bytes=level.capacity_bytes,
            oldest_uncommitted_at=level.oldest_fetched_at if level.entries else None,
        )

    def _reachable(self, reachable: bool, reason: str | None) -> None:
        """Lock held."""
        self._metrics.health.reachable(self._account, reachable)
        self._board.set_kafka_reachable(reachable, reason, account=self._account)


def _split_observed(
    observed: Counter,
) -> tuple[Counter, Counter, Counter]:
    """(rtime ms, stime ms, status) → report counts, into lag, latency and status counts."""
    rtimes: Counter = Counter()
    latencies: Counter = Counter()
    statuses: Counter = Counter()
    for (rtime, stime, status), count in observed.items():
        if rtime is not None:
            rtimes[rtime] += count
            if stime is not None:
                latencies[(rtime - stime) / 1000] += count
        statuses[_status_label(status)] += count
    return rtimes, latencies, statuses


def _status_label(status: int | None) -> str:
    """The platform's status code as the `status` label: 0 delivered, anything else failed."""
    if status is None:
        return "unknown"
    return "delivered" if status == 0 else "failed"
