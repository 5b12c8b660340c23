"""An `AccountObserver` over today's Metrics and StatusBoard — replaced by the observability
stream's `make_observer` (connector/observer.py) when their branch is merged."""

from __future__ import annotations

import time
from collections import Counter

from connector.metrics import Metrics
from connector.observer import AccountState, CommitSummary, PauseReason, PollOutcome, SpoolLevel
from connector.status import STATES, StatusBoard

# States the board does not know yet map to their nearest known one (not ready either way).
_BOARD_STATE = {AccountState.TLS_PAUSED: "auth_paused"}


class BoardObserver:
    def __init__(self, metrics: Metrics, board: StatusBoard, account: str) -> None:
        self._metrics, self._board, self.account = metrics, board, account

    def state(self, state: AccountState, *, error: str | None = None) -> None:
        name = _BOARD_STATE.get(state, str(state))
        fields: dict = {"state": name if name in STATES else "backoff"}
        if error is not None:
            fields["last_error"] = error
        self._board.update(self.account, **fields)

    def polled(
        self, outcome: PollOutcome, *, duration: float, reports: int, attempt: int, next_in: float
    ) -> None:
        self._metrics.poll(self.account, str(outcome), duration, reports)
        self._metrics.retry_attempt(self.account, attempt)
        fields: dict = {"attempt": attempt, "next_poll_in": next_in}
        if outcome in (PollOutcome.OK, PollOutcome.EMPTY):
            now = time.time()
            self._metrics.poll_succeeded(self.account, now)
            fields["last_success"] = now
        self._board.update(self.account, **fields)

    def fetch_paused(self, reason: PauseReason | None) -> None:
        pass  # rpt_fetch_paused comes with the observability stream

    def spooled(self, level: SpoolLevel) -> None:
        self._metrics.spool(self.account, level.entries, level.bytes)
        self._board.update(self.account, spool_pending=level.entries)

    def spool_write_failed(self, error: str) -> None:
        self._metrics.spool_write_failed(self.account)

    def unknown_fields(self, count: int) -> None:
        self._metrics.unknown_fields(self.account, count)

    def committed(self, summary: CommitSummary, level: SpoolLevel) -> None:
        rtimes: Counter = Counter()
        latencies: Counter = Counter()
        statuses: Counter = Counter()
        for (rtime, stime, status), count in summary.observed.items():
            if rtime is not None:
                rtimes[rtime] += count
                if stime is not None:
                    latencies[(rtime - stime) / 1000] += count
            statuses[_status_label(status)] += count
        self._metrics.committed(
            self.account,
            records=summary.records,
            dead_letters=summary.dead_letters,
            duration=summary.duration,
            sequence=summary.last_seq,
            commit_time=summary.committed_at,
            rtimes_ms=rtimes,
            delivery_latency_s=latencies,
            statuses=statuses,
        )
        self.spooled(level)
        self._board.update(self.account, committed_sequence=summary.last_seq)

    def aborted(self, reason: str) -> None:
        pass

    def producer_restarted(self, reason: str) -> None:
        pass

    def kafka_reachable(self, reachable: bool, reason: str | None = None) -> None:
        self._board.set_kafka_reachable(reachable, reason)

    def producer_statistics(self, stats_json: str) -> None:
        self._metrics.producer_statistics(self.account, stats_json)

    def recovered(self, committed_sequence: int, level: SpoolLevel) -> None:
        self._board.update(
            self.account, committed_sequence=committed_sequence, spool_pending=level.entries
        )


def _status_label(status: int | None) -> str:
    if status is None:
        return "unknown"
    return "delivered" if status == 0 else "failed"
