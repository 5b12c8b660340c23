"""The StatefulSet's probes, answered by the real EndpointServer: one bad account stalls nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connector.observe.metrics import Metrics
from connector.observe.status import EndpointServer, StatusBoard

MANIFEST = Path(__file__).resolve().parents[2] / "config" / "kubernetes" / "statefulset.yaml"


def probe_path(kind: str) -> str:
    match = re.search(rf"{kind}:\s*\n\s*httpGet: \{{path: \"?([^\",]+)\"?, port: metrics\}}",
                      MANIFEST.read_text())  # fmt: skip
    assert match, f"no {kind} with an httpGet path in {MANIFEST.name}"
    return match.group(1)


def test_pods_start_in_parallel_and_roll_one_at_a_time() -> None:
    text = MANIFEST.read_text()
    assert re.search(r"^  podManagementPolicy: Parallel$", text, re.M)
    assert re.search(r"^    type: RollingUpdate$", text, re.M)


@pytest.fixture
def pod() -> Iterator[tuple[httpx.Client, StatusBoard]]:
    board = StatusBoard(["main", "marketing"])
    server = EndpointServer("127.0.0.1:0", Metrics(accounts=["main", "marketing"]), board)
    host, port = server.start()
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=5.0) as client:
        yield client, board
    server.stop()


def test_one_bad_token_keeps_the_pod_ready_and_alive(pod) -> None:
    client, board = pod
    board.heartbeat()  # the service has started its accounts
    board.set_kafka_reachable(True)
    board.update("main", state="polling")
    board.update("marketing", state="auth_paused", last_error="HTTP 401")
    assert client.get(probe_path("readinessProbe")).status_code == 200
    assert client.get(probe_path("livenessProbe")).status_code == 200
    # The full verdict still says what is wrong, for people and alerts.
    assert client.get("/readyz").json()["accounts_not_ready"] == {"marketing": "auth_paused"}


def test_a_pod_that_has_not_started_or_whose_accounts_all_failed_is_not_ready(pod) -> None:
    client, board = pod
    readiness = probe_path("readinessProbe")
    assert client.get(readiness).status_code == 503  # still creating topics / joining
    board.heartbeat()
    board.update("main", state="failed")
    board.update("marketing", state="failed")
    assert client.get(readiness).status_code == 503
