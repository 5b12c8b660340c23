"""Many accounts, many instances: ownership through Kafka's group protocol, with fencing.

Three instances share six accounts; one dies like `kill -9` (right after a spool append, its
transactions open) and the survivors take its accounts over; a fourth joins and the group moves
accounts to it. The spool directory is shared, as a re-attached persistent volume would be.
Every report must still be in the topic exactly once, but for one kind: a get-rpt answer the
platform handed to another account of the dying instance while it died (its fetch threads
run side by side; a destructive read in flight at a `kill -9` is lost by definition). Those
are told apart by the simulator's response record (account, time), as the chaos suite does.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from harness import (
    ConnectorProcess,
    Endpoints,
    SimulatorProcess,
    Topics,
    cluster_section,
    connector_env,
    free_port,
    ground_truth,
    verify,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

ACCOUNTS = tuple(f"a{i}" for i in range(1, 7))
TOKENS = {name: f"tok-{name}-{uuid.uuid4().hex[:6]}" for name in ACCOUNTS}
SESSION_TIMEOUT_S = 6


class Instance:
    def __init__(self, config: Path, tmp_path: Path, number: int, **env: str) -> None:
        port = free_port()
        self.endpoints = Endpoints(f"http://127.0.0.1:{port}")
        environment = connector_env(TOKENS) | {"RPT_METRICS__LISTEN": f"127.0.0.1:{port}"} | env
        log = tmp_path / f"instance-{number}.log"
        self.process = ConnectorProcess(config, log, env=environment).start()

    def owned(self) -> set[str]:
        try:
            accounts = self.endpoints.status()["accounts"]
        except Exception:  # not listening yet, or gone
            return set()
        return {name for name, account in accounts.items() if account["owned"]}


def ownership(instances: list[Instance]) -> list[set[str]]:
    return [instance.owned() for instance in instances if instance.process.alive()]


def each_account_owned_once(instances: list[Instance]) -> bool:
    owned = ownership(instances)
    flat = [name for names in owned for name in names]
    return sorted(flat) == sorted(ACCOUNTS)


def in_flight_at_the_death(
    responses: Path, accounts: set[str], death: tuple[float, float]
) -> set[str]:
    """Msgids of the answers handed to the dying instance's accounts between the crash switch
    and its exit, with 0.5 s either side (the simulator stamps an answer after it took the
    reports; one handed out just before the switch may still have been read as it died)."""
    start, end = death[0] - 0.5, death[1] + 0.5
    out: set[str] = set()
    for line in responses.read_text().splitlines():
        answer = json.loads(line)
        if answer["account"] in accounts and start <= answer["t"] <= end:
            out.update(answer["msgids"])
    return out


def test_three_instances_share_six_accounts_survive_a_death_and_a_newcomer(
    kafka_bootstrap: str, tmp_path: Path, producers: str
) -> None:
    topics = Topics.fresh()
    record = tmp_path / "handed-out.jsonl"
    token_args = [arg for name in ACCOUNTS for arg in ("--token", f"{name}={TOKENS[name]}")]
    simulator = SimulatorProcess(
        [*token_args, "--record", str(record), "--rate", "900", "--rate-total", "24000",
         "--record-responses", str(tmp_path / "responses.jsonl")]
    ).start()  # fmt: skip
    cluster = cluster_section(topics, SESSION_TIMEOUT_S)
    config = write_config(
        tmp_path / "c.toml",
        base_url=simulator.base_url,
        bootstrap=kafka_bootstrap,
        topics=topics,
        spool=tmp_path / "spool",
        accounts=ACCOUNTS,
        extra=cluster,
    )
    crash_switch = tmp_path / "crash-instance-1"
    doomed = Instance(config, tmp_path, 1, RPT_FAILPOINT_CRASH_AFTER_SPOOL_IF=str(crash_switch))
    instances = [doomed, Instance(config, tmp_path, 2), Instance(config, tmp_path, 3)]
    try:
        wait_until(
            lambda: (
                each_account_owned_once(instances)
                and all(len(names) == 2 for names in ownership(instances))
            ),
            90,
            "six accounts owned once, two per instance",
        )
        doomed_accounts = doomed.owned()
        touched = time.time()
        crash_switch.touch()
        assert doomed.process.process.wait(90) == 137, doomed.process.output()
        died, death = time.monotonic(), (touched, time.time())
        wait_until(lambda: each_account_owned_once(instances), 60, "the survivors' takeover")
        takeover = time.monotonic() - died
        print(f"takeover after an instance died: {takeover:.1f}s")
        assert takeover < SESSION_TIMEOUT_S + 30

        instances.append(Instance(config, tmp_path, 4))
        wait_until(lambda: len(instances[-1].owned()) > 0, 90, "the newcomer to get accounts")
        wait_until(lambda: each_account_owned_once(instances), 60, "a stable rebalance")

        wait_until(lambda: simulator.stats()["generated"] >= 24000, 120, "generation to end")
        wait_until(lambda: simulator.stats()["pending"] == 0, 120, "the simulator to drain")
        time.sleep(2)
        for instance in instances:
            if instance.process.alive():
                assert instance.process.terminate(60) == 0, instance.process.output()
    finally:
        for instance in instances:
            if instance.process.alive():
                instance.process.kill()
        simulator.stop()

    good, _bad = ground_truth(record)
    verdict = verify(kafka_bootstrap, topics, good)
    in_flight = in_flight_at_the_death(tmp_path / "responses.jsonl", doomed_accounts, death)
    lost = [msgid for msgid in verdict.lost if msgid not in in_flight]
    print(f"lost in flight at the death: {len(verdict.lost) - len(lost)} of {len(in_flight)}")
    assert lost == [], f"{len(lost)} lost outside the dying instance's fetches in flight"
    assert verdict.duplicated == [], f"{len(verdict.duplicated)} duplicated"
    replays = [i.process.output().count("spool entries to replay") for i in instances[1:]]
    assert sum(replays) > 0
