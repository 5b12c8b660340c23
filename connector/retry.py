"""Waiting, in one place: the backoff every retry loop uses, and the deadline of a shutdown.

`Backoff` is full jitter (a uniform draw below min(cap, initial * 2**attempt)), so many
accounts retrying the same broker or disk do not synchronize. It takes its RNG and its wait
from the caller: tests hand in a seeded RNG and a wait that advances a fake clock, and every
wait is interruptible by the loop's stop `Event`, so a signal never waits out a backoff.

`Deadline` is a point in time on an injected monotonic clock. The shutdown (and a revoke in
cluster mode) creates one and passes it down through commit, abort, flush and join, so the
parts share one budget instead of each adding its own timeout.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
_MAX_EXPONENT = 30  # 2**30 * any sane initial delay is far beyond any cap


@dataclass(frozen=True)
class Deadline:
    """A moment on `clock`; `remaining()` never goes below zero."""

    at: float
    clock: Clock = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    @classmethod
    def never(cls, clock: Clock = time.monotonic) -> Deadline:
        return cls(float("inf"), clock)

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock())

    @property
    def expired(self) -> bool:
        return self.clock() >= self.at

    def cap(self, seconds: float) -> float:
        """`seconds`, or less if the deadline comes first: a per-call timeout under it."""
        return min(seconds, self.remaining())

    def earliest(self, other: Deadline) -> Deadline:
        return self if self.at <= other.at else other


class Backoff:
    """Full-jitter exponential backoff; `wait()` returns True when `stop` interrupted it."""

    def __init__(
        self,
        initial: float,
        cap: float,
        *,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError(f"backoff needs 0 < initial <= cap (got {initial}, {cap})")
        self.initial, self.cap = initial, cap
        self.attempt = 0  # consecutive failures so far
        self._rng = rng or random.Random()
        self._stop = stop or threading.Event()
        self._wait = wait or self._stop.wait

    def next_delay(self) -> float:
        """Count one failure and draw the pause before the next try."""
        exponent = min(self.attempt, _MAX_EXPONENT)
        self.attempt += 1
        return self._rng.random() * min(self.cap, self.initial * 2**exponent)

    def wait(self, at_least: float = 0.0) -> bool:
        """Pause after a failure (at least `at_least`, capped); True when stopped."""
        delay = max(self.next_delay(), min(at_least, self.cap))
        return bool(self._wait(delay)) or self._stop.is_set()

    def reset(self) -> None:
        self.attempt = 0
