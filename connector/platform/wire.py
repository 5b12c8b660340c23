"""The platform's HTTP transport: one keep-alive HTTP/1.1 connection through `http.client`.

An `httpx.BaseTransport`, so `PlatformClient` builds its requests and reads its answers with
httpx as before (URL joining, default headers, timeouts, content decoding, the exchange's
streaming and deadline); only the bytes on the socket go through the standard library.
Measured (BENCHMARKS.md, "The fetch thread"): a 140 KB get-rpt answer costs ≈ 1.1 ms of CPU
through httpx's own transport (httpcore + h11, pure Python) against ≈ 0.3 ms through
`http.client`, whose status line and body reading are C; at 500 reports an answer that is
≈ 1.6 µs per report, the largest single cost left on the fetch thread.

What it keeps of httpcore's behaviour, because the exchange relies on it:

* the request's `timeout` extension: connect (TCP + TLS), write, and each read;
* the `trace` extension's "connection.connect_tcp.complete" / "connection.start_tls.complete"
  events with the stream, whose `get_extra_info("socket")` lets the watchdog shut the socket
  down (`connector.platform.exchange.SocketWatch`);
* httpx's exception types (ConnectTimeout, ConnectError, WriteTimeout, WriteError,
  ReadTimeout, ReadError, RemoteProtocolError), so `exchange.transport_errors` classifies a
  failure the same way whichever transport ran;
* an idle connection the server has closed (its keep-alive timeout) is noticed before it is
  reused and replaced, instead of failing the next call; a request is never sent twice.

It does not do proxies: `platform_transport` picks httpx's own transport when the environment
routes the platform's URL through one (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY).
"""

from __future__ import annotations

import functools
import http.client
import logging
import os
import select
import socket
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import certifi
import httpx

from connector.config.settings import PlatformSettings
from connector.errors import ConfigError

Connection = http.client.HTTPConnection

log = logging.getLogger("connector.platform")
_CHUNK = 64 * 1024
_TCP_DONE = "connection.connect_tcp.complete"
_TLS_DONE = "connection.start_tls.complete"


def _ssl_verify(platform: PlatformSettings) -> ssl.SSLContext | bool:
    return _verification(platform.verify_tls, platform.ca_bundle)


def _verification(verify_tls: bool, ca_bundle: Path | None) -> ssl.SSLContext | bool:
    if not verify_tls:
        return False
    if ca_bundle is not None:
        try:
            return ssl.create_default_context(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"platform.ca_bundle: cannot load {ca_bundle}: {exc}") from exc
    return True


def _tls_context(platform: PlatformSettings) -> ssl.SSLContext:
    """The TLS context httpx would make of the same settings (certifi's roots by default),
    made once per process for each (verify_tls, ca_bundle): loading the roots costs ~13 ms of
    CPU and a copy of the store per context, for every account at start."""
    return _shared_tls_context(platform.verify_tls, platform.ca_bundle)


@functools.lru_cache(maxsize=8)
def _shared_tls_context(verify_tls: bool, ca_bundle: Path | None) -> ssl.SSLContext:
    verify = _verification(verify_tls, ca_bundle)
    if isinstance(verify, ssl.SSLContext):
        return verify
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=certifi.where())


_PROXY_VARIABLES = tuple(
    name
    for scheme in ("http", "https", "all", "no")
    for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY")
)


def environment_proxy(base_url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY) routes the
    platform's URL through, as httpx reads it; None: a direct connection. Worked out once per
    URL and value of those variables: urllib walks the whole environment, and with a token
    variable per account that made 500 accounts' clients cost 1.1 s (O(accounts²))."""
    return _environment_proxy(base_url, tuple(os.environ.get(n) for n in _PROXY_VARIABLES))


@functools.lru_cache(maxsize=32)
def _environment_proxy(base_url: str, _variables: tuple[str | None, ...]) -> str | None:
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy


def platform_transport(platform: PlatformSettings) -> httpx.BaseTransport:
    """WireTransport (this module), or httpx's own transport where a proxy is in the way."""
    proxy = environment_proxy(platform.base_url)
    if proxy is None:
        return WireTransport(_tls_context(platform))
    log.info("platform calls go through the proxy the environment names (httpx transport)")
    return httpx.HTTPTransport(
        verify=_ssl_verify(platform),
        http1=True,
        http2=False,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        proxy=proxy,
    )


class _HeaderCut(http.client.HTTPException):
    """The connection ended inside the status line or the header block."""


class _Lines:
    """A response's reader while its head is read: notes a line cut off by the peer's close."""

    def __init__(self, fp: object) -> None:
        self.fp = fp
        self.cut = False

    def readline(self, limit: int = -1) -> bytes:
        line = self.fp.readline(limit)  # type: ignore[attr-defined]
        if not line.endswith(b"\n"):
            self.cut = True
        return line


