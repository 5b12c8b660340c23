"""Logging: human-readable lines by default, JSON lines with `--log-format json`.

An account's publish thread is named `publish-<account>`, and a fetch pool thread takes the name
`fetch-<account>` for the step it runs (idle, `fetchpool-<n>`: no account), so the account of a
log event comes from the thread name: no call site has to pass it. librdkafka's own lines come
through `librdkafka_logger` (confluent-kafka calls it on the thread that polls the client, so
they carry the account too).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(account)s] %(message)s"


class _AccountFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "account"):
            role, _, account = record.threadName.partition("-")
            record.account = account if role in ("fetch", "publish") else "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, account, message, and the exception."""

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "account": getattr(record, "account", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_AccountFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request (with its URL) at INFO; the connector logs what matters itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


# --------------------------------------------------------------------------- librdkafka

# confluent-kafka calls `logger.log(level, "%s [%s] %s", facility, client_name, text)` from the
# thread that polls the client; these facilities are the connection-level failures librdkafka
# repeats every reconnect backoff (a few per second per broker) for as long as Kafka is away.
_CONNECTION_FACILITIES = frozenset({"FAIL", "REQTMOUT", "BROKERFAIL", "CONNECT"})
SUMMARY_INTERVAL_S = 30.0


class RepeatSummary:
    """One line per `interval` for a repeating event; the line after a quiet spell has a count.

    `admit()` says whether to log this occurrence: None to hold it back, else how many were
    held back since the last one logged (0 for the first). Also for error_cb handlers that
    log librdkafka's connection errors themselves.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, interval: float = SUMMARY_INTERVAL_S
    ) -> None:
        self._clock = clock
        self.interval = interval
        self._lock = threading.Lock()
        self._logged_at: float | None = None
        self.held_back = 0

    def admit(self) -> int | None:
        now = self._clock()
        with self._lock:
            if self._logged_at is not None and now - self._logged_at < self.interval:
                self.held_back += 1
                return None
            held_back, self.held_back = self.held_back, 0
            self._logged_at = now
            return held_back


class _LibrdkafkaLogger(logging.Logger):
    """Passes librdkafka's lines on; repeated connection errors become one line per interval."""

    def __init__(self, client: str, summary: RepeatSummary) -> None:
        super().__init__(f"librdkafka.{client}")
        self.parent = logging.getLogger("librdkafka")
        self.summary = summary

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        facility = args[0] if len(args) == 3 else None
        if facility not in _CONNECTION_FACILITIES:
            super().log(level, msg, *args, **kwargs)
            return
        held_back = self.summary.admit()
        if held_back is None:
            return
        if held_back:
            msg = f"{msg} (+{held_back} more connection errors since the last one logged)"
        super().log(level, msg, *args, **kwargs)


# Clients are made again and again under one name (a producer per restart, a progress consumer
# per read): they share the name's summary, or each new instance would log its first error anew.
_SUMMARIES: dict[str, RepeatSummary] = {}
_SUMMARIES_LOCK = threading.Lock()


def _shared_summary(client: str) -> RepeatSummary:
    with _SUMMARIES_LOCK:
        return _SUMMARIES.setdefault(client, RepeatSummary())


def librdkafka_logger(client: str, *, summary: RepeatSummary | None = None) -> logging.Logger:
    """A logger for confluent-kafka's `logger` property: librdkafka's lines via Python logging.

    Without it, librdkafka writes `%3|...|FAIL|...` straight to stderr, bypassing the log
    format (JSON logs stop being JSON). The logger is named `librdkafka.<client>`; connection
    errors are summarized per client name (one line per 30 s), shared by every client made
    under that name, unless a `summary` is handed in.
    """
    return _LibrdkafkaLogger(client, summary or _shared_summary(client))
