"""A spool tail renumbered after the account moved, killed at each step of it: exactly once.

The scenario of issue 14 item 3, with real processes: the account's connector dies on volume A
with fetched, uncommitted reports in its spool; the account then runs (and commits) from volume
B; it comes back to volume A, whose tail must be renumbered above B's commit. That start is
killed (`os._exit(137)` from the spool's fail point `RPT_FAILPOINT_SPOOL`, i.e. no cleanup at
all, like SIGKILL) at one renumbering step after another; the last start finishes. Every
report the simulator handed out must be in the topic exactly once (read_committed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import ConnectorProcess, SimulatorProcess, Topics, connector_env, stop_everything
from spool_runs import assert_exactly_once, config_for, start_simulator

from connector.spool.io import (
    FAILPOINT_ENV,
    RENUMBER_AFTER_COPY,
    RENUMBER_AFTER_RELEASE,
    RENUMBER_AFTER_SWITCH,
    RENUMBER_BEFORE_CLEANUP,
    RENUMBER_BEFORE_SWITCH,
)
from connector.spool.spool import inspect

pytestmark = pytest.mark.integration

TOTAL = 24000


def strand_a_tail_on_volume_a(
    config: Path, log: Path, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    """Fetch on A with commits far apart, then die right after a spool append."""
    crash_switch = tmp_path / "crash"
    env = connector_env() | {
        "RPT_FAILPOINT_CRASH_AFTER_SPOOL_IF": str(crash_switch),
        "RPT_KAFKA__COMMIT_INTERVAL": "120s",  # nothing committed from A: a long tail
    }
    connector = ConnectorProcess(config, log, env=env).start()
    try:
        simulator.wait_for_more_handed_out(4000)
        crash_switch.touch()
        assert connector.process.wait(60) == 137, connector.output()
    finally:
        if connector.alive():
            connector.kill()
    crash_switch.unlink()


def commit_from_volume_b(
    config: Path, log: Path, simulator: SimulatorProcess, tmp_path: Path
) -> int:
    env = connector_env() | {"RPT_SPOOL__DIR": str(tmp_path / "volume-b")}
    connector = ConnectorProcess(config, log, env=env).start()
    try:
        simulator.wait_for_more_handed_out(6000)
        assert connector.terminate() == 0, connector.output()
    finally:
        if connector.alive():
            connector.kill()
    return inspect(tmp_path / "volume-b" / "main")["next_seq"] - 1


def crash_while_renumbering(config: Path, log: Path, point: str, count: int) -> None:
    env = connector_env() | {FAILPOINT_ENV: f"{point}:{count}"}
    connector = ConnectorProcess(config, log, env=env).start()
    try:
        assert connector.process.wait(120) == 137, f"{point}:{count} not reached"
    finally:
        if connector.alive():
            connector.kill()


@pytest.mark.parametrize(
    ("after_the_switch", "producer"),
    [
        (RENUMBER_AFTER_SWITCH, "own"),
        (RENUMBER_BEFORE_CLEANUP, "own"),
        (RENUMBER_AFTER_RELEASE, "own"),
        (RENUMBER_AFTER_SWITCH, "shared"),  # the shared producer's recovery: one step suffices
    ],
)
def test_a_kill_at_each_renumber_step_loses_and_duplicates_nothing(
    kafka_bootstrap: str,
    tmp_path: Path,
    after_the_switch: str,
    producer: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if producer == "shared":  # connector_env passes it on (as the `producers` fixture does)
        monkeypatch.setenv("RPT_KAFKA__SHARED_PRODUCER", "true")
    topics = Topics.fresh()
    simulator = start_simulator(tmp_path, "--rate", "3000", "--rate-total", str(TOTAL))
    volume_a = tmp_path / "volume-a"
    config = config_for(simulator, kafka_bootstrap, topics, tmp_path, spool=volume_a)
    log = tmp_path / "connector.log"
    spool_a = volume_a / "main"
    connector = None
    try:
        strand_a_tail_on_volume_a(config, log, simulator, tmp_path)
        tail = inspect(spool_a)
        assert tail["entries"] >= 4, tail
        committed_b = commit_from_volume_b(config, log, simulator, tmp_path)
        print(f"figures: tail on A {tail['entries']} entries / {tail['reports']} reports")
        assert committed_b >= tail["first_seq"], "B did not commit past A's numbers"

        # Killed before the switch: the copies so far are a staging file, the tail is as it was.
        entries = tail["entries"]
        for point, count in [
            (RENUMBER_AFTER_COPY, 1),
            (RENUMBER_AFTER_COPY, entries // 2),
            (RENUMBER_AFTER_COPY, entries),
            (RENUMBER_BEFORE_SWITCH, 1),
        ]:
            crash_while_renumbering(config, log, point, count)
            left = inspect(spool_a)
            assert len(left["renumbering_files"]) == 1, left
            assert (left["entries"], left["first_seq"]) == (entries, tail["first_seq"])

        # Killed after the switch: the copies are the tail, the originals count as released.
        crash_while_renumbering(config, log, after_the_switch, 1)
        left = inspect(spool_a)
        assert left["renumbering_files"] == [], left
        assert left["entries"] == entries and left["first_seq"] > tail["last_seq"], left

        connector = ConnectorProcess(config, log).start()
        # The crash runs may have drained the simulator already: a SIGTERM sent before the
        # connector installs its handlers (during interpreter start-up) would just kill it.
        connector.metrics_base_url()
        simulator.wait_drained(TOTAL, timeout=180)
        assert connector.terminate(60) == 0, connector.output()
    finally:
        stop_everything(connector, simulator)
    assert inspect(spool_a)["entries"] == 0
    assert_exactly_once(kafka_bootstrap, topics, tmp_path)
