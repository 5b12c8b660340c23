"""The raw archive and `rpt-connector replay`: real simulator, real connector processes, real
Kafka. Ground truth is the simulator's own record of what it handed out (--record: every
report's bytes; --record-responses: which reports each response held)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
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
from kafka_helpers import ConsumedRecord, consume_all, create_topic, produce
from test_pipeline_e2e import crash_after_fetching, drain_and_stop

from connector.codec.avro import decode_single_object
from connector.codec.report import Normalizer
from connector.config.settings import load_settings
from connector.kafka.archive import archive_records
from connector.replay.archived import ArchivedBody, ReplayParts, replay_archive
from connector.replay.dlq import replay_dlq
from connector.replay.loop import CRASH_BEFORE_COMMIT_ENV
from tests.fakes import report

pytestmark = pytest.mark.integration

_OK_PREFIX = b'{"result":0,"desc":"%e6%88%90%e5%8a%9f","rpts":['  # the simulator's framing


class UpperExdata(Normalizer):
    """A deliberate change of the normalizer: exdata upper-cased."""

    def _record(self, report: object, fetched_at_ms: int) -> dict:
        record = super()._record(report, fetched_at_ms)
        return record | {"exdata": (record["exdata"] or "").upper()}


class StatusFixed(Normalizer):
    """The fix for one kind of bad report: status "ok?" read as 0."""

    def _record(self, report: object, fetched_at_ms: int) -> dict:
        if isinstance(report, dict) and report.get("status") == "ok?":
            report = report | {"status": 0}
        return super()._record(report, fetched_at_ms)


def setup(tmp_path: Path, kafka_bootstrap: str, *sim_args: str) -> tuple:
    topics = Topics.fresh()
    archive = f"{topics.data}.raw"
    simulator = SimulatorProcess(
        ["--token", f"main={TOKEN}", "--record", str(tmp_path / "handed-out.jsonl"),
         "--record-responses", str(tmp_path / "responses.jsonl"), "--seed", "7", *sim_args]
    ).start()  # fmt: skip
    config = write_config(
        tmp_path / "c.toml", base_url=simulator.base_url, bootstrap=kafka_bootstrap,
        topics=topics, spool=tmp_path / "spool",
    )  # fmt: skip
    text = config.read_text().replace("[kafka]\n", f'[kafka]\narchive_topic = "{archive}"\n', 1)
    assert f'archive_topic = "{archive}"' in text  # a fresh archive topic, or the test is void
    config.write_text(text)
    return topics, archive, simulator, config


def run_until_drained(tmp_path: Path, kafka_bootstrap: str, *sim_args: str) -> tuple:
    """`setup`, then one connector run until the simulator is drained; (topics, archive, config)."""
    topics, archive, simulator, config = setup(tmp_path, kafka_bootstrap, *sim_args)
    connector = ConnectorProcess(config, tmp_path / "connector.log").start()
    try:
        drain_and_stop(connector, simulator)
    finally:
        stop_everything(connector, simulator)
    return topics, archive, config


def expected_bodies(tmp_path: Path) -> list[bytes]:
    """Every body the simulator sent, rebuilt byte for byte from its two records."""
    reports = (tmp_path / "handed-out.jsonl").read_bytes().splitlines()
    bodies, at = [], 0
    for line in (tmp_path / "responses.jsonl").read_bytes().splitlines():
        n = len(json.loads(line)["msgids"])
        bodies.append(_OK_PREFIX + b",".join(reports[at : at + n]) + b"]}")
        at += n
    assert at == len(reports)
    return bodies


def records_of(bootstrap: str, topic: str) -> Counter:
    """The topic's records as a multiset of (key, record without fetched_at)."""
    out: Counter = Counter()
    for record in consume_all(bootstrap, topic, timeout=60):
        value = decode_single_object(record.value)
        value.pop("fetched_at")
        out[(record.key, json.dumps(value, sort_keys=True, default=str))] += 1
    return out


def archived(bootstrap: str, topic: str) -> list[ConsumedRecord]:
    return sorted(consume_all(bootstrap, topic, timeout=60), key=lambda r: r.offset)


