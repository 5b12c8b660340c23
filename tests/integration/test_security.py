"""Security over real sockets: TLS verification, a body too big for memory, and no leaked secret.

The secret test runs the real connector at DEBUG against the simulator (a static-token account,
a login account whose tokens expire every 2 s, and an account with a wrong token) and the real
broker, then greps everything it said (stdout, stderr, /metrics, /status, `check` output) for
every secret value.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness import SimulatorProcess, Topics, wait_until, write_config

from connector.config.settings import AccountSettings, PlatformSettings
from connector.errors import InvalidResponseError, PlatformError
from connector.platform.client import PlatformClient

pytestmark = pytest.mark.integration

STATIC_TOKEN = "static-tok-Hq7Wz2"
LOGIN_UUID = "3f2a9c1e-login"
LOGIN_SECRET = "login-secret-Vb93Lk"
WRONG_TOKEN = "wrong-tok-Pm44Xa"
REGISTRY_PASSWORD = "registry-pw-Tn62Rd"
SECRETS = (STATIC_TOKEN, LOGIN_SECRET, WRONG_TOKEN, REGISTRY_PASSWORD)


# --- certificates ------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    directory = tmp_path_factory.mktemp("certs")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("rpt test CA"))
        .issuer_name(_name("rpt test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(_pem_key(key))
    return paths


@pytest.fixture(scope="module")
def https_simulator(certs: dict[str, Path]) -> Iterator[SimulatorProcess]:
    tls = ["--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"])]
    sim = SimulatorProcess([*tls, "--token", f"main={STATIC_TOKEN}", "--reports", "20"]).start()
    yield sim
    sim.stop()
    sim.process.stdout.close()


def _client(base_url: str, **platform: object) -> PlatformClient:
    settings = PlatformSettings(base_url=base_url, connect_timeout=3, read_timeout=3, **platform)
    account = AccountSettings(name="main", token_env="RPT_SECURITY_TEST_TOKEN")
    return PlatformClient(settings, account, 0)


@pytest.fixture(autouse=True)
def _static_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPT_SECURITY_TEST_TOKEN", STATIC_TOKEN)


# --- TLS -----------------------------------------------------------------------------------------


def test_https_with_the_ca_bundle_fetches(https_simulator: SimulatorProcess, certs) -> None:
    assert https_simulator.base_url.startswith("https://")
    with _client(https_simulator.base_url, ca_bundle=certs["ca"], retsize=5) as client:
        fetch = client.fetch()
    assert len(fetch.reports) == 5


def _handed_out(sim: SimulatorProcess, ca: Path) -> int:
    verify = ssl.create_default_context(cafile=str(ca))
    return httpx.get(f"{sim.base_url}/stats", verify=verify, timeout=5).json()["handed_out"]


def test_https_verification_is_on_by_default(https_simulator: SimulatorProcess, certs) -> None:
    before = _handed_out(https_simulator, certs["ca"])
    with (
        _client(https_simulator.base_url, retsize=5) as client,
        pytest.raises(PlatformError) as caught,
    ):
        client.fetch()
    message = str(caught.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message or "certificate verify failed" in message
    assert STATIC_TOKEN not in message and STATIC_TOKEN not in repr(caught.value)
    assert _handed_out(https_simulator, certs["ca"]) == before  # no report left the platform


def test_verify_tls_false_is_the_explicit_opt_out(https_simulator: SimulatorProcess) -> None:
    with _client(https_simulator.base_url, verify_tls=False, retsize=1) as client:
        assert len(client.fetch().reports) == 1


# --- a body larger than max_response_bytes -------------------------------------------------------

HUGE_BODY_BYTES = 64 * 2**20
LIMIT_BYTES = 2**20


class _HugeBodyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(HUGE_BODY_BYTES))
        self.end_headers()
        chunk = b'{"msgid":"1","status":0},' * 2600  # ~64 KiB of JSON-ish bytes
        head = b'{"result":0,"rpts":['
        try:
            self.wfile.write(head)
            sent = len(head)
            while sent < HUGE_BODY_BYTES:
                piece = chunk[: HUGE_BODY_BYTES - sent]
                self.wfile.write(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def huge_body_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HugeBodyHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_body_over_max_response_bytes_is_refused_in_bounded_memory(
    huge_body_server: str,
) -> None:
    with _client(huge_body_server, max_response_bytes=LIMIT_BYTES) as client:
        tracemalloc.start()
        started = time.monotonic()
        try:
            with pytest.raises(InvalidResponseError, match="exceeds max_response_bytes") as caught:
                client.fetch()
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(caught.value.raw) <= LIMIT_BYTES
    assert caught.value.raw.startswith(b'{"result":0,"rpts":[')
    assert peak < 10 * 2**20, f"peak traced allocation {peak / 2**20:.1f} MiB"
    assert elapsed < 5.0


# --- no secret anywhere ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


@pytest.fixture
def run_config(
    tmp_path: Path, kafka_bootstrap: str
) -> Iterator[tuple[Path, SimulatorProcess, int]]:
    sim = SimulatorProcess(
        ["--token", f"main={STATIC_TOKEN}", "--account", f"{LOGIN_UUID}:{LOGIN_SECRET}",
         "--token-ttl", "2", "--reports", "300", "--rate", "50"]
    ).start()  # fmt: skip
    port = _free_port()
    extra = f"""
