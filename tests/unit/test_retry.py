"""Backoff (full jitter, cap, injected RNG and wait, interruptible) and Deadline."""

from __future__ import annotations

import random
import threading

import pytest

from connector.retry import Backoff, Deadline
from tests.fakes import FakeClock


def test_full_jitter_stays_under_the_doubling_cap() -> None:
    rng = random.Random(7)
    backoff = Backoff(0.5, 4.0, rng=rng, wait=lambda _d: False)
    expected_rng = random.Random(7)
    for ceiling in (0.5, 1.0, 2.0, 4.0, 4.0, 4.0):
        assert backoff.next_delay() == pytest.approx(expected_rng.random() * ceiling)
    assert backoff.attempt == 6
    backoff.reset()
    assert backoff.attempt == 0


def test_wait_uses_the_injected_wait_and_reports_a_stop() -> None:
    waited: list[float] = []
    stop = threading.Event()
    backoff = Backoff(1.0, 8.0, stop=stop, rng=random.Random(1), wait=waited.append)
    assert backoff.wait() is False
    stop.set()
    assert backoff.wait() is True
    assert len(waited) == 2 and all(0 <= d <= 8.0 for d in waited)


def test_wait_honours_a_minimum_but_not_beyond_the_cap() -> None:
    waited: list[float] = []
    backoff = Backoff(0.1, 2.0, rng=random.Random(1), wait=waited.append)
    backoff.wait(at_least=30.0)  # e.g. a far Retry-After
    assert waited == [2.0]


def test_a_stop_interrupts_a_real_wait_at_once() -> None:
    stop = threading.Event()
    stop.set()
    assert Backoff(3600.0, 3600.0, stop=stop).wait() is True  # would hang if not interruptible


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError, match="initial"):
        Backoff(2.0, 1.0)


def test_deadline_on_an_injected_clock() -> None:
    clock = FakeClock(frozen=True)
    deadline = Deadline.after(10.0, clock)
    assert deadline.remaining() == 10.0 and not deadline.expired
    assert deadline.cap(1.0) == 1.0
    clock.advance(9.5)
    assert deadline.cap(1.0) == pytest.approx(0.5)
    clock.advance(1.0)
    assert deadline.expired and deadline.remaining() == 0.0
    assert Deadline.after(1, clock).earliest(Deadline.never(clock)).at == clock() + 1
