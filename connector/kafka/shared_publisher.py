"""An account's publisher over the instance's shared producer (`kafka.shared_producer`).

The same interface as `AccountPublisher`, so the pipeline and its recovery do not know which
one they have: what the account produces between `begin()` and `commit()` is kept here (the
encoded records, as librdkafka would keep them), and `commit()` hands it to the
`TransactionCommitter` with the progress record as one batch, then waits for the outcome, or,
given `then`, returns at once and has the committer call `then` with it (the account's publish
round must not hold a pool thread while a transaction of many accounts commits).
Nothing this account does can put a part of its transaction into Kafka: a batch is taken whole
or not at all, and `abort()` takes back a batch no transaction has taken yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from connector.errors import ConnectorError, Disposition, PublishError
from connector.kafka.batches import Batch, Send
from connector.kafka.committer import TransactionCommitter
from connector.kafka.progress import Progress, ProgressTopic
from connector.kafka.publisher import Reachability
from connector.kafka.records import Headers, progress_partition, progress_value
from connector.retry import Deadline


class SharedPublisher:
    """One account's transactions, committed by the instance's shared producer."""

    transactional = True  # the shared producer is exactly_once only

    def __init__(
        self,
        committer: TransactionCommitter,
        account: str,
        *,
        spool_id: str,
        reachability: Reachability,
        progress: ProgressTopic,
        stop: threading.Event | None = None,
    ) -> None:
        self.account, self.spool_id, self.reachability = account, spool_id, reachability
        self._committer, self._progress = committer, progress
        self._stop = stop or threading.Event()
        self._sends: list[Send] = []
        self._batch: Batch | None = None  # handed to the committer, outcome not yet seen
        self._other_spools: dict[str, int] = {}

    def read_progress(self) -> Progress:
        progress = self._progress.read(self.account)
        self.reachability.ok()
        return progress

    def init(self, deadline: Deadline) -> Progress:
        """The shared producer ready (older instances fenced), then the committed progress."""
        self._committer.connect(deadline)
        self.reachability.ok()
        progress = self.read_progress()
        self._other_spools = progress.carried_for(self.spool_id)
        return progress

    def begin(self) -> None:
        """Nothing to do: the transaction begins in the committer, with the whole batch."""

    def produce(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers | None, partition=-1
    ) -> None:
        self.produce_many(topic, [value], [key], headers, partition)

    def produce_many(
        self,
        topic: str,
        values: list[bytes],
        keys: list[bytes | None],
        headers: Headers | None,
        partition: int = -1,
        timestamps: list[int] | None = None,
    ) -> None:
        if self._batch is not None:  # the pipeline seals a checkpoint before committing it
            raise PublishError(f"account {self.account}: produce while a commit is under way")
        self._sends.append(Send(topic, values, keys, headers, partition, timestamps))

    def commit(
        self, sequence: int, deadline: Deadline, then: Callable[[], None] | None = None
    ) -> bool:
        """Hand the batch and its progress record over (once), then its outcome: True when
        committed, the error when not. Given `then`, False while the outcome is not known (and
        `deadline` has not passed): `then` is called when it is. Called again (after False,
        or a RETRY error) it looks at the same batch."""
        if self._batch is None:
            sends = [*self._sends, self._progress_send(sequence)]
            self._batch = self._committer.submit(self.account, sends, on_done=then)
        batch = self._batch
        if then is not None and not batch.done.is_set() and not deadline.expired:
            return False
        try:
            batch.wait(deadline)
        except ConnectorError as error:
            if batch.done.is_set():  # that transaction failed; an unfinished one is waited for
                self._batch = None
                if error.disposition != Disposition.RETRY:
                    self._sends = []  # the pipeline aborts or restarts: the entries come again
            raise
        self._batch, self._sends = None, []
        self.reachability.ok()
        return True

    def abort(self, deadline: Deadline) -> None:
        """Drop the open transaction; a batch already in a transaction is waited for and, if
        it committed after all, reported so (a new publisher re-reads the progress)."""
        batch, self._batch, self._sends = self._batch, None, []
        if batch is None or self._committer.withdraw(batch):
            return
        batch.wait(deadline)
        raise PublishError(f"account {self.account}: a transaction taken back committed after all")

    def close(self, deadline: Deadline) -> None:
        if self._batch is not None:
            self._committer.withdraw(self._batch)
        self._batch, self._sends = None, []

    def _progress_send(self, sequence: int) -> Send:
        partition = progress_partition(self.account, self._progress.partitions or 1)
        value = progress_value(
            self.account, sequence, self.spool_id, time.time(), self._other_spools
        )
        return Send(self._progress.topic, [value], [self.account.encode()], [], partition)
