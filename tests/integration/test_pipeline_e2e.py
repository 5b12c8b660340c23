"""End to end: simulator → `rpt-connector run` → real Kafka, every report exactly once."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from harness import (
    TOKEN,
    ConnectorProcess,
    SimulatorProcess,
    Topics,
    connector_env,
    stop_everything,
    write_config,
)
from harness import assert_exactly_once as exactly_once

pytestmark = pytest.mark.integration


@pytest.fixture
def topics() -> Topics:
    return Topics.fresh()


def start_simulator(tmp_path: Path, *extra: str) -> SimulatorProcess:
    record = tmp_path / "handed-out.jsonl"
    return SimulatorProcess(
        ["--token", f"main={TOKEN}", "--record", str(record), "--seed", "7", *extra]
    ).start()


def assert_exactly_once(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> None:
    verdict = exactly_once(kafka_bootstrap, topics, tmp_path / "handed-out.jsonl")
    for record in verdict.dead_letters:
        headers = dict(record.headers)
        assert headers["account"] == b"main"
        assert headers["error.class"] == b"ReportError"
        assert int(headers["spool.sequence"]) > 0
    assert len({record.value for record in verdict.dead_letters}) == len(verdict.dead_letters)


def config_for(
    simulator: SimulatorProcess,
    bootstrap: str,
    topics: Topics,
    tmp_path: Path,
    spool: str = "spool",
) -> Path:
    return write_config(
        tmp_path / "c.toml",
        base_url=simulator.base_url,
        bootstrap=bootstrap,
        topics=topics,
        spool=tmp_path / spool,
    )


def crash_after_fetching(
    connector: ConnectorProcess, simulator: SimulatorProcess, crash_switch: Path
) -> None:
    """Let it fetch a few batches, then arm the fail point: it dies right after a spool append."""
    simulator.wait_for_more_handed_out(3000)
    crash_switch.touch()
    assert connector.process.wait(60) == 137, connector.output()
    crash_switch.unlink()


def drain_and_stop(
    connector: ConnectorProcess, simulator: SimulatorProcess, generated: int = 0
) -> float:
    """Wait for the simulator to drain, then SIGTERM; returns how long the exit took."""
    simulator.wait_drained(generated)
    time.sleep(1.5)  # a commit interval or two for the last transaction
    started = time.monotonic()
    assert connector.terminate() == 0, connector.output()
    return time.monotonic() - started


def test_every_report_exactly_once_with_malformed_ones_in_the_dlq(
    kafka_bootstrap: str, tmp_path: Path, topics: Topics
) -> None:
    simulator = start_simulator(tmp_path, "--reports", "20000", "--malformed-rate", "0.01")
    config = config_for(simulator, kafka_bootstrap, topics, tmp_path)
    connector = ConnectorProcess(config, tmp_path / "connector.log").start()
    try:
        assert drain_and_stop(connector, simulator) < 10  # SIGTERM exits promptly
    finally:
        stop_everything(connector, simulator)
    assert_exactly_once(kafka_bootstrap, topics, tmp_path)


def test_crash_between_spool_and_commit_then_restart_loses_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path, topics: Topics
) -> None:
    """The process dies like kill -9 right after spooling, with its transaction still open."""
    simulator = start_simulator(tmp_path, "--rate", "3000", "--rate-total", "30000")
    config = config_for(simulator, kafka_bootstrap, topics, tmp_path)
    log, crash_switch = tmp_path / "connector.log", tmp_path / "crash"
    env = connector_env() | {"RPT_FAILPOINT_CRASH_AFTER_SPOOL_IF": str(crash_switch)}
    try:
        for _ in range(2):
            connector = ConnectorProcess(config, log, env=env).start()
            crash_after_fetching(connector, simulator, crash_switch)
        connector = ConnectorProcess(config, log).start()
        drain_and_stop(connector, simulator, generated=30000)
    finally:
        stop_everything(connector, simulator)
    replays = re.findall(r"(\d+) spool entries to replay", connector.output())
    assert [int(n) > 0 for n in replays] == [False, True, True], replays
    assert_exactly_once(kafka_bootstrap, topics, tmp_path)


def test_an_account_that_moves_between_spool_volumes_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path, topics: Topics
) -> None:
    """A volume per instance: the account dies on volume A with an unpublished tail, runs on
    volume B (which commits past A's sequence numbers), then comes back to volume A."""
    simulator = start_simulator(tmp_path, "--rate", "3000", "--rate-total", "30000")
    config = config_for(simulator, kafka_bootstrap, topics, tmp_path, spool="volume-a")
    log, crash_switch = tmp_path / "connector.log", tmp_path / "crash"
    on_a_then_crash = connector_env() | {"RPT_FAILPOINT_CRASH_AFTER_SPOOL_IF": str(crash_switch)}
    on_b = connector_env() | {"RPT_SPOOL__DIR": str(tmp_path / "volume-b")}
    try:
        connector = ConnectorProcess(config, log, env=on_a_then_crash).start()
        crash_after_fetching(connector, simulator, crash_switch)

        connector = ConnectorProcess(config, log, env=on_b).start()
        simulator.wait_for_more_handed_out(6000)
        assert connector.terminate() == 0, connector.output()

        connector = ConnectorProcess(config, log).start()
        drain_and_stop(connector, simulator, generated=30000)
    finally:
        stop_everything(connector, simulator)
    assert "were never published; they are sent now" in connector.output()
    assert_exactly_once(kafka_bootstrap, topics, tmp_path)
