"""The get-rpt client: one pooled HTTP/1.1 connection per account, login, classification, backoff.

`classify` is the one place that decides what an answer means: reports, or which `PlatformError`
(the body itself is judged by `connector.codec.body.parse_body`). Transport failures (timeouts,
refused or reset connections) become `RetriableError` at the boundary. Each call has a total
deadline, `platform.request_timeout` (`platform.exchange`). A 2xx answer whose body is cut off,
late, too big or unparseable becomes `InvalidResponseError` and still carries the bytes that did
arrive: get-rpt is destructive, so the platform may already count those reports as delivered and
the fetcher must keep them.

`PollSchedule` says how long to wait before the next call; the caller does the waiting.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC

import httpx
import msgspec
from pydantic import SecretStr

from connector import __version__
from connector.codec.body import UNDECODABLE, ParsedBody, ReadAhead, parse_body, result_code
from connector.codec.desc import decode_desc
from connector.config.secrets import account_secret, account_token
from connector.config.settings import AccountSettings, PlatformSettings
from connector.errors import (
    AuthError,
    Disposition,
    InvalidResponseError,
    PlatformError,
    RetriableError,
)
from connector.platform.exchange import (
    Alarm,
    Deadline,
    SocketWatch,
    read_body,
    request_timeout,
    transport_errors,
    watchdog,
)
from connector.platform.wire import platform_transport

log = logging.getLogger("connector.platform")

TOKEN_HEADER = "Finovy-Access-Token"  # noqa: S105 -- a header name, not a secret
_MAX_BACKOFF_EXPONENT = 62  # 2**62 * any sane backoff_initial is far past any backoff_max
_LOGIN_MAX_BYTES = 64 * 2**10  # a login answer is a token and a message
_DECODER = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Fetch:
    """One successful get-rpt call."""

    raw: bytes  # the response body exactly as received (to be spooled)
    body: ParsedBody  # its reports (values as msgspec decodes them) and rejects
    fetched_at: float  # wall-clock epoch seconds when the response arrived
    duration: float  # seconds the call took, re-login included
    attempts: int = 1  # get-rpt calls made (a re-login retry makes it 2)

    @property
    def reports(self) -> list:
        """Deprecated (use `body`): the good reports, then the `Rejected` ones.

        `Normalizer.normalize_batch` routes a `Rejected` entry to its rejects as it is.
        """
        return self.body.reports + self.body.rejects if self.body.rejects else self.body.reports


def parse_response(raw: bytes) -> list:
    """Deprecated alias, kept only while tests/fuzz/fuzz_response.py calls it: use
    `report.parse_body`. Returns the good reports, then the `Rejected` ones (see Fetch.reports)."""
    body = parse_body(raw)
    return body.reports + body.rejects if body.rejects else body.reports


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as delay-seconds or an HTTP-date → seconds from `now` (epoch), or None."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    read_ahead: ReadAhead | None = None,
) -> ParsedBody:
    """The one decision on an HTTP answer: its reports, or the PlatformError it amounts to."""
    if 200 <= status < 300:
        return parse_body(body, read_ahead)
    if status in (401, 403):
        raise AuthError(f"get-rpt HTTP {status}: the platform rejected the token")
    if status in (408, 429) or status >= 500:
        now = time.time() if now is None else now
        retry_after = parse_retry_after(headers.get("retry-after"), now)
        raise RetriableError(f"get-rpt HTTP {status}", retry_after=retry_after)
    raise PlatformError(f"get-rpt HTTP {status}: unexpected status")


class PlatformClient:
    """get-rpt for one account over one pooled HTTP/1.1 connection. Thread-safe."""

    def __init__(
        self,
        platform: PlatformSettings,
        account: AccountSettings,
        account_index: int,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        read_ahead: Callable[[bytes, int], tuple[int, object] | None] | None = None,
        alarm: Alarm | None = None,
    ) -> None:
        """`read_ahead(body, fetched_at_ms)`: the account's records of a body as it arrives
        (RecordBuilder.read_ahead; see connector.codec.body), or None. `alarm`: the process's
        watchdog thread (None: one of the client's own)."""
        self.account = account.name
        self._read_ahead = read_ahead
        self._platform = platform
        self._uuid = account.uuid
        self._retsize = str(account.retsize or platform.retsize)
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()  # the token: single-flight login
        # One exchange at a time: the one connection allows no more, and httpcore 1.0.9's sync
        # pool can close a connection it already gave a waiting thread (encode/httpcore#1110).
        self._exchange = threading.Lock()
        self._watch = SocketWatch(alarm)  # the connection's socket, for the deadline's watchdog
        self._secret: SecretStr | None = None
        self._token: SecretStr | None = None
        self._token_at = 0.0
        if account.uses_login:
            self._secret = account_secret(account, account_index)
        else:
            self._token = account_token(account, account_index)
        # Requests are built by httpx and sent through `self._transport` directly: the client's
        # send() adds auth, redirect and cookie handling the platform never uses (≈ 0.4 ms/call).
        self._transport = transport or platform_transport(platform)
        self._http = httpx.Client(
            base_url=platform.base_url,
            timeout=httpx.Timeout(
                connect=platform.connect_timeout,
                read=platform.read_timeout,
                write=platform.read_timeout,
                pool=platform.connect_timeout + platform.read_timeout,
            ),
            headers={"User-Agent": f"rpt-connector/{__version__}"},
            transport=self._transport,
            trust_env=False,  # proxies: chosen once by platform_transport
        )
        self._request: tuple[str, httpx.Request] | None = None  # (token, the get-rpt request)

    def __repr__(self) -> str:
        return f"PlatformClient(account={self.account!r}, base_url={self._platform.base_url!r})"

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fetch(self, read_ahead: bool = True) -> Fetch:
        """One get-rpt call (plus one re-login and retry if a login token was rejected).

        Returns or raises within `platform.request_timeout`, logins included. `read_ahead`:
        hand the body to the read-ahead, if there is one (the fetcher says no while the spool
        would not keep the records in memory anyway).
        """
        started = self._clock()
        deadline = Deadline(self._platform.request_timeout, self._clock)
        token = self._current_token(deadline)
        attempts = 1
        try:
            raw, body, fetched_at = self._get_rpt(token, deadline, read_ahead)
        except AuthError:
            if self._secret is None:
                raise
            log.warning("account %s: token rejected, logging in again (attempt 2)", self.account)
            token = self._relogin(stale=token, deadline=deadline)
            attempts = 2
            raw, body, fetched_at = self._get_rpt(token, deadline, read_ahead)
        return Fetch(raw, body, fetched_at, self._clock() - started, attempts)

    def close(self) -> None:
        self._http.close()  # and its transport
        if self._watch.owns_alarm:
            self._watch.alarm.close()  # its own watchdog thread ends (a shared one goes on)

    def _get_rpt(
        self, token: SecretStr, deadline: Deadline, read_ahead: bool = False
    ) -> tuple[bytes, ParsedBody, float]:
        """The body, what it is, and when it arrived (wall clock: the records' fetched_at)."""
        with self._exchange:
            request = self._get_rpt_request(token)
            status, answer_headers, raw = self._send(
                "get-rpt", request, self._platform.max_response_bytes, deadline
            )
        now, ahead = self._wall_clock(), None
        if read_ahead and self._read_ahead is not None:
            records, fetched_at_ms = self._read_ahead, round(now * 1000)
            ahead = lambda body: records(body, fetched_at_ms)  # noqa: E731
        return raw, classify(status, answer_headers, raw, now=now, read_ahead=ahead), now

    def _get_rpt_request(self, token: SecretStr) -> httpx.Request:
        """The get-rpt request, built once per token: every call sends the same bytes."""
        secret = token.get_secret_value()
        if self._request is None or self._request[0] != secret:
            retsize = {"retsize": self._retsize}
            if self._platform.method == "GET":
                method, options = "GET", {"params": retsize}
            else:
                method, options = "POST", {"json": retsize}
            request = self._http.build_request(
                method, self._platform.path, headers={TOKEN_HEADER: secret}, **options
            )
            self._request = (secret, request)
        return self._request[1]

    def _send(
        self, what: str, request: httpx.Request, limit: int, deadline: Deadline
    ) -> tuple[int, httpx.Headers, bytes]:
        """One request and its streamed body, all within `deadline` (see platform.exchange)."""
        with watchdog(deadline, self._watch) as fired:
            timeout = request_timeout(self._http.timeout, deadline)
            request.extensions = {"timeout": timeout.as_dict(), "trace": self._watch.trace}
            with transport_errors(what, deadline, fired):
                response = self._transport.handle_request(request)
            try:
                raw = read_body(response, limit, deadline, fired, what)
            finally:
                response.close()
        return response.status_code, response.headers, raw

    def _current_token(self, deadline: Deadline) -> SecretStr:
        if self._secret is None:
            assert self._token is not None
            return self._token
        with self._lock:
            expired = self._clock() - self._token_at >= self._platform.token_ttl
            if self._token is None or expired:
                self._store_token(self._login(deadline))
            return self._token

    def _relogin(self, stale: SecretStr, deadline: Deadline) -> SecretStr:
        """Single-flight: whoever takes the lock first logs in; the others reuse its token."""
        with self._lock:
            assert self._token is not None
            if self._token.get_secret_value() == stale.get_secret_value():
                self._store_token(self._login(deadline))
            return self._token

    def _store_token(self, token: SecretStr) -> None:
        self._token, self._token_at = token, self._clock()

    def _login(self, deadline: Deadline) -> SecretStr:
        assert self._secret is not None
        payload = {"uuid": self._uuid, "secret": self._secret.get_secret_value()}
        try:
            with self._exchange:
                request = self._http.build_request("POST", self._platform.login_path, json=payload)
                status, headers, raw = self._send("login", request, _LOGIN_MAX_BYTES, deadline)
        except InvalidResponseError as exc:  # nothing destructive about a login: just retry
            raise RetriableError(str(exc)) from exc
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(headers.get("retry-after"), self._wall_clock())
            raise RetriableError(f"login HTTP {status}", retry_after=retry_after)
        token = _login_token(status, raw)
        log.info("account %s: logged in", self.account)
        return token


def _login_token(status: int, raw: bytes) -> SecretStr:
    """The token from a login answer `{"code": 0, "data": "<token>", ...}`, else AuthError."""
    if status != 200:
        raise AuthError(f"login HTTP {status}")
    try:
        body = _DECODER.decode(raw)
    except UNDECODABLE as exc:
        raise AuthError("login answer is not JSON") from exc
    if not isinstance(body, dict):
        raise AuthError("login answer is not a JSON object")
    token = body.get("data")
    if result_code(body.get("code")) != 0 or not isinstance(token, str) or not token:
        message = decode_desc(body.get("msg"))[:200]
        raise AuthError(f"login failed: code {body.get('code')!r}: {message}")
    return SecretStr(token)


class PollSchedule:
    """When to poll next: adaptive polling + bounded exponential backoff with full jitter."""

    def __init__(
        self,
        *,
        retsize: int,
        poll_interval: float,
        min_request_interval: float,
        backoff_initial: float,
        backoff_max: float,
        auth_failure_pause: float,
        rng: random.Random | None = None,
        account: str = "",
    ) -> None:
        self._retsize = retsize
        self._poll_interval = poll_interval
        self._min_interval = min_request_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._auth_pause = auth_failure_pause
        self._rng = rng or random.Random()
        self._account = account
        self.attempt = 0  # consecutive failures

    def after_batch(self, n_reports: int) -> float:
        """A full batch means more are waiting: poll again at once (rate-limited); else idle."""
        self.attempt = 0
        if n_reports >= self._retsize:
            return self._min_interval
        return max(self._poll_interval, self._min_interval)

    def after_error(self, error: PlatformError) -> float:
        """A PAUSE error → auth_failure_pause; others → full jitter, at least a (capped)
        Retry-After.

        PAUSE is AuthError and TLSVerificationError: retrying soon cannot help (the credential
        or the trust store must change), so they wait the long, fixed pause — the fetcher shows
        each as a state of its own (auth_paused, tls_paused), which readiness reflects.
        """
        self.attempt += 1
        if error.disposition is Disposition.PAUSE:
            delay = self._auth_pause
        else:
            exponent = min(self.attempt - 1, _MAX_BACKOFF_EXPONENT)
            delay = self._rng.random() * min(self._backoff_max, self._backoff_initial * 2**exponent)
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                # Honour the server, but a far-future HTTP-date must not park the account.
                delay = max(delay, min(retry_after, self._backoff_max))
        delay = max(delay, self._min_interval)
        log.warning(
            "account %s: %s: %s; attempt %d, next try in %.2fs",
            self._account, error.outcome, error, self.attempt, delay,
        )  # fmt: skip
        return delay
