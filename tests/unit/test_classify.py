"""classify: the one decision on an HTTP answer (reports, or which PlatformError); exact msgids."""

from __future__ import annotations

import json
from email.utils import formatdate
from urllib.parse import quote

import pytest
from fixtures import SEED_RESPONSE
from hypothesis import given
from hypothesis import strategies as st

from connector.codec.report import ParsedBody, parse_body
from connector.errors import (
    AuthError,
    InvalidResponseError,
    PlatformError,
    PlatformResultError,
    RetriableError,
)
from connector.platform.client import classify, parse_retry_after

OK_DESC = "%e6%88%90%e5%8a%9f"
AUTH_DESC_UTF8 = quote("身份认证失败")
BUSY_DESC_GB2312 = quote("系统繁忙".encode("gb2312"))


def body(rpts: list | None = None, result: object = 0, desc: str = OK_DESC) -> bytes:
    return json.dumps({"result": result, "desc": desc, "rpts": rpts or []}).encode()


# --- classify ------------------------------------------------------------


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


def test_a_401_message_shows_the_desc_as_sent_when_it_was_guessed() -> None:
    encoded = quote("身份认证失败".encode("gb2312"))
    with pytest.raises(AuthError) as caught:
        classify(200, {}, body(result=401, desc=encoded))
    assert str(caught.value) == (
        f"get-rpt result 401: 身份认证失败 (desc as sent: {encoded}, read as gb2312)"
    )
