"""`rpt-connector simulate`: the SMS platform's get-rpt API over a real socket.

An honest stand-in for the platform, for the demo, the tests, chaos runs and benchmarks, so it
imports nothing of the connector (its platform model, accounts, queues and faults, is
connector/simulator/platform.py). get-rpt is destructive here too: a report handed out is gone.

Accounts: `--token TOKEN` (named acct1, acct2, ... in the order given) or `--token NAME=TOKEN`
(a token that itself contains '=' must use this form), and `--account UUID:SECRET` for an
account that logs in at `--login-path` (named after its uuid; its tokens expire after
`--token-ttl`). Static tokens never expire. A wrong or expired token gets HTTP 200 with
result 401.

Reports: `--reports N` preloads N split evenly across accounts, `--reports NAME=N` preloads one
account; `--rate R` adds R reports/s across accounts (computed from elapsed time, up to
`--rate-total`; counted from the first get-rpt with `--rate-from-first-poll`). Each report's
JSON bytes are rendered once (preloaded: at start; rate mode: when first handed out, so rtime
is close to now and the rate never stalls a response); a response joins them.
`--record FILE` appends every report handed out, exactly as sent, one per line.
`--record-responses FILE` appends one JSON line per response that handed reports out:
{"t": epoch seconds, "account", "msgids": [strings], "fault": "ok" | "truncated"}.

Faults (get-rpt only; probabilities per request unless noted): --latency, --error-rate,
--throttle-rate, --stall-rate/--stall, --truncate-rate (the reports leave the queue and are
recorded: lost in flight), --garbage-rate, --result-error-rate, --malformed-rate and
--duplicate-rate (per report). `POST /control/pause?seconds=N` answers 503 to get-rpt for N
seconds, `POST /control/resume` ends it. `GET /stats` counts it all (`calls_by_token`: get-rpt
calls per static token; `--token NAME=T1 --token NAME=T2` gives one account two tokens, so two
instances of one account, each with its own token, are told apart).
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from connector.simulator.platform import (  # noqa: F401 -- FIRST_MSGID, ReportFactory: public names
    ACCOUNT_NAME,
    FIRST_MSGID,
    Answer,
    Faults,
    Platform,
    ReportFactory,
    SimConfig,
    json_field,
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], platform: Platform) -> None:
        self.platform = platform
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length
    server: _Server

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def log_message(self, format: str, *args: object) -> None:
        pass  # thousands of requests a second; /stats says what happened

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        platform, config = self.server.platform, self.server.platform.config
        if url.path == config.path:
            query = parse_qs(url.query).get("retsize", [None])[0]
            retsize = _retsize(query if method == "GET" else json_field(body, "retsize"))
            answer = platform.get_rpt(self.headers.get("Finovy-Access-Token"), retsize)
        elif url.path == config.login_path and method == "POST":
            answer = _login_answer(platform, body)
        elif url.path == "/stats" and method == "GET":
            answer = Answer(200, json.dumps(platform.stats(), ensure_ascii=False).encode())
        elif url.path == "/control/pause" and method == "POST":
            answer = _pause_answer(platform, parse_qs(url.query).get("seconds", ["60"])[0])
        elif url.path == "/control/resume" and method == "POST":
            platform.resume()
            answer = Answer(200, b'{"paused_for":0}')
        else:
            answer = Answer(404, b'{"error":"not found"}')
        self._send(answer)

    def _send(self, answer: Answer) -> None:
        """Status line, headers and body in one write (no Nagle/delayed-ACK stall)."""
        phrase = HTTPStatus(answer.status).phrase
        head = [
            f"HTTP/1.1 {answer.status} {phrase}",
            f"Content-Type: {answer.content_type}",
            f"Content-Length: {len(answer.body)}",
            *(f"{name}: {value}" for name, value in answer.headers),
        ]
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body)


def _retsize(value: object) -> int:
    """Per the spec: at most 500; missing, unparsable or <= 0 means the default, 500."""
    try:
        size = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 500
    return size if 0 < size <= 500 else 500


def _pause_answer(platform: Platform, seconds: str) -> Answer:
    try:
        duration = _seconds(seconds)
    except (ValueError, argparse.ArgumentTypeError):
        return Answer(400, b'{"error":"seconds must be a non-negative number"}')
    platform.pause(duration)
    return Answer(200, b'{"paused_for":%s}' % repr(duration).encode())


def _login_answer(platform: Platform, body: bytes) -> Answer:
    token = platform.login(json_field(body, "uuid"), json_field(body, "secret"))
    if token is None:
        answer = {"code": 401, "data": None, "msg": "身份认证失败", "success": False}
    else:
        answer = {"code": 0, "data": token, "msg": "success", "success": True}
    return Answer(200, json.dumps(answer, ensure_ascii=False).encode())


class Simulator:
    """The simulator in a background thread: `base_url = Simulator(config).start()`."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.platform = Platform(config, clock)
        self._server = _Server((config.host, config.port), self.platform)
        scheme = "http"
        if config.tls_cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(config.tls_cert, config.tls_key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        host, port = self._server.server_address[:2]
        self.base_url = f"{scheme}://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="simulator"
        )

    @classmethod
    def from_argv(
        cls, argv: Sequence[str], clock: Callable[[], float] = time.monotonic
    ) -> Simulator:
        parser = argparse.ArgumentParser(prog="simulate")
        add_arguments(parser)
        return cls(config_from_args(parser.parse_args(argv)), clock)

    def start(self) -> str:
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        self.platform.stopping.set()  # wakes stalled and delayed handlers
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self.platform.close()

    def stats(self) -> dict:
        return self.platform.stats()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    add("--path", default="/client-sms/v2/sms/get-rpt", help="the get-rpt path")
    add("--login-path", default="/client-sms/user/login", help="the login path")
    add(
        "--token",
        action="append",
        default=[],
        metavar="[NAME=]TOKEN",
        help="a static-token account",
    )
    add("--account", action="append", default=[], metavar="UUID:SECRET", help="a login account")
    add("--token-ttl", type=_seconds, default=1800.0, help="lifetime of login tokens (s)")
    add("--reports", action="append", default=[], metavar="[NAME=]N", help="preloaded reports")
    add("--rate", type=_seconds, default=0.0, help="reports generated per second, all accounts")
    add("--rate-total", type=int, help="stop the rate generator after this many reports")
    add(
        "--rate-from-first-poll",
        action="store_true",
        help="start the rate clock at the first get-rpt instead of at start (no startup backlog)",
    )
    add("--seed", type=int, help="random seed (reports and faults)")
    add("--record", type=Path, help="append every report handed out to this JSON-lines file")
    add(
        "--record-responses",
        type=Path,
        help="append one JSON line per get-rpt response: t, account, msgids, fault",
    )
    add("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    add("--tls-key", type=Path, help="the certificate's private key (PEM)")
    faults = parser.add_argument_group("faults (get-rpt only)")
    faults.add_argument("--latency", type=_seconds, default=0.0, help="seconds added per request")
    faults.add_argument("--stall", type=_seconds, default=60.0, help="length of a stall (s)")
    for name, what in (
        ("error", "HTTP 500/503"), ("throttle", "429 with Retry-After: 1"),
        ("stall", "no answer for --stall seconds"), ("truncate", "a cut-off body; reports lost"),
        ("garbage", "a non-JSON body"), ("result-error", "result 500, nothing dequeued"),
        ("malformed", "per report: bad date, bad status or no msgid"),
        ("duplicate", "per report: handed out again later"),
    ):  # fmt: skip
        faults.add_argument(f"--{name}-rate", type=_probability, default=0.0, help=what)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The configuration from parsed arguments; ValueError says what is wrong."""
    tokens: dict[str, str] = {}
    for index, value in enumerate(args.token, start=1):
        name, sep, token = value.partition("=")
        if not (sep and ACCOUNT_NAME.match(name) and token):
            name, token = f"acct{index}", value
        tokens[token] = name
    logins: dict[str, str] = {}
    for value in args.account:
        uuid, sep, secret = value.partition(":")
        if not (sep and uuid and secret):
            raise ValueError(f"--account {uuid}...: expected UUID:SECRET")
        logins[uuid] = secret
    # One account may be given several static tokens (like a rotated key still valid).
    names = [*dict.fromkeys(tokens.values()), *logins]
    if not names:
        raise ValueError("give at least one --token or --account")
    if len(set(names)) != len(names):
        raise ValueError(f"account names must be unique: {names}")
    faults = Faults(**{f: getattr(args, f) for f in Faults.__dataclass_fields__})
    return SimConfig(
        tokens=tokens, logins=logins, reports=_preload(args.reports, names), rate=args.rate,
        rate_total=args.rate_total, rate_from_first_poll=args.rate_from_first_poll,
        seed=args.seed, path=args.path, login_path=args.login_path,
        token_ttl=args.token_ttl, record=args.record, record_responses=args.record_responses,
        faults=faults, host=args.host,
        port=args.port, tls_cert=args.tls_cert, tls_key=args.tls_key,
    )  # fmt: skip


def _preload(values: list[str], names: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for value in values:
        name, sep, number = value.rpartition("=")
        if not number.isdigit() or (sep and name not in counts):
            raise ValueError(f"--reports {value}: expected N or NAME=N for a known account")
        if sep:
            counts[name] += int(number)
        else:
            total = int(number)
            for i, each in enumerate(names):
                counts[each] += total // len(names) + (1 if i < total % len(names) else 0)
    return counts


def main(args: argparse.Namespace) -> int:
    try:
        simulator = Simulator(config_from_args(args))
    except (ValueError, OSError) as exc:
        print(f"rpt-connector simulate: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"listening on {simulator.start()}", flush=True)
    stop.wait()
    simulator.stop()
    return 0
