"""One HTTP exchange with a total deadline (`platform.request_timeout`).

httpx's read timeout applies to each socket read, so a server that sends its headers and then
one byte a second keeps a call alive for ever. Three things bound an exchange here:

* each request's own timeouts are cut to the time left when it is built (connect, write, pool,
  and each read);
* the body is streamed and the time left is checked between chunks;
* a watchdog shuts the connection's socket down when the deadline passes, which wakes a read
  that is blocked (for headers or body) at once. The socket is learned through httpcore's
  `trace` extension when the (single, pooled) connection is made. The watchdog is one thread
  for every client of the process (`Alarm`), not a thread per client or a timer per call:
  arming it for an exchange costs a lock and a heap push.

A 2xx body that was cut off by the deadline, by the peer or by `max_response_bytes` is an
`InvalidResponseError` that keeps every byte that arrived; its message is the reason, and the
fetcher stores it as the spool entry's note (the dead letter's `error.message`).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from connector.errors import InvalidResponseError, RetriableError, TLSVerificationError

_SOCKET_EVENTS = ("connection.connect_tcp.complete", "connection.start_tls.complete")


class Deadline:
    """A total time budget for one exchange (monotonic seconds)."""

    def __init__(self, budget: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._end = clock() + budget

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        return self._clock() >= self._end


class Alarm:
    """One daemon thread that calls each armed function once its time has come.

    One serves every client of the process (the service hands it in; a client built alone has
    its own): arming costs a lock and a heap push, no thread start and, unless the new time is
    earlier than the one the thread sleeps until, no wake-up. A cancelled alarm stays in the
    heap until its time, and is skipped then. Times are `time.monotonic()`.
    """

    def __init__(self, name: str = "rpt-watchdog") -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._armed: dict[Callable[[], None], float] = {}  # what is armed, and for when
        self._order = itertools.count()
        self._sleeping_until: float | None = None  # None: waiting for an alarm to be armed
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def arm(self, seconds: float, fire: Callable[[], None]) -> None:
        at = time.monotonic() + seconds
        with self._cond:
            self._armed[fire] = at
            heapq.heappush(self._heap, (at, next(self._order), fire))
            if not self._started:
                self._started = True
                self._thread.start()
            elif self._sleeping_until is None or at < self._sleeping_until:
                self._cond.notify()

    def cancel(self, fire: Callable[[], None]) -> None:
        """Disarm `fire`, if it is still armed (no wake-up: see the class)."""
        with self._cond:
            self._armed.pop(fire, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._armed.clear()
            self._cond.notify()

    def _run(self) -> None:
        while (fire := self._next()) is not None:
            fire()

    def _next(self) -> Callable[[], None] | None:
        """Sleep until the earliest armed time; the function to call then (None once closed)."""
        with self._cond:
            while not self._closed:
                self._drop_cancelled()
                if not self._heap:
                    self._sleeping_until = None
                    self._cond.wait()
                    continue
                at, _, fire = self._heap[0]
                left = at - time.monotonic()
                if left <= 0:
                    heapq.heappop(self._heap)
                    del self._armed[fire]
                    return fire
                self._sleeping_until = at
                self._cond.wait(left)
            return None

    def _drop_cancelled(self) -> None:
        heap, armed = self._heap, self._armed
        while heap and armed.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)


class SocketWatch:
    """Remembers the socket of the client's one connection; can shut it down from any thread.

    Once the current exchange's deadline has passed (`expire`), a connection made after that
    moment is shut down as soon as it is known: a deadline that falls during the TCP connect
    must not leave the rest of the exchange unwatched.
    """

    def __init__(self, alarm: Alarm | None = None) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._expired = False
        # The process's watchdog thread if handed in, else one of its own (started lazily).
        self.alarm = alarm or Alarm()
        self.owns_alarm = alarm is None

    def trace(self, event: str, info: dict) -> None:
        """httpcore `trace` extension: note the socket when a connection is made."""
        if event in _SOCKET_EVENTS:
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            with self._lock:
                self._socket = sock
                expired = self._expired
            if expired:
                self.shut_down()

    def arm(self) -> None:
        """A new exchange begins: its deadline has not passed."""
        with self._lock:
            self._expired = False

    def expire(self) -> None:
        """The deadline passed: wake any read blocked on the connection (it then fails)."""
        with self._lock:
            self._expired = True
        self.shut_down()

    def shut_down(self) -> None:
        with self._lock:
            sock = self._socket
        if sock is None:
            return
        with contextlib.suppress(OSError):  # already closed, or detached by the TLS wrapper
            sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def watchdog(deadline: Deadline, watch: SocketWatch) -> Iterator[threading.Event]:
    """While inside, the deadline's expiry shuts the connection down; yields the 'fired' flag."""
    fired = threading.Event()
    guard = threading.Lock()
    done = False

    def expire() -> None:
        with guard:
            if done:
                return
            fired.set()
            watch.expire()

    watch.arm()
    watch.alarm.arm(deadline.remaining(), expire)
    try:
        yield fired
    finally:
        with guard:
            done = True
        watch.alarm.cancel(expire)
        watch.arm()  # a connection kept in the pool is not to be shut down later


