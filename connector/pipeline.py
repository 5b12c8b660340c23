"""The pipeline of one account: fetch → spool → decode → publish → commit → release.

Two threads per account, joined by the spool, which is the only place a fetched report lives
until its Kafka transaction commits:

    fetch thread    get-rpt ──► append raw body + fsync ──► wake the publisher
    publish thread  spool entries above the committed sequence ──► normalize, encode, produce
                    (data + dead letters + progress record, one transaction) ──► commit ──►
                    release the spool through that sequence

Because the publisher always starts from "the spool above the last committed sequence", crash
recovery is not a special path: on start it reads the committed sequence from Kafka and the
same loop replays whatever is left. While Kafka is unreachable the fetch thread keeps going
until the spool is full, then pauses (the platform keeps what was not fetched).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from connector import platform
from connector.avro_codec import make_value_encoder, record_headers, record_keys
from connector.config import AccountSettings, Settings
from connector.errors import (
    CodecError,
    ConnectorError,
    FencedError,
    InvalidResponseError,
    PlatformError,
    PublishError,
    SpoolLockedError,
    SpoolWriteError,
    TransactionAbortedError,
)
from connector.metrics import Metrics
from connector.publisher import AccountPublisher, Progress
from connector.report import Normalizer
from connector.spool import Spool, SpoolEntry, failpoints_from_env, spool_id
from connector.status import StatusBoard

log = logging.getLogger("connector.pipeline")

_READ_CHUNK_BYTES = 8 * 2**20  # how much spool one publish round takes at most
_SPOOL_RETRY = 1.0
# Fail point for the recovery tests: once this file exists, die like `kill -9` right after the
# next spool append, i.e. with reports durable in the spool but not yet committed to Kafka.
_CRASH_WHEN_EXISTS = os.environ.get("RPT_FAILPOINT_CRASH_AFTER_SPOOL_IF")
_PARSED_CACHE_ENTRIES = 16  # parsed bodies kept for the publisher; beyond, it re-parses the spool
_DLQ_MAX_VALUE_BYTES = 900 * 1024  # under Kafka's default 1 MiB message limit


@dataclass
class Transaction:
    """What the open transaction holds, for the commit and the per-batch metrics."""

    started: float = 0.0
    last_seq: int = 0
    records: int = 0
    dead_letters: Counter = field(default_factory=Counter)
    observed: Counter = field(default_factory=Counter)  # (rtime, stime, status) → reports

    @property
    def empty(self) -> bool:
        return self.last_seq == 0


class AccountPipeline:
    """Fetch and publish threads of one account; `stop()` only flips a flag."""

    def __init__(self, settings: Settings, index: int, metrics: Metrics, board: StatusBoard):
        self.account: AccountSettings = settings.accounts[index]
        self.name = self.account.name
        self._settings = settings
        self._kafka = settings.kafka
        self._topic = self.account.topic or settings.kafka.topic
        self._metrics, self._board = metrics, board
        self._client = platform.PlatformClient(settings.platform, self.account, index)
        self._schedule = _schedule(settings, self.account)
        self._normalizer = Normalizer(self.name, settings.platform.timezone)
        self._encoder = make_value_encoder(settings.kafka, settings.schema_registry, self._topic)
        self._headers = record_headers(self.name, self._encoder)
        self._stop = threading.Event()
        self._spooled = threading.Event()
        self._parsed: dict[int, list] = {}  # seq → reports the fetcher already parsed
        self._parsed_lock = threading.Lock()
        self._publisher: AccountPublisher | None = None
        self._spool: Spool | None = None
        self._committed = 0
        self._spool_id = spool_id(settings.spool.dir / self.name)
        self._fetcher = threading.Thread(target=self._fetch_loop, name=f"fetch-{self.name}")
        self._fetcher.daemon = True
        self._drain_deadline = 0.0
        self._threads: list[threading.Thread] = [self._fetcher]
        self.failed: str | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        thread = threading.Thread(target=self._run, name=f"publish-{self.name}", daemon=True)
        self._threads.insert(0, thread)
        thread.start()

    def stop(self) -> None:
        """Stop fetching; the publisher drains the spool for up to half the shutdown time."""
        self._drain_deadline = time.monotonic() + self._settings.shutdown_timeout / 2
        self._stop.set()
        self._spooled.set()

    def join(self, deadline: float) -> bool:
        """Wait until `deadline` (time.monotonic()) at most; True when both threads ended."""
        started = [t for t in self._threads if t.ident is not None]
        for thread in started:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in started)

    def _run(self) -> None:
        try:
            self._recover()
            self._fetcher.start()
            self._publish_loop()
        except FencedError as exc:
            self._fail(f"{exc}; another instance owns this account now")
        except ConnectorError as exc:
            if not self._stop.is_set():  # a shutdown that interrupts a reconnect is no failure
                self._fail(str(exc))
        except Exception as exc:  # a bug must stop the account visibly, not end a thread quietly
            log.exception("account %s: publishing failed unexpectedly", self.name)
            self._fail(f"publishing failed unexpectedly: {type(exc).__name__}: {exc}")
        finally:
            self._stop.set()
            if self._fetcher.ident is not None:  # it may be mid-call: let it spool what it got
                self._fetcher.join(self._settings.platform.read_timeout + _SPOOL_RETRY)
            self._close()

    # --- the publish side ------------------------------------------------------------------
    def _publish_loop(self) -> None:
        """Publish what the spool holds; after stop(), drain it once the fetcher is done."""
        txn = Transaction()
        while True:
            self._spooled.wait(self._kafka.commit_interval)
            self._spooled.clear()
            stopping = self._stop.is_set() and not self._fetcher.is_alive()
            try:
                caught_up = self._publish_pending(txn)
                if self._commit_due(txn) or (stopping and caught_up and not txn.empty):
                    self._commit(txn)
                    txn = Transaction()
                if stopping and caught_up and txn.empty:
                    return
            except TransactionAbortedError as exc:
                log.warning("account %s: %s; sending spool entries again", self.name, exc)
                txn = self._abort_or_restart(txn)
            except FencedError:
                raise
            except PublishError as exc:
                log.error("account %s: %s; recreating the producer", self.name, exc)
                txn = self._restart_producer()

    def _publish_pending(self, txn: Transaction) -> bool:
        """Produce spool entries into the open transaction; True when none are left."""
        if self._stop.is_set() and time.monotonic() > self._drain_deadline:
            return True  # out of shutdown time: commit what is open, leave the rest spooled
        after = txn.last_seq or self._committed
        for entry in self._spool.entries_after(after, _READ_CHUNK_BYTES):
            seq = entry.seq
            if txn.empty:
                self._publisher.begin()
                txn.started = time.monotonic()
            self._publish_entry(seq, entry, txn)
            txn.last_seq = seq
            if txn.records >= self._kafka.max_batch_records:
                self._spooled.set()  # more may be waiting; come straight back after the commit
                return False
        return self._spool.last_seq <= txn.last_seq or self._spool.last_seq <= self._committed

    def _publish_entry(self, seq: int, entry: SpoolEntry, txn: Transaction) -> None:
        fetched_at_ms = round(entry.fetched_at * 1000)
        with self._parsed_lock:
            reports = self._parsed.pop(seq, None)
        if reports is None:
            raw = entry.body
            try:
                reports = platform.parse_response(raw)
            except PlatformError as exc:
                self._dead_letter(raw, exc, seq, "invalid_response", txn)
                return
        batch = self._normalizer.normalize_batch(reports, fetched_at_ms)
        records = batch.records
        if records:
            records, values = self._encode(records, seq, txn)
            keys = record_keys(records, self._kafka.empty_custid_key)
            self._publisher.produce_many(self._topic, values, keys, self._headers)
            txn.records += len(records)
            txn.observed.update((r["rtime"], r["stime"], r["status"]) for r in records)
        for rejected in batch.rejected:
            self._dead_letter(rejected.raw, rejected.error, seq, "invalid_report", txn)
        if batch.unknown_fields:
            self._metrics.unknown_fields(self.name, batch.unknown_fields)

    def _encode(
        self, records: list[dict], seq: int, txn: Transaction
    ) -> tuple[list[dict], list[bytes]]:
        """Encode a batch; should a record not fit the schema, dead-letter it, keep the rest."""
        try:
            return records, self._encoder.encode_batch(records)
        except CodecError:
            kept, values = [], []
            for record in records:
                try:
                    values.extend(self._encoder.encode_batch([record]))
                    kept.append(record)
                except CodecError as exc:
                    self._dead_letter(repr(record).encode(), exc, seq, "unencodable_record", txn)
            return kept, values

    def _dead_letter(
        self, raw: bytes, error: Exception, seq: int, reason: str, txn: Transaction
    ) -> None:
        headers = [
            ("error.class", type(error).__name__.encode()),
            ("error.message", str(error).encode("utf-8", "replace")),
            ("account", self.name.encode()),
            ("spool.sequence", str(seq).encode()),
        ]
        # Above the broker's message size the transaction would fail for ever, and the spool
        # entry is released at this commit: split the value into numbered chunks instead.
        chunks = range(0, max(len(raw), 1), _DLQ_MAX_VALUE_BYTES)
        for index, start in enumerate(chunks):
            extra = [("chunk", f"{index + 1}/{len(chunks)}".encode())] if len(chunks) > 1 else []
            value = raw[start : start + _DLQ_MAX_VALUE_BYTES]
            self._publisher.produce(self._kafka.dlq_topic, value, None, headers + extra)
        txn.dead_letters[reason] += 1

    def _commit_due(self, txn: Transaction) -> bool:
        if txn.empty:
            return False
        return (
            txn.records >= self._kafka.max_batch_records
            or time.monotonic() - txn.started >= self._kafka.commit_interval
        )

    def _commit(self, txn: Transaction) -> None:
        began = time.monotonic()
        self._publisher.commit(txn.last_seq)
        self._committed = txn.last_seq
        self._spool.release_through(txn.last_seq)
        self._forget_parsed(txn.last_seq)
        self._report_commit(txn, time.monotonic() - began)

    def _abort_or_restart(self, txn: Transaction) -> Transaction:
        """Abort the open transaction; if even that fails, start over with a new producer."""
        self._forget_parsed(txn.last_seq)  # re-parse from the spool: same bytes, same reports
        try:
            self._publisher.abort()
        except FencedError:
            raise
        except PublishError as exc:
            log.error("account %s: abort failed (%s); recreating the producer", self.name, exc)
            return self._restart_producer()
        self._spooled.set()
        return Transaction()

    def _forget_parsed(self, through: int) -> None:
        with self._parsed_lock:
            for seq in [s for s in self._parsed if s <= through]:
                del self._parsed[seq]

    def _restart_producer(self) -> Transaction:
        self._publisher.close(0)
        self._forget_parsed(self._spool.last_seq)
        self._committed = self._connect_publisher().sequence
        self._spooled.set()
        return Transaction()

    # --- the fetch side --------------------------------------------------------------------
    def _fetch_loop(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            if not self._spool_has_room():
                self._board.update(self.name, state="spool_full")
                delay = _SPOOL_RETRY
                continue
            try:
                delay = self._fetch_once()
            except Exception as exc:  # a bug must stop the account visibly, not kill a thread
                log.exception("account %s: fetch failed unexpectedly", self.name)
                self._fail(f"fetch failed unexpectedly: {type(exc).__name__}: {exc}")
                self.stop()
                return

    def _fetch_once(self) -> float:
        """One get-rpt call, its body made durable; returns the pause before the next one."""
        try:
            fetch = self._client.fetch()
        except InvalidResponseError as exc:
            # The platform may consider these reports delivered: keep the body, DLQ it.
            self._spool_body(exc.raw, None, time.time())
            return self._poll_failed(exc)
        except PlatformError as exc:
            return self._poll_failed(exc)
        if fetch.reports:
            self._spool_body(fetch.raw, fetch.reports, fetch.fetched_at)
        self._metrics.poll(
            self.name, "ok" if fetch.reports else "empty", fetch.duration, len(fetch.reports)
        )
        self._metrics.poll_succeeded(self.name, fetch.fetched_at)
        delay = self._schedule.after_batch(len(fetch.reports))
        self._metrics.retry_attempt(self.name, 0)
        self._board.update(
            self.name, state="polling", last_success=fetch.fetched_at, attempt=0, next_poll_in=delay
        )
        return delay

    def _poll_failed(self, error: PlatformError) -> float:
        delay = self._schedule.after_error(error)  # logs the failure with its attempt count
        attempt = self._schedule.attempt
        self._metrics.poll(self.name, error.outcome, 0.0, 0)
        self._metrics.retry_attempt(self.name, attempt)
        state = "auth_paused" if error.outcome == "auth_error" else "backoff"
        self._board.update(
            self.name, state=state, last_error=str(error), attempt=attempt, next_poll_in=delay
        )
        return delay

    def _spool_body(self, raw: bytes, reports: list | None, fetched_at: float) -> None:
        """Append until durable. Never fetch again before this returns: nothing else is safe."""
        while True:
            try:
                count = len(reports or ())
                seq = self._spool.append(raw, fetched_at=fetched_at, reports=count).seq
                break
            except SpoolWriteError as exc:
                self._metrics.spool_write_failed(self.name)
                self._board.update(self.name, state="spool_error", last_error=str(exc))
                log.error(
                    "account %s: %s; holding one fetched body in memory and retrying",
                    self.name,
                    exc,
                )
                time.sleep(_SPOOL_RETRY)
        if _CRASH_WHEN_EXISTS and os.path.exists(_CRASH_WHEN_EXISTS):
            os._exit(137)
        if reports is not None:
            with self._parsed_lock:
                if len(self._parsed) < _PARSED_CACHE_ENTRIES:
                    self._parsed[seq] = reports
        self._metrics.spool(self.name, self._spool.pending_records, self._spool.pending_bytes)
        self._spooled.set()

    def _spool_has_room(self) -> bool:
        """Fetch only when the largest possible answer still fits: the read is destructive."""
        return self._spool.room(self._settings.platform.max_response_bytes) is None

    # --- recovery and reporting ------------------------------------------------------------
    def _recover(self) -> None:
        self._board.update(self.name, state="recovering")
        progress = self._connect_publisher()
        self._committed = progress.sequence
        # The committed sequence numbers this spool's entries only if this spool committed it
        # (or nothing has): after the account ran on another instance with its own spool, the
        # entries left here were never published and get numbers above the committed one.
        own = progress.spool_id in ("", self._spool_id)
        self._spool = self._open_spool(floor_seq=self._committed if own else 0)
        if not own:
            moved = self._spool.renumber_above(self._committed)
            if moved:
                log.warning(
                    "account %s: %d spool entries fetched here before the account moved to "
                    "another instance were never published; they are sent now",
                    self.name,
                    moved,
                )
        pending = self._spool.pending_records
        log.info(
            "account %s: committed spool sequence %d, %d spool entries to replay",
            self.name,
            self._committed,
            pending,
        )
        self._board.update(
            self.name, state="polling", committed_sequence=self._committed, spool_pending=pending
        )
        self._spooled.set()

    def _open_spool(self, floor_seq: int) -> Spool:
        """Open the account's spool, waiting while a previous owner still holds its lock."""
        spool = self._settings.spool
        delay = 0.5
        while True:
            try:
                return Spool.open(
                    spool.dir / self.name,
                    max_bytes=spool.max_bytes,
                    segment_bytes=spool.segment_bytes,
                    fsync=spool.fsync,
                    floor_seq=floor_seq,
                    hooks=failpoints_from_env(),
                )
            except SpoolLockedError as exc:
                log.warning("account %s: %s; retrying in %.1fs", self.name, exc, delay)
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, 10.0)

    def _connect_publisher(self) -> Progress:
        """A new producer: fences older ones, returns the committed progress. Waits for Kafka."""
        delay = 1.0
        while True:
            self._publisher = AccountPublisher(
                self._kafka,
                self.name,
                on_stats=lambda stats: self._metrics.producer_statistics(self.name, stats),
                on_reachability=self._board.set_kafka_reachable,
            )
            self._publisher.spool_id = self._spool_id
            try:
                return self._publisher.init()
            except FencedError:
                raise
            except PublishError as exc:
                log.warning(
                    "account %s: Kafka not ready (%s); retrying in %.0fs", self.name, exc, delay
                )
                self._publisher.close(0)
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)

    def _report_commit(self, txn: Transaction, duration: float) -> None:
        now = time.time()
        rtimes: Counter = Counter()
        latencies: Counter = Counter()
        statuses: Counter = Counter()
        for (rtime, stime, status), count in txn.observed.items():
            if rtime is not None:
                rtimes[rtime] += count
                if stime is not None:
                    latencies[(rtime - stime) / 1000] += count
            statuses[_status_label(status)] += count
        self._metrics.committed(
            self.name,
            records=txn.records,
            dead_letters=txn.dead_letters,
            duration=duration,
            sequence=txn.last_seq,
            commit_time=now,
            rtimes_ms=rtimes,
            delivery_latency_s=latencies,
            statuses=statuses,
        )
        self._metrics.spool(self.name, self._spool.pending_records, self._spool.pending_bytes)
        self._board.update(
            self.name, committed_sequence=txn.last_seq, spool_pending=self._spool.pending_records
        )

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.error("account %s stopped: %s", self.name, reason)
        self._board.update(self.name, state="failed", last_error=reason)

    def _close(self) -> None:
        self._client.close()
        if self._publisher is not None:
            self._publisher.close()
        if self._spool is not None:
            self._spool.close()
        if self.failed is None:
            self._board.update(self.name, state="stopped")


def _status_label(status: int | None) -> str:
    if status is None:
        return "unknown"
    return "delivered" if status == 0 else "failed"


def _schedule(settings: Settings, account: AccountSettings) -> platform.PollSchedule:
    p = settings.platform
    return platform.PollSchedule(
        retsize=account.retsize or p.retsize,
        poll_interval=account.poll_interval
        if account.poll_interval is not None
        else p.poll_interval,
        min_request_interval=p.min_request_interval,
        backoff_initial=p.backoff_initial,
        backoff_max=p.backoff_max,
        account=account.name,
        auth_failure_pause=p.auth_failure_pause,
    )
