"""What an account hands the shared producer's committer: its whole transaction as one `Batch`
of `Send`s (its records, then its progress record), queued in `Handins` until a transaction
takes it. A batch is taken whole or not at all, and withdrawn only before it is taken.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from connector.errors import ConnectorError, KafkaUnreachableError
from connector.kafka.records import Headers
from connector.retry import Deadline

log = logging.getLogger("connector.committer")


@dataclass(frozen=True, slots=True)
class Send:
    """One produce call of an account, kept until its batch is committed."""

    topic: str
    values: list[bytes]
    keys: list[bytes | None]
    headers: Headers | None
    partition: int = -1
    timestamps: list[int] | None = None


@dataclass(eq=False)
class Batch:
    """An account's whole transaction: its records, then its progress record."""

    account: str
    sends: list[Send]
    on_done: Callable[[], None] | None = None  # told once the outcome is known
    done: threading.Event = field(default_factory=threading.Event)
    error: ConnectorError | None = None
    taken: bool = False  # in a transaction now: it can no longer be withdrawn

    def wait(self, deadline: Deadline) -> None:
        """Until the outcome is known: return when committed, raise its error when not;
        KafkaUnreachableError at `deadline` (the batch stays where it is: wait again)."""
        if not self.done.wait(max(0.0, deadline.remaining())):
            raise KafkaUnreachableError(
                f"account {self.account}: the shared transaction has not committed in time"
            )
        if self.error is not None:
            raise self.error

    def finish(self, error: ConnectorError | None) -> None:
        self.error = error
        self.done.set()
        if self.on_done is not None:
            try:
                self.on_done()
            except Exception:  # the other batches of the transaction must still hear theirs
                log.exception("account %s: telling the commit outcome failed", self.account)


class Handins:
    """The batches handed in and not yet taken into a transaction, in order; `taken` marks
    a batch no account can withdraw any more. Closing wakes the committer for good."""

    def __init__(self) -> None:
        self._queue: list[Batch] = []
        self._ready = threading.Condition()
        self.closing = threading.Event()

    def __len__(self) -> int:
        with self._ready:
            return len(self._queue)

    def submit(self, batch: Batch) -> Batch:
        with self._ready:
            self._queue.append(batch)
            self._ready.notify()
        return batch

    def withdraw(self, batch: Batch) -> bool:
        """Take a batch back that no transaction has taken yet; False when too late."""
        with self._ready:
            if batch.taken:
                return False
            if batch in self._queue:
                self._queue.remove(batch)
            return True

    def take(self, wait: float | None) -> list[Batch] | None:
        """The batches handed in so far, now taken. `wait` None: the first of a transaction,
        waited for as long as it takes, or None once closing (what is left fails); else up
        to `wait` seconds for one, [] if none came."""
        with self._ready:
            if wait is not None:
                if not self._queue:
                    self._ready.wait(wait)
            else:
                while not self._queue and not self.closing.is_set():
                    self._ready.wait()
                if self.closing.is_set():
                    return None
            batches, self._queue = self._queue, []
            for batch in batches:
                batch.taken = True
        return batches

    def close(self) -> None:
        self.closing.set()
        with self._ready:
            self._ready.notify()

    def left(self) -> list[Batch]:
        """What no transaction will take: every batch still queued, once closed."""
        with self._ready:
            left, self._queue = self._queue, []
        return left