def request_timeout(base: httpx.Timeout, deadline: Deadline) -> httpx.Timeout:
    """The client's timeouts, none longer than the time left (at least 1 ms: 0 means none)."""
    left = max(deadline.remaining(), 0.001)

    def cut(value: float | None) -> float:
        return left if value is None else min(value, left)

    return httpx.Timeout(
        connect=cut(base.connect), read=cut(base.read), write=cut(base.write), pool=cut(base.pool)
    )


def read_body(
    response: httpx.Response, limit: int, deadline: Deadline, fired: threading.Event, what: str
) -> bytes:
    """Stream the body up to `limit` bytes within the deadline.

    A 2xx body that is cut off, too big or late is an InvalidResponseError keeping what came;
    an error page that fails to arrive is only a RetriableError (its status says enough).
    """
    ok = response.is_success
    chunks: list[bytes] = []  # joined once at the end: no growing buffer, no second copy
    size = 0
    try:
        for chunk in response.iter_bytes():  # decoded, should the platform gzip it
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if ok:
                    message = f"{what} body exceeds max_response_bytes ({limit})"
                    raise InvalidResponseError(message, b"".join(chunks)[:limit])
                break
            if deadline.expired():
                raise _late(what, deadline, b"".join(chunks), ok)
    except httpx.HTTPError as exc:
        if fired.is_set() or deadline.expired():
            raise _late(what, deadline, b"".join(chunks), ok) from exc
        if ok:
            message = f"{what} body cut off after {size} bytes ({type(exc).__name__})"
            raise InvalidResponseError(message, b"".join(chunks)) from exc
        raise RetriableError(f"{what} HTTP {response.status_code}, body cut off") from exc
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _late(what: str, deadline: Deadline, partial: bytes, ok: bool) -> Exception:
    budget = f"request_timeout {deadline.budget:g}s exceeded"
    if ok:
        return InvalidResponseError(
            f"{what} body cut off after {len(partial)} bytes: {budget} while reading it", partial
        )
    return RetriableError(f"{what}: {budget} while reading an error page")


@contextmanager
def transport_errors(what: str, deadline: Deadline, fired: threading.Event) -> Iterator[None]:
    """Translate httpx transport failures into RetriableError (messages carry no headers)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        if deadline.expired():
            budget = f"request_timeout {deadline.budget:g}s"
            raise RetriableError(f"{what}: no answer within {budget}") from exc
        raise RetriableError(f"{what} timed out ({type(exc).__name__})") from exc
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            # Retrying cannot help: the trust store (platform.ca_bundle) must change.
            raise TLSVerificationError(f"{what}: TLS verification failed: {exc}") from exc
        raise RetriableError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    except httpx.TransportError as exc:
        if fired.is_set():
            budget = f"request_timeout {deadline.budget:g}s"
            raise RetriableError(f"{what}: no answer within {budget}") from exc
        raise RetriableError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