def replay_process(config: Path, to_topic: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "connector", "replay", "archive", "--config", str(config),
               "--to-topic", to_topic, "--batch", "5", "--json"]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_archive_is_every_body_once_across_kills_and_replays_reproduce_or_change_records(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics, archive, simulator, config = setup(
        tmp_path, kafka_bootstrap, "--rate", "3000", "--rate-total", "20000"
    )
    crash_switch = tmp_path / "crash"
    env = connector_env() | {"RPT_FAILPOINT_CRASH_AFTER_SPOOL_IF": str(crash_switch)}
    connector = None
    try:
        for _ in range(2):
            connector = ConnectorProcess(config, tmp_path / "connector.log", env=env).start()
            crash_after_fetching(connector, simulator, crash_switch)
        connector = ConnectorProcess(config, tmp_path / "connector.log").start()
        drain_and_stop(connector, simulator, generated=20000)
    finally:
        stop_everything(connector, simulator)

    # The archive: exactly the bodies handed out, byte for byte, once each, in fetch order.
    raw = archived(kafka_bootstrap, archive)
    assert [r.value for r in raw] == expected_bodies(tmp_path)
    sequences = [int(dict(r.headers)["spool.sequence"]) for r in raw]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    for record in raw:
        headers = dict(record.headers)
        assert record.key == b"main" and headers["account"] == b"main"
        assert headers["content-type"] == b"application/json" and headers["spool.id"]
        assert int(headers["fetched_at"]) > 1_600_000_000_000
    original = records_of(kafka_bootstrap, topics.data)
    assert sum(original.values()) == 20000 and max(original.values()) == 1

    settings = load_settings(config)
    same = f"{topics.data}.replayed-{uuid.uuid4().hex[:6]}"
    summary = replay_archive(settings, ReplayParts.from_settings(settings), to_topic=same)
    assert (summary.bodies, summary.records, summary.dead_letters) == (len(raw), 20000, 0)
    assert records_of(kafka_bootstrap, same) == original

    changed = f"{topics.data}.upper-{uuid.uuid4().hex[:6]}"
    parts = ReplayParts.from_settings(settings)
    parts.normalizer = lambda account: UpperExdata(account, settings.platform.timezone)
    replay_archive(settings, parts, to_topic=changed)
    upper = Counter()
    for (key, text), n in original.items():
        value = json.loads(text)
        upper[(key, json.dumps(value | {"exdata": value["exdata"].upper()}, sort_keys=True))] += n
    assert records_of(kafka_bootstrap, changed) == upper != original

    # A replay killed mid-way (before its 3rd commit, 5 bodies a transaction), then rerun.
    crashed = f"{topics.data}.crashed-{uuid.uuid4().hex[:6]}"
    first = replay_process(config, crashed, connector_env() | {CRASH_BEFORE_COMMIT_ENV: "3"})
    assert first.returncode == 137, first.stderr
    partial = records_of(kafka_bootstrap, crashed)
    assert 0 < sum(partial.values()) < 20000 and max(partial.values()) == 1
    second = replay_process(config, crashed, connector_env())
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["bodies"] == len(raw) - 10  # it resumed after 2 commits
    assert records_of(kafka_bootstrap, crashed) == original


def test_replay_dlq_moves_the_fixed_dead_letters_into_the_data_topic_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics, _archive, config = run_until_drained(
        tmp_path, kafka_bootstrap, "--reports", "6000", "--malformed-rate", "0.02"
    )
    lines = (tmp_path / "handed-out.jsonl").read_bytes().splitlines()
    fixable = {json.loads(line)["msgid"] for line in lines if b'"status":"ok?"' in line}
    before = records_of(kafka_bootstrap, topics.data)
    dead = consume_all(kafka_bootstrap, topics.dlq, timeout=60)
    assert fixable and len(dead) > len(fixable)

    settings = load_settings(config)
    parts = ReplayParts.from_settings(settings)
    parts.normalizer = lambda account: StatusFixed(account, settings.platform.timezone)
    dry = replay_dlq(settings, parts, reason="invalid_report", dry_run=True)
    assert dry.records == len(fixable) and records_of(kafka_bootstrap, topics.data) == before
    summary = replay_dlq(settings, parts, reason="invalid_report")
    assert summary.records == len(fixable)
    assert summary.left == {"invalid_report": len(dead) - len(fixable)}
    again = replay_dlq(settings, parts)  # every reason: the fixed ones are not taken twice
    assert again.records == 0 and again.left == {"invalid_report": len(dead) - len(fixable)}

    after = records_of(kafka_bootstrap, topics.data)
    added = after - before
    assert max(after.values()) == 1 and sum(added.values()) == len(fixable)
    assert {json.loads(text)["msgid"] for _key, text in added} == {str(m) for m in fixable}
    still = [r for r in consume_all(kafka_bootstrap, topics.dlq, timeout=60)]
    rewritten = [r for r in still if "replayed.from" in dict(r.headers)]
    assert len(rewritten) == 2 * (len(dead) - len(fixable))  # once per run that retried them


def test_replay_joins_bodies_split_into_chunks_across_its_transactions(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Archive records written in chunks (as the connector does above 900 KiB; here 300 B),
    replayed two messages a transaction: every body whole, every report once."""
    topics = Topics.fresh()
    archive = f"{topics.data}.raw"
    create_topic(kafka_bootstrap, archive, partitions=2)
    expected, records = set(), []
    for n in range(6):
        reports = [report(10 * n + i) for i in range(4)]
        expected |= {str(r["msgid"]) for r in reports}
        entry = ArchivedBody(n + 1, 1.7e9 + n, json.dumps({"result": 0, "rpts": reports}).encode())
        account = ("main", "other")[n % 2]
        for part in archive_records(entry, account, "spool-x", max_bytes=300):
            records.append((part.key, part.value, part.headers))
    assert len(records) > 12  # every body is in several chunks
    produce(kafka_bootstrap, archive, records)
    config = write_config(
        tmp_path / "c.toml", base_url="http://127.0.0.1:9", bootstrap=kafka_bootstrap,
        topics=topics, spool=tmp_path / "spool",
    )  # fmt: skip
    config.write_text(
        config.read_text().replace("[kafka]\n", f'[kafka]\narchive_topic = "{archive}"\n', 1)
    )
    settings = load_settings(config)
    target = f"{topics.data}.chunked"
    summary = replay_archive(
        settings, ReplayParts.from_settings(settings), to_topic=target, batch=2
    )
    assert (summary.bodies, summary.records, summary.dead_letters) == (6, 24, 0)
    got = Counter(json.loads(text)["msgid"] for _key, text in records_of(kafka_bootstrap, target))
    assert set(got) == expected and max(got.values()) == 1
