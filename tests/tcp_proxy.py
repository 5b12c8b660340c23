"""A loopback TCP proxy for fault injection: forward, black-hole, reset and heal connections.

The connector's Kafka clients talk to the broker through this proxy (the broker advertises the
proxy's address, see devkafka `advertise`), so a test can cut the network between them without
touching either process:

- `blackhole()`: a network partition. Nothing is read or written on any connection, so bytes
  in flight stay in the kernel buffers, as unacknowledged segments would; new connections are
  accepted and held open but silent (no upstream connection is made). A partition never
  corrupts a TCP stream, so neither does this: `heal()` carries on where the cut began.
- `reset()`: every connection gets a TCP RST (SO_LINGER 0), as a rebooted middlebox would send.
- `heal()`: forward again, held connections included.

Each connection is two pump threads; every blocking call has a short timeout so mode changes,
`reset()` and `close()` take effect within a bounded time. A black-hole may be given a
duration after which it heals by itself, so a failing test never leaves a partition behind.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from types import TracebackType

_TICK_S = 0.05  # how often a waiting thread looks at the mode again
_CHUNK = 64 * 1024
_CONNECT_TIMEOUT_S = 5.0
_JOIN_TIMEOUT_S = 5.0


def _rst(sock: socket.socket) -> None:
    """Close so that the peer sees a reset rather than an orderly end of stream."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One accepted client connection and its upstream twin, pumped by two threads."""

    def __init__(self, proxy: TcpProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()
        self._ends = 0
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="tcp-proxy-link", daemon=True)

    def _run(self) -> None:
        if not self.proxy._wait_flowing(self.closed):
            return
        try:
            self.upstream = socket.create_connection(self.proxy.target, _CONNECT_TIMEOUT_S)
        except OSError:
            self.reset()  # what the client would see from a refused connection
            return
        self.client.settimeout(_TICK_S)
        self.upstream.settimeout(_TICK_S)
        back = threading.Thread(
            target=self._pump, args=(self.upstream, self.client), name="tcp-proxy-pump", daemon=True
        )
        back.start()
        self._pump(self.client, self.upstream)
        back.join(_JOIN_TIMEOUT_S)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copy source → sink while flowing; pass an end of stream on as a half-close."""
        while self.proxy._wait_flowing(self.closed):
            try:
                data = source.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            # Read just as the cut began: hold it, as the network would, until healed.
            if not self.proxy._wait_flowing(self.closed):
                break
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                self._one_end_done()
                return
            if not self._send(sink, data):
                break
            self.proxy._count_bytes(len(data))
        self.reset()

    def _send(self, sink: socket.socket, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            if self.closed.is_set():
                return False
            try:
                view = view[sink.send(view) :]
            except TimeoutError:
                continue
            except OSError:
                return False
        return True

    def _one_end_done(self) -> None:
        with self._lock:
            self._ends += 1
            both = self._ends == 2
        if both:
            self.close()

    def reset(self) -> None:
        self.closed.set()
        _rst(self.client)
        if self.upstream is not None:
            _rst(self.upstream)

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()


class TcpProxy:
    """Listens on 127.0.0.1 and forwards each connection to `target` (host, port)."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(_TICK_S)
        self.host, self.port = self._listener.getsockname()[:2]
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._heal_timer: threading.Timer | None = None
        self.accepted = 0
        self.forwarded_bytes = 0
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy-accept", daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ---- control

    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def blackhole(self, duration: float | None = None) -> None:
        """Stop all traffic; with `duration`, heal by itself after that many seconds."""
        self._cancel_timer()
        self._flowing.clear()
        if duration is not None:
            self._heal_timer = threading.Timer(duration, self.heal)
            self._heal_timer.daemon = True
            self._heal_timer.start()

    def heal(self) -> None:
        self._cancel_timer()
        self._flowing.set()

    def reset(self) -> int:
        """RST every open connection (new ones are served as the mode says); how many."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.reset()
        return len(links)

    @property
    def blackholed(self) -> bool:
        return not self._flowing.is_set()

    def open_connections(self) -> int:
        with self._lock:
            self._links = [link for link in self._links if not link.closed.is_set()]
            return len(self._links)

    def close(self) -> None:
        """Stop accepting, reset every connection, and wait (bounded) for the threads."""
        self._cancel_timer()
        self._stopped.set()
        self._flowing.set()  # wake waiting threads so they see the stop
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._acceptor.is_alive():
            self._acceptor.join(_JOIN_TIMEOUT_S)
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.reset()
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for link in links:
            link.thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def cut(self, duration: float | None = None) -> Iterator[None]:
        """A black-hole for the duration of a `with` block, healed whatever happens inside."""
        self.blackhole(duration)
        try:
            yield
        finally:
            self.heal()

    # ---- internals

    def _cancel_timer(self) -> None:
        timer, self._heal_timer = self._heal_timer, None
        if timer is not None:
            timer.cancel()

    def _wait_flowing(self, closed: threading.Event) -> bool:
        """Block while black-holed; False once the link or the proxy is closed."""
        while not self._flowing.wait(_TICK_S):
            if closed.is_set() or self._stopped.is_set():
                return False
        return not (closed.is_set() or self._stopped.is_set())

    def _count_bytes(self, count: int) -> None:
        with self._lock:
            self.forwarded_bytes += count

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            link = _Link(self, client)
            with self._lock:
                self.accepted += 1
                self._links.append(link)
            link.thread.start()