class _Answer(http.client.HTTPResponse):
    """http.client's response, strict about its head: http.client takes the peer's close in
    the middle of the header block for its end (a cut-off 200 would look complete)."""

    def begin(self) -> None:
        fp, lines = self.fp, _Lines(self.fp)
        self.fp = lines  # type: ignore[assignment]
        try:
            super().begin()
        finally:
            self.fp = fp
        if lines.cut:
            raise _HeaderCut("the connection closed inside the response's header block")


class _Stream:
    """What the `trace` extension hands out: a stream that knows its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def get_extra_info(self, name: str) -> object:
        return self._sock if name == "socket" else None


class WireTransport(httpx.BaseTransport):
    """One connection at a time (the caller serializes its exchanges), kept alive."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context  # for https URLs; None: the default verified context
        self._connection: Connection | None = None
        self._origin: tuple[str, str, int] | None = None
        self._lock = threading.Lock()  # close() may come from another thread

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        connection = self._connect(request.url, timeouts.get("connect"), request.extensions)
        try:
            _send(connection, request, timeouts.get("write"))
            answer = _answer(connection, timeouts.get("read"))
        except BaseException:
            self._discard(connection)
            raise
        return httpx.Response(
            answer.status,
            headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.msg.items()],
            stream=_Body(self, connection, answer),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason.encode()},
        )

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _connect(self, url: httpx.URL, timeout: float | None, extensions: dict) -> Connection:
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        with self._lock:
            connection = self._connection
            if connection is not None and (origin != self._origin or _stale(connection)):
                connection.close()
                connection = self._connection = None
        if connection is not None:
            return connection
        connection = self._open(origin, timeout)
        trace = extensions.get("trace")
        if trace is not None:
            event = _TLS_DONE if origin[0] == "https" else _TCP_DONE
            trace(event, {"return_value": _Stream(connection.sock)})
        with self._lock:
            self._connection, self._origin = connection, origin
        return connection

    def _open(self, origin: tuple[str, str, int], timeout: float | None) -> Connection:
        scheme, host, port = origin
        if scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            connection: Connection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=context
            )
        elif scheme == "http":
            connection = Connection(host, port, timeout=timeout)
        else:
            raise httpx.UnsupportedProtocol(f"the URL scheme {scheme!r} is not http or https")
        connection.response_class = _Answer
        try:
            connection.connect()
            # The head and the body are two writes: without this, Nagle's algorithm holds the
            # body back until the head is acknowledged (a delayed ACK: up to 40 ms a call).
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:
            connection.close()
            raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
        except OSError as exc:  # refused, unreachable, TLS handshake or verification failure
            connection.close()
            raise httpx.ConnectError(str(exc)) from exc
        return connection

    def _discard(self, connection: Connection) -> None:
        with self._lock:
            if self._connection is connection:
                self._connection = None
        connection.close()


class _Body(httpx.SyncByteStream):
    """An answer's body, read as it arrives; the connection goes back once it is all read."""

    def __init__(
        self,
        transport: WireTransport,
        connection: Connection,
        answer: http.client.HTTPResponse,
    ) -> None:
        self._transport, self._connection, self._answer = transport, connection, answer
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        read = self._answer.read1
        while True:
            try:
                chunk = read(_CHUNK)
            except TimeoutError as exc:
                raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
            except http.client.IncompleteRead as exc:
                raise httpx.RemoteProtocolError(
                    f"peer closed connection without sending complete message body: {exc}"
                ) from exc
            except (http.client.HTTPException, ValueError) as exc:  # e.g. a bad chunk size
                raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc)) from exc
            if not chunk:
                missing = self._answer.length  # Content-Length bytes not yet read (else None)
                if missing:  # read1 returns b"" at the peer's close, short or not
                    raise httpx.RemoteProtocolError(
                        f"peer closed connection without sending complete message body: "
                        f"{missing} bytes missing"
                    )
                self._done = True
                return
            yield chunk

    def close(self) -> None:
        reusable = self._done and not self._answer.will_close  # read to its end, kept alive
        self._answer.close()
        if not reusable:
            self._transport._discard(self._connection)


def _send(connection: Connection, request: httpx.Request, timeout: float | None) -> None:
    connection.sock.settimeout(timeout)
    target = request.url.raw_path.decode("ascii")
    try:
        connection.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in request.headers.raw:  # Host, Content-Length ... as httpx built them
            connection.putheader(name, value)
        connection.endheaders(request.read() or None)
    except TimeoutError as exc:
        raise httpx.WriteTimeout(str(exc) or "write timed out") from exc
    except OSError as exc:
        raise httpx.WriteError(str(exc)) from exc


def _answer(connection: Connection, timeout: float | None) -> http.client.HTTPResponse:
    connection.sock.settimeout(timeout)
    try:
        return connection.getresponse()
    except TimeoutError as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
    except http.client.RemoteDisconnected as exc:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from exc
    except http.client.HTTPException as exc:  # a bad status line, a header line too long ...
        raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise httpx.ReadError(str(exc)) from exc


def _stale(connection: Connection) -> bool:
    """An idle connection with something to read has been closed by the server (or is out
    of step): it must not carry the next request."""
    sock = connection.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
