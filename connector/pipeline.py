"""The pipeline of one account: fetch → spool → records → transaction → commit → release.

Two sides per account, joined by the spool, which is the only place a fetched report lives
until its Kafka transaction commits:

    fetch task      Fetcher: get-rpt ──► durable append ──► wake the publisher
                    (its steps taken by a worker of the process's fetch TurnPool)
    publish rounds  spool entries above the committed sequence ──► records (RecordBuilder) ──►
                    one transaction with the progress record (Checkpoint) ──► commit ──►
                    release the spool through that sequence

The publish side is cut into rounds (`turn()`: one round, the pause before the next). With a
producer of its own an account runs them on a thread of its own; with `kafka.shared_producer`
a publish `TurnPool` takes every account's rounds, and a round never waits for Kafka: it hands
its batch in and comes back when the outcome wakes it, and after a failed call it asks for its
backoff as its pause instead of sleeping it.

Because the publisher always starts from "the spool above the last committed sequence", crash
recovery is not a special path: on start it reads the committed sequence from Kafka and the
same rounds replay whatever is left. Errors are handled by their `disposition` alone.

Every part is handed in (`Parts`, assembled by `assembly.build_pipeline`); nothing here does I/O
before `start()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from connector.errors import ConnectorError, Disposition
from connector.fetcher import Fetcher, Handoff, Hooks, Unspooled
from connector.kafka.archive import archive_entry
from connector.kafka.checkpoint import Checkpoint
from connector.kafka.records import EntryRecords, RecordBuilder
from connector.observe.observer import AccountObserver, AccountState
from connector.retry import Backoff, Clock, Deadline
from connector.session import Session
from connector.turn_pool import OwnThread, Runner, Task, TurnPool, Wakeup

if TYPE_CHECKING:
    from connector.kafka.publisher import AccountPublisher

log = logging.getLogger("connector.pipeline")

_READ_CHUNK_BYTES = 8 * 2**20  # how much spool one publish round takes at most


@dataclass(frozen=True)
class Limits:
    """The numbers the pipeline needs, resolved from the settings once."""

    topic: str
    dlq_topic: str
    spool_id: str
    commit_interval: float
    max_batch_records: int
    max_response_bytes: int
    unreachable_after: float
    shutdown_timeout: float
    archive_topic: str = ""  # kafka.archive_topic; "" = no archive


@dataclass
class Parts:
    """Everything an account pipeline uses, built by the service (fakes in the unit tests)."""

    client: object  # platform.PlatformClient: fetch(), close()
    open_spool: Callable[[int], object]  # floor_seq → an opened spool (contract API)
    new_publisher: Callable[[threading.Event], object]  # stop → an AccountPublisher, no I/O yet
    builder: RecordBuilder
    observer: AccountObserver
    schedule: object  # platform.PollSchedule
    owns: Callable[[], bool] = lambda: True  # cluster mode: the group still gives us the account
    backoff: Callable[[threading.Event], Backoff] = field(
        default=lambda stop: Backoff(0.5, 30.0, stop=stop)
    )
    hooks: Hooks = field(default_factory=Hooks)
    clock: Clock = time.monotonic
    wall_clock: Callable[[], float] = time.time
    fetch_pool: TurnPool | None = None  # the service's, shared; None: one thread of its own
    publish_pool: Runner | None = None  # with a shared producer; None: a thread of its own


class AccountPipeline:
    """The fetch task and publish rounds of one account; `stop()` only flips a flag."""

    def __init__(self, name: str, limits: Limits, parts: Parts) -> None:
        self.name, self.limits, self.parts = name, limits, parts
        self.failed: str | None = None
        self._observer = parts.observer
        self._stop, self._wake, self._handoff = threading.Event(), Wakeup(), Handoff()
        self._fenced = False
        self._deadline = Deadline.never(parts.clock)  # set by stop(): the shutdown budget
        self._drain_until = Deadline.never(parts.clock)
        self._session = Session(name, limits, parts, self._stop)
        self._retry = parts.backoff(self._stop)  # Kafka calls that may succeed when repeated
        self._retry_at = 0.0  # after a failed Kafka call: not again before then (clock)
        self._ckpt: Checkpoint | None = None  # the open transaction, once recovered
        self._pool = parts.fetch_pool or TurnPool(1)
        self._fetcher: Fetcher | None = None
        self._fetching: Task | None = None
        self._publishing: Task | None = None

    def start(self) -> None:
        runner = self.parts.publish_pool or OwnThread("publish")
        self._publishing = runner.submit(self.name, self.turn, self._finish)
        self._wake.bind(self._publishing)

    def stop(self, deadline: Deadline | None = None) -> None:
        """Stop fetching; drain the spool for half the time left, then commit what is open."""
        self._deadline = deadline or Deadline.after(self.limits.shutdown_timeout, self.parts.clock)
        self._drain_until = Deadline.after(self._deadline.remaining() / 2, self.parts.clock)
        self._stop.set()
        self._wake.set()
        if self._fetching is not None:
            self._pool.stop(self._fetching)  # waiting for its next turn: done now

    def join(self, deadline: Deadline) -> bool:
        """Wait until `deadline` at most; True when publishing and fetching have ended."""
        publishing, fetching = self._publishing, self._fetching
        if publishing is None:
            return True  # never started
        return publishing.finished.wait(deadline.remaining()) and (
            fetching is None or fetching.finished.wait(deadline.remaining())
        )

    def owns(self) -> bool:
        """Whether this process may still make a (destructive) get-rpt call for the account."""
        return not self._fenced and not self._stop.is_set() and self.parts.owns()

    def turn(self) -> float | None:
        """One publish round (the first one recovers and starts the fetcher): the pause
        before the next, or None once the account is done publishing. Its runner sleeps the
        pause unless woken (an append, a commit's outcome, a stop)."""
        try:
            if self._ckpt is None:
                self._session.recover()
                self._start_fetcher()
                self._ckpt = self._checkpoint()
            return self._round()
        except ConnectorError as exc:
            self._fenced = exc.disposition == Disposition.STOP_ACCOUNT  # no get-rpt from now on
            if self._fenced or not self._stop.is_set():
                self._fail(str(exc))  # a shutdown that interrupts a reconnect is no failure
        except Exception as exc:  # a bug must stop the account visibly, not end it quietly
            log.exception("account %s: publishing failed unexpectedly", self.name)
            self._fail(f"publishing failed unexpectedly: {type(exc).__name__}: {exc}")
        return None

    def _round(self) -> float | None:
        """Publish what the spool holds; after stop(), drain it once the fetcher is done."""
        ckpt, now = self._ckpt, self.parts.clock()
        if now < self._retry_at and not self._stop.is_set():
            return self._retry_at - now  # woken while backing off: not yet
        stopping = self._stop.is_set() and not self._fetcher_alive()
        pending = not ckpt.empty or self._session.spool.last_seq > self._session.committed
        self._session.publisher.reachability.check(pending or self._handoff.pending)
        try:
            caught_up = self._publish_pending(ckpt)
            if ckpt.due(now) or (not ckpt.empty and (stopping or self._handoff.pending)):
                if not self._commit(ckpt):
                    return ckpt.answer_by.earliest(self._deadline).remaining()
                ckpt = self._ckpt = self._checkpoint()
                if not caught_up:
                    return 0.0  # the sealed transaction held entries back: on with them now
            if self._handoff.pending:
                _send_unspooled(self)
            if stopping and caught_up and ckpt.empty and not self._handoff.pending:
                return None
        except ConnectorError as exc:
            ckpt = self._ckpt = self._handle(exc, ckpt)
        waiting = self._session.spool.last_seq > max(ckpt.last_seq, self._session.committed)
        now = self.parts.clock()
        pause = max(ckpt.wait_time(now, waiting or self._handoff.pending), self._retry_at - now)
        owed = self._session.release_owed()  # a failed release, retried (never waited for)
        return min(pause, self._deadline.remaining(), pause if owed is None else owed)

    def _publish_pending(self, ckpt: Checkpoint) -> bool:
        """Produce spool entries into the open transaction; True when none are left."""
        if self._stop.is_set() and self._drain_until.expired:
            return True  # out of shutdown time: commit what is open, leave the rest spooled
        if ckpt.full:
            return False  # a commit is due first (asked for and retried, or enough records)
        after = ckpt.last_seq or self._session.committed
        for entry in self._session.spool.entries_after(after, _READ_CHUNK_BYTES):
            self._session.publisher.begin()
            self._produce(entry, ckpt)
            if ckpt.full:
                self._wake.set()  # more may be waiting; come straight back after the commit
                return False
        return self._session.spool.last_seq <= max(ckpt.last_seq, self._session.committed)

    def _produce(self, entry: object, ckpt: Checkpoint) -> None:
        built = send_entry(
            self._session.publisher, self.parts.builder, self.limits, self.name, entry
        )
        if built.unknown_fields:
            self._observer.unknown_fields(built.unknown_fields)
        ckpt.add(entry.seq, built, self.parts.clock())

    def _commit(self, ckpt: Checkpoint) -> bool:
        """Ask for the commit (it takes no more entries from now on, even while it is retried)
        and see its outcome: False while that is not known (it wakes the loop when it is)."""
        by = ckpt.seal(self.parts.clock(), self._call_deadline()).earliest(self._deadline)
        if not self._session.publisher.commit(ckpt.last_seq, by, then=self._wake.set):
            return False
        self._session.committed = ckpt.last_seq
        self._session.release(ckpt.last_seq)
        self._retry.reset()
        summary = ckpt.summary(self.parts.clock() - ckpt.sealed_at, self.parts.wall_clock())
        self._observer.committed(summary, self._session.spool.level())
        return True

    def _handle(self, error: ConnectorError, ckpt: Checkpoint) -> Checkpoint:
        """Act on an error's disposition; returns the checkpoint to go on with."""
        disposition, ckpt.answer_by = error.disposition, None  # a commit again: a new deadline
        if disposition == Disposition.STOP_ACCOUNT:
            raise error
        if disposition == Disposition.RETRY:
            log.warning("account %s: %s; retrying", self.name, error)
            self._session.publisher.reachability.check(pending=True)
            if self._stop.is_set() and self._deadline.expired:
                raise error
            self._retry_at = self.parts.clock() + self._retry.next_delay()  # the round's pause
            return ckpt  # same open transaction; a commit is called again, not re-produced
        if disposition == Disposition.ABORT_TRANSACTION:
            log.warning("account %s: %s; sending the spool entries again", self.name, error)
            failed = self._session.abort(str(error), self._call_deadline())
            again = self._retry.next_delay()  # at once the first time, after a pause if repeated
            self._retry_at = self.parts.clock() + again if self._retry.attempt > 1 else 0.0
            self._wake.set()
            if failed is None:
                return self._checkpoint()
            error = failed  # even the abort failed: start over with a new producer
        log.error("account %s: %s; recreating the producer", self.name, error)
        self._session.restart(str(error))
        self._wake.set()
        return self._checkpoint()

    def _start_fetcher(self) -> None:
        self._fetcher = _fetcher(self)
        self._fetching = self._pool.submit(self.name, self._fetcher.turn, self._fetcher.finish)

    def _fetcher_failed(self, reason: str) -> None:
        self._fail(reason)
        self.stop()  # the publish loop drains what is spooled, then ends

    def _fetcher_alive(self) -> bool:
        return self._fetcher is not None and not self._fetcher.ended

    def _checkpoint(self) -> Checkpoint:
        return Checkpoint(self.limits.commit_interval, self.limits.max_batch_records)

    def _call_deadline(self) -> Deadline:
        """Kafka calls give up at the shutdown deadline, or when Kafka stays silent too long."""
        return Deadline.after(self.limits.unreachable_after, self.parts.clock).earliest(
            self._deadline
        )

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.error("account %s stopped: %s", self.name, reason)
        self._observer.state(AccountState.FAILED, error=reason)

    def _finish(self) -> None:
        """Publishing has ended (or its pool closed): stop and close."""
        self._stop.set()
        self._close()

    def _close(self) -> None:
        if self._fetching is not None:  # it may be mid-call: let it keep the body (bounded)
            bound = self._deadline.earliest(Deadline.after(60.0, self.parts.clock))
            self._pool.retire(self._fetching, bound.remaining())
        if self.parts.fetch_pool is None:
            self._pool.close(timeout=0.0)  # its worker ends after a call still in flight
        self.parts.client.close()
        self._session.close(self._deadline.earliest(Deadline.after(5.0, self.parts.clock)))
        # Said after the join: a call the fetcher finished after a failure must not win.
        if self.failed is None:
            self._observer.state(AccountState.STOPPED)
        else:
            self._observer.state(AccountState.FAILED, error=self.failed)


def _fetcher(p: AccountPipeline) -> Fetcher:
    """The fetch side of a pipeline, sharing its stop, wake-up, hand-off and spool."""
    return Fetcher(
        client=p.parts.client,
        spool=p._session.spool,
        schedule=p.parts.schedule,
        observer=p.parts.observer,
        owns=p.owns,
        stop=p._stop,
        wake=p._wake,
        handoff=p._handoff,
        max_response_bytes=p.limits.max_response_bytes,
        retry_backoff=lambda: p.parts.backoff(threading.Event()),  # a stop must not end it
        on_failure=p._fetcher_failed,
        hooks=p.parts.hooks,
        wall_clock=p.parts.wall_clock,
    )


def _send_unspooled(p: AccountPipeline) -> None:
    """A body the spool could not take, in a transaction of its own. Its progress record
    repeats the committed sequence: it claims no spool entry it does not have."""
    item: Unspooled | None = p._handoff.take()
    if item is None:
        return
    session, ckpt = p._session, p._checkpoint()
    try:
        session.publisher.begin()
        built = send_entry(session.publisher, p.parts.builder, p.limits, p.name, item)
        session.publisher.commit(session.committed, p._call_deadline())
    except BaseException:
        p._handoff.finish(sent=False)
        raise
    p._handoff.finish(sent=True)
    ckpt.add(session.committed, built, p.parts.clock())
    ckpt.last_seq = session.committed
    p._observer.committed(ckpt.summary(0.0, p.parts.wall_clock()), session.spool.level())
    log.warning("account %s: a body the spool could not take is in Kafka", p.name)


def send_entry(
    publisher: AccountPublisher, builder: RecordBuilder, limits: Limits, account: str, entry: object
) -> EntryRecords:
    """Produce the records, dead letters and archive record of one entry into the open
    transaction."""
    built = builder.build(entry)
    if built.values:  # timestamps: None unless kafka.record_timestamp = "rtime"
        publisher.produce_many(
            limits.topic, built.values, built.keys, builder.headers, timestamps=built.timestamps
        )
    for letter in built.dead_letters:
        publisher.produce(limits.dlq_topic, letter.value, None, letter.headers)
    if limits.archive_topic:  # the raw body, in the same transaction
        archive_entry(publisher, limits.archive_topic, account, limits.spool_id, entry, built)
    return built
