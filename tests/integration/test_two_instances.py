"""Two live instances of one account, standalone (no [cluster]): the newer one wins.

Both run the same configuration, so the same transactional id: the newer instance's
`init_transactions` fences the older one. The older must stop (exit 1, saying it was fenced),
never take the account back (no ping-pong), and nothing may be duplicated. What the older one
had fetched but not committed stays in its own spool: started again once the newer one has
stopped, it publishes that tail, so in the end every report is in the topic exactly once.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from fault_rig import committed, first_commits_after, report_figures
from harness import (
    TOKEN,
    ConnectorProcess,
    Endpoints,
    SimulatorProcess,
    Topics,
    connector_env,
    free_port,
    ground_truth,
    verify,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

RATE, TOTAL = 300, 15_000
WATCH_AFTER_FENCE_S = 15  # how long the winner is watched for a fence coming back
FENCED = re.compile(r"fenced", re.IGNORECASE)


class Instance:
    """One connector process with its own spool volume and status port."""

    def __init__(self, tmp_path: Path, name: str, simulator: SimulatorProcess, bootstrap: str,
                 topics: Topics) -> None:  # fmt: skip
        self.port = free_port()
        self.endpoints = Endpoints(f"http://127.0.0.1:{self.port}")
        config = write_config(
            tmp_path / f"{name}.toml",
            base_url=simulator.base_url,
            bootstrap=bootstrap,
            topics=topics,
            spool=tmp_path / f"spool-{name}",
        )
        env = connector_env() | {"RPT_METRICS__LISTEN": f"127.0.0.1:{self.port}"}
        self.process = ConnectorProcess(config, tmp_path / f"{name}.log", env=env)

    def start(self) -> Instance:
        self.process.start()
        wait_until(self.endpoints.answers, 60, "the status endpoint")
        return self

    def stop(self) -> None:
        if self.process.alive():
            self.process.kill()


def test_the_newer_instance_wins_the_older_stops_and_nothing_is_duplicated(
    kafka_bootstrap: str, tmp_path: Path, producers: str
) -> None:
    topics = Topics.fresh()
    record = tmp_path / "handed-out.jsonl"
    simulator = SimulatorProcess(
        ["--token", f"main={TOKEN}", "--record", str(record), "--rate", str(RATE),
         "--rate-total", str(TOTAL), "--seed", "3"]
    ).start()  # fmt: skip
    older = Instance(tmp_path, "older", simulator, kafka_bootstrap, topics)
    newer = Instance(tmp_path, "newer", simulator, kafka_bootstrap, topics)
    try:
        older.start()
        wait_until(lambda: committed(older.endpoints, "main") > 3, 90, "the older one commits")
        newer.start()
        started = time.monotonic()
        wait_until(lambda: not (older.process.alive() and newer.process.alive()), 90, "one to stop")
        stopped_after = time.monotonic() - started
        assert newer.process.alive(), (
            "the newer instance stopped and the older went on (it fenced the newer back)\n"
            + newer.process.output()[-3000:]
        )
        code = older.process.process.wait(10)
        assert code == 1, f"exit {code}\n{older.process.output()[-3000:]}"
        assert FENCED.search(older.process.output()), older.process.output()[-3000:]
        # The winner goes on committing and is never fenced back.
        mark = committed(newer.endpoints, "main")
        first_commits_after(newer.endpoints, {"main": mark}, timeout=60)
        time.sleep(WATCH_AFTER_FENCE_S)
        assert newer.process.alive(), newer.process.output()[-3000:]
        assert not FENCED.search(newer.process.output()), newer.process.output()[-3000:]
        assert committed(newer.endpoints, "main") > mark
        simulator.wait_drained(TOTAL, timeout=240)
        wait_until(lambda: newer.endpoints.metric("rpt_spool_pending_records") == 0, 120, "commits")
        assert newer.process.terminate(60) == 0, newer.process.output()[-3000:]
        # The older one, alone again, publishes what it had fetched before it was fenced.
        older.start()
        wait_until(
            lambda: older.endpoints.metric("rpt_spool_pending_records") == 0, 120, "its tail"
        )
        assert older.process.terminate(60) == 0, older.process.output()[-3000:]
    finally:
        older.stop()
        newer.stop()
        simulator.stop()
    good, bad = ground_truth(record)
    verdict = verify(kafka_bootstrap, topics, good)
    report_figures(
        "two_instances",
        reports=len(good),
        lost=len(verdict.lost),
        duplicated=len(verdict.duplicated),
        older_stopped_after_s=round(stopped_after, 1),
    )
    assert verdict.lost == [], f"{len(verdict.lost)} of {len(good)} lost"
    assert verdict.duplicated == [], f"{len(verdict.duplicated)} duplicated"
    assert len(verdict.dead_letters) == len(bad)
