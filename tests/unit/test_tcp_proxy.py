"""The fault-injection proxy, with real sockets: an echo server behind it, clients in front."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from tcp_proxy import TcpProxy

WAIT_S = 10.0  # generous: only ever reached when something is broken


class EchoServer:
    """Echoes every byte back; counts the connections it accepted."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[TcpProxy]:
    with TcpProxy(("127.0.0.1", echo.port)) as running:
        yield running


def connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=WAIT_S)
    return sock


def receive(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def nothing_arrives(sock: socket.socket, within: float = 0.3) -> bool:
    sock.settimeout(within)
    try:
        sock.recv(1)
        return False
    except TimeoutError:
        return True
    finally:
        sock.settimeout(WAIT_S)


def test_forwards_both_ways_and_passes_an_end_of_stream_on(
    proxy: TcpProxy, echo: EchoServer
) -> None:
    payload = bytes(range(256)) * 1000
    with connect(proxy) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        assert receive(sock, len(payload) + 1) == payload  # + 1: the echoed end of stream
    assert echo.accepted == 1
    assert proxy.forwarded_bytes == 2 * len(payload)


def test_a_blackhole_holds_bytes_in_flight_and_heal_delivers_them_intact(
    proxy: TcpProxy,
) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"before")
        assert receive(sock, 6) == b"before"
        proxy.blackhole()
        sock.sendall(b"during the cut")
        assert nothing_arrives(sock)
        proxy.heal()
        assert receive(sock, 14) == b"during the cut"


def test_a_new_connection_during_a_blackhole_is_accepted_but_silent_until_healed(
    proxy: TcpProxy, echo: EchoServer
) -> None:
    proxy.blackhole()
    with connect(proxy) as sock:  # the connect itself succeeds
        sock.sendall(b"hello")
        assert nothing_arrives(sock)
        assert echo.accepted == 0  # nothing reached the far side
        assert proxy.accepted == 1
        proxy.heal()
        assert receive(sock, 5) == b"hello"
    assert echo.accepted == 1


def test_reset_sends_every_connection_a_reset_and_new_ones_are_served(proxy: TcpProxy) -> None:
    first, second = connect(proxy), connect(proxy)
    for sock in (first, second):
        sock.sendall(b"x")
        assert receive(sock, 1) == b"x"
    assert proxy.reset() == 2
    for sock in (first, second):
        with pytest.raises(ConnectionResetError):
            sock.sendall(b"y")
            sock.recv(1)
        sock.close()
    with connect(proxy) as sock:
        sock.sendall(b"z")
        assert receive(sock, 1) == b"z"


def test_reset_during_a_blackhole_drops_the_held_connections(proxy: TcpProxy) -> None:
    proxy.blackhole()
    with connect(proxy) as sock:
        threading.Event().wait(0.2)  # let the proxy register the accepted connection
        assert proxy.reset() == 1
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


def test_a_timed_blackhole_heals_by_itself(proxy: TcpProxy) -> None:
    with connect(proxy) as sock:
        proxy.blackhole(duration=0.5)
        assert proxy.blackholed
        sock.sendall(b"later")
        assert receive(sock, 5) == b"later"  # arrives once the timer healed the cut
    assert not proxy.blackholed


def test_cut_heals_even_when_the_block_fails(proxy: TcpProxy) -> None:
    with pytest.raises(RuntimeError), proxy.cut():
        assert proxy.blackholed
        raise RuntimeError("the test body failed")
    assert not proxy.blackholed


def test_an_unreachable_target_resets_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        dead_port = placeholder.getsockname()[1]
    with (
        TcpProxy(("127.0.0.1", dead_port)) as proxy,
        connect(proxy) as sock,
        pytest.raises(ConnectionResetError),
    ):
        sock.recv(1)


def test_close_is_bounded_and_refuses_new_connections(echo: EchoServer) -> None:
    proxy = TcpProxy(("127.0.0.1", echo.port)).start()
    held = connect(proxy)
    proxy.blackhole()
    proxy.close()  # returns although a connection is held in a black-hole
    with pytest.raises(OSError):
        held.sendall(b"x")
        held.recv(1)
    held.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=WAIT_S)
