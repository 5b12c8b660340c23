"""The fetch loop of one account: get-rpt, then make the body durable before anything else.

One step, top-down:

    still own the account?  (not fenced, not revoked, group session alive)   else pause
    room for the largest answer?  (spool.max_bytes AND filesystem free space) else pause
    one get-rpt call  (destructive: from here on the body exists only in our hands)
    durable append  (fsync) ──► wake the publisher
        append fails → the body is offered to the publish loop (`Handoff`), which sends it
        straight to Kafka in a transaction of its own; meanwhile the append is retried with
        backoff. Whichever succeeds first keeps it; the step returns only when it is safe.

A stop is checked between steps only: an exchange in flight finishes (or hits the client's
deadline) and what arrived is kept like any other body. The steps are taken by a worker of the
process's fetch `TurnPool` (`turn()`: one step, or None once stopped or failed; then `finish()`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from connector.errors import (
    AuthError,
    InvalidResponseError,
    PlatformError,
    PlatformResultError,
    SpoolWriteError,
    TLSVerificationError,
)
from connector.observe.observer import AccountObserver, AccountState, PauseReason, PollOutcome
from connector.retry import Backoff

log = logging.getLogger("connector.fetcher")

PAUSED_RECHECK = 1.0  # how soon a paused fetcher looks again (room, ownership)


@dataclass
class Unspooled:
    """A fetched body the spool could not take; shaped like a spool entry for the records."""

    body: bytes
    fetched_at: float
    reports: int
    note: str | None
    memo: object | None
    seq: int = 0  # never spooled: its dead letters say spool.sequence 0


@dataclass(frozen=True)
class Hooks:
    """Fail points for the crash tests, injected by the service (no-ops by default)."""

    after_spool: Callable[[int], None] = lambda _seq: None


class _Held(Enum):
    NONE = "none"
    OFFERED = "offered"  # waiting for the publish loop; the fetcher may take it back
    TAKEN = "taken"  # the publish loop is sending it: only it decides now
    DONE = "done"  # committed to Kafka


class Handoff:
    """At most one body passed from the fetcher to the publish loop, never owned by both."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Unspooled | None = None
        self._held = _Held.NONE

    @property
    def pending(self) -> bool:
        with self._cond:
            return self._held is _Held.OFFERED

    def offer(self, item: Unspooled) -> None:
        with self._cond:
            self._item, self._held = item, _Held.OFFERED

    def withdraw(self) -> bool:
        """Fetcher: take the body back (True) unless the publish loop has it or sent it."""
        with self._cond:
            if self._held is _Held.OFFERED:
                self._held = _Held.NONE
                return True
            return False

    def settled(self, timeout: float) -> bool:
        """Fetcher: wait up to `timeout` for the publish loop; True once it is in Kafka."""
        with self._cond:
            self._cond.wait_for(lambda: self._held is _Held.DONE, timeout)
            if self._held is _Held.DONE:
                self._item, self._held = None, _Held.NONE
                return True
            return False

    def take(self) -> Unspooled | None:
        """Publish loop: the offered body, now ours to send (or None)."""
        with self._cond:
            if self._held is not _Held.OFFERED:
                return None
            self._held = _Held.TAKEN
            return self._item

    def finish(self, sent: bool) -> None:
        """Publish loop: committed (sent) or failed (offered again)."""
        with self._cond:
            self._held = _Held.DONE if sent else _Held.OFFERED
            self._cond.notify_all()


