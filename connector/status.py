"""What the connector says about itself over HTTP: /metrics, /healthz, /readyz and /status.

`StatusBoard` is written by the pipeline threads and read by the HTTP server's threads.
`EndpointServer` serves both it and the Prometheus registry from one stdlib HTTP server.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder

from connector import __version__
from connector.errors import ConfigError
from connector.metrics import Metrics

STATES = frozenset(
    {
        "starting", "recovering", "polling", "backoff", "auth_paused", "spool_full",
        "spool_error", "stopped", "failed", "not_owned",
    }
)  # fmt: skip
FIELDS = frozenset(
    {
        "state", "last_success", "last_error", "spool_pending", "committed_sequence", "owned",
        "attempt", "next_poll_in",
    }
)  # fmt: skip
MAX_ERROR_CHARS = 500

# Defence in depth: errors reach the board already secret-free, but a value after a word such
# as "token" or "password", a bearer credential or URL user info is masked all the same.
_SECRET_PATTERNS = (
    (
        re.compile(
            r"(?i)((?:access[-_ ]?token|token|secret|password|passwd|pwd|api[-_]?key"
            r"|authorization)[\"']?\s*[:=]\s*[\"']?)(?:bearer\s+)?[^\s\"',;&}]+"
        ),
        r"\1***",
    ),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"), r"\1***"),
    (re.compile(r"(://)[^/\s:@]+:[^\s@]+(@)"), r"\1***\2"),
)


def redact(text: str) -> str:
    """`text` with anything that looks like a credential masked, cut to MAX_ERROR_CHARS."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


class StatusBoard:
    """What /status, /readyz and /healthz report; updated by the pipeline threads."""

    def __init__(
        self,
        accounts: list[str],
        *,
        clock: Callable[[], float] = time.time,
        health_timeout: float = 60.0,
        backoff_ready_attempts: int = 5,
        instance: str | None = None,
    ) -> None:
        self._clock = clock
        self._health_timeout = health_timeout
        self._backoff_ready_attempts = backoff_ready_attempts
        self._instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()
        self._started = clock()
        self._heartbeat = self._started  # startup counts as alive until the first beat is due
        self._kafka: dict[str, Any] = {"reachable": False, "reason": "not checked yet"}
        self._accounts: dict[str, dict[str, Any]] = {
            name: {
                "state": "starting",
                "owned": True,
                "last_success": None,
                "last_error": None,
                "spool_pending": 0,
                "committed_sequence": None,
                "attempt": 0,
                "next_poll_in": None,
            }
            for name in accounts
        }

    def update(self, account: str, **fields: Any) -> None:
        unknown = set(fields) - FIELDS
        if unknown:
            raise ValueError(f"unknown status fields {sorted(unknown)}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"unknown state {fields['state']!r}")
        if fields.get("last_error") is not None:
            fields["last_error"] = redact(str(fields["last_error"]))
        with self._lock:
            self._accounts[account].update(fields)

    def set_kafka_reachable(self, reachable: bool, reason: str | None = None) -> None:
        with self._lock:
            self._kafka = {"reachable": reachable, "reason": redact(reason) if reason else None}

    def heartbeat(self) -> None:
        with self._lock:
            self._heartbeat = self._clock()

    def alive(self) -> bool:
        with self._lock:
            return self._clock() - self._heartbeat <= self._health_timeout

    def snapshot(self) -> dict[str, Any]:
        """The /status document: JSON-able, secret-free."""
        now = self._clock()
        with self._lock:
            return {
                "instance": {
                    "id": self._instance,
                    "version": __version__,
                    "started": self._started,
                    "uptime_s": round(now - self._started, 3),
                    "heartbeat_age_s": round(now - self._heartbeat, 3),
                },
                "kafka": dict(self._kafka),
                "accounts": {name: dict(fields) for name, fields in self._accounts.items()},
            }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when Kafka is reachable and each owned account polls or only briefly backs off."""
        with self._lock:
            problems = {
                name: reason
                for name, fields in self._accounts.items()
                if fields["owned"] and (reason := self._not_ready_reason(fields)) is not None
            }
            kafka = dict(self._kafka)
        ready = bool(kafka["reachable"]) and not problems
        return ready, {"ready": ready, "kafka": kafka, "accounts_not_ready": problems}

    def _not_ready_reason(self, fields: dict[str, Any]) -> str | None:
        state = fields["state"]
        if state == "polling":
            return None
        if state == "backoff":
            attempt = fields["attempt"]
            if attempt < self._backoff_ready_attempts:
                return None
            return f"backoff after {attempt} consecutive failed attempts"
        return state


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Scrapers keep connections open between scrapes; a silent client frees its thread after this.
    timeout = 120

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        route = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/status": self._status,
        }.get(path)
        if route is None:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")
        else:
            route()

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self._send(200, content_type, encoder(self.server.metrics.registry))

    def _healthz(self) -> None:
        if self.server.board.alive():
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self._send(503, "text/plain; charset=utf-8", b"main loop stalled\n")

    def _readyz(self) -> None:
        ready, reason = self.server.board.readiness()
        self._send_json(200 if ready else 503, reason)

    def _status(self) -> None:
        self._send_json(200, self.server.board.snapshot())

    def _send_json(self, code: int, document: dict[str, Any]) -> None:
        body = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
        self._send(code, "application/json", body)

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes arrive every few seconds: no access log."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, board: StatusBoard) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.metrics = metrics
        self.board = board
        super().__init__(address, _Handler)


class EndpointServer:
    """/metrics, /healthz, /readyz and /status on one HTTP listener, in a daemon thread."""

    def __init__(self, listen: str, metrics: Metrics, board: StatusBoard) -> None:
        self._listen = listen
        self._metrics = metrics
        self._board = board
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Bind and serve; returns the bound (host, port): listen port 0 picks a free one."""
        host, _, port = self._listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        try:
            self._server = _Server((host, int(port)), self._metrics, self._board)
        except OSError as exc:
            raise ConfigError(
                f"metrics.listen {self._listen}: cannot listen: {exc.strerror}"
            ) from exc
        # A short poll interval keeps stop() quick; the loop is otherwise idle in select().
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="rpt-endpoints",
            daemon=True,
        )
        self._thread.start()
        bound_host, bound_port = self._server.server_address[:2]
        return str(bound_host), int(bound_port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._server = self._thread = None
