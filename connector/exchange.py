"""One HTTP exchange with a total deadline (`platform.request_timeout`).

httpx's read timeout applies to each socket read, so a server that sends its headers and then
one byte a second keeps a call alive for ever. Three things bound an exchange here:

* each request's own timeouts are cut to the time left when it is built (connect, write, pool,
  and each read);
* the body is streamed and the time left is checked between chunks;
* a watchdog timer shuts the connection's socket down when the deadline passes, which wakes a
  read that is blocked (for headers or body) at once. The socket is learned through httpcore's
  `trace` extension when the (single, pooled) connection is made.

A 2xx body that was cut off by the deadline, by the peer or by `max_response_bytes` is an
`InvalidResponseError` that keeps every byte that arrived; its message is the reason, and the
fetcher stores it as the spool entry's note (the dead letter's `error.message`).
"""

from __future__ import annotations

import contextlib
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


class SocketWatch:
    """Remembers the socket of the client's one connection; can shut it down from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def trace(self, event: str, info: dict) -> None:
        """httpcore `trace` extension: note the socket when a connection is made."""
        if event in _SOCKET_EVENTS:
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            with self._lock:
                self._socket = sock

    def shut_down(self) -> None:
        """Wake any read blocked on the connection (it then fails; httpcore drops it)."""
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
            watch.shut_down()

    timer = threading.Timer(deadline.remaining(), expire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        with guard:
            done = True
        timer.cancel()


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
    buf = bytearray()
    try:
        for chunk in response.iter_bytes():
            buf += chunk
            if len(buf) > limit:
                if ok:
                    message = f"{what} body exceeds max_response_bytes ({limit})"
                    raise InvalidResponseError(message, bytes(buf[:limit]))
                break
            if deadline.expired():
                raise _late(what, deadline, bytes(buf), ok)
    except httpx.HTTPError as exc:
        if fired.is_set() or deadline.expired():
            raise _late(what, deadline, bytes(buf), ok) from exc
        if ok:
            message = f"{what} body cut off after {len(buf)} bytes ({type(exc).__name__})"
            raise InvalidResponseError(message, bytes(buf)) from exc
        raise RetriableError(f"{what} HTTP {response.status_code}, body cut off") from exc
    return bytes(buf)


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
