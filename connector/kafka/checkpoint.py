"""The open transaction of one account: what it holds and when it is due.

A `Checkpoint` begins with the first spool entry produced into it and ends with one commit of
its records, its dead letters and the progress record `spool_seq = last_seq`. It knows when it
is due (`max_batch_records` reached, or `commit_interval` since it began on the injected
clock), and it turns into the `CommitSummary` the observer derives per-commit metrics from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from connector.kafka.records import EntryRecords
from connector.observe.observer import CommitSummary
from connector.retry import Deadline

# Seconds an idle publish loop sleeps when nothing wakes it: a safety net only, since whatever
# gives it work wakes it (an append, a hand-off, a commit's outcome, a stop, the fetcher's end),
# and an idle round does nothing. At 1,000 idle accounts, 5 s was 200 rounds/s for nothing.
IDLE_RECHECK = 60.0


@dataclass
class Checkpoint:
    interval: float  # kafka.commit_interval
    max_records: int  # kafka.max_batch_records
    started: float = 0.0
    last_seq: int = 0
    records: int = 0
    dead_letters: Counter = field(default_factory=Counter)  # DeadLetterReason → count
    observed: Counter = field(default_factory=Counter)  # (rtime, stime, status) → reports
    archive_records: int = 0  # bodies written to the archive topic
    archive_bytes: int = 0
    timestamps_clamped: Counter = field(default_factory=Counter)  # TimestampClamp → records
    # Its commit was asked for: it takes no more entries, even while that commit is retried
    # (its progress record is already produced, and names last_seq).
    sealed: bool = False
    sealed_at: float = 0.0  # when its commit was first asked for
    answer_by: Deadline | None = None  # a commit attempt under way: its outcome is due by then

    @property
    def empty(self) -> bool:
        return self.last_seq == 0

    @property
    def full(self) -> bool:
        return self.sealed or self.records >= self.max_records

    def seal(self, now: float, answer_by: Deadline) -> Deadline:
        """Ask for its commit: sealed from now on; the deadline of the attempt under way
        (`answer_by`, unless one is already running: an error ends it, `answer_by = None`)."""
        if not self.sealed:
            self.sealed, self.sealed_at = True, now
        if self.answer_by is None:
            self.answer_by = answer_by
        return self.answer_by

    def due(self, now: float) -> bool:
        """Commit now: enough records, or the interval since the first entry has passed."""
        return not self.empty and (self.full or now - self.started >= self.interval)

    def wait_time(self, now: float, waiting: bool = True) -> float:
        """How long the publish loop may sleep: until this is due (sleeping a whole interval
        after each entry would let a steady trickle of entries push the commit out to almost
        twice the interval); when empty, an interval if entries are `waiting` to be sent, else
        IDLE_RECHECK. An idle loop is woken by what gives it work (an append, a hand-off, a
        stop, the fetcher's end): waking every interval for nothing was most of an idle
        instance's CPU."""
        if self.empty:
            return self.interval if waiting else IDLE_RECHECK
        return max(0.0, self.started + self.interval - now)

    def add(self, seq: int, built: EntryRecords, now: float) -> None:
        if self.empty:
            self.started = now
        self.last_seq = seq
        self.records += len(built.values)
        self.dead_letters.update(built.reasons)
        self.observed.update(built.observed)
        self.archive_records += built.archive_records
        self.archive_bytes += built.archive_bytes
        if built.clamped:
            self.timestamps_clamped.update(built.clamped)

    def summary(self, duration: float, committed_at: float) -> CommitSummary:
        return CommitSummary(
            last_seq=self.last_seq,
            records=self.records,
            dead_letters=Counter(self.dead_letters),
            observed=Counter(self.observed),
            duration=duration,
            committed_at=committed_at,
            archive_records=self.archive_records,
            archive_bytes=self.archive_bytes,
            timestamps_clamped=Counter(self.timestamps_clamped),
        )

    def fresh(self) -> Checkpoint:
        return Checkpoint(self.interval, self.max_records)
