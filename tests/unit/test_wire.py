"""connector.platform.wire: the http.client transport, against a scripted raw-socket server.

Real loopback sockets. Each scripted reply writes raw bytes (or closes), so the byte-level
cases http.client is lenient about — a header block cut off by the peer's close, a body
shorter than its Content-Length, an idle connection the server has closed — are driven here.
"""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
from collections.abc import Callable

import httpx
import pytest

from connector.config.settings import AccountSettings, PlatformSettings
from connector.errors import InvalidResponseError, RetriableError
from connector.platform.client import PlatformClient
from connector.platform.wire import WireTransport, _tls_context, environment_proxy

Reply = Callable[[socket.socket], bool]  # writes the answer; True: keep the connection open
EMPTY = b'{"result":0,"desc":"ok","rpts":[]}'


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def sends(data: bytes, keep: bool = True) -> Reply:
    def reply(conn: socket.socket) -> bool:
        conn.sendall(data)
        return keep

    return reply


class RawServer:
    """Serves the scripted replies in order, one per request, on whichever connection."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        for conn in self._open:
            conn.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while (request := _read_request(conn)) is not None:
                self.requests.append(request)
                if not self.replies or not self.replies.pop(0)(conn):
                    return


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = conn.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            while len(body) < int(line.split(b":")[1]):
                body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def serve() -> Callable[[list[Reply]], RawServer]:
    servers: list[RawServer] = []

    def start(replies: list[Reply]) -> RawServer:
        servers.append(RawServer(replies))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client(server: RawServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, transport=WireTransport(), timeout=5)


def test_answers_come_back_on_one_kept_alive_connection(serve) -> None:
    server = serve([sends(answer(b"one")), sends(answer(b"two", "X-Id: 7"))])
    with client(server) as http:
        assert http.post("/p", json={"retsize": "500"}).content == b"one"
        second = http.get("/p")
    assert (second.status_code, second.content, second.headers["x-id"]) == (200, b"two", "7")
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /p HTTP/1.1\r\n")
    assert b'\r\n\r\n{"retsize":"500"}' in server.requests[0]
    assert server.requests[1].startswith(b"GET /p HTTP/1.1\r\n")


def test_an_idle_connection_the_server_closed_is_replaced_not_failed(serve) -> None:
    # The platform's keep-alive timeout: it answers, then closes the idle connection.
    server = serve([sends(answer(b"one"), keep=False), sends(answer(b"two"))])
    with client(server) as http:
        assert http.get("/p").content == b"one"
        _wait(lambda: _closed_by_peer(http))
        assert http.get("/p").content == b"two"
    assert server.connections == 2
    assert len(server.requests) == 2  # no request was sent twice


def test_connection_close_from_the_server_means_a_new_connection(serve) -> None:
    server = serve([sends(answer(b"one", "Connection: close")), sends(answer(b"two"))])
    with client(server) as http:
        assert http.get("/p").content == b"one"
        assert http.get("/p").content == b"two"
    assert server.connections == 2


def test_a_header_block_cut_off_by_the_peer_is_an_error_not_an_answer(serve) -> None:
    # http.client alone would take the close for the end of the headers: a complete 200.
    server = serve([sends(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nX-Half", keep=False)])
    with client(server) as http, pytest.raises(httpx.RemoteProtocolError, match="header block"):
        http.get("/p")


def test_a_status_line_cut_off_by_the_peer_is_an_error(serve) -> None:
    server = serve([sends(b"HTTP/1.1 20", keep=False)])
    with client(server) as http, pytest.raises(httpx.RemoteProtocolError):
        http.get("/p")


def test_no_answer_at_all_is_a_remote_protocol_error(serve) -> None:
    server = serve([sends(b"", keep=False)])
    with client(server) as http, pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        http.get("/p")


def test_a_body_shorter_than_its_length_is_an_error_after_the_bytes_that_came(serve) -> None:
    server = serve([sends(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 30, False)])
    with client(server) as http, http.stream("GET", "/p") as response:
        got = b""
        with pytest.raises(httpx.RemoteProtocolError, match="70 bytes missing"):
            for chunk in response.iter_raw():
                got += chunk
    assert got == b"x" * 30


def test_chunked_and_gzipped_bodies_are_decoded(serve) -> None:
    packed = gzip.compress(b'{"result":0}')
    chunked = (
        b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (packed[:5], packed[5:])) + b"0\r\n\r\n"
    )
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
    server = serve([sends(head + chunked), sends(answer(b"after"))])
    with client(server) as http:
        assert http.get("/p").content == b'{"result":0}'
        assert http.get("/p").content == b"after"  # the chunked answer left the connection clean
    assert server.connections == 1


def test_a_body_up_to_the_close_is_complete(serve) -> None:
    server = serve([sends(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", keep=False)])
    with client(server) as http:
        assert http.get("/p").content == b"until the end"


def test_a_refused_connection_is_a_connect_error() -> None:
    port = _free_port()
    with httpx.Client(transport=WireTransport()) as http, pytest.raises(httpx.ConnectError):
        http.get(f"http://127.0.0.1:{port}/p")


def test_a_silent_server_is_a_read_timeout(serve) -> None:
    server = serve([lambda conn: True])  # reads the request, never answers
    http = httpx.Client(base_url=server.base_url, transport=WireTransport(), timeout=0.3)
    with http, pytest.raises(httpx.ReadTimeout):
        http.get("/p")


def test_a_scheme_other_than_http_is_refused() -> None:
    with httpx.Client(transport=WireTransport()) as http, pytest.raises(httpx.UnsupportedProtocol):
        http.get("ftp://127.0.0.1/p")


def test_the_platform_client_fetches_through_it_and_survives_an_idle_close(
    serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RPT_WIRE_TOKEN", "wire-token")
    batch = b'{"result":0,"desc":"ok","rpts":[{"msgid":9223372045854775808,"custid":"c1"}]}'
    server = serve([sends(answer(batch), keep=False), sends(answer(EMPTY))])
    account = AccountSettings(name="main", token_env="RPT_WIRE_TOKEN")
    with PlatformClient(PlatformSettings(base_url=server.base_url), account, 0) as platform:
        assert isinstance(platform._transport, WireTransport)
        first = platform.fetch()
        _wait(lambda: _closed_by_peer(platform._http))
        second = platform.fetch()
    assert (first.raw, first.body.count, second.body.count) == (batch, 1, 0)
    assert b"Finovy-Access-Token: wire-token\r\n" in server.requests[0]
    assert server.requests[0] == server.requests[1]  # the same request bytes every call


def test_a_cut_header_block_is_a_retriable_fetch_failure(serve, monkeypatch) -> None:
    monkeypatch.setenv("RPT_WIRE_TOKEN", "wire-token")
    server = serve([sends(b"HTTP/1.1 200 OK\r\nContent-Le", keep=False)])
    account = AccountSettings(name="main", token_env="RPT_WIRE_TOKEN")
    platform = PlatformClient(PlatformSettings(base_url=server.base_url), account, 0)
    with platform, pytest.raises(RetriableError, match="get-rpt failed: RemoteProtocolError"):
        platform.fetch()


def test_a_cut_body_keeps_its_bytes_through_the_platform_client(serve, monkeypatch) -> None:
    monkeypatch.setenv("RPT_WIRE_TOKEN", "wire-token")
    server = serve(
        [sends(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + b'{"result":0', False)]
    )
    account = AccountSettings(name="main", token_env="RPT_WIRE_TOKEN")
    platform = PlatformClient(PlatformSettings(base_url=server.base_url), account, 0)
    with platform, pytest.raises(InvalidResponseError, match="cut off after 11 bytes") as caught:
        platform.fetch()
    assert caught.value.raw == b'{"result":0'


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({}, "http://platform.example:8080", None),
        ({"HTTP_PROXY": "http://proxy:3128"}, "http://platform.example", "http://proxy:3128"),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://platform.example", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://platform.example", "http://proxy:3128"),
        ({"ALL_PROXY": "http://proxy:1"}, "https://platform.example", "http://proxy:1"),
        (
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "platform.example"},
            "https://platform.example",
            None,
        ),
    ],
)
def test_a_proxy_in_the_environment_is_found(env, url, expected, monkeypatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert environment_proxy(url) == expected


def test_with_a_proxy_the_platform_client_uses_httpx_s_transport(monkeypatch) -> None:
    monkeypatch.setenv("RPT_WIRE_TOKEN", "wire-token")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    account = AccountSettings(name="main", token_env="RPT_WIRE_TOKEN")
    settings = PlatformSettings(base_url="http://platform.example")
    with PlatformClient(settings, account, 0) as platform:
        assert type(platform._transport) is httpx.HTTPTransport


def _closed_by_peer(http: httpx.Client) -> bool:
    connection = http._transport._connection  # type: ignore[attr-defined]
    if connection is None or connection.sock is None:
        return True
    connection.sock.setblocking(False)
    try:
        return connection.sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    finally:
        connection.sock.setblocking(True)


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        deadline.wait(0.01)
    raise AssertionError("timed out waiting")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_client_of_the_same_tls_settings_shares_one_tls_context() -> None:
    """Loading the roots costs ~13 ms and a copy of the store per context: 1,000 accounts
    made one each at start. Same settings, same context; other settings, another one."""
    https = PlatformSettings(base_url="https://platform.test")
    one, two = _tls_context(https), _tls_context(https)  # what platform_transport hands in
    assert one is two and one.verify_mode == ssl.CERT_REQUIRED
    insecure = PlatformSettings(base_url="https://platform.test", verify_tls=False)
    assert _tls_context(insecure) is not one
    assert _tls_context(insecure).verify_mode == ssl.CERT_NONE


def test_the_proxy_is_worked_out_again_when_its_variables_change(monkeypatch) -> None:
    """Cached per URL and proxy variables (urllib walks the whole environment, once per
    account's client otherwise), never past a change of them."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert environment_proxy("http://cached.example") is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert environment_proxy("http://cached.example") == "http://proxy:3128"
