"""The simulated platform behind `rpt-connector simulate`: accounts, report queues, faults.

No HTTP here (see connector/simulator/server.py): `Platform.get_rpt` takes a token and a retsize and
returns the `Answer` (status, body, headers) the server sends. Destructive like the real one:
a report handed out is gone from its queue.
"""

from __future__ import annotations

import random
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import msgspec

FIRST_MSGID = 9223372045854775808  # just above int64, like the seed
UTC8 = 8 * 3600
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
JSON_TYPE = "application/json;charset=UTF-8"

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
    rate_from_first_poll: bool = False  # the rate clock starts at the first get-rpt, not at start
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
    content_type: str = JSON_TYPE
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
        self._started: float | None = None if config.rate_from_first_poll else clock()
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
        msgids = [str(json_field(item, "msgid")) for item in items]
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
            if self._started is None:
                self._started = self._clock()  # --rate-from-first-poll: the load begins now
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
        if not self.config.rate or self._started is None:
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


def json_field(body: bytes, name: str) -> object:
    try:
        value = msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        return None
    return value.get(name) if isinstance(value, dict) else None
