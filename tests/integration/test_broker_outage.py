"""Kafka goes away mid-run, or the connector is told to stop: nothing is lost either way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    TOKEN,
    ConnectorProcess,
    Endpoints,
    SimulatorProcess,
    Topics,
    assert_exactly_once,
    connector_env,
    free_port,
    stop_everything,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

SPOOL_MAX = 4 * 2**20
MAX_RESPONSE = 512 * 2**10
SHUTDOWN_TIMEOUT = 20


def start_simulator(tmp_path: Path, *extra: str) -> SimulatorProcess:
    record = tmp_path / "handed-out.jsonl"
    return SimulatorProcess(
        ["--token", f"main={TOKEN}", "--record", str(record), "--seed", "11", *extra]
    ).start()


def start_connector(
    tmp_path: Path, simulator: SimulatorProcess, bootstrap: str, topics: Topics
) -> tuple[ConnectorProcess, Endpoints]:
    port = free_port()
    config = write_config(
        tmp_path / "c.toml",
        base_url=simulator.base_url,
        bootstrap=bootstrap,
        topics=topics,
        spool=tmp_path / "spool",
    )
    env = connector_env() | {
        "RPT_SPOOL__MAX_BYTES": str(SPOOL_MAX),
        "RPT_PLATFORM__MAX_RESPONSE_BYTES": str(MAX_RESPONSE),
        "RPT_METRICS__LISTEN": f"127.0.0.1:{port}",
        "RPT_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
        "RPT_PLATFORM__REQUEST_TIMEOUT": "5",  # below shutdown_timeout, as config requires
    }
    connector = ConnectorProcess(config, tmp_path / "connector.log", env=env).start()
    endpoints = Endpoints(f"http://127.0.0.1:{port}")
    wait_until(endpoints.answers, 60, "the connector's status endpoint")
    return connector, endpoints


def committed(endpoints: Endpoints) -> int:
    return endpoints.status()["accounts"]["main"]["committed_sequence"] or 0


def spool_settles(endpoints: Endpoints, samples: list[float]) -> Callable[[], bool]:
    """True once the spool's size has stopped changing over three looks."""

    def settled() -> bool:
        samples.append(endpoints.metric("rpt_spool_bytes"))
        return len(samples) >= 3 and samples[-1] == samples[-2] == samples[-3] > 0

    return settled


def test_broker_outage_fills_the_spool_to_its_limit_then_everything_arrives_once(
    isolated_broker: Callable, tmp_path: Path, producers: str
) -> None:
    broker = isolated_broker()
    bootstrap = broker.bootstrap
    topics = Topics.fresh()
    simulator = start_simulator(tmp_path, "--rate", "2000", "--rate-total", "70000")
    connector, endpoints = start_connector(tmp_path, simulator, bootstrap, topics)
    try:
        wait_until(lambda: committed(endpoints) > 3, 90, "a few commits before the outage")
        broker.stop()
        wait_until(lambda: not endpoints.ready(), 60, "/readyz to say not ready")
        samples: list[float] = []
        wait_until(spool_settles(endpoints, samples), 120, "the spool to stop growing", 1.0)
        status = endpoints.status()["accounts"]["main"]
        assert status["state"] == "spool_full", status
        # Full means: no room left for one more largest-possible answer, and never over the limit.
        assert SPOOL_MAX - 2 * MAX_RESPONSE <= samples[-1] <= SPOOL_MAX, samples
        pending_while_full = simulator.stats()["pending"]
        assert pending_while_full > 0  # the platform keeps what the connector could not take
        assert not endpoints.ready()

        broker.start()
        wait_until(endpoints.ready, 180, "/readyz to say ready again")
        wait_until(
            lambda: simulator.stats()["handed_out"] == 70000 and simulator.stats()["pending"] == 0,
            240,
            "the simulator to drain",
        )
        wait_until(lambda: endpoints.metric("rpt_spool_pending_records") == 0, 120, "commits")
        assert connector.terminate(SHUTDOWN_TIMEOUT + 30) == 0, connector.output()
    finally:
        stop_everything(connector, simulator)
    assert_exactly_once(bootstrap, topics, tmp_path / "handed-out.jsonl")


def test_sigterm_mid_run_exits_cleanly_and_a_restart_delivers_the_rest_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh()
    simulator = start_simulator(tmp_path, "--reports", "40000", "--latency", "0.2")
    connector, endpoints = start_connector(tmp_path, simulator, kafka_bootstrap, topics)
    try:
        wait_until(lambda: committed(endpoints) > 3, 90, "a few commits")
        # A clean stop finishes within shutdown_timeout, else the exit status is 1, not 0.
        assert connector.terminate(SHUTDOWN_TIMEOUT + 30) == 0, connector.output()
        assert simulator.stats()["pending"] > 0, "the run should have been stopped mid-way"
        connector, endpoints = start_connector(tmp_path, simulator, kafka_bootstrap, topics)
        wait_until(lambda: simulator.stats()["pending"] == 0, 180, "the simulator to drain")
        wait_until(lambda: endpoints.metric("rpt_spool_pending_records") == 0, 120, "commits")
        assert connector.terminate(SHUTDOWN_TIMEOUT + 30) == 0, connector.output()
    finally:
        stop_everything(connector, simulator)
    assert_exactly_once(kafka_bootstrap, topics, tmp_path / "handed-out.jsonl")
