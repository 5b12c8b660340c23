"""kafka.record_timestamp = "rtime": each data record's Kafka timestamp is its report's rtime,
kept inside what the topic accepts (else the produce time, counted); "produce" adds nothing.

The real broker's side (INVALID_TIMESTAMP for a timestamp outside the topic's limits) is
tests/integration/test_record_timestamp_e2e.py."""

from __future__ import annotations

import json
import logging
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connector.codec import native
from connector.codec.avro import single_object_encoder
from connector.codec.report import Normalizer
from connector.config.settings import KafkaSettings, settings_from_dict
from connector.errors import ConfigError
from connector.kafka.checkpoint import Checkpoint
from connector.kafka.publisher import AccountPublisher, Reachability
from connector.kafka.records import EntryRecords, RecordBuilder, RecordTimestamps, TimestampLimits
from connector.kafka.topics import record_timestamps, timestamp_limits
from connector.observe.account import MetricsAndStatus
from connector.observe.metrics import Metrics
from connector.observe.observer import CommitSummary, SpoolLevel, TimestampClamp
from connector.observe.status import StatusBoard
from connector.retry import Deadline
from tests.fakes import FakeClock, FakeKafka, FakeProducer, FakeProgress

NOW = 1_764_590_000.0  # the wall clock of these tests: 2025-12-01 11:53:20 UTC
NOW_MS = round(NOW * 1000)
MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
WEEK = TimestampLimits(after_ms=HOUR_MS, before_ms=7 * DAY_MS)
MINIMAL = {
    "accounts": [{"name": "main", "token_env": "RPT_TEST_TOKEN"}],
    "kafka": {"producer": {"bootstrap.servers": "127.0.0.1:9092"}},
}


def settings(**kafka: object):
    return settings_from_dict({**MINIMAL, "kafka": {**MINIMAL["kafka"], **kafka}})


def stamp(rtimes: list[int | None], limits: TimestampLimits = WEEK) -> tuple[list[int], Counter]:
    clamped: Counter = Counter()
    return RecordTimestamps(limits, wall_clock=lambda: NOW).stamp(rtimes, clamped), clamped