[[accounts]]
name = "login"
uuid = "{LOGIN_UUID}"
secret_env = "RPT_SECURITY_LOGIN_SECRET"

[[accounts]]
name = "wrong"
token_env = "RPT_TEST_TOKEN_WRONG"

[schema_registry]
url = "http://127.0.0.1:{_free_port()}"
username = "rpt"
password_env = "RPT_SECURITY_REGISTRY_PASSWORD"
"""
    config = write_config(
        tmp_path / "connector.toml", base_url=sim.base_url, bootstrap=kafka_bootstrap,
        topics=Topics.fresh(), spool=tmp_path / "spool", extra=extra,
    )  # fmt: skip
    config.write_text(config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    yield config, sim, port
    sim.stop()
    sim.process.stdout.close()


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "RPT_TEST_TOKEN_MAIN": STATIC_TOKEN,
        "RPT_TEST_TOKEN_WRONG": WRONG_TOKEN,
        "RPT_SECURITY_LOGIN_SECRET": LOGIN_SECRET,
        "RPT_SECURITY_REGISTRY_PASSWORD": REGISTRY_PASSWORD,
    }


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args], capture_output=True, text=True,
        env=_env(), timeout=120, check=False,
    )  # fmt: skip


def _endpoint(port: int, path: str) -> str:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).text


@pytest.mark.timeout(240)
def test_no_secret_in_logs_metrics_status_or_check(run_config, tmp_path: Path) -> None:
    config, sim, port = run_config
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "--config", str(config),
             "--log-level", "DEBUG"],
            stdout=out, stderr=err, env=_env(),
        )  # fmt: skip
    try:
        accounts = lambda: sim.stats()["accounts"]  # noqa: E731
        wait_until(
            lambda: accounts()["main"]["handed_out"] >= 150
            and accounts()[LOGIN_UUID]["handed_out"] >= 150,
            timeout=90, what="both accounts to fetch",
        )  # fmt: skip
        time.sleep(5)  # past two token lifetimes: the login account logs in again
        served = [_endpoint(port, path) for path in ("/metrics", "/status", "/readyz")]
    finally:
        process.terminate()
        process.wait(60)
    logs = stdout.read_text(errors="replace") + stderr.read_text(errors="replace")
    check = _cli("check", "--config", str(config))
    offline = _cli("check", "--config", str(config), "--offline")

    assert logs.count("account login: logged in") >= 2, logs[-3000:]
    auth_failures = [
        line for line in logs.splitlines() if "[wrong]" in line and "auth_error" in line
    ]
    assert auth_failures and all("401" in line for line in auth_failures), logs[-3000:]
    assert '"state": "auth_paused"' in served[1]
    assert sim.stats()["faults"]["auth_failures"] >= 1
    assert "registry-pw" not in check.stdout and "**********" in offline.stdout
    assert "schema registry at" in check.stdout  # the registry is down: reported, unmasked url
    for what, text in [
        ("run output", logs), ("/metrics", served[0]), ("/status", served[1]),
        ("/readyz", served[2]), ("check", check.stdout + check.stderr),
        ("check --offline", offline.stdout + offline.stderr),
    ]:  # fmt: skip
        assert not _leaks(text), f"{what} contains {_leaks(text)}"


def test_spool_is_owner_only_after_a_run(run_config, tmp_path: Path) -> None:
    """test_spool checks the Spool class; this checks what a real run leaves on disk."""
    config, sim, _port = run_config
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
    )  # fmt: skip
    try:
        wait_until(lambda: sim.stats()["handed_out"] > 0, timeout=90, what="a fetch")
    finally:
        process.terminate()
        process.wait(60)
    spool = tmp_path / "spool"
    for account in ("main", "login"):
        assert (spool / account).stat().st_mode & 0o777 == 0o700
        files = [p for p in (spool / account).iterdir() if p.is_file()]
        assert files, f"no spool segment for {account}"
        for path in files:
            assert path.stat().st_mode & 0o777 == 0o600, path
