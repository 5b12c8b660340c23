"""A get-rpt body above the message size, end to end: hostile server → `connector run` → the
archive in numbered chunks on a real broker → `rpt-connector replay archive` (a real
subprocess, killed once in the middle of the chunked body) → the same records, once each.

Ground truth is the hostile server's own record of the bodies it wrote (tests/hostile_platform).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import hostile_platform as hostile
import pytest
from harness import ConnectorProcess, Topics, connector_env, write_config
from hostile_ledger import TOKEN, read_outcome, serve_then_stop
from test_archive_replay import archived, records_of

from connector.kafka.archive import ARCHIVE_MAX_VALUE_BYTES
from connector.replay.loop import CRASH_BEFORE_COMMIT_ENV

pytestmark = pytest.mark.integration

BIG_REPORTS = 7000  # ≈ 2 MB of JSON (289 B a report): three chunks of at most 900 KiB


def replay_cli(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m connector replay …` as an operator runs it; its exit code, stdout, stderr."""
    command = [sys.executable, "-m", "connector", "replay", *args, "--config", str(config)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_a_body_above_the_message_size_is_archived_in_chunks_and_replayed_whole_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    reports = hostile.Reports()
    script = [
        hostile.good(reports, 10),
        hostile.good(reports, BIG_REPORTS),
        hostile.good(reports, 7),
    ]
    big = script[1].body
    assert len(big) > 2 * ARCHIVE_MAX_VALUE_BYTES  # three chunks, one of them in the middle
    topics = Topics.fresh()
    archive = f"{topics.data}.raw"
    config = tmp_path / "c.toml"
    connector = None
    with hostile.HostilePlatform(script, token=TOKEN, log_file=tmp_path / "served.jsonl") as server:
        write_config(
            config, base_url=server.base_url, bootstrap=kafka_bootstrap, topics=topics,
            spool=tmp_path / "spool", overrides={"kafka": {"archive_topic": archive}},
        )  # fmt: skip
        env = connector_env({"main": TOKEN})
        try:
            connector = ConnectorProcess(config, tmp_path / "connector.log", env=env).start()
            assert serve_then_stop(server, connector, timeout=180) == 0, connector.output()
        finally:
            if connector is not None and connector.alive():
                connector.kill()
    served = [answer.sent_body for answer in server.handed_out]
    assert served == [answer.body for answer in script]  # every body went out whole

    # The live path: every report once in the data topic (the big body's 7000 in one go).
    outcome = read_outcome(kafka_bootstrap, topics)
    assert outcome.data == Counter(server.all_msgids()) and outcome.dead_letters == []

    # The archive: the small bodies whole, the big one in consecutive chunks 1/3, 2/3, 3/3.
    raw = archived(kafka_bootstrap, archive)
    chunks = [dict(r.headers).get("chunk") for r in raw]
    assert chunks == [None, b"1/3", b"2/3", b"3/3", None]
    assert [r.value for r in raw[1:4]] == [
        big[i : i + ARCHIVE_MAX_VALUE_BYTES] for i in range(0, len(big), ARCHIVE_MAX_VALUE_BYTES)
    ]
    assert [raw[0].value, b"".join(r.value for r in raw[1:4]), raw[4].value] == served
    assert len({r.partition for r in raw}) == 1  # keyed by account: one partition, in order
    parts = [dict(r.headers) for r in raw[1:4]]
    for name in ("account", "fetched_at", "spool.sequence", "spool.id", "content-type"):
        assert len({h[name] for h in parts}) == 1, name  # one body's headers on every chunk

    # Replay one message a transaction, killed before the commit that completes the big body
    # (commits: small, chunk 1, chunk 2, chunk 3 ← here): its 7000 records are aborted.
    target = f"{topics.data}.replayed-{uuid.uuid4().hex[:6]}"
    args = ("archive", "--to-topic", target, "--batch", "1", "--json")
    first = replay_cli(config, *args, env=connector_env() | {CRASH_BEFORE_COMMIT_ENV: "4"})
    assert first.returncode == 137, first.stderr
    partial = records_of(kafka_bootstrap, target)
    assert sum(partial.values()) == 10 and max(partial.values()) == 1  # the first body only
    second = replay_cli(config, *args, env=connector_env())
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    # It resumed at chunk 1 (the offsets never pass a half-read body): the big body and the last.
    assert (summary["bodies"], summary["records"], summary["dead_letters"]) == (
        2, BIG_REPORTS + 7, 0,
    )  # fmt: skip
    assert records_of(kafka_bootstrap, target) == records_of(kafka_bootstrap, topics.data)
