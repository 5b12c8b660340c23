"""A real Prometheus server scrapes our EndpointServer and sees records being published.

For now the data comes from a Metrics object fed in a background thread; once the pipeline
runs end to end, the scrape target becomes a running connector.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from connector.metrics import Metrics
from connector.status import EndpointServer, StatusBoard

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana" / "rpt-connector.json"
STARTUP_TIMEOUT_S = 30.0
QUERY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextmanager
def prometheus_server(tmp_path: Path, target: str) -> Iterator[str]:
    """A `prometheus` process scraping `target` every second; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `bash tools/ensure-prometheus.sh`")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: rpt-connector\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(base, process), STARTUP_TIMEOUT_S, "prometheus to be ready")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _ready(base: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"prometheus exited with {process.returncode}")
    try:
        return httpx.get(f"{base}/-/ready", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def busy_connector() -> Iterator[str]:
    """An EndpointServer whose Metrics see a poll and a commit every 200 ms; yields host:port."""
    metrics = Metrics(accounts=["a"])
    server = EndpointServer("127.0.0.1:0", metrics, StatusBoard(["a"]))
    host, port = server.start()
    stop = threading.Event()

    def feed() -> None:
        sequence = 0
        while not stop.wait(0.2):
            sequence += 1
            now = time.time()
            metrics.poll("a", "ok", 0.05, 50)
            metrics.poll_succeeded("a", now)
            metrics.spool("a", 50, 20_000)
            metrics.committed(
                "a",
                records=50,
                dead_letters={},
                duration=0.01,
                sequence=sequence,
                commit_time=now,
                rtimes_ms={int((now - 2) * 1000): 50},
                delivery_latency_s={5.0: 50},
                statuses={"delivered": 50},
            )

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    yield f"{host}:{port}"
    stop.set()
    feeder.join()
    server.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, busy_connector: str) -> Iterator[str]:
    with prometheus_server(tmp_path_factory.mktemp("prometheus"), busy_connector) as base:
        yield base


def query(base: str, promql: str) -> list[dict]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5.0)
    response.raise_for_status()
    return response.json()["data"]["result"]


def test_prometheus_sees_records_being_published(prometheus: str) -> None:
    result = wait_until(
        lambda: [
            r
            for r in query(prometheus, "rate(rpt_records_published_total[30s])")
            if float(r["value"][1]) > 0
        ],
        QUERY_TIMEOUT_S,
        "a positive rate(rpt_records_published_total[30s])",
    )
    assert result[0]["metric"]["account"] == "a"
    # 50 records every 200 ms: between the last two scrapes, about 250 per second.
    latest = query(prometheus, "irate(rpt_records_published_total[30s])")
    assert 50 < float(latest[0]["value"][1]) < 1000
    up = query(prometheus, 'up{job="rpt-connector"}')
    assert [float(r["value"][1]) for r in up] == [1.0]


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        .replace("$__rate_interval", "30s")
        .replace("$account", ".*")
        .replace("$job", ".*")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_dashboard_query_runs_and_the_main_panels_have_data(prometheus: str) -> None:
    wait_until(
        lambda: query(prometheus, "rate(rpt_report_lag_seconds_count[30s]) > 0"),
        QUERY_TIMEOUT_S,
        "two scrapes with reports",
    )
    empty = [expr for expr in dashboard_queries() if not query(prometheus, expr)]
    # No producer is running here, and only failures or dead letters would fill these panels.
    allowed_empty = ("rpt_producer_", "rpt_broker_", 'outcome!~"ok|empty"', "rpt_dead_letters")
    assert [e for e in empty if not any(a in e for a in allowed_empty)] == []
