"""The get-rpt client without a network: classification, decoding, login, schedule."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import msgspec
import pytest
from fixtures import GET_RPT_PATH, LOGIN_PATH, SEED_RESPONSE

from connector.config.settings import AccountSettings, PlatformSettings
from connector.errors import (
    AuthError,
    ConfigError,
    InvalidResponseError,
    PlatformResultError,
    RetriableError,
)
from connector.platform.client import (
    TOKEN_HEADER,
    PlatformClient,
)

STATIC_TOKEN = "static-tok-4vL4rcNGNcgx5v0RLCcFew"
SECRET = "login-secret-Zx9qW"
OK_DESC = "%e6%88%90%e5%8a%9f"
AUTH_DESC_UTF8 = quote("身份认证失败")


def body(rpts: list | None = None, result: object = 0, desc: str = OK_DESC) -> bytes:
    return json.dumps({"result": result, "desc": desc, "rpts": rpts or []}).encode()


def settings(**overrides: object) -> PlatformSettings:
    return PlatformSettings(base_url="http://platform.test", **overrides)


@pytest.fixture
def static_account(monkeypatch: pytest.MonkeyPatch) -> AccountSettings:
    monkeypatch.setenv("RPT_TEST_TOKEN", STATIC_TOKEN)
    return AccountSettings(name="static", token_env="RPT_TEST_TOKEN")


@pytest.fixture
def login_account(monkeypatch: pytest.MonkeyPatch) -> AccountSettings:
    monkeypatch.setenv("RPT_TEST_SECRET", SECRET)
    return AccountSettings(name="login", uuid="uuid-1", secret_env="RPT_TEST_SECRET")


class FakePlatform:
    """A MockTransport handler: login issues tok-1, tok-2, ...; get-rpt answers `answer()`."""

    def __init__(self, answer: Callable[[], httpx.Response] | None = None) -> None:
        self.answer = answer or (lambda: httpx.Response(200, content=body([{"msgid": 1}])))
        self.requests: list[httpx.Request] = []
        self.logins = 0
        self.valid = {STATIC_TOKEN}
        self.on_stale: Callable[[], None] = lambda: None
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        if request.url.path == LOGIN_PATH:
            return self._login(json.loads(request.content))
        if request.headers.get(TOKEN_HEADER) not in self.valid:
            self.on_stale()
            return httpx.Response(200, content=body(result=401, desc=AUTH_DESC_UTF8))
        return self.answer()

    def _login(self, payload: dict) -> httpx.Response:
        if payload != {"uuid": "uuid-1", "secret": SECRET}:
            return httpx.Response(200, json={"code": 401, "data": None, "msg": "bad"})
        with self._lock:
            self.logins += 1
            token = f"tok-{self.logins}"
            self.valid.add(token)
        return httpx.Response(200, json={"code": 0, "data": token, "msg": "success"})

    def get_rpt_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != LOGIN_PATH]


def client_for(
    account: AccountSettings, fake: Callable[[httpx.Request], httpx.Response], **kwargs: object
) -> PlatformClient:
    platform = kwargs.pop("platform", settings())
    return PlatformClient(platform, account, 0, transport=httpx.MockTransport(fake), **kwargs)


# --- the client ----------------------------------------------------------------------------


def test_post_sends_the_token_header_and_retsize_as_a_string(
    static_account: AccountSettings,
) -> None:
    fake = FakePlatform()
    with client_for(static_account, fake) as client:
        fetch = client.fetch()
    (request,) = fake.requests
    assert (request.method, request.url.path) == ("POST", GET_RPT_PATH)
    assert request.headers[TOKEN_HEADER] == STATIC_TOKEN
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"retsize": "500"}
    assert fetch.reports == [{"msgid": 1}]
    assert fetch.raw == body([{"msgid": 1}])
    assert fetch.attempts == 1


def test_get_mode_sends_retsize_in_the_query_with_the_account_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RPT_TEST_TOKEN", STATIC_TOKEN)
    account = AccountSettings(name="a", token_env="RPT_TEST_TOKEN", retsize=120)
    fake = FakePlatform()
    platform = settings(method="GET", path="/other/get-rpt")
    with client_for(account, fake, platform=platform) as client:
        client.fetch()
    (request,) = fake.requests
    assert (request.method, request.url.path) == ("GET", "/other/get-rpt")
    assert request.url.params["retsize"] == "120"
    assert request.content == b""


def test_fetch_times_the_call_with_the_injected_clocks(static_account: AccountSettings) -> None:
    now = [100.0]

    def slow_answer() -> httpx.Response:
        now[0] += 2.5
        return httpx.Response(200, content=body([]))

    fake = FakePlatform(slow_answer)
    with client_for(static_account, fake, clock=lambda: now[0], wall_clock=lambda: 1e9) as client:
        fetch = client.fetch()
    assert (fetch.duration, fetch.fetched_at) == (2.5, 1e9)


def test_a_static_token_rejected_is_an_auth_error_without_retry(
    static_account: AccountSettings,
) -> None:
    fake = FakePlatform()
    fake.valid.clear()
    with client_for(static_account, fake) as client, pytest.raises(AuthError):
        client.fetch()
    assert len(fake.requests) == 1


def test_login_happens_once_then_the_token_is_reused(login_account: AccountSettings) -> None:
    fake = FakePlatform()
    with client_for(login_account, fake) as client:
        client.fetch()
        client.fetch()
    assert fake.logins == 1
    assert [r.headers[TOKEN_HEADER] for r in fake.get_rpt_requests()] == ["tok-1", "tok-1"]
    assert json.loads(fake.requests[0].content) == {"uuid": "uuid-1", "secret": SECRET}


def test_a_rejected_login_token_triggers_one_login_and_a_retry(
    login_account: AccountSettings,
) -> None:
    fake = FakePlatform()
    with client_for(login_account, fake) as client:
        client.fetch()
        fake.valid.discard("tok-1")  # the platform expired it early
        fetch = client.fetch()
    assert fake.logins == 2
    assert fetch.attempts == 2
    assert [r.headers[TOKEN_HEADER] for r in fake.get_rpt_requests()] == ["tok-1", "tok-1", "tok-2"]


def test_if_the_fresh_token_is_rejected_too_it_is_an_auth_error(
    login_account: AccountSettings,
) -> None:
    fake = FakePlatform(lambda: httpx.Response(403))
    with client_for(login_account, fake) as client, pytest.raises(AuthError):
        client.fetch()
    assert fake.logins == 2
    assert len(fake.get_rpt_requests()) == 2


def test_concurrent_callers_with_a_stale_token_log_in_once(login_account: AccountSettings) -> None:
    fake = FakePlatform()
    with client_for(login_account, fake) as client:
        client.fetch()
        fake.valid.discard("tok-1")
        # The first stale answer is slow, so the other callers take the stale token meanwhile.
        stale_answers = []

        def slow_first() -> None:
            stale_answers.append(1)
            if len(stale_answers) == 1:
                threading.Event().wait(0.3)

        fake.on_stale = slow_first
        with ThreadPoolExecutor(4) as pool:
            attempts = [f.attempts for f in pool.map(lambda _: client.fetch(), range(4))]
    assert attempts.count(2) >= 2  # several callers were turned away with tok-1...
    assert fake.logins == 2  # ...and only one of them logged in again


def test_the_token_is_renewed_when_token_ttl_has_elapsed(login_account: AccountSettings) -> None:
    now = [0.0]
    fake = FakePlatform()
    platform = settings(token_ttl=10)
    with client_for(login_account, fake, platform=platform, clock=lambda: now[0]) as client:
        client.fetch()
        now[0] = 9.0
        client.fetch()
        now[0] = 10.5
        client.fetch()
    assert [r.headers[TOKEN_HEADER] for r in fake.get_rpt_requests()] == ["tok-1", "tok-1", "tok-2"]


def test_a_refused_login_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPT_TEST_SECRET", "wrong-secret-value")
    account = AccountSettings(name="a", uuid="uuid-1", secret_env="RPT_TEST_SECRET")
    fake = FakePlatform()
    with client_for(account, fake) as client, pytest.raises(AuthError, match="login failed"):
        client.fetch()
    assert fake.get_rpt_requests() == []


def test_a_login_endpoint_that_is_down_is_retriable(login_account: AccountSettings) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "4"})

    with client_for(login_account, down) as client, pytest.raises(RetriableError) as caught:
        client.fetch()
    assert caught.value.retry_after == 4.0


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
def test_transport_failures_are_retriable_with_the_cause_kept(
    static_account: AccountSettings, exc: Exception
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    with client_for(static_account, fail) as client, pytest.raises(RetriableError) as caught:
        client.fetch()
    assert caught.value.__cause__ is exc


def test_an_oversized_body_is_invalid_and_is_not_read_to_the_end(
    static_account: AccountSettings,
) -> None:
    def endless() -> Iterator[bytes]:
        yield b'{"result":0,"rpts":['
        while True:
            yield b'{"msgid":1},' * 100

    fake = FakePlatform(lambda: httpx.Response(200, content=endless()))
    platform = settings(max_response_bytes=5000)
    with (
        client_for(static_account, fake, platform=platform) as client,
        pytest.raises(InvalidResponseError, match="max_response_bytes") as caught,
    ):
        client.fetch()
    assert len(caught.value.raw) == 5000
    assert caught.value.raw.startswith(b'{"result":0,"rpts":[{"msgid":1},')


def test_a_body_cut_off_mid_stream_is_invalid_with_what_arrived(
    static_account: AccountSettings,
) -> None:
    def cut() -> Iterator[bytes]:
        yield SEED_RESPONSE[:50]
        raise httpx.ReadError("connection reset")

    fake = FakePlatform(lambda: httpx.Response(200, content=cut()))
    with client_for(static_account, fake) as client, pytest.raises(InvalidResponseError) as caught:
        client.fetch()
    assert caught.value.raw == SEED_RESPONSE[:50]


def test_an_unreadable_ca_bundle_is_a_config_error(
    static_account: AccountSettings, tmp_path: Path
) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    for bundle in (tmp_path / "missing.pem", tmp_path / "ca.pem"):
        with pytest.raises(ConfigError, match=r"platform\.ca_bundle"):
            PlatformClient(settings(ca_bundle=bundle), static_account, 0)


def test_secrets_never_reach_logs_reprs_or_messages(
    login_account: AccountSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakePlatform(lambda: httpx.Response(403))
    errors = []
    with client_for(login_account, fake) as client:
        try:
            client.fetch()
        except AuthError as exc:
            errors.append(exc)
        shown = repr(client)
    assert fake.logins == 2
    for text in (caplog.text, shown, *map(str, errors), *map(repr, errors)):
        for secret in (SECRET, "tok-1", "tok-2"):
            assert secret not in text


def test_fetch_result_is_immutable(static_account: AccountSettings) -> None:
    with client_for(static_account, FakePlatform()) as client:
        fetch = client.fetch()
    with pytest.raises(AttributeError):
        fetch.raw = b""  # type: ignore[misc]
    assert msgspec.json.decode(fetch.raw)["rpts"] == fetch.reports


def test_a_fetch_carries_the_salvaged_body(static_account: AccountSettings) -> None:
    raw = b'{"result":0,"rpts":[{"msgid":1,"status":0},{"msgid":2,"pknum":01},{"msgid":3}]}'
    fake = FakePlatform(lambda: httpx.Response(200, content=raw))
    with client_for(static_account, fake) as client:
        fetch = client.fetch()
    assert fetch.raw == raw
    assert [r["msgid"] for r in fetch.body.reports] == [1, 3]
    (rejected,) = fetch.body.rejects
    assert (rejected.raw, rejected.error.field) == (b'{"msgid":2,"pknum":01}', "pknum")
    assert fetch.reports == [*fetch.body.reports, rejected]  # the deprecated view, still whole


def test_a_failure_code_with_reports_hands_the_body_to_the_caller(
    static_account: AccountSettings,
) -> None:
    raw = body([{"msgid": 5}], result=501, desc=quote("系统忙".encode("gb2312")))
    fake = FakePlatform(lambda: httpx.Response(200, content=raw))
    with client_for(static_account, fake) as client, pytest.raises(PlatformResultError) as caught:
        client.fetch()
    assert (caught.value.result, caught.value.desc, caught.value.raw) == (501, "系统忙", raw)


def test_a_read_ahead_gets_each_body_with_its_fetch_time(static_account: AccountSettings) -> None:
    """The records read ahead carry the fetch's own fetched_at (the spool entry's time); a
    body the read-ahead declines is judged as without one; a re-login retry reads again."""
    seen: list[tuple[bytes, int]] = []
    answers = iter([(3, "records"), None])

    def read_ahead(raw: bytes, fetched_at_ms: int) -> tuple[int, object] | None:
        seen.append((raw, fetched_at_ms))
        return next(answers)

    clock = iter([1_764_590_000.1234, 1_764_590_001.5])
    fake = FakePlatform(lambda: httpx.Response(200, content=body([{"msgid": 1}])))
    with client_for(
        static_account, fake, wall_clock=lambda: next(clock), read_ahead=read_ahead
    ) as client:
        first, second = client.fetch(), client.fetch()
    assert seen == [
        (body([{"msgid": 1}]), 1_764_590_000_123),
        (body([{"msgid": 1}]), 1_764_590_001_500),
    ]
    assert first.fetched_at == 1_764_590_000.1234
    assert (first.body.count, first.body.ahead) == (3, "records")
    assert second.fetched_at == 1_764_590_001.5
    assert (second.body.count, second.body.ahead, second.reports) == (1, None, [{"msgid": 1}])
