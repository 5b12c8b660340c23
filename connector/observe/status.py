"""What the connector says about itself over HTTP: /metrics, /healthz, /readyz and /status.

`StatusBoard` is written by the pipeline threads (through their `AccountObserver`) and read by
the HTTP server's threads. `EndpointServer` serves both it and the Prometheus registry from one
stdlib HTTP server.

Two readiness meanings: `/readyz` is the connector's own verdict (Kafka reachable and every
owned account polling; 503 with the reasons otherwise), `/readyz?scope=process` only says
"this process can work" (its main loop runs, it has started, not every owned account failed):
the one to give Kubernetes, so one bad token cannot stall a rollout; account health goes to
alerts.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import gzip_accepted

from connector import __version__
from connector.errors import ConfigError
from connector.observe.exposition import encode
from connector.observe.metrics import Metrics
from connector.observe.observer import AccountState

STATES = frozenset(state.value for state in AccountState)
FIELDS = frozenset(
    {
        "state", "last_success", "last_error", "spool_pending", "committed_sequence", "owned",
        "attempt", "next_poll_in", "spool_pending_entries", "spool_bytes", "spool_capacity_bytes",
        "oldest_uncommitted_at", "paused",
    }
)  # fmt: skip
MAX_ERROR_CHARS = 500
GZIP_LEVEL = 1

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
        self._beaten = False  # the service beats only once it has started its accounts
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
                "spool_pending_entries": 0,
                "spool_bytes": 0,
                "spool_capacity_bytes": None,
                "oldest_uncommitted_at": None,
                "paused": None,
                "kafka_reachable": None,
                "kafka_error": None,
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

    def set_kafka_reachable(
        self, reachable: bool, reason: str | None = None, *, account: str | None = None
    ) -> None:
        """The process-wide verdict (topic creation at start), or one account's (`account`)."""
        reason = redact(reason) if reason else None
        with self._lock:
            if account is None:
                self._kafka = {"reachable": reachable, "reason": reason}
            else:
                self._accounts[account]["kafka_reachable"] = reachable
                self._accounts[account]["kafka_error"] = None if reachable else reason

    def heartbeat(self) -> None:
        with self._lock:
            self._heartbeat = self._clock()
            self._beaten = True

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
                "kafka": self._kafka_verdict(),
                "accounts": {
                    name: _with_age(fields, now) for name, fields in self._accounts.items()
                },
            }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when Kafka is reachable and each owned account polls or only briefly backs off."""
        with self._lock:
            problems = {
                name: reason
                for name, fields in self._accounts.items()
                if fields["owned"] and (reason := self._not_ready_reason(fields)) is not None
            }
            kafka = self._kafka_verdict()
        ready = bool(kafka["reachable"]) and not problems
        return ready, {"ready": ready, "kafka": kafka, "accounts_not_ready": problems}

    def process_readiness(self) -> tuple[bool, dict[str, Any]]:
        """This process can work: its loop beats, it has started, not every owned account failed."""
        now = self._clock()
        with self._lock:
            alive = now - self._heartbeat <= self._health_timeout
            started = self._beaten
            owned = [f["state"] for f in self._accounts.values() if f["owned"]]
        all_failed = bool(owned) and all(state == AccountState.FAILED for state in owned)
        ready = alive and started and not all_failed
        return ready, {
            "ready": ready,
            "scope": "process",
            "alive": alive,
            "started": started,
            "every_owned_account_failed": all_failed,
        }

    def _kafka_verdict(self) -> dict[str, Any]:
        """Unreachable if the process-wide check or any owned account says so (lock held)."""
        for name, fields in self._accounts.items():
            if fields["owned"] and fields["kafka_reachable"] is False:
                why = fields["kafka_error"] or "no Kafka request succeeds"
                return {"reachable": False, "reason": f"account {name}: {why}"}
        return dict(self._kafka)

    def _not_ready_reason(self, fields: dict[str, Any]) -> str | None:
        state = fields["state"]
        if fields["paused"] is not None:
            return f"fetching paused: {fields['paused']}"
        if state == "polling":
            return None
        if state == "backoff":
            attempt = fields["attempt"]
            if attempt < self._backoff_ready_attempts:
                return None
            return f"backoff after {attempt} consecutive failed attempts"
        return state


def _with_age(fields: dict[str, Any], now: float) -> dict[str, Any]:
    """An account's /status fields plus the age of its oldest uncommitted answer."""
    oldest = fields["oldest_uncommitted_at"]
    age = None if oldest is None else round(max(0.0, now - oldest), 3)
    return {**fields, "oldest_uncommitted_age_s": age}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Scrapers keep connections open between scrapes; a silent client frees its thread after this.
    timeout = 120
    # The headers and the body are two writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK of the headers, 40 ms on every response on a kept-alive connection.
    disable_nagle_algorithm = True
    _head = False

    def do_GET(self) -> None:
        self._route(head=False)

    def do_HEAD(self) -> None:
        """Monitors probe with HEAD: the same status and headers as GET, no body."""
        self._route(head=True)

    def _route(self, *, head: bool) -> None:
        self._head = head
        url = urlsplit(self.path)
        route = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/status": self._status,
        }.get(url.path)
        if route is None:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")
        else:
            route(parse_qs(url.query))

    def _metrics(self, _query: dict[str, list[str]]) -> None:
        body, content_type = encode(self.server.metrics.registry, self.headers.get("Accept", ""))
        if gzip_accepted(self.headers.get("Accept-Encoding", "")):
            # Level 1: at 1,000 accounts (10 MB of text, 660 kB gzipped) gzip's default level 9
            # took 190 ms of CPU for 20% fewer bytes; level 1 takes 15 ms (bench/scrape.py).
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            self._send(200, content_type, body, encoding="gzip")
        else:
            self._send(200, content_type, body)

    def _healthz(self, _query: dict[str, list[str]]) -> None:
        if self.server.board.alive():
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self._send(503, "text/plain; charset=utf-8", b"main loop stalled\n")

    def _readyz(self, query: dict[str, list[str]]) -> None:
        scope = query.get("scope", ["connector"])[-1]
        if scope == "process":
            ready, reason = self.server.board.process_readiness()
        elif scope == "connector":
            ready, reason = self.server.board.readiness()
        else:
            message = f"unknown scope {scope!r}: use scope=process or scope=connector\n"
            self._send(400, "text/plain; charset=utf-8", message.encode())
            return
        self._send_json(200 if ready else 503, reason)

    def _status(self, _query: dict[str, list[str]]) -> None:
        self._send_json(200, self.server.board.snapshot())

    def _send_json(self, code: int, document: dict[str, Any]) -> None:
        body = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
        self._send(code, "application/json", body)

    def _send(
        self, code: int, content_type: str, body: bytes, *, encoding: str | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if encoding is not None:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not self._head:
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