# --- the configuration key ----------------------------------------------------------------------
def test_record_timestamp_is_produce_unless_set_to_rtime(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings().kafka.record_timestamp == "produce"
    assert settings(record_timestamp="rtime").kafka.record_timestamp == "rtime"
    monkeypatch.setenv("RPT_KAFKA__RECORD_TIMESTAMP", "rtime")
    assert settings().kafka.record_timestamp == "rtime"


@pytest.mark.parametrize("where", ["file", "environment"])
def test_another_value_fails_naming_the_key_and_the_values(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as caught:
        if where == "file":
            settings(record_timestamp="event")
        else:
            monkeypatch.setenv("RPT_KAFKA__RECORD_TIMESTAMP", "event")
            settings()
    message = str(caught.value)
    assert "kafka.record_timestamp" in message
    assert "'produce'" in message and "'rtime'" in message


# --- the clamp ------------------------------------------------------------------------------------
def test_rtimes_inside_the_topic_s_limits_are_the_timestamps_exactly() -> None:
    rtimes = [NOW_MS - 6 * DAY_MS, NOW_MS - 1000, NOW_MS, NOW_MS + 50 * MINUTE_MS]
    assert stamp(rtimes) == (rtimes, Counter())


def test_missing_too_new_and_too_old_rtimes_get_the_produce_time_and_are_counted() -> None:
    rtimes = [NOW_MS, None, NOW_MS + 2 * HOUR_MS, NOW_MS - 8 * DAY_MS, 0, -86_400_000, None]
    stamps, clamped = stamp(rtimes)
    assert stamps == [NOW_MS, 0, 0, 0, 0, 0, 0]  # 0: librdkafka stamps the produce time
    assert clamped == {TimestampClamp.MISSING: 2, TimestampClamp.FUTURE: 1, TimestampClamp.PAST: 3}


def test_the_margin_keeps_rtimes_clear_of_the_limits() -> None:
    """5 minutes inside each limit (half of it for a small one): skew and time in flight."""
    assert stamp([NOW_MS + 54 * MINUTE_MS, NOW_MS + 56 * MINUTE_MS])[0] == [
        NOW_MS + 54 * MINUTE_MS,
        0,
    ]
    old = [NOW_MS - 7 * DAY_MS + 6 * MINUTE_MS, NOW_MS - 7 * DAY_MS + 4 * MINUTE_MS]
    assert stamp(old)[0] == [old[0], 0]
    small = TimestampLimits(after_ms=60_000, before_ms=60_000)
    near = [NOW_MS + 29_000, NOW_MS + 31_000, NOW_MS - 29_000, NOW_MS - 31_000]
    assert stamp(near, small)[0] == [near[0], 0, near[2], 0]


def test_kafka_s_default_limits_keep_every_past_rtime() -> None:
    year_2000 = 946_684_800_000
    assert stamp([year_2000, 1], TimestampLimits()) == ([year_2000, 1], Counter())


# --- the builder, Python and native -------------------------------------------------------------
@dataclass
class Entry:
    body: bytes
    fetched_at: float = NOW
    seq: int = 1
    note: str | None = None
    memo: object | None = None


def utc8_ms(text: str) -> int:
    local = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return round(local.timestamp() * 1000) - 8 * HOUR_MS


REPORTS = [
    {"msgid": 1, "custid": "a", "status": 0, "rtime": "2025-12-01 18:00:00"},
    {"msgid": 2, "custid": "b", "status": 0, "rtime": "2099-01-01 00:00:00"},  # future
    {"msgid": 3, "custid": "c", "status": 0, "rtime": "bad"},  # rejected: no record
    {"msgid": 4, "custid": "d", "status": 0},  # no rtime
    {"msgid": 5, "custid": "e", "status": 0, "rtime": "1990-05-05 10:00:00"},  # past, Python's
    {"msgid": 6, "custid": "f", "status": 0, "rtime": "2025-11-30 09:30:15"},
]
BODY = json.dumps({"result": 0, "rpts": REPORTS}).encode()


def builder(stamps: RecordTimestamps | None, use_native: bool) -> RecordBuilder:
    out = RecordBuilder("acc", Normalizer("acc"), single_object_encoder(), "msgid", stamps)
    if not use_native:
        out._native = None
    elif out._native is None:
        pytest.skip("rpt_native is not built")
    return out


@pytest.mark.parametrize("use_native", [False, True], ids=["python", "native"])
def test_each_record_gets_its_own_rtime_or_the_produce_time(use_native: bool) -> None:
    stamps = RecordTimestamps(WEEK, wall_clock=lambda: NOW)
    built = builder(stamps, use_native).build(Entry(BODY))
    assert len(built.values) == 5 and len(built.dead_letters) == 1
    assert built.timestamps == [
        utc8_ms("2025-12-01 18:00:00"),
        0,
        0,
        0,
        utc8_ms("2025-11-30 09:30:15"),
    ]
    assert built.clamped == {"future": 1, "missing": 1, "past": 1}


@pytest.mark.parametrize("use_native", [False, True], ids=["python", "native"])
def test_produce_time_builds_no_timestamps(use_native: bool) -> None:
    built = builder(None, use_native).build(Entry(BODY))
    assert len(built.values) == 5
    assert built.timestamps is None and not built.clamped


@pytest.mark.skipif(native.rpt_native is None, reason="rpt_native is not built")
def test_the_native_encoder_returns_rtimes_only_when_asked() -> None:
    plain = native.rpt_native.BodyEncoder("acc", b"\xc3\x01", True, 28_800, 0)
    asked = native.rpt_native.BodyEncoder("acc", b"\xc3\x01", True, 28_800, 0, rtimes=True)
    body = json.dumps({"result": 0, "rpts": [REPORTS[0], REPORTS[3], REPORTS[2]]}).encode()
    assert len(plain.encode_body(body, 0)) == 5
    out = asked.encode_body(body, 0)
    assert out[:5] == plain.encode_body(body, 0)
    assert out[5] == [utc8_ms("2025-12-01 18:00:00"), None, None]  # the 3rd is slow


# --- the publisher --------------------------------------------------------------------------------
class StampingProducer(FakeProducer):
    """FakeProducer that keeps each produce() call's extra keyword arguments."""

    def __init__(self, kafka: FakeKafka, config: dict, full_once: bool = False) -> None:
        super().__init__(kafka, config)
        self.extra: list[dict] = []
        self._full_once = full_once

    def produce(self, topic, value=None, key=None, partition=-1, headers=None, **extra) -> None:
        if self._full_once:
            self._full_once = False
            raise BufferError("Local: Queue full")
        self.extra.append(extra)
        super().produce(topic, value, key, partition, headers)


def publisher(full_once: bool = False) -> tuple[AccountPublisher, list[StampingProducer]]:
    clock = FakeClock()
    kafka = FakeKafka(clock)
    made: list[StampingProducer] = []

    def factory(config: dict) -> StampingProducer:
        made.append(StampingProducer(kafka, config, full_once))
        return made[-1]

    pub = AccountPublisher(
        KafkaSettings(producer={"bootstrap.servers": "fake:9092"}), "acme", spool_id="s",
        reachability=Reachability(30.0, lambda *_: None, clock), producer_factory=factory,
        progress=FakeProgress(kafka), clock=clock,
    )  # fmt: skip
    pub.init(Deadline.after(5, clock))
    pub.begin()
    return pub, made


def test_produce_time_hands_librdkafka_no_timestamp_argument() -> None:
    pub, made = publisher()
    pub.produce_many("t", [b"v1", b"v2"], [b"k", None], [])
    assert made[0].extra == [{}, {}]


@pytest.mark.parametrize("full_once", [False, True], ids=["room", "queue_full_first"])
def test_rtime_hands_each_record_its_timestamp(full_once: bool) -> None:
    pub, made = publisher(full_once)
    pub.produce_many("t", [b"v1", b"v2", b"v3"], [b"k"] * 3, [], timestamps=[5, 0, NOW_MS])
    assert made[0].extra == [{"timestamp": 5}, {"timestamp": 0}, {"timestamp": NOW_MS}]


# --- reading the topic's limits -------------------------------------------------------------------
@dataclass
class ConfigEntry:
    value: str


class FakeAdmin:
    def __init__(self, configs: dict[str, str] | None = None, error: Exception | None = None):
        self.configs, self.error, self.asked = configs, error, []

    def describe_configs(self, resources: list, request_timeout: float) -> dict:
        self.asked += [r.name for r in resources]
        future: Future = Future()
        if self.error is not None:
            future.set_exception(self.error)
        else:
            future.set_result({k: ConfigEntry(v) for k, v in self.configs.items()})
        return {resources[0]: future}


KAFKA_4 = {
    "message.timestamp.after.max.ms": "3600000",
    "message.timestamp.before.max.ms": "9223372036854775807",
    "message.timestamp.difference.max.ms": "9223372036854775807",
    "retention.ms": "604800000",
}


def test_the_limits_are_the_topic_s_own() -> None:
    admin = FakeAdmin({**KAFKA_4, "message.timestamp.before.max.ms": "86400000"})
    assert timestamp_limits(admin, "data", 1.0) == TimestampLimits(HOUR_MS, DAY_MS)
    assert admin.asked == ["data"]
    kafka_4_1 = {k: v for k, v in KAFKA_4.items() if "difference" not in k}  # key removed
    assert timestamp_limits(FakeAdmin(kafka_4_1), "data", 1.0) == TimestampLimits()


def test_an_older_broker_s_difference_limits_both_ways() -> None:
    admin = FakeAdmin({"message.timestamp.difference.max.ms": "600000"})
    assert timestamp_limits(admin, "data", 1.0) == TimestampLimits(600_000, 600_000)


@pytest.mark.parametrize(
    "admin",
    [
        FakeAdmin(error=KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "no"))),
        FakeAdmin({"retention.ms": "604800000"}),  # neither key
        FakeAdmin({**KAFKA_4, "message.timestamp.after.max.ms": None}),
    ],
    ids=["refused", "absent", "no_value"],
)
def test_unreadable_limits_are_one_hour_both_ways(
    admin: FakeAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    """Safe whatever the topic says: a refused timestamp would fail every retry."""
    with caplog.at_level(logging.WARNING, "connector.topics"):
        assert timestamp_limits(admin, "data", 1.0) == TimestampLimits(HOUR_MS, HOUR_MS)
    assert "cannot read message.timestamp.after.max.ms" in caplog.text


def test_only_rtime_asks_the_broker() -> None:
    def no_admin(_config: dict) -> FakeAdmin:
        raise AssertionError("produce time needs no admin client")

    assert record_timestamps(settings().kafka, "data", admin_factory=no_admin) is None
    stamps = record_timestamps(
        settings(record_timestamp="rtime").kafka, "data", admin_factory=lambda _: FakeAdmin(KAFKA_4)
    )
    assert isinstance(stamps, RecordTimestamps) and stamps.limits == TimestampLimits()


# --- the counter ----------------------------------------------------------------------------------
def clamp_series(metrics: Metrics) -> dict[tuple[str, str], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.labels["account"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "rpt_record_timestamp_clamped"
        for s in family.samples
        if s.name.endswith("_total")
    }


def test_the_clamp_counter_starts_at_zero_and_counts_what_commits() -> None:
    metrics = Metrics(accounts=["a", "b"])
    reasons = ("future", "past", "missing")
    assert clamp_series(metrics) == {(a, r): 0.0 for a in "ab" for r in reasons}

    ckpt = Checkpoint(1.0, 100)
    ckpt.add(1, EntryRecords(values=[b"x"] * 3, clamped=Counter(future=2, missing=1)), 0.0)
    ckpt.add(2, EntryRecords(values=[b"y"], clamped=Counter(future=1)), 0.0)
    ckpt.add(3, EntryRecords(values=[b"z"]), 0.0)
    summary = ckpt.summary(0.01, NOW)
    assert summary.timestamps_clamped == {"future": 3, "missing": 1}
    observer = MetricsAndStatus(metrics, StatusBoard(["a", "b"]), "a")
    observer.committed(summary, SpoolLevel(0, 0, 0, None, 1 << 20))
    observer.committed(CommitSummary(4, 1), SpoolLevel(0, 0, 0, None, 1 << 20))
    series = clamp_series(metrics)
    assert series[("a", "future")] == 3 and series[("a", "missing")] == 1
    assert series[("a", "past")] == 0 and series[("b", "future")] == 0
