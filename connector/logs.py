"""Logging: human-readable lines by default, JSON lines with `--log-format json`.

Each pipeline thread is named `fetch-<account>` or `publish-<account>`, so the account of a
log event comes from the thread name: no call site has to pass it.
"""

from __future__ import annotations

import json
import logging
import sys
import time

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


def librdkafka_logger(client: str) -> logging.Logger:
    """The logger for confluent-kafka's `logger` property (stub: the kafka-faults stream
    replaces it with one that summarizes repeated connection errors)."""
    return logging.getLogger(f"connector.librdkafka.{client}")
