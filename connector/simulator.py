"""`rpt-connector simulate`: the SMS platform's get-rpt API over a real socket.

An honest stand-in for the platform, for the demo, the tests, chaos runs and benchmarks, so it
imports nothing of the connector. get-rpt is destructive here too: a report handed out is gone.

Accounts: `--token TOKEN` (named acct1, acct2, ... in the order given) or `--token NAME=TOKEN`
(a token that itself contains '=' must use this form), and `--account UUID:SECRET` for an
account that logs in at `--login-path` (named after its uuid; its tokens expire after
`--token-ttl`). Static tokens never expire. A wrong or expired token gets HTTP 200 with
result 401.

Reports: `--reports N` preloads N split evenly across accounts, `--reports NAME=N` preloads one
account; `--rate R` adds R reports/s across accounts (computed from elapsed time, up to
`--rate-total`). Each report's JSON bytes are rendered once (preloaded: at start; rate mode:
when first handed out, so rtime is close to now and the rate never stalls a response); a
response joins them. `--record FILE` appends every report handed out, exactly as sent, one per line.
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
import random
import re
import secrets
import signal
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, quote, urlsplit

import msgspec

FIRST_MSGID = 9223372045854775808  # just above int64, like the seed
UTC8 = 8 * 3600
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_JSON = "application/json;charset=UTF-8"

_OK_PREFIX = b'{"result":0,"desc":"%e6%88%90%e5%8a%9f","rpts":['
_OK_SUFFIX = b"]}"
_AUTH_FAILED = b'{"result":401,"desc":"%s","rpts":[]}' % quote("身份认证失败").encode()
# The spec says desc is urlencode(GB2312) on failure; the 401 answer above is UTF-8, as seen.
_RESULT_ERROR = (
    b'{"result":500,"desc":"%s","rpts":[]}' % quote("系统繁忙".encode("gb2312")).encode()
)
_GARBAGE = b"<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"
_UNAVAILABLE = b'{"error":"service unavailable"}'

# (errcode, status, errdesc, weight): mostly delivered, with the usual failures.
_OUTCOMES = [
    ("DELIVRD", 0, "成功", 70),
    ("DELIVRD", 0, "success", 12),
    ("UNDELIV", 1, "用户不在服务区", 7),
    ("EXPIRED", 2, "已过期", 5),
    ("REJECTD", 3, "被拒绝", 3),
    ("MK:0001", 4, "空号", 3),
]
_OUTCOME_WEIGHTS = [sum(o[3] for o in _OUTCOMES[: i + 1]) for i in range(len(_OUTCOMES))]


@dataclass(frozen=True)
class Faults:
    latency: float = 0.0
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    stall_rate: float = 0.0
    stall: float = 60.0
    truncate_rate: float = 0.0
    garbage_rate: float = 0.0
    result_error_rate: float = 0.0
    malformed_rate: float = 0.0
    duplicate_rate: float = 0.0


@dataclass(frozen=True)
class SimConfig:
    tokens: dict[str, str]  # static token → account name
    logins: dict[str, str]  # uuid (= account name) → secret
    reports: dict[str, int] = field(default_factory=dict)  # account → preloaded count
    rate: float = 0.0
    rate_total: int | None = None
    seed: int | None = None
    path: str = "/client-sms/v2/sms/get-rpt"
    login_path: str = "/client-sms/user/login"
    token_ttl: float = 1800.0
    record: Path | None = None
    record_responses: Path | None = None
    faults: Faults = Faults()
    host: str = "127.0.0.1"
    port: int = 0
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def accounts(self) -> list[str]:
        # A static account may have several tokens (NAME=TOKEN given more than once).
        return [*dict.fromkeys(self.tokens.values()), *self.logins]


@lru_cache(maxsize=4096)
def _utc8(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second + UTC8))


class ReportFactory:
    """Realistic reports as pre-rendered JSON bytes; msgids are unique across all accounts."""

    def __init__(self, rng: random.Random, malformed_rate: float) -> None:
        self._rng = rng
        self._malformed_rate = malformed_rate
        self._next_msgid = FIRST_MSGID
        self.malformed = 0

    def make(self, count: int, now: float) -> list[bytes]:
        out: list[bytes] = []
        while len(out) < count:
            out.extend(self._message(now, count - len(out)))
        return out

    def _message(self, now: float, limit: int) -> list[bytes]:
        """The reports of one SMS, at most `limit`: a long one is in parts sharing the custid.

        Parts past `limit` are never made: like a platform that lost them.
        """
        # random() only: randint/randrange cost ~1 µs each and made generation the bottleneck.
        rand = self._rng.random
        total = 1 if rand() < 0.8 else 2 + int(rand() * 3)
        custid = "" if rand() < 0.05 else f"{self._rng.getrandbits(80):020x}"
        if rand() < 0.02:
            mobile, country = f"{int(rand() * 10**6):06d}", -1
        else:
            mobile, country = f"1{3 + int(rand() * 7)}{int(rand() * 10**9):09d}", 86
        errcode, status, errdesc, _ = self._rng.choices(_OUTCOMES, cum_weights=_OUTCOME_WEIGHTS)[0]
        rtime = int(now) - int(rand() * 3)
        stime, rtime = _utc8(rtime - 1 - int(rand() * 10)), _utc8(rtime)
        exno = f"{int(rand() * 10000):04d}"
        num: Callable[[int], int | str] = str if rand() < 0.3 else int
        parts = []
        for part in range(1, min(total, limit) + 1):
            msgid = self._next_msgid
            self._next_msgid += 1
            report = {
                "msgid": str(msgid) if rand() < 0.1 else msgid,
                "custid": custid, "pknum": num(part), "pktotal": num(total),
                "mobile": mobile, "countrycode": num(country), "spno": "", "exno": exno,
                "stime": stime, "rtime": rtime, "status": num(status), "errcode": errcode,
                "errdesc": errdesc, "exdata": f"exdata{part:04d}",
            }  # fmt: skip
            if self._malformed_rate and rand() < self._malformed_rate:
                self._corrupt(report)
            parts.append(msgspec.json.encode(report))
        return parts

    def _corrupt(self, report: dict) -> None:
        self.malformed += 1
        kind = self._rng.randrange(3)
        if kind == 0:
            report["rtime"] = "2016-13-45 25:61:61"
        elif kind == 1:
            report["status"] = "ok?"
        else:
            del report["msgid"]


@dataclass
class _Account:
    name: str
    queue: deque[bytes] = field(default_factory=deque)
    generated: int = 0
    rate_generated: int = 0
    owed: int = 0  # rate mode: due, so pending, but rendered only when handed out
    handed_out: int = 0


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()


class Platform:
    """The simulated platform's state and behaviour; thread-safe."""

    def __init__(
        self,
        config: SimConfig,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.faults = config.faults
        self.stopping = threading.Event()
        self._clock, self._wall_clock = clock, wall_clock
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._factory = ReportFactory(random.Random(config.seed), config.faults.malformed_rate)
        self._accounts = {name: _Account(name) for name in config.accounts}
        self._login_tokens: dict[str, tuple[_Account, float]] = {}
        self._record: BinaryIO | None = config.record.open("ab") if config.record else None
        self._responses: BinaryIO | None = (
            config.record_responses.open("ab") if config.record_responses else None
        )
        self._started = clock()
        self._paused_until = 0.0
        # get-rpt calls per static token that reached the account: tests tell instances apart
        # when each is given its own token for the same account.
        self._calls_by_token: dict[str, int] = dict.fromkeys(config.tokens, 0)
        self.counters = dict.fromkeys(
            ("requests", "logins", "login_failures", "auth_failures", "paused", "errors",
             "throttled", "stalled", "garbage", "result_errors", "truncated", "duplicates"),
            0,
        )  # fmt: skip
        for name, count in config.reports.items():
            self._generate(self._accounts[name], count)

    def close(self) -> None:
        self.stopping.set()
        with self._lock:
            if self._record is not None:
                self._record.close()
                self._record = None
            if self._responses is not None:
                self._responses.close()
                self._responses = None

    def get_rpt(self, token: str | None, retsize: int) -> Answer:
        """One get-rpt call: faults first, then the token, then the destructive read."""
        faults = self.faults
        self._count("requests")
        if self._clock() < self._paused_until:
            return self._fail("paused", Answer(503, _UNAVAILABLE))
        if faults.latency:
            self.stopping.wait(faults.latency)
        if self._roll(faults.error_rate):
            return self._fail("errors", Answer(self._rng.choice((500, 503)), _UNAVAILABLE))
        if self._roll(faults.throttle_rate):
            return self._fail(
                "throttled", Answer(429, _UNAVAILABLE, headers=(("Retry-After", "1"),))
            )
        if self._roll(faults.stall_rate):
            # Nothing leaves the queue: the client has long given up when this answers.
            self.stopping.wait(faults.stall)
            return self._fail("stalled", Answer(503, _UNAVAILABLE))
        account = self._account_for(token)
        if account is None:
            return self._fail("auth_failures", Answer(200, _AUTH_FAILED))
        if self._roll(faults.garbage_rate):
            return self._fail("garbage", Answer(200, _GARBAGE, "text/html"))
        if self._roll(faults.result_error_rate):
            return self._fail("result_errors", Answer(200, _RESULT_ERROR))
        truncate = self._roll(faults.truncate_rate)
        items = self._take(account, retsize)
        body = _OK_PREFIX + b",".join(items) + _OK_SUFFIX
        if truncate:
            body = body[: self._rng.randint(1, len(body) - 1)]
            self._count("truncated")
        if self._responses is not None and items:
            self._record_response(account, items, "truncated" if truncate else "ok")
        return Answer(200, body)

    def _record_response(self, account: _Account, items: list[bytes], fault: str) -> None:
        """One JSON line per response that handed reports out: chaos tests date each loss."""
        msgids = [str(_json_field(item, "msgid")) for item in items]
        line = {"t": self._wall_clock(), "account": account.name, "msgids": msgids, "fault": fault}
        with self._lock:
            if self._responses is not None:
                self._responses.write(msgspec.json.encode(line) + b"\n")
                self._responses.flush()

    def login(self, uuid: object, secret: object) -> str | None:
        """A fresh token valid for token_ttl, or None when uuid/secret do not match."""
        expected = self.config.logins.get(uuid) if isinstance(uuid, str) else None
        if expected is None or not isinstance(secret, str):
            self._count("login_failures")
            return None
        if not secrets.compare_digest(expected, secret):
            self._count("login_failures")
            return None
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._login_tokens[token] = (
                self._accounts[uuid],
                self._clock() + self.config.token_ttl,
            )
            self.counters["logins"] += 1
        return token

    def pause(self, seconds: float) -> None:
        self._paused_until = self._clock() + seconds

    def resume(self) -> None:
        self._paused_until = 0.0

    def stats(self) -> dict:
        with self._lock:
            self._top_up()
            accounts = {
                a.name: {
                    "generated": a.generated,
                    "handed_out": a.handed_out,
                    "pending": len(a.queue) + a.owed,
                }
                for a in self._accounts.values()
            }
            totals = {
                key: sum(a[key] for a in accounts.values())
                for key in ("generated", "handed_out", "pending")
            }
            faults = {**self.counters, "malformed": self._factory.malformed}
            calls = dict(self._calls_by_token)
        return {**totals, "accounts": accounts, "faults": faults, "calls_by_token": calls}

    def _account_for(self, token: str | None) -> _Account | None:
        if not token:
            return None
        name = self.config.tokens.get(token)
        if name is not None:
            with self._lock:
                self._calls_by_token[token] += 1
            return self._accounts[name]
        with self._lock:
            account, expires = self._login_tokens.get(token, (None, 0.0))
            if account is not None and self._clock() >= expires:
                del self._login_tokens[token]
                return None
        return account

    def _take(self, account: _Account, retsize: int) -> list[bytes]:
        """The destructive read: dequeue, re-queue the odd duplicate, record, all under the lock."""
        with self._lock:
            self._top_up()
            queue = account.queue
            render = min(account.owed, retsize - len(queue))
            if render > 0:
                queue.extend(self._factory.make(render, self._wall_clock()))
                account.owed -= render
            items = [queue.popleft() for _ in range(min(retsize, len(queue)))]
            account.handed_out += len(items)
            if self.faults.duplicate_rate:
                for item in items:
                    if self._rng.random() < self.faults.duplicate_rate:
                        queue.appendleft(item)  # handed out again in a later response
                        self.counters["duplicates"] += 1
            if self._record is not None and items:
                self._record.write(b"\n".join(items) + b"\n")
                self._record.flush()
        return items

    def _top_up(self) -> None:
        """Rate mode: the reports due by now, spread evenly across accounts, are owed."""
        if not self.config.rate:
            return
        due = int(self.config.rate * (self._clock() - self._started))
        if self.config.rate_total is not None:
            due = min(due, self.config.rate_total)
        accounts = list(self._accounts.values())
        for i, account in enumerate(accounts):
            target = due // len(accounts) + (1 if i < due % len(accounts) else 0)
            if target > account.rate_generated:
                account.owed += target - account.rate_generated
                account.generated += target - account.rate_generated
                account.rate_generated = target

    def _generate(self, account: _Account, count: int) -> None:
        account.queue.extend(self._factory.make(count, self._wall_clock()))
        account.generated += count

    def _roll(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def _fail(self, counter: str, answer: Answer) -> Answer:
        self._count(counter)
        return answer


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
            retsize = _retsize(query if method == "GET" else _json_field(body, "retsize"))
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


def _json_field(body: bytes, name: str) -> object:
    try:
        value = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        return None
    return value.get(name) if isinstance(value, dict) else None


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
    token = platform.login(_json_field(body, "uuid"), _json_field(body, "secret"))
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
        if not (sep and _NAME.match(name) and token):
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
        rate_total=args.rate_total, seed=args.seed, path=args.path, login_path=args.login_path,
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
