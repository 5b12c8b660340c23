"""The exactly-once verdict: what Kafka holds (read_committed) against the simulator's
`--record` file of every report it handed out."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from connector.codec.avro import decode_single_object
from connector.codec.report import Normalizer
from devharness.config import TOKEN, Topics, write_config
from devharness.kafka import ConsumedRecord, consume_all
from devharness.processes import ConnectorProcess, SimulatorProcess, stop_everything


def ground_truth(record_file: Path) -> tuple[dict[str, dict], set[str]]:
    """The simulator's record of handed-out reports: good ones by msgid, and bad raw lines."""
    normalizer = Normalizer("truth")
    good: dict[str, dict] = {}
    bad: set[str] = set()
    for line in record_file.read_bytes().splitlines():
        batch = normalizer.normalize_batch([json.loads(line)], 0)
        if batch.records:
            good[batch.records[0]["msgid"]] = batch.records[0]
        else:
            bad.add(line.decode())
    return good, bad


@dataclass
class Verdict:
    delivered: Counter
    lost: list[str]
    duplicated: list[str]
    dead_letters: list[ConsumedRecord]


def verify(bootstrap: str, topics: Topics, good: dict[str, dict]) -> Verdict:
    """Compare the topic (read_committed) with the ground truth; every key must be the custid
    (or the msgid when custid is empty)."""
    records = consume_all(bootstrap, topics.data, timeout=60)
    delivered: Counter = Counter()
    for record in records:
        value = decode_single_object(record.value)
        delivered[value["msgid"]] += 1
        expected_key = value["custid"] or value["msgid"]
        assert record.key == expected_key.encode(), (record.key, value)
    lost = [m for m in good if m not in delivered]
    duplicated = [m for m, n in delivered.items() if n > 1]
    dead = consume_all(bootstrap, topics.dlq, timeout=60)
    return Verdict(delivered, lost, duplicated, dead)


def assert_exactly_once(bootstrap: str, topics: Topics, record_file: Path) -> Verdict:
    """Every good report handed out is in the topic once, and every bad one is a dead letter."""
    good, bad = ground_truth(record_file)
    verdict = verify(bootstrap, topics, good)
    assert verdict.lost == [], f"{len(verdict.lost)} of {len(good)} reports lost"
    assert verdict.duplicated == [], f"{len(verdict.duplicated)} reports duplicated"
    assert set(verdict.delivered) == set(good)
    assert len(verdict.dead_letters) == len(bad)
    return verdict


def drain_exactly_once(
    bootstrap: str, workdir: Path, kafka: dict, *, seed: int, reports: int
) -> Topics:
    """The simulator's `reports` drained by one connector with these `kafka` settings, stopped
    with SIGTERM (exit 0), every report exactly once on fresh topics; those topics."""
    topics = Topics.fresh()
    record = workdir / "handed-out.jsonl"
    simulator = SimulatorProcess(
        ["--token", f"main={TOKEN}", "--record", str(record), "--seed", str(seed),
         "--reports", str(reports)]
    ).start()  # fmt: skip
    config = write_config(
        workdir / "c.toml", base_url=simulator.base_url, bootstrap=bootstrap, topics=topics,
        spool=workdir / "spool", overrides={"kafka": kafka},
    )  # fmt: skip
    connector = ConnectorProcess(config, workdir / "connector.log").start()
    try:
        simulator.wait_drained()
        time.sleep(1.5)  # the last transaction commits
        assert connector.terminate() == 0, connector.output()
    finally:
        stop_everything(connector, simulator)
    assert_exactly_once(bootstrap, topics, record)
    return topics
