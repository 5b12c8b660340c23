"""platform.request_timeout: one get-rpt exchange has a total deadline, even against a drip.

httpx's read timeout is per socket read; these servers send a byte well within it, for ever.
Real loopback sockets (tests/hostile_platform.py), the real PlatformClient. No assertion on
tight timings: a drip without the deadline would last hours, so "it returned" is the proof;
the bounds below are loose.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import Path

import hostile_platform as hostile
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connector.config.settings import AccountSettings, PlatformSettings, settings_from_dict
from connector.errors import ConfigError, Disposition, InvalidResponseError, RetriableError
from connector.platform.client import PlatformClient
from connector.platform.exchange import Alarm, Deadline, SocketWatch, watchdog

TOKEN = "drip-token-1"
LOOSE = 60.0  # seconds: far above request_timeout, far below the drip's natural length


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> AccountSettings:
    monkeypatch.setenv("RPT_TEST_TOKEN", TOKEN)
    return AccountSettings(name="main", token_env="RPT_TEST_TOKEN")


def client(server: hostile.HostilePlatform, account: AccountSettings, **platform) -> PlatformClient:
    options = {"read_timeout": 5, "request_timeout": 1.5, **platform}
    settings = PlatformSettings(base_url=server.base_url, **options)
    return PlatformClient(settings, account, 0)


def test_a_dripped_body_is_cut_at_the_deadline_and_keeps_what_arrived(
    account: AccountSettings,
) -> None:
    answer = hostile.drip(hostile.Reports(), 50, interval=0.05, fast=300)
    assert len(answer.body) * 0.05 > 100  # undisturbed, this answer would take minutes
    with hostile.HostilePlatform([answer], token=TOKEN) as server, client(server, account) as c:
        started = time.monotonic()
        with pytest.raises(InvalidResponseError) as caught:
            c.fetch()
        elapsed = time.monotonic() - started
    error = caught.value
    assert error.disposition is Disposition.DEAD_LETTER
    received = len(error.raw)
    assert received >= 300  # the fast part at least
    assert error.raw == answer.body[:received]  # exactly the bytes that came, in order
    assert str(error).startswith(f"get-rpt body cut off after {received} bytes: ")
    assert "request_timeout 1.5s exceeded" in str(error)
    assert TOKEN not in str(error)
    assert elapsed < LOOSE


def test_dripped_headers_are_cut_by_the_watchdog(account: AccountSettings) -> None:
    # Not one body byte arrives: the per-read timeout never fires, the watchdog must.
    answer = hostile.drip_headers(hostile.Reports(), 5, interval=0.05)
    with hostile.HostilePlatform([answer], token=TOKEN) as server, client(server, account) as c:
        started = time.monotonic()
        with pytest.raises(RetriableError, match=r"get-rpt: no answer within request_timeout"):
            c.fetch()
        assert time.monotonic() - started < LOOSE
        assert answer.sent == 0


def test_the_next_fetch_after_a_deadline_works(account: AccountSettings) -> None:
    reports = hostile.Reports()
    script = [hostile.drip(reports, 20, interval=0.05), hostile.good(reports, 3)]
    with hostile.HostilePlatform(script, token=TOKEN) as server, client(server, account) as c:
        with pytest.raises(InvalidResponseError):
            c.fetch()
        fetch = c.fetch()
    assert [str(r["msgid"]) for r in fetch.body.reports] == script[1].msgids


def test_a_slow_but_finishing_answer_within_the_deadline_is_fine(account: AccountSettings) -> None:
    answer = hostile.drip(hostile.Reports(), 1, interval=0.002, fast=0)
    with (
        hostile.HostilePlatform([answer], token=TOKEN) as server,
        client(server, account, request_timeout=LOOSE - 1) as c,
    ):
        fetch = c.fetch()
    assert fetch.raw == answer.body


def test_the_login_exchange_has_the_deadline_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # The hostile server drips whatever it answers first; here that is the login.
    monkeypatch.setenv("RPT_TEST_SECRET", "s3cret-login")
    login = AccountSettings(name="main", uuid="u-1", secret_env="RPT_TEST_SECRET")
    answer = hostile.drip_headers(hostile.Reports(), 1, interval=0.05)
    with (
        hostile.HostilePlatform([answer], token="t", script_logins=True) as server,
        client(server, login) as c,
        pytest.raises(RetriableError) as caught,
    ):
        c.fetch()
    assert "login: no answer within request_timeout 1.5s" in str(caught.value)
    assert "s3cret-login" not in str(caught.value)


def test_a_mock_transport_body_is_checked_between_chunks() -> None:
    # No socket to shut down here: the elapsed-time check between chunks still cuts it.
    ticks = iter(range(100))
    clock = lambda: float(next(ticks))  # noqa: E731 -- one second per call

    def chunks():
        yield b'{"result":0,'
        yield b'"rpts":['
        yield b"]}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    account = AccountSettings(name="main", token_env="RPT_TEST_TOKEN_X")
    settings = PlatformSettings(base_url="http://platform.test", request_timeout=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RPT_TEST_TOKEN_X", "t")
        c = PlatformClient(
            settings, account, 0, transport=httpx.MockTransport(handler), clock=clock
        )
    with c, pytest.raises(InvalidResponseError, match="cut off after 12 bytes") as caught:
        c.fetch()
    assert caught.value.raw == b'{"result":0,'


def test_deadline_arithmetic() -> None:
    now = [100.0]
    deadline = Deadline(3.0, lambda: now[0])
    assert (deadline.remaining(), deadline.expired()) == (3.0, False)
    now[0] = 103.0
    assert (deadline.remaining(), deadline.expired()) == (0.0, True)


MINIMAL = {
    "accounts": [{"name": "main", "token_env": "X"}],
    "kafka": {"topic": "t", "producer": {"bootstrap.servers": "k:9092"}},
}


def test_request_timeout_defaults_below_shutdown_timeout() -> None:
    settings = settings_from_dict(MINIMAL)
    assert settings.platform.request_timeout == 20.0
    assert settings.platform.request_timeout < settings.shutdown_timeout


@pytest.mark.parametrize(("shutdown", "expected"), [("20s", 40 / 3), (6, 4.0), ("1m", 20.0)])
def test_unset_request_timeout_fits_a_short_shutdown_timeout(
    shutdown: object, expected: float
) -> None:
    # A configuration written before the key existed stays valid.
    settings = settings_from_dict({**MINIMAL, "shutdown_timeout": shutdown})
    assert settings.platform.request_timeout == pytest.approx(expected)


def test_the_environment_counts_for_the_default_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPT_SHUTDOWN_TIMEOUT", "9")
    assert settings_from_dict(MINIMAL).platform.request_timeout == pytest.approx(6.0)
    monkeypatch.setenv("RPT_PLATFORM__REQUEST_TIMEOUT", "3s")
    assert settings_from_dict(MINIMAL).platform.request_timeout == 3.0


def test_a_platform_section_given_as_an_object_keeps_its_request_timeout() -> None:
    platform = PlatformSettings(request_timeout=2)
    settings = settings_from_dict({**MINIMAL, "platform": platform, "shutdown_timeout": 3})
    assert settings.platform.request_timeout == 2.0
    unset = settings_from_dict({**MINIMAL, "platform": PlatformSettings(), "shutdown_timeout": 3})
    assert unset.platform.request_timeout == 2.0  # 2/3 of 3s


@pytest.mark.parametrize(
    ("platform", "shutdown"), [({"request_timeout": "30s"}, "30s"), ({"request_timeout": 45}, 10)]
)
def test_request_timeout_must_be_below_shutdown_timeout(platform: dict, shutdown: object) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict({**MINIMAL, "platform": platform, "shutdown_timeout": shutdown})
    message = str(caught.value)
    assert "platform.request_timeout" in message and "shutdown_timeout" in message


def test_request_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"platform\.request_timeout"):
        settings_from_dict({**MINIMAL, "platform": {"request_timeout": 0}})


class FakeStream:
    def __init__(self) -> None:
        self.sock = socket.socket()

    def get_extra_info(self, name: str) -> object:
        return self.sock if name == "socket" else None


def test_a_connection_made_after_the_deadline_is_shut_down_at_once() -> None:
    # The deadline fell during the TCP connect: the socket becomes known only afterwards.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        watch = SocketWatch()
        watch.arm()
        watch.expire()  # nothing to shut down yet
        stream = FakeStream()
        stream.sock.connect(listener.getsockname())
        watch.trace("connection.connect_tcp.complete", {"return_value": stream})
        stream.sock.settimeout(5)
        assert stream.sock.recv(1) == b""  # shut down: a read returns at once, nothing blocks
        stream.sock.close()


def test_after_an_exchange_a_pooled_connection_is_left_alone() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        watch = SocketWatch()
        stream = FakeStream()
        stream.sock.connect(listener.getsockname())
        with watchdog(Deadline(60.0), watch):
            watch.trace("connection.connect_tcp.complete", {"return_value": stream})
        watch.trace("connection.connect_tcp.complete", {"return_value": stream})
        stream.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):  # still open: nothing shut it down
            stream.sock.recv(1)
        stream.sock.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 that is its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(
    ("builder", "error", "reason"),
    [
        (hostile.drip, InvalidResponseError, "get-rpt body cut off after"),
        (hostile.drip_headers, RetriableError, "get-rpt: no answer within"),  # the watchdog
    ],
)
def test_the_deadline_holds_over_tls(
    builder, error: type, reason: str, account: AccountSettings, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    answer = builder(hostile.Reports(), 20, interval=0.05)
    with (
        hostile.HostilePlatform([answer], token=TOKEN, tls=server_side) as server,
        client(server, account, ca_bundle=cert) as c,
    ):
        assert server.base_url.startswith("https://")
        started = time.monotonic()
        with pytest.raises(error) as caught:
            c.fetch()
        assert time.monotonic() - started < LOOSE
    assert str(caught.value).startswith(reason)
    assert "request_timeout 1.5s" in str(caught.value)


def test_one_watchdog_thread_serves_exchange_after_exchange() -> None:
    alarm, fired, done = Alarm(), [], threading.Event()
    alarm.arm(60.0, lambda: fired.append("long"))
    alarm.arm(0.05, lambda: fired.append("short"))  # earlier: the sleeping thread wakes
    cancelled = lambda: fired.append("cancelled")  # noqa: E731
    alarm.arm(1.0, cancelled)
    alarm.cancel(cancelled)  # the exchange ended in time
    alarm.arm(1.5, lambda: (fired.append("last"), done.set()))
    assert done.wait(20)
    assert fired[-1] == "last" and "long" not in fired and "cancelled" not in fired
    alarm.close()


def test_one_watchdog_thread_serves_many_clients_deadlines_in_time_order() -> None:
    """The process's one Alarm: every armed deadline fires once, earliest first; a cancelled
    one never does, and cancelling one leaves the others armed."""
    alarm, fired, done = Alarm(), [], threading.Event()
    cancelled = lambda: fired.append("cancelled")  # noqa: E731
    alarm.arm(0.3, lambda: fired.append("c"))
    alarm.arm(0.1, lambda: fired.append("a"))
    alarm.arm(0.2, cancelled)
    alarm.arm(0.2, lambda: fired.append("b"))
    alarm.cancel(cancelled)
    alarm.arm(0.4, lambda: (fired.append("d"), done.set()))
    assert done.wait(20)
    assert fired == ["a", "b", "c", "d"]
    assert threading.active_count() >= 1 and alarm._thread.is_alive()
    alarm.close()


def test_clients_sharing_one_watchdog_are_each_cut_at_their_deadline(
    account: AccountSettings,
) -> None:
    """Two clients, one Alarm (as the service builds them): both dripped headers are cut by
    it, at the same time; closing a client leaves the shared watchdog running."""
    shared = Alarm("rpt-watchdog-shared")
    answers = [hostile.drip_headers(hostile.Reports(), 5, interval=0.05) for _ in range(2)]
    settings = {"read_timeout": 5, "request_timeout": 1.5}
    outcomes: list[tuple[type, float]] = []

    def fetch_through(server: hostile.HostilePlatform) -> None:
        platform = PlatformSettings(base_url=server.base_url, **settings)
        with PlatformClient(platform, account, 0, alarm=shared) as c:
            started = time.monotonic()
            try:
                c.fetch()
            except RetriableError as exc:
                outcomes.append((type(exc), time.monotonic() - started))

    with (
        hostile.HostilePlatform([answers[0]], token=TOKEN) as one,
        hostile.HostilePlatform([answers[1]], token=TOKEN) as two,
    ):
        threads = [threading.Thread(target=fetch_through, args=(s,)) for s in (one, two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert [kind for kind, _ in outcomes] == [RetriableError, RetriableError]
    assert all(took < LOOSE for _, took in outcomes), outcomes
    names = [t.name for t in threading.enumerate()]
    assert names.count("rpt-watchdog-shared") == 1  # one thread, still there after both closed
    shared.close()


def test_a_client_closes_only_a_watchdog_of_its_own() -> None:
    shared = Alarm()
    on_shared, alone = SocketWatch(shared), SocketWatch()
    assert on_shared.alarm is shared and not on_shared.owns_alarm
    assert alone.owns_alarm and alone.alarm is not shared
