"""The account's producer and spool: opened at start, recreated after a producer failure.

`recover()` connects a producer (fencing older ones), reads the committed progress and opens
the spool at that floor (renumbering a tail left by a move between volumes). `restart()`
replaces a failed producer, but first asks whether the account is still ours: cluster mode asks
the group; standalone, a commit from another spool means a newer instance runs it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from connector.errors import ConnectorError, Disposition, FencedError, SpoolWriteError
from connector.observe.observer import AccountState
from connector.retry import Deadline

log = logging.getLogger("connector.pipeline")


class Session:
    """Holds `publisher`, `spool` and `committed` for the publish thread."""

    def __init__(self, name: str, limits: object, parts: object, stop: threading.Event) -> None:
        self._name, self._limits, self._parts, self._stop = name, limits, parts, stop
        self.publisher = None
        self.spool = None
        self.committed = 0
        self._found = None  # the progress found at start (another spool's, after a move)
        self._owed = 0  # a release that failed, through this sequence: retried
        self._release_at = 0.0
        self._release_backoff = parts.backoff(stop)

    def release(self, seq: int) -> None:
        """Release the spool through `seq`, once. A write failure is observed and owed: the
        next round retries it after a backoff (`release_owed`), never blocking the round, and a
        later release covers it (releasing is cumulative). Kafka's progress record already says
        what is done, so a restart never re-sends an entry whose release was lost."""
        try:
            self.spool.release_through(seq)
        except SpoolWriteError as exc:
            self._parts.observer.spool_write_failed(str(exc))
            delay = self._release_backoff.next_delay()
            log.error("account %s: %s; the release is retried in %.1fs", self._name, exc, delay)
            self._owed, self._release_at = max(self._owed, seq), self._parts.clock() + delay
            return
        self._owed = 0
        self._release_backoff.reset()
        self._parts.observer.spooled(self.spool.level())

    def release_owed(self) -> float | None:
        """Retry a failed release once it is due: the pause until the next try, or None when
        no release is owed."""
        if not self._owed:
            return None
        if self._parts.clock() >= self._release_at:
            self.release(self._owed)
        return max(0.0, self._release_at - self._parts.clock()) if self._owed else None

    def abort(self, reason: str, deadline: Deadline) -> ConnectorError | None:
        """Abort the open transaction; the error if even that failed (a new producer is due)."""
        try:
            self.publisher.abort(deadline)
        except ConnectorError as exc:
            if exc.disposition == Disposition.STOP_ACCOUNT:
                raise
            return exc
        self._parts.observer.aborted(reason)
        return None

    def close(self, deadline: Deadline) -> None:
        if self.publisher is not None:
            self.publisher.close(deadline)
        if self.spool is not None:
            self.spool.close()

    def restart(self, reason: str) -> None:
        self.publisher.close(Deadline.after(0, self._parts.clock))
        self._parts.observer.producer_restarted(reason)
        self.committed = self._connect(check=self._still_ours).sequence
        self._parts.observer.recovered(self.committed, self.spool.level())

    def _still_ours(self, progress: object) -> None:
        """Before a new producer fences whoever holds the transactional.id: is it still ours?
        Cluster mode asks the group; standalone, a commit from another spool means a newer
        instance runs the account (fencing it back would start a ping-pong)."""
        if not self._parts.owns():
            raise FencedError(f"account {self._name}: no longer assigned to this instance")
        if progress.spool_id not in ("", self._limits.spool_id) and progress != self._found:
            raise FencedError(
                f"account {self._name}: another instance (spool {progress.spool_id}) committed "
                f"sequence {progress.sequence}; it owns the account now"
            )

    # --- recovery --------------------------------------------------------------------------
    def recover(self) -> None:
        self._parts.observer.state(AccountState.RECOVERING)
        progress = self._found = self._connect()
        self.committed = progress.sequence
        # The committed sequence numbers this spool's entries only if this spool committed it
        # (or nothing has): after the account ran on another instance with its own spool, the
        # entries left here above what this spool last committed (carried forward by the other
        # spool's records) were never published and get numbers above the committed one.
        own = progress.spool_id in ("", self._limits.spool_id)
        floor = self.committed if own else progress.committed_by(self._limits.spool_id)
        self.spool = self._open_spool(floor_seq=floor)
        if not own and (moved := self.spool.renumber_above(self.committed)):
            log.warning(
                "account %s: %d spool entries fetched here before the account moved to another "
                "instance were never published; they are sent now",
                self._name,
                moved,
            )
        level = self.spool.level()
        log.info(
            "account %s: committed spool sequence %d, %d spool entries to replay",
            self._name,
            self.committed,
            level.entries,
        )
        self._parts.observer.recovered(self.committed, level)
        self._parts.observer.state(AccountState.POLLING)

    def _open_spool(self, floor_seq: int) -> object:
        """Open the account's spool, waiting while a previous owner still holds its lock."""
        backoff = self._parts.backoff(self._stop)
        while True:
            try:
                return self._parts.open_spool(floor_seq)
            except ConnectorError as exc:
                if exc.disposition != Disposition.RETRY:
                    raise
                log.warning("account %s: %s; retrying", self._name, exc)
                if backoff.wait():
                    raise

    def _connect(self, check: Callable[[object], None] | None = None) -> object:
        """A new producer (fencing older ones): the committed progress. Waits for Kafka."""
        backoff = self._parts.backoff(self._stop)
        while True:
            self.publisher = self._parts.new_publisher(self._stop)
            try:
                if check is not None:
                    check(self.publisher.read_progress())
                deadline = Deadline.after(self._limits.unreachable_after, self._parts.clock)
                return self.publisher.init(deadline)
            except ConnectorError as exc:
                if exc.disposition == Disposition.STOP_ACCOUNT:
                    raise
                log.warning("account %s: Kafka not ready (%s); retrying", self._name, exc)
                self.publisher.close(Deadline.after(0, self._parts.clock))
                if backoff.wait():
                    raise
