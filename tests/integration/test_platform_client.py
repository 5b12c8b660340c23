"""The get-rpt client against the simulator, over real sockets, for every outcome."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fixtures import SEED_RESPONSE

from connector.config.settings import AccountSettings, PlatformSettings
from connector.errors import (
    AuthError,
    InvalidResponseError,
    PlatformResultError,
    RetriableError,
    TLSVerificationError,
)
from connector.platform.client import PlatformClient
from connector.simulator.server import FIRST_MSGID, Simulator

pytestmark = pytest.mark.integration

TOKEN = "sim-token-1"
SECRET = "sim-secret-1"

StartSimulator = Callable[..., Simulator]
MakeClient = Callable[..., PlatformClient]


@pytest.fixture
def simulator() -> Iterator[StartSimulator]:
    started: list[Simulator] = []

    def start(*argv: str, clock: Callable[[], float] = time.monotonic) -> Simulator:
        sim = Simulator.from_argv(["--seed", "7", *argv], clock)
        sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeClient]:
    monkeypatch.setenv("SIM_TOKEN", TOKEN)
    monkeypatch.setenv("SIM_SECRET", SECRET)
    made: list[PlatformClient] = []

    def make(sim: Simulator, login: bool = False, **platform: object) -> PlatformClient:
        if login:
            account = AccountSettings(name="u1", uuid="u1", secret_env="SIM_SECRET")
        else:
            account = AccountSettings(name="a1", token_env="SIM_TOKEN")
        settings = PlatformSettings(base_url=sim.base_url, **platform)
        made.append(PlatformClient(settings, account, 0))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_batches_drain_the_queue_then_come_back_empty(
    simulator: StartSimulator, client: MakeClient
) -> None:
    sim = simulator("--token", TOKEN, "--reports", "1200")
    platform = client(sim)
    sizes = [len(platform.fetch().reports) for _ in range(4)]
    assert sizes == [500, 500, 200, 0]
    assert sim.stats()["pending"] == 0


def test_reports_arrive_with_exact_msgids_and_the_raw_body(
    simulator: StartSimulator, client: MakeClient
) -> None:
    sim = simulator("--token", TOKEN, "--reports", "50")
    fetch = client(sim).fetch()
    msgids = [int(r["msgid"]) for r in fetch.reports]
    assert msgids == list(range(FIRST_MSGID, FIRST_MSGID + 50))
    assert fetch.raw.startswith(b'{"result":0,') and fetch.raw.endswith(b"]}")
    assert fetch.attempts == 1 and fetch.duration > 0


def test_get_mode_on_a_configured_path(simulator: StartSimulator, client: MakeClient) -> None:
    sim = simulator("--token", TOKEN, "--reports", "30", "--path", "/v9/rpt")
    fetch = client(sim, method="GET", path="/v9/rpt", retsize=20).fetch()
    assert len(fetch.reports) == 20


def test_a_wrong_token_is_an_auth_error(simulator: StartSimulator, client: MakeClient) -> None:
    sim = simulator("--token", "someone-else", "--reports", "5")
    with pytest.raises(AuthError, match="身份认证失败"):
        client(sim).fetch()
    assert sim.stats()["pending"] == 5


def test_a_login_account_logs_in_and_fetches(simulator: StartSimulator, client: MakeClient) -> None:
    sim = simulator("--account", f"u1:{SECRET}", "--reports", "5")
    assert len(client(sim, login=True).fetch().reports) == 5
    assert sim.stats()["faults"]["logins"] == 1


def test_an_expired_token_is_renewed_once_for_concurrent_callers(
    simulator: StartSimulator, client: MakeClient
) -> None:
    now = [0.0]
    sim = simulator(
        "--account", f"u1:{SECRET}", "--reports", "40", "--token-ttl", "60", clock=lambda: now[0]
    )
    platform = client(sim, login=True, retsize=5)
    platform.fetch()
    now[0] = 61.0  # the simulator's token expires; the client's token_ttl (30 min) has not
    with ThreadPoolExecutor(4) as pool:
        attempts = [f.attempts for f in pool.map(lambda _: platform.fetch(), range(4))]
    assert 2 in attempts
    stats = sim.stats()
    assert stats["faults"]["logins"] == 2
    assert stats["handed_out"] == 25


def test_throttling_carries_retry_after(simulator: StartSimulator, client: MakeClient) -> None:
    sim = simulator("--token", TOKEN, "--reports", "5", "--throttle-rate", "1")
    with pytest.raises(RetriableError, match="429") as caught:
        client(sim).fetch()
    assert caught.value.retry_after == 1.0


def test_server_errors_are_retriable(simulator: StartSimulator, client: MakeClient) -> None:
    sim = simulator("--token", TOKEN, "--reports", "5", "--error-rate", "1")
    with pytest.raises(RetriableError, match=r"HTTP 50[03]"):
        client(sim).fetch()
    assert sim.stats()["pending"] == 5


def test_a_stall_times_out_as_retriable(simulator: StartSimulator, client: MakeClient) -> None:
    sim = simulator("--token", TOKEN, "--reports", "5", "--stall-rate", "1", "--stall", "10")
    started = time.monotonic()
    with pytest.raises(RetriableError, match="timed out"):
        client(sim, read_timeout=0.3).fetch()
    assert time.monotonic() - started < 3
    assert sim.stats()["pending"] == 5


def test_a_truncated_body_is_invalid_but_hands_back_what_came(
    simulator: StartSimulator, client: MakeClient, tmp_path: Path
) -> None:
    record = tmp_path / "record.jsonl"
    sim = simulator(
        "--token", TOKEN, "--reports", "10", "--truncate-rate", "1", "--record", str(record)
    )
    with pytest.raises(InvalidResponseError) as caught:
        client(sim).fetch()
    raw = caught.value.raw
    assert raw and b'{"result":0,"desc":"%e6%88%90%e5%8a%9f","rpts":['.startswith(raw[:40])
    # The reports left the platform with that answer: gone, but in the ground truth.
    assert sim.stats()["pending"] == 0
    assert len(record.read_bytes().splitlines()) == 10


def test_garbage_is_invalid_and_dequeues_nothing(
    simulator: StartSimulator, client: MakeClient
) -> None:
    sim = simulator("--token", TOKEN, "--reports", "5", "--garbage-rate", "1")
    with pytest.raises(InvalidResponseError) as caught:
        client(sim).fetch()
    assert caught.value.raw.startswith(b"<html>")
    assert sim.stats()["pending"] == 5


def test_a_result_error_has_its_chinese_desc(simulator: StartSimulator, client: MakeClient) -> None:
    sim = simulator("--token", TOKEN, "--reports", "5", "--result-error-rate", "1")
    with pytest.raises(PlatformResultError) as caught:
        client(sim).fetch()
    assert (caught.value.result, caught.value.desc) == (500, "系统繁忙")


def test_pause_and_resume(simulator: StartSimulator, client: MakeClient) -> None:
    sim = simulator("--token", TOKEN, "--reports", "5")
    platform = client(sim)
    httpx.post(f"{sim.base_url}/control/pause?seconds=30").raise_for_status()
    with pytest.raises(RetriableError, match="503"):
        platform.fetch()
    httpx.post(f"{sim.base_url}/control/resume").raise_for_status()
    assert len(platform.fetch().reports) == 5


def test_a_refused_connection_is_retriable(client: MakeClient) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Gone:
        base_url = f"http://127.0.0.1:{port}"

    with pytest.raises(RetriableError, match="ConnectError"):
        client(Gone, connect_timeout=1).fetch()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_with_a_configured_ca_bundle(
    simulator: StartSimulator, client: MakeClient, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    sim = simulator(
        "--token", TOKEN, "--reports", "5", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert sim.base_url.startswith("https://")
    assert len(client(sim, ca_bundle=cert).fetch().reports) == 5
    with pytest.raises(TLSVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        client(sim).fetch()  # the default trust store does not know this certificate


def test_the_seed_fixture_is_what_the_simulator_speaks(
    simulator: StartSimulator, client: MakeClient
) -> None:
    sim = simulator("--token", TOKEN, "--reports", "1")
    (report,) = client(sim).fetch().reports
    seed_keys = list(json.loads(SEED_RESPONSE)["rpts"][0])
    assert list(report) == seed_keys