class Fetcher:
    """One account's fetching: `turn()` after `turn()` until `stop` is set, then `finish()`."""

    def __init__(
        self,
        *,
        client: object,
        spool: object,
        schedule: object,
        observer: AccountObserver,
        owns: Callable[[], bool],
        stop: threading.Event,
        wake: threading.Event,
        handoff: Handoff,
        max_response_bytes: int,
        retry_backoff: Callable[[], Backoff],
        on_failure: Callable[[str], None],
        hooks: Hooks | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._on_failure = on_failure
        self._client, self._spool, self._schedule = client, spool, schedule
        self._observer, self._owns = observer, owns
        self._stop, self._wake, self._handoff = stop, wake, handoff
        self._needed = max_response_bytes
        self._backoff = retry_backoff
        self._hooks = hooks or Hooks()
        self._wall = wall_clock
        self._paused: PauseReason | None = None
        # After a body had to bypass a broken spool, fetching slows down (backoff) instead of
        # taking answer after answer with no disk behind them.
        self._spool_trouble = retry_backoff()
        self._last_body = 0  # bytes of the last answer: the memo room the next one needs
        self.ended = False  # finish() was called: no more turns

    def turn(self) -> float | None:
        """One step as the fetch pool takes it (`connector.turn_pool`): the pause before the
        next turn, or None once the fetcher is done (stopped, or failed)."""
        if self._stop.is_set():
            return None
        try:
            return self.step()
        except Exception as exc:  # a bug must stop the account visibly, not end it quietly
            log.exception("fetch failed unexpectedly")
            self._on_failure(f"fetch failed unexpectedly: {type(exc).__name__}: {exc}")
            return None

    def finish(self) -> None:
        """The fetcher is done: the publish loop drains and ends once it sees that. Said
        here, before the wake-up, not by the pool's `finished` (set after this returns): a
        round woken by this must not see the fetcher still running and sleep again."""
        self.ended = True
        self._wake.set()

    def step(self) -> float:
        """One turn: check, fetch, keep. Returns the pause before the next turn."""
        if not self._owns():
            return self._pause(PauseReason.NOT_OWNED, AccountState.NOT_OWNED)
        reason = self._spool.room(self._needed)
        if reason is not None:
            broken = reason == PauseReason.SPOOL_ERROR
            return self._pause(
                reason, AccountState.SPOOL_ERROR if broken else AccountState.SPOOL_FULL
            )
        self._pause(None, None)
        try:
            # Records read ahead are only worth it if the spool keeps them until they are sent.
            fetch = self._client.fetch(read_ahead=self._spool.memo_room() >= self._last_body)
        except PlatformError as exc:
            raw = getattr(exc, "raw", None)  # the platform handed something out: keep it
            kept = raw and isinstance(exc, InvalidResponseError | PlatformResultError)
            if kept and not self.keep(Unspooled(raw, self._wall(), 0, str(exc), None)):
                return self._slow_down()
            return self._failed(exc)
        self._last_body = len(fetch.raw)
        count = fetch.body.count  # every report handed out, good or rejected
        if count and not self.keep(Unspooled(fetch.raw, fetch.fetched_at, count, None, fetch.body)):
            return self._slow_down()
        outcome = PollOutcome.OK if count else PollOutcome.EMPTY
        delay = self._schedule.after_batch(count)
        self._observer.polled(
            outcome, duration=fetch.duration, reports=count, attempt=0, next_in=delay
        )
        self._observer.state(AccountState.POLLING)
        return delay

    def keep(self, item: Unspooled) -> bool:
        """Make `item` safe: in the spool (True), or committed to Kafka by the publish loop
        (False). Never returns before one of them has it; a stop does not interrupt it."""
        backoff: Backoff | None = None  # made on the first failure (seeding one costs ~20 µs)
        while True:
            try:
                entry = self._spool.append(
                    item.body,
                    fetched_at=item.fetched_at,
                    reports=item.reports,
                    note=item.note,
                    memo=item.memo,
                )
            except SpoolWriteError as exc:
                self._spool_failed(exc, item)
            else:
                self._hooks.after_spool(entry.seq)
                self._observer.spooled(self._spool.level())
                self._wake.set()
                self._spool_trouble.reset()
                return True
            backoff = backoff or self._backoff()
            while not self._handoff.settled(backoff.next_delay()):
                if self._handoff.withdraw():
                    break  # the publish loop did not take it: try the disk again
            else:
                return False  # committed to Kafka

    def _spool_failed(self, exc: SpoolWriteError, item: Unspooled) -> None:
        self._observer.spool_write_failed(str(exc))
        self._observer.state(AccountState.SPOOL_ERROR, error=str(exc))
        log.error("%s; the fetched body goes straight to Kafka, the spool is retried", exc)
        self._handoff.offer(item)
        self._wake.set()

    def _failed(self, error: PlatformError) -> float:
        delay = self._schedule.after_error(error)  # logs the failure with its attempt count
        self._observer.polled(
            PollOutcome(error.outcome),
            duration=0.0,
            reports=0,
            attempt=self._schedule.attempt,
            next_in=delay,
        )
        self._observer.state(_state_after(error), error=str(error))
        return delay

    def _slow_down(self) -> float:
        """The last body bypassed the spool: wait (growing) before taking another answer."""
        self._pause(PauseReason.SPOOL_ERROR, AccountState.SPOOL_ERROR)
        return max(PAUSED_RECHECK, self._spool_trouble.next_delay())

    def _pause(self, reason: PauseReason | None, state: AccountState | None) -> float:
        if reason != self._paused:
            self._paused = reason
            self._observer.fetch_paused(reason)
            if state is not None:
                self._observer.state(state)
        return PAUSED_RECHECK


def _state_after(error: PlatformError) -> AccountState:
    if isinstance(error, TLSVerificationError):
        return AccountState.TLS_PAUSED
    if isinstance(error, AuthError):
        return AccountState.AUTH_PAUSED
    return AccountState.BACKOFF
