"""kafka.record_timestamp against a real broker: read the records back and look at their Kafka
timestamps. "rtime": each record's timestamp is its rtime (ms); "produce": its produce time.
An rtime the topic would refuse (message.timestamp.after/before.max.ms) gets the produce time
and is counted in /metrics; the broker's refusal itself is shown first (without the clamp the
transaction fails, and fails again at every retry)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hostile_platform as hostile
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException, Producer
from harness import (
    ConnectorProcess,
    Endpoints,
    Topics,
    connector_env,
    drain_exactly_once,
    write_config,
)
from hostile_platform import wait_for
from kafka_helpers import ConsumedRecord, consume_all, create_topic, unique_topic

from connector.codec.avro import decode_single_object

pytestmark = pytest.mark.integration

EPOCH, MS = datetime(1970, 1, 1, tzinfo=UTC), timedelta(milliseconds=1)
UTC8 = timedelta(hours=8)
CLAMPED = "rpt_record_timestamp_clamped_total"


def millis(when: datetime | None) -> int | None:
    return None if when is None else (when - EPOCH) // MS


def utc8_text(when: datetime) -> str:
    return (when + UTC8).strftime("%Y-%m-%d %H:%M:%S")


def stamps(bootstrap: str, topic: str) -> list[tuple[dict, ConsumedRecord]]:
    """Every record of the topic (read_committed), its value decoded, CreateTime checked."""
    records = consume_all(bootstrap, topic, timeout=60)
    for record in records:
        assert record.timestamp is not None and record.timestamp[0] == TIMESTAMP_CREATE_TIME
    return [(decode_single_object(record.value), record) for record in records]


def clamp_counts(text: str) -> dict[str, float]:
    pattern = rf'^{CLAMPED}{{account="main",reason="(\w+)"}} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


# --- the broker's side ----------------------------------------------------------------------------
def transaction(bootstrap: str, topic: str, timestamp: int) -> None:
    """One record with `timestamp` (0: the produce time) in one transaction; raises on failure."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-{timestamp}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"v", b"k", timestamp=timestamp)
    producer.commit_transaction(30)


def test_the_broker_refuses_a_transaction_holding_a_far_future_timestamp(
    kafka_bootstrap: str,
) -> None:
    """What the clamp prevents: message.timestamp.after.max.ms (1 h in Kafka 4) fails the
    transaction; the same record at its produce time commits."""
    topic = unique_topic("ts-refused")
    create_topic(kafka_bootstrap, topic)
    future = round(time.time() * 1000) + 2 * 3_600_000
    with pytest.raises(KafkaException) as refused:
        transaction(kafka_bootstrap, topic, future)
    assert refused.value.args[0].txn_requires_abort(), refused.value
    assert refused.value.args[0].code() == KafkaError.INVALID_TIMESTAMP, refused.value
    transaction(kafka_bootstrap, topic, 0)
    assert [r.timestamp[1] < future - 3_000_000 for r in consume_all(kafka_bootstrap, topic)] == [
        True
    ]


# --- the simulator: every record's timestamp ------------------------------------------------------
@pytest.mark.parametrize("mode", ["rtime", "produce"])
def test_each_record_s_timestamp_is_its_rtime_or_its_produce_time(
    kafka_bootstrap: str, tmp_path: Path, mode: str
) -> None:
    overrides = {"record_timestamp": mode}
    topics = drain_exactly_once(kafka_bootstrap, tmp_path, overrides, seed=17, reports=3000)
    ended = round(time.time() * 1000)
    records = stamps(kafka_bootstrap, topics.data)
    assert len(records) == 3000
    if mode == "rtime":
        assert [ts.timestamp[1] for _, ts in records] == [millis(v["rtime"]) for v, _ in records]
    else:  # stamped by librdkafka between the fetch and the end of the run
        for value, ts in records:
            assert millis(value["fetched_at"]) <= ts.timestamp[1] <= ended, (value, ts)
        same = sum(ts.timestamp[1] == millis(v["rtime"]) for v, ts in records)
        assert same < 30  # rtimes are whole seconds, produce times almost never are


# --- a hostile platform: rtimes the topic refuses -------------------------------------------------
def script(now: datetime) -> tuple[list[hostile.Answer], dict[str, str]]:
    """Good batches around one with a far-future, a too-old and a missing rtime.
    Returns the answers and, per msgid, what its timestamp must be ('rtime' or a reason)."""
    reports = hostile.Reports()

    def at(*hours_ago: float) -> list[dict]:
        return [reports.one(rtime=utc8_text(now - timedelta(hours=h))) for h in hours_ago]

    before, recent, after = at(*range(10)), at(2, 5, 20), at(*(h / 10 for h in range(10)))
    future = reports.one(rtime="2099-01-01 08:00:00")
    old = reports.one(rtime=utc8_text(now - timedelta(days=3)))
    missing = reports.one()
    del missing["rtime"]
    mixed = [recent[0], future, old, missing, recent[1], recent[2]]
    expect = {str(r["msgid"]): "rtime" for r in [*before, *recent, *after]}
    expect |= {str(future["msgid"]): "future", str(old["msgid"]): "past"}
    expect[str(missing["msgid"])] = "missing"
    answers = [hostile.Answer("good", hostile.batch(b), len(b)) for b in (before, mixed, after)]
    return answers, expect


def test_rtimes_the_topic_refuses_get_the_produce_time_are_counted_and_commit(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh()
    # The topic exists with a 1-day limit into the past: the connector reads its limits.
    day = {"message.timestamp.before.max.ms": "86400000"}
    create_topic(kafka_bootstrap, topics.data, partitions=3, config=day)
    started = datetime.now(UTC)
    answers, expect = script(started)
    server = hostile.HostilePlatform(answers, token="hostile-token-ts").start()
    config = write_config(
        tmp_path / "c.toml", base_url=server.base_url, bootstrap=kafka_bootstrap, topics=topics,
        spool=tmp_path / "spool", overrides={"kafka": {"record_timestamp": "rtime"}},
    )  # fmt: skip
    env = connector_env({"main": "hostile-token-ts"})
    connector = ConnectorProcess(config, tmp_path / "connector.log", env=env).start()
    try:
        endpoints = Endpoints(connector.metrics_base_url())
        published = "rpt_records_published_total"
        wait_for(lambda: endpoints.metric(published) >= len(expect), 90, "every report committed")
        counts = clamp_counts(endpoints.metrics_text())
        assert connector.terminate() == 0, connector.output()
    finally:
        if connector.alive():
            connector.kill()
        server.stop()
    ended = round(time.time() * 1000)
    assert counts == {"future": 1.0, "past": 1.0, "missing": 1.0}
    assert "accepts record timestamps 3600000 ms ahead, 86400000 ms behind" in connector.output()
    records = stamps(kafka_bootstrap, topics.data)
    assert sorted(v["msgid"] for v, _ in records) == sorted(expect)  # each exactly once
    assert consume_all(kafka_bootstrap, topics.dlq, timeout=30) == []
    for value, record in records:
        if expect[value["msgid"]] == "rtime":
            assert record.timestamp[1] == millis(value["rtime"]), value
        else:
            assert millis(value["fetched_at"]) <= record.timestamp[1] <= ended, value
    assert "transaction must abort" not in connector.output()
