"""The get-rpt client without a network: classification, decoding, login, schedule."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

import httpx
import msgspec
import pytest
from fixtures import GET_RPT_PATH, LOGIN_PATH, SEED_RESPONSE
from hypothesis import given
from hypothesis import strategies as st

from connector.config import AccountSettings, PlatformSettings
from connector.errors import (
    AuthError,
    ConfigError,
    Disposition,
    InvalidResponseError,
    PlatformError,
    PlatformResultError,
    RetriableError,
    TLSVerificationError,
)
from connector.platform import (
    TOKEN_HEADER,
    PlatformClient,
    PollSchedule,
    classify,
    parse_retry_after,
)
from connector.report import ParsedBody, parse_body

STATIC_TOKEN = "static-tok-4vL4rcNGNcgx5v0RLCcFew"
SECRET = "login-secret-Zx9qW"
OK_DESC = "%e6%88%90%e5%8a%9f"
AUTH_DESC_UTF8 = quote("身份认证失败")
BUSY_DESC_GB2312 = quote("系统繁忙".encode("gb2312"))


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


# --- parse_response / classify ------------------------------------------------------------


def test_the_seed_answer_parses_with_its_msgid_exact() -> None:
    reports = parse_body(SEED_RESPONSE).reports
    assert len(reports) == 1
    assert reports[0]["msgid"] == 9223372045854775808
    assert type(reports[0]["msgid"]) is int
    assert reports[0]["errcode"] == "DELIVRD"


def test_an_empty_batch_is_an_empty_list() -> None:
    assert classify(200, {}, body([])) == ParsedBody([], [])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        SEED_RESPONSE[:-40],
        b'{"desc":"ok","rpts":[]}',
        b'{"result":0,"rpts":{"msgid":1}}',
        b'{"result":0,"rpts":"[]"}',
        b'[{"result":0,"rpts":[]}]',
        b'{"result":"zero","rpts":[]}',
        b'{"result":0.0,"rpts":[]}',
    ],
)
def test_a_200_that_is_not_a_get_rpt_answer_is_invalid_and_keeps_the_bytes(raw: bytes) -> None:
    with pytest.raises(InvalidResponseError) as caught:
        classify(200, {}, raw)
    assert caught.value.raw == raw


@pytest.mark.parametrize("result", [401, "401"])
def test_result_401_is_an_auth_error_with_the_decoded_desc(result: object) -> None:
    with pytest.raises(AuthError, match="身份认证失败"):
        classify(200, {}, body(result=result, desc=AUTH_DESC_UTF8))


def test_another_result_is_a_platform_result_error_with_the_gb2312_desc_decoded() -> None:
    with pytest.raises(PlatformResultError) as caught:
        classify(200, {}, body(result="500", desc=BUSY_DESC_GB2312))
    assert (caught.value.result, caught.value.desc) == (500, "系统繁忙")
    assert caught.value.desc_raw == BUSY_DESC_GB2312  # the form as sent, kept
    assert "系统繁忙" in str(caught.value)
    assert caught.value.raw is None  # no reports came with it: nothing to keep


def test_a_string_result_zero_is_success() -> None:
    assert classify(200, {}, body([{"msgid": "7"}], result="0")).reports == [{"msgid": "7"}]


@pytest.mark.parametrize("status", [401, 403])
def test_http_401_and_403_are_auth_errors(status: int) -> None:
    with pytest.raises(AuthError):
        classify(status, {}, b"")


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retriable(status: int) -> None:
    with pytest.raises(RetriableError, match=str(status)) as caught:
        classify(status, {}, b"<html>oops</html>")
    assert caught.value.retry_after is None


def test_retry_after_seconds_is_carried() -> None:
    with pytest.raises(RetriableError) as caught:
        classify(429, {"retry-after": "7"}, b"")
    assert caught.value.retry_after == 7.0


def test_retry_after_http_date_is_relative_to_now() -> None:
    now = 1_700_000_000.0
    headers = {"retry-after": formatdate(now + 30, usegmt=True)}
    with pytest.raises(RetriableError) as caught:
        classify(503, headers, b"", now=now)
    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("soon", None), ("-5", 0.0), ("inf", None), ("1.5", 1.5)],
)
def test_retry_after_odd_values(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=0.0) == expected


def test_a_past_http_date_means_no_wait() -> None:
    assert parse_retry_after("Thu, 01 Jan 2015 00:00:00 GMT", now=1_700_000_000.0) == 0.0


@pytest.mark.parametrize("status", [400, 404, 405, 302])
def test_other_statuses_are_fatal_platform_errors(status: int) -> None:
    with pytest.raises(PlatformError, match=f"HTTP {status}") as caught:
        classify(status, {}, b"")
    assert not isinstance(caught.value, RetriableError | AuthError)


# --- precision (desc decoding: tests/unit/test_desc.py) ---------------------------------


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_msgids_of_any_size_survive_as_exact_ints(msgid: int) -> None:
    raw = b'{"result":0,"rpts":[{"msgid":%d},{"msgid":"%d"}]}' % (msgid, msgid)
    as_number, as_string = parse_body(raw).reports
    assert type(as_number["msgid"]) is int
    assert as_number["msgid"] == msgid
    assert as_string["msgid"] == str(msgid)


@pytest.mark.parametrize(
    "msgid", [9223372045854775808, -9223372036854775809, 18446744073709551615, 10**40 + 1]
)
def test_known_hard_msgids(msgid: int) -> None:
    assert parse_body(body([{"msgid": msgid}])).reports[0]["msgid"] == msgid


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


# --- the schedule ----------------------------------------------------------------------------


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def schedule(value: float = 0.999999, **overrides: float) -> PollSchedule:
    params = {
        "retsize": 500, "poll_interval": 5.0, "min_request_interval": 0.05,
        "backoff_initial": 0.5, "backoff_max": 60.0, "auth_failure_pause": 600.0,
    }  # fmt: skip
    return PollSchedule(**{**params, **overrides}, rng=FixedRandom(value))


def test_a_full_batch_polls_again_at_once_and_a_short_one_waits() -> None:
    s = schedule()
    assert s.after_batch(500) == 0.05
    assert s.after_batch(499) == 5.0
    assert s.after_batch(0) == 5.0


def test_backoff_doubles_up_to_the_cap_and_a_batch_resets_it() -> None:
    s = schedule()
    delays = [s.after_error(RetriableError("x")) for _ in range(9)]
    assert [round(d, 3) for d in delays] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert s.attempt == 9
    s.after_batch(3)
    assert s.attempt == 0
    assert round(s.after_error(PlatformResultError(500, "busy")), 3) == 0.5


def test_full_jitter_can_go_down_to_the_minimum_request_interval() -> None:
    assert schedule(0.0).after_error(RetriableError("x")) == 0.05


def test_retry_after_is_a_floor_but_never_past_backoff_max() -> None:
    assert schedule(0.0).after_error(RetriableError("x", retry_after=3.0)) == 3.0
    assert schedule(0.0).after_error(RetriableError("x", retry_after=86400.0)) == 60.0


def test_an_auth_failure_pauses_the_account() -> None:
    s = schedule()
    assert s.after_error(AuthError("no")) == 600.0
    assert s.attempt == 1


def test_a_tls_verification_failure_pauses_too_not_backs_off() -> None:
    # Its disposition is PAUSE: the trust store must change; a retry in seconds cannot help.
    s = schedule(0.0)  # a backoff would come out as the 0.05 s minimum here
    error = TLSVerificationError("get-rpt: TLS verification failed")
    assert error.disposition is Disposition.PAUSE
    assert [s.after_error(error) for _ in range(3)] == [600.0, 600.0, 600.0]


@pytest.mark.parametrize(
    "error",
    [InvalidResponseError("cut", b"{"), PlatformResultError(501, "busy", raw=b"{}")],
)
def test_bad_bodies_back_off_like_other_failures(error: PlatformError) -> None:
    assert schedule(0.0).after_error(error) == 0.05


def test_many_failures_do_not_overflow() -> None:
    s = schedule()
    for _ in range(3000):
        delay = s.after_error(InvalidResponseError("x", b""))
    assert delay == pytest.approx(60.0, rel=1e-5)


def test_retries_are_logged_with_the_attempt_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="connector.platform")
    s = PollSchedule(
        retsize=500, poll_interval=5, min_request_interval=0, backoff_initial=1,
        backoff_max=10, auth_failure_pause=60, rng=random.Random(1), account="acct7",
    )  # fmt: skip
    for _ in range(3):
        s.after_error(RetriableError("get-rpt HTTP 503"))
    assert "acct7" in caplog.text
    assert "attempt 3" in caplog.text


def test_fetch_result_is_immutable(static_account: AccountSettings) -> None:
    with client_for(static_account, FakePlatform()) as client:
        fetch = client.fetch()
    with pytest.raises(AttributeError):
        fetch.raw = b""  # type: ignore[misc]
    assert msgspec.json.decode(fetch.raw)["rpts"] == fetch.reports
