"""promtool accepts our /metrics output, the alert rules, their unit tests and the scrape config.

promtool comes from Debian's `prometheus` package (`bash tools/ensure-prometheus.sh`, which
`make test` runs); without it these tests fail rather than skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connector.observe.metrics import Metrics
from connector.observe.observer import (
    AccountState,
    DeadLetterReason,
    PauseReason,
    PollOutcome,
    SpoolLevel,
)
from connector.observe.status import EndpointServer, StatusBoard

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "config" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run `bash tools/ensure-prometheus.sh`")
    return path


def run(promtool: str, *args: str, stdin: bytes | None = None) -> str:
    result = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, cwd=CONFIG, timeout=60, check=False
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output
    return output


@pytest.fixture
def served_metrics() -> Iterator[str]:
    """A Metrics with every family populated, served over a real socket."""
    metrics = Metrics(accounts=["a", "b"], batch_capacities={"a": 500, "b": 200})
    metrics.poll("a", "ok", 0.3, 500)
    metrics.poll("b", "retriable_error", 5.0, 0)
    metrics.committed(
        "a",
        records=498,
        dead_letters={"invalid_report": 1, "invalid_response": 1},
        duration=0.08,
        sequence=12,
        commit_time=1_700_000_100.0,
        rtimes_ms={1_700_000_090_000: 400, 1_700_000_000_000: 98},
        delivery_latency_s={3.0: 300, 45.0: 198},
        statuses={"delivered": 450, "failed": 47, "unknown": 1},
    )
    metrics.poll_succeeded("a", 1_700_000_099.0)
    metrics.spool_level("a", SpoolLevel(2, 500, 1_048_576, 1_700_000_000.0, 9 << 20))
    metrics.health.state("b", AccountState.BACKOFF)
    metrics.health.paused("b", PauseReason.DISK_FULL)
    metrics.health.reachable("a", True)
    metrics.health.aborted("a")
    metrics.health.producer_restarted("a")
    metrics.spool_write_failed("b")
    metrics.retry_attempt("b", 3)
    metrics.unknown_fields("a", 2)
    broker = {"nodeid": 1, "state": "UP", "rtt": {"avg": 1200}, "txerrs": 0}
    stats = {"msg_cnt": 5, "msg_size": 900, "brokers": {"localhost:9092/1": broker}}
    metrics.producer_statistics("a", json.dumps(stats))
    server = EndpointServer("127.0.0.1:0", metrics, StatusBoard(["a", "b"]))
    host, port = server.start()
    yield f"http://{host}:{port}/metrics"
    server.stop()


def test_metrics_output_passes_promtool_lint(promtool: str, served_metrics: str) -> None:
    body = httpx.get(served_metrics, timeout=5.0).content
    assert b"rpt_report_lag_seconds_bucket" in body
    run(promtool, "check", "metrics", stdin=body)


def test_alert_rules_are_valid(promtool: str) -> None:
    assert "SUCCESS: 11 rules found" in run(promtool, "check", "rules", "alerts.yml")


def test_alert_rule_unit_tests_pass(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "test", "rules", "alerts_test.yml")


def test_every_alert_has_a_rule_test() -> None:
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", (CONFIG / "alerts.yml").read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", (CONFIG / "alerts_test.yml").read_text()))
    assert len(alerts) == 11
    assert alerts - tested == set()


LABEL_VALUES = {
    "reason": {r.value for r in DeadLetterReason} | {r.value for r in PauseReason},
    "state": {s.value for s in AccountState},
    "outcome": {o.value for o in PollOutcome},
}


def test_rule_test_inputs_use_label_values_the_code_emits() -> None:
    """A test series the connector never exposes (reason="bad_msgid") proves nothing."""
    text = (CONFIG / "alerts_test.yml").read_text()
    used = re.findall(r'\b(reason|state|outcome)="([a-z_]+)"', text)
    assert used
    assert [(k, v) for k, v in used if v not in LABEL_VALUES[k]] == []


def test_scrape_config_is_valid(promtool: str) -> None:
    run(promtool, "check", "config", "prometheus.yml")
