"""What an account pipeline tells the outside world: one interface for metrics and /status.

The pipeline parts (fetcher, publish loop, checkpoint) call an `AccountObserver`; they never
touch prometheus-client or the status board. `service.py` hands each pipeline a concrete
observer (`observe.account.make_observer`, built above this module: the interface never imports
its implementation) that feeds both from the same call, so a gauge and `/status` cannot
disagree. Tests hand in a recording fake.

Calls are per poll, per spool append, per commit or per state change, never per report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class AccountState(StrEnum):
    """`/status` state and `rpt_account_state{state}`; exactly one is 1 per account."""

    STARTING = "starting"
    RECOVERING = "recovering"
    POLLING = "polling"
    BACKOFF = "backoff"  # get-rpt failed; retried with backoff
    AUTH_PAUSED = "auth_paused"  # credentials refused: long pause
    TLS_PAUSED = "tls_paused"  # certificate not trusted: long pause
    SPOOL_FULL = "spool_full"  # spool.max_bytes or the filesystem has no room for one answer
    SPOOL_ERROR = "spool_error"  # the spool cannot be written; a body may go straight to Kafka
    NOT_OWNED = "not_owned"  # cluster mode: another instance has the account
    STOPPED = "stopped"
    FAILED = "failed"


class PollOutcome(StrEnum):
    """`rpt_polls_total{outcome}`; the error values equal `PlatformError.outcome`."""

    OK = "ok"
    EMPTY = "empty"
    RETRIABLE_ERROR = "retriable_error"
    AUTH_ERROR = "auth_error"
    PLATFORM_ERROR = "platform_error"
    INVALID_RESPONSE = "invalid_response"


class PauseReason(StrEnum):
    """`rpt_fetch_paused{reason}`: why the fetcher does not call get-rpt right now."""

    SPOOL_FULL = "spool_full"  # spool.max_bytes reached
    DISK_FULL = "disk_full"  # the filesystem has less free space than one answer
    SPOOL_ERROR = "spool_error"  # the spool cannot be written
    AUTH = "auth"
    TLS = "tls"
    NOT_OWNED = "not_owned"  # fenced, revoked or the group session may have expired


class DeadLetterReason(StrEnum):
    """`rpt_dead_letters_total{reason}` and the `reason` header of a dead letter."""

    INVALID_RESPONSE = "invalid_response"  # a whole body: not a get-rpt answer
    INVALID_REPORT = "invalid_report"  # one report of a good body
    UNENCODABLE_RECORD = "unencodable_record"  # a normalized record off the schema
    REJECTED_RESULT = "rejected_result"  # non-zero `result` that still carried reports


class TimestampClamp(StrEnum):
    """`rpt_record_timestamp_clamped_total{reason}`: why a data record got its produce time
    instead of its rtime (kafka.record_timestamp = "rtime")."""

    FUTURE = "future"  # further ahead than the topic's message.timestamp.after.max.ms
    PAST = "past"  # further back than its message.timestamp.before.max.ms
    MISSING = "missing"  # the report has no rtime


@dataclass
class CommitSummary:
    """What one committed transaction held; the metrics side derives lag and latency from it."""

    last_seq: int
    records: int
    dead_letters: Counter = field(default_factory=Counter)  # DeadLetterReason → count
    observed: Counter = field(default_factory=Counter)  # (rtime ms, stime ms, status) → reports
    duration: float = 0.0  # seconds from begin to the end of the commit call
    committed_at: float = 0.0  # epoch seconds
    archive_records: int = (
        0  # get-rpt bodies written to the archive topic (connector.kafka.archive)
    )
    archive_bytes: int = 0  # their raw size
    timestamps_clamped: Counter = field(default_factory=Counter)  # TimestampClamp → records


@dataclass(frozen=True)
class SpoolLevel:
    """The spool after an append or a release."""

    entries: int  # uncommitted get-rpt bodies
    reports: int  # uncommitted reports in them
    bytes: int  # bytes the spool holds on disk
    oldest_fetched_at: float | None  # epoch seconds of the oldest uncommitted body, if any
    capacity_bytes: int  # room left: min(spool.max_bytes - bytes, filesystem free space)


class AccountObserver(Protocol):
    """Everything one account reports. Implementations must be thread-safe (two threads)."""

    def state(self, state: AccountState, *, error: str | None = None) -> None: ...

    def polled(
        self, outcome: PollOutcome, *, duration: float, reports: int, attempt: int, next_in: float
    ) -> None:
        """After every get-rpt call; `attempt` is 0 after a success."""

    def fetch_paused(self, reason: PauseReason | None) -> None:
        """The fetcher stopped calling get-rpt for `reason`; None when it resumes."""

    def spooled(self, level: SpoolLevel) -> None:
        """After every append and every release."""

    def spool_write_failed(self, error: str) -> None: ...

    def unknown_fields(self, count: int) -> None: ...

    def committed(self, summary: CommitSummary, level: SpoolLevel) -> None: ...

    def aborted(self, reason: str) -> None:
        """A transaction was aborted (its entries will be sent again)."""

    def producer_restarted(self, reason: str) -> None: ...

    def kafka_reachable(self, reachable: bool, reason: str | None = None) -> None:
        """From what actually happens: a success, or nothing succeeding for too long."""

    def producer_statistics(self, stats_json: str) -> None: ...

    def recovered(self, committed_sequence: int, level: SpoolLevel) -> None:
        """Progress read from Kafka at start or after a producer restart."""
