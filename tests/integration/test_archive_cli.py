"""`rpt-connector replay dlq|archive` as an operator runs them: real subprocesses (exit code,
summary line, `--json`), `--metrics-listen` scraped over HTTP while the replay is held at a
commit, against what one real connector run (real simulator, real broker) left in Kafka.

Ground truth is the simulator's `--record` file: every report it handed out.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from harness import (
    REPO,
    ConsumedRecord,
    Topics,
    consume_all,
    free_port,
    ground_truth,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families
from test_archive_chunks import replay_cli
from test_archive_replay import archived, run_until_drained

from connector.codec.avro import decode_single_object
from connector.replay.loop import HOLD_BEFORE_COMMIT_ENV

pytestmark = pytest.mark.integration

# The release with the fix: the real CLI, with the normalizer that reads status "ok?" as 0.
FIXED_CLI = (
    "import sys, connector.replay.archived, test_archive_replay as fix; "
    "connector.replay.archived.Normalizer = fix.StatusFixed; "
    "from connector.cli import main; sys.exit(main(sys.argv[1:]))"
)
_LINE = re.compile(
    r"replay dlq: (\d+) bodies, (\d+) records, (\d+) dead letters, (\d+) skipped, [\d.]+s"
    r"; still failing: invalid_report=(\d+)"
)


@dataclass
class Run:
    """What one `connector run` left in Kafka, and what the simulator handed out."""

    topics: Topics
    archive: str
    config: Path
    good: set[str]  # msgids of the reports the connector's normalizer takes
    bad: list[bytes]  # the raw reports it dead-letters
    fixable: set[str]  # msgids of the bad ones StatusFixed takes


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp_path = tmp_path_factory.mktemp("archive-cli")
    topics, archive, config = run_until_drained(
        tmp_path, kafka_bootstrap, "--reports", "6000", "--malformed-rate", "0.02"
    )
    good, bad = ground_truth(tmp_path / "handed-out.jsonl")
    fixable = {str(json.loads(line)["msgid"]) for line in bad if '"status":"ok?"' in line}
    assert fixable and len(bad) > len(fixable)
    assert msgids(kafka_bootstrap, topics.data) == Counter(list(good))  # the live path, once each
    return Run(topics, archive, config, set(good), [b.encode() for b in bad], fixable)


def msgids(bootstrap: str, topic: str) -> Counter:
    return Counter(
        decode_single_object(r.value)["msgid"] for r in consume_all(bootstrap, topic, timeout=60)
    )


def cli_env(**extra: str) -> dict[str, str]:
    paths = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "integration")]
    return dict(os.environ) | {"PYTHONPATH": os.pathsep.join(paths), **extra}


def fixed_replay(config: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", FIXED_CLI, "replay", *args, "--config", str(config)]
    return subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=300)


def test_replay_dlq_cli_moves_the_fixed_dead_letters_once_and_a_rerun_moves_nothing(
    kafka_bootstrap: str, run: Run
) -> None:
    dead, still = len(run.bad), len(run.bad) - len(run.fixable)
    # The release without the fix: nothing passes yet, and a dry run writes nothing.
    dry = replay_cli(run.config, "dlq", "--reason", "invalid_report", "--dry-run", "--json",
                     env=cli_env())  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) | {"seconds": 0} == {
        "bodies": dead, "records": 0, "dead_letters": dead, "skipped": 0, "seconds": 0,
        "left": {"invalid_report": dead},
    }  # fmt: skip
    assert msgids(kafka_bootstrap, run.topics.data) == Counter(run.good)

    # The release with the fix: the fixed ones into the data topic, the summary line says so.
    fixed = fixed_replay(run.config, "dlq", "--reason", "invalid_report")
    assert fixed.returncode == 0, fixed.stderr
    line = _LINE.fullmatch(fixed.stdout.strip())
    assert line is not None, fixed.stdout
    assert [int(n) for n in line.groups()] == [dead, len(run.fixable), still, 0, still]

    # A rerun over every reason: the rewritten failures are read again, nothing moves.
    again = fixed_replay(run.config, "dlq", "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["bodies"], summary["records"], summary["left"]) == (
        still, 0, {"invalid_report": still},
    )  # fmt: skip

    # Against the ground truth: every good and every fixed report once, nothing else.
    assert msgids(kafka_bootstrap, run.topics.data) == Counter(run.good | run.fixable)
    letters = consume_all(kafka_bootstrap, run.topics.dlq, timeout=60)
    originals = [r for r in letters if "replayed.from" not in dict(r.headers)]
    assert sorted(r.value for r in originals) == sorted(run.bad)
    rewritten = Counter(r.value for r in letters if "replayed.from" in dict(r.headers))
    unfixed = [b for b in run.bad if b'"status":"ok?"' not in b]
    assert rewritten == Counter(unfixed * 2)  # once by each run that retried them


def watermarks(bootstrap: str, topic: str, partitions: set[int]) -> dict[int, tuple[int, int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        assert partitions <= set(meta.partitions)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            for p in meta.partitions
        }
    finally:
        consumer.close()


def gauges(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("rpt_replay_")
    }


def held_replay(
    config: Path, switch: Path, hold_at: int, *args: str
) -> tuple[subprocess.Popen, int]:
    """A replay subprocess serving its gauges, stopped before commit `hold_at` until `switch`
    is removed; returns once it is held there."""
    port = free_port()
    held = switch.with_name(switch.name + ".held")
    held.unlink(missing_ok=True)  # an earlier hold's
    switch.touch()
    command = [sys.executable, "-m", "connector", "replay", "archive", "--config", str(config),
               "--metrics-listen", f"127.0.0.1:{port}", *args]  # fmt: skip
    env = cli_env(**{HOLD_BEFORE_COMMIT_ENV: f"{hold_at}:{switch}"})
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: held.exists() or process.poll() is not None, 120, "the hold", 0.05)
    assert process.poll() is None, process.communicate()
    return process, port


def release(process: subprocess.Popen, switch: Path) -> dict:
    switch.unlink()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return json.loads(out)


def test_replay_metrics_listen_serves_how_far_it_is_while_it_runs(
    kafka_bootstrap: str, run: Run, tmp_path: Path
) -> None:
    raw: list[ConsumedRecord] = archived(kafka_bootstrap, run.archive)
    marks = watermarks(kafka_bootstrap, run.archive, {r.partition for r in raw})
    total = sum(high - low for low, high in marks.values())
    assert len(raw) > 5 and len({r.partition for r in raw}) == 1  # one account, one partition

    # Held before its first commit, 5 bodies a transaction: read up to the 5th body's offset.
    target = f"{run.topics.data}.metrics-{uuid.uuid4().hex[:6]}"
    switch = tmp_path / "hold"
    process, port = held_replay(run.config, switch, 1, "--to-topic", target, "--batch", "5",
                                "--json")  # fmt: skip
    try:
        low = marks[raw[0].partition][0]
        assert gauges(port) == {
            "rpt_replay_messages_read": raw[4].offset + 1 - low,
            "rpt_replay_messages_total": total,
        }
        summary = release(process, switch)
    finally:
        process.kill()
    assert (summary["bodies"], summary["records"], summary["dead_letters"]) == (
        len(raw), len(run.good), len(run.bad),
    )  # fmt: skip
    assert msgids(kafka_bootstrap, target) == Counter(run.good)

    # Held before its one and only commit (a batch larger than the archive): everything read,
    # the transaction markers at the partition's end included.
    process, port = held_replay(run.config, switch, 1, "--to-topic", f"{target}.dry",
                                "--batch", "100000", "--dry-run", "--json")  # fmt: skip
    try:
        assert gauges(port) == {
            "rpt_replay_messages_read": total, "rpt_replay_messages_total": total,
        }  # fmt: skip
        assert release(process, switch)["bodies"] == len(raw)
    finally:
        process.kill()
