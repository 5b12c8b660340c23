"""A real Prometheus server scrapes a running connector and sees records being published."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from harness import TOKEN, ConnectorProcess, SimulatorProcess, Topics, write_config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
from render_dashboard import expand, variables  # noqa: E402

pytestmark = pytest.mark.integration

DASHBOARD = REPO / "config" / "grafana" / "rpt-connector.json"
STARTUP_TIMEOUT_S = 30.0
QUERY_TIMEOUT_S = 60.0
RATE = "rate(rpt_records_published_total[30s])"


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
def busy_connector(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `rpt-connector run` fed by a simulator generating 300 reports/s; yields host:port."""
    tmp = tmp_path_factory.mktemp("scraped-connector")
    simulator = SimulatorProcess(["--token", f"main={TOKEN}", "--rate", "300"]).start()
    port = free_port()
    config = write_config(
        tmp / "c.toml",
        base_url=simulator.base_url,
        bootstrap=kafka_bootstrap,
        topics=Topics.fresh(),
        spool=tmp / "spool",
    )
    config.write_text(config.read_text().replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"'))
    connector = ConnectorProcess(config, tmp / "connector.log").start()
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/readyz"), 60, "the connector")
        yield f"127.0.0.1:{port}"
    finally:
        connector.terminate()
        simulator.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


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
        lambda: [r for r in query(prometheus, RATE) if float(r["value"][1]) > 0],
        QUERY_TIMEOUT_S,
        "a positive rate(rpt_records_published_total[30s])",
    )
    assert result[0]["metric"]["account"] == "main"
    # The simulator offers 300 reports/s; once 30 s of history exist the rate is of that order.
    wait_until(
        lambda: (
            150 < max((float(r["value"][1]) for r in query(prometheus, RATE)), default=0) < 3000
        ),
        QUERY_TIMEOUT_S,
        "the published rate to reach the offered 300/s",
    )
    up = query(prometheus, 'up{job="rpt-connector"}')
    assert [float(r["value"][1]) for r in up] == [1.0]


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    values = variables(dashboard, "30s", 300)
    return [
        expand(target["expr"], values)
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
    # Producer statistics arrive every 15 s; only failures, dead letters or a paused fetch fill
    # the others (`rpt_fetch_paused ... == 1` keeps only paused reasons); the account polls, and
    # the state timeline draws only accounts in another state.
    allowed_empty = (
        "rpt_producer_", "rpt_broker_", 'outcome!~"ok|empty"', "rpt_dead_letters",
        "rpt_fetch_paused", 'state!~"polling|not_owned"',
    )  # fmt: skip
    assert [e for e in empty if not any(a in e for a in allowed_empty)] == []
