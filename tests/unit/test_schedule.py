"""PollSchedule: adaptive polling, backoff with full jitter, and the long pause by disposition."""

from __future__ import annotations

import logging
import random

import pytest

from connector.errors import (
    AuthError,
    Disposition,
    InvalidResponseError,
    PlatformError,
    PlatformResultError,
    RetriableError,
    TLSVerificationError,
)
from connector.platform.client import PollSchedule


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
