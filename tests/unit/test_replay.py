"""Replay and archive, in-process: time parsing, the window, the summary, chunking, the
consume-transform-produce loop against fakes that model offsets and transactions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, TopicPartition

from connector import cli
from connector.codec.avro import single_object_encoder
from connector.codec.report import Normalizer
from connector.config.settings import settings_from_dict
from connector.errors import ConfigError
from connector.kafka.archive import archive_records, chunk_of
from connector.kafka.records import RecordTimestamps, TimestampLimits
from connector.kafka.topics import _new_topic
from connector.replay.archived import ArchiveTransform, Builders, Summary, Window, parse_time
from connector.replay.dlq import DeadLetterTransform, as_body
from connector.replay.loop import LoopHooks, TransactionalCopy

BODY = b'{"result":0,"rpts":[{"msgid":1,"custid":"c","status":0,"rtime":"2024-01-02 03:04:05"}]}'


@dataclass
class Entry:
    seq: int = 7
    fetched_at: float = 1_700_000_000.123
    body: bytes = BODY
    note: None = None
    memo: None = None


@dataclass
class Message:
    _value: bytes | None
    _headers: list
    _partition: int = 0
    _offset: int = 0
    _error: object = None

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list:
        return self._headers

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> object:
        return self._error

    def topic(self) -> str:
        return "archive"

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000


class Eof:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF


@dataclass
class FakeConsumer:
    """One partition; delivers from the assigned offset, then an EOF at the end."""

    log: list[Message]
    committed_offset: int = -1001
    position_at: int = 0
    grow_after_start: list[Message] = field(default_factory=list)

    def list_topics(self, topic: str, timeout: float) -> object:
        meta = type("T", (), {"error": None, "partitions": {0: None}})
        return type("M", (), {"topics": {topic: meta}})

    def committed(self, tps: list, timeout: float) -> list:
        return [TopicPartition(tps[0].topic, 0, self.committed_offset)]

    def get_watermark_offsets(self, tp: object, timeout: float) -> tuple[int, int]:
        return 0, len(self.log)

    def assign(self, assignment: list) -> None:
        self.position_at = max(assignment[0].offset, 0)
        self.log = self.log + self.grow_after_start  # written after the run started

    def poll(self, timeout: float) -> Message | None:
        if self.position_at < len(self.log):
            message = self.log[self.position_at]
            self.position_at += 1
            return message
        return Message(None, [], 0, self.position_at, Eof())

    def position(self, tps: list) -> list:
        return [TopicPartition("archive", 0, self.position_at)]

    def consumer_group_metadata(self) -> str:
        return "group-metadata"


@dataclass
class FakeProducer:
    """Models a transaction: produced records and offsets become visible only on commit."""

    visible: list = field(default_factory=list)
    offsets: list = field(default_factory=list)
    _open: list = field(default_factory=list)
    _open_offsets: list = field(default_factory=list)
    timestamps: list = field(default_factory=list)  # every produce() call's, in order
    in_txn: bool = False

    def init_transactions(self, timeout: float) -> None: ...

    def begin_transaction(self) -> None:
        assert not self.in_txn
        self.in_txn = True

    def produce(
        self, topic: str, value: bytes, key: object, headers: list, timestamp: int = 0
    ) -> None:
        assert self.in_txn
        self._open.append((topic, value))
        self.timestamps.append(timestamp)

    def send_offsets_to_transaction(self, offsets: list, metadata: object, timeout: float) -> None:
        assert metadata == "group-metadata"
        assert self.in_txn, "Operation not valid in state Ready"
        self._open_offsets = [tp.offset for tp in offsets]

    def commit_transaction(self, timeout: float) -> None:
        assert self.in_txn, "Operation not valid in state Ready"
        self.visible += self._open
        self.offsets.append(self._open_offsets)
        self._open, self._open_offsets, self.in_txn = [], [], False

    def abort_transaction(self, timeout: float) -> None:
        assert self.in_txn, "Operation not valid in state Ready"
        self._open, self._open_offsets, self.in_txn = [], [], False

    def poll(self, timeout: float) -> None: ...


def archived(body: bytes, max_bytes: int, offset: int = 0, fetched: float = 1.7e9) -> list:
    records = archive_records(Entry(body=body, fetched_at=fetched), "acct", "spool-1", max_bytes)
    return [Message(r.value, r.headers, 0, offset + i) for i, r in enumerate(records)]


def transform(window: Window | None = None, dry_run: bool = False) -> ArchiveTransform:
    builders = Builders(Normalizer, single_object_encoder(), "msgid")
    return ArchiveTransform(builders, "out", "out.dlq", window or Window(), dry_run)


def test_times_are_iso_8601_or_epoch_ms() -> None:
    assert parse_time("1700000000123") == 1_700_000_000_123
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000_000  # no zone: UTC
    assert parse_time("2023-11-15T06:13:20+08:00") == 1_700_000_000_000
    with pytest.raises(ValueError, match="neither ISO-8601 nor epoch"):
        parse_time("yesterday")


def test_window_filters_on_account_and_a_half_open_fetched_at_range() -> None:
    window = Window("a", since_ms=100, until_ms=200)
    assert window.admits("a", 100) and window.admits("a", 199)
    assert not window.admits("a", 200) and not window.admits("a", 99)
    assert not window.admits("b", 150)
    assert Window().admits("anyone", 0)


def test_summary_line_and_json() -> None:
    summary = Summary(bodies=3, records=10, dead_letters=1, seconds=2.25, left={"x": 2})
    assert summary.line("replay dlq") == (
        "replay dlq: 3 bodies, 10 records, 1 dead letters, 0 skipped, 2.2s; still failing: x=2"
    )
    assert json.loads(summary.as_json())["records"] == 10


def test_archive_record_carries_the_body_and_its_headers() -> None:
    [record] = archive_records(Entry(), "acct", "spool-1")
    assert record.value == BODY and record.key == b"acct"
    assert dict(record.headers) == {
        "account": b"acct", "fetched_at": b"1700000000123", "spool.sequence": b"7",
        "spool.id": b"spool-1", "content-type": b"application/json",
    }  # fmt: skip


def test_a_large_body_is_split_into_numbered_chunks_and_joined_back() -> None:
    messages = archived(BODY, 10)
    assert [chunk_of(dict(m.headers())) for m in messages][:2] == [(1, 9), (2, 9)]
    assert b"".join(m.value() for m in messages) == BODY
    replay = transform()
    outputs = [replay(m) for m in messages]
    assert outputs[:-1] == [None] * 8  # not complete: nothing produced, no offset past it
    assert [o.topic for o in outputs[-1]] == ["out"] and replay.summary.records == 1


def test_a_body_whose_first_chunks_are_gone_is_skipped() -> None:
    replay = transform()
    assert [replay(m) for m in archived(BODY, 10)[3:]] == [[]] * 6
    assert replay.summary.skipped == 1 and replay.summary.bodies == 0


def test_window_and_dry_run_count_but_do_not_produce() -> None:
    outside = transform(Window(since_ms=2_000_000_000_000))
    assert outside(archived(BODY, 1000)[0]) == [] and outside.summary.skipped == 1
    dry = transform(dry_run=True)
    assert dry(archived(BODY, 1000)[0]) == [] and dry.summary.records == 1


def test_copy_commits_offsets_with_records_and_never_past_half_a_body() -> None:
    log = archived(BODY, 1000) + archived(BODY, 40, offset=1) + archived(BODY, 1000, offset=4)
    consumer, producer = FakeConsumer(log), FakeProducer()
    copy = TransactionalCopy(consumer, producer, "archive", batch_messages=2)
    copy.run(transform())
    assert [out[0] for out in producer.visible] == ["out", "out", "out"]  # three bodies
    # Batches of 2 messages: the one ending inside the chunked body commits the offset before it.
    assert producer.offsets[0] == [1] and producer.offsets[-1] == [len(log)]
    assert all(a <= b for a, b in zip(producer.offsets, producer.offsets[1:], strict=False))


def test_copy_resumes_from_committed_offsets_and_stops_at_the_end_seen_at_start() -> None:
    log = [archived(BODY, 1000, offset=i)[0] for i in range(4)]
    later = archived(BODY, 1000, offset=4)
    consumer = FakeConsumer(log, committed_offset=2, grow_after_start=later)
    producer = FakeProducer()
    TransactionalCopy(consumer, producer, "archive").run(transform())
    assert len(producer.visible) == 2 and producer.offsets[-1] == [4]


def test_a_dry_run_moves_no_offset() -> None:
    producer = FakeProducer()
    copy = TransactionalCopy(FakeConsumer(archived(BODY, 1000)), producer, "archive", dry_run=True)
    copy.run(transform(dry_run=True))
    assert producer.offsets == [] and producer.visible == []


def test_the_fail_point_runs_before_each_commit() -> None:
    calls: list[int] = []
    hooks = LoopHooks(before_commit=calls.append)
    log = [archived(BODY, 1000, offset=i)[0] for i in range(3)]
    TransactionalCopy(FakeConsumer(log), FakeProducer(), "archive", 1, hooks=hooks).run(transform())
    assert calls == [1, 2, 3]  # one per message; the last one reached the end: no empty one


def test_a_batch_that_ends_exactly_at_the_end_commits_once() -> None:
    log = [archived(BODY, 1000, offset=i)[0] for i in range(4)]
    producer = FakeProducer()
    TransactionalCopy(FakeConsumer(log), producer, "archive", batch_messages=2).run(transform())
    assert producer.offsets == [[2], [4]] and len(producer.visible) == 4


def test_dead_letters_become_bodies_by_reason() -> None:
    assert as_body("invalid_response", b"{x") == b"{x"
    assert as_body("invalid_report", b'{"msgid":1}') == b'{"result":0,"rpts":[{"msgid":1}]}'
    assert as_body("unencodable_record", b"{'a': 1}") is None


def test_archive_is_on_by_default_created_with_zstd_and_its_retention() -> None:
    base = {"accounts": [{"name": "a", "token_env": "T"}]}
    kafka = {"producer": {"bootstrap.servers": "x:1"}}
    settings = settings_from_dict(base | {"kafka": kafka | {"archive_retention": "48h"}})
    assert settings.topics[-1] == "sms.status-reports.raw"
    topic = _new_topic(settings.kafka, "sms.status-reports.raw")
    assert topic.config == {
        "compression.type": "zstd", "cleanup.policy": "delete", "retention.ms": "172800000",
    }  # fmt: skip
    off = settings_from_dict(base | {"kafka": kafka | {"archive_topic": ""}})
    assert "" not in off.topics and len(off.topics) == 3
    with pytest.raises(ConfigError, match=r"kafka.archive_topic .* must differ"):
        settings_from_dict(base | {"kafka": kafka | {"archive_topic": "sms.status-reports"}})


def test_cli_replay_arguments(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as missing:
        cli.main(["replay", "archive", "--config", "c.toml"])
    assert missing.value.code == 2 and "--to-topic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["replay", "archive", "-c", "c.toml", "--to-topic", "t", "--since", "soon"])
    assert "neither ISO-8601 nor epoch" in capsys.readouterr().err
    args = cli.build_parser().parse_args(
        ["replay", "archive", "-c", "c", "--to-topic", "t", "--since", "1000", "--account", "a"]
    )
    assert (args.since, args.account, args.until, args.dry_run) == (1000, "a", None, False)
    dlq = cli.build_parser().parse_args(["replay", "dlq", "-c", "c", "--reason", "invalid_report"])
    assert dlq.reason == "invalid_report" and dlq.to_topic is None


def dead_letter(value: bytes, reason: str, **extra: bytes) -> Message:
    headers = [("reason", reason.encode()), ("account", b"a"), ("spool.sequence", b"3")]
    return Message(value, headers + list(extra.items()), 0, 42)


def dlq_transform(summary: Summary, reason: str = "invalid_response") -> DeadLetterTransform:
    settings = settings_from_dict(
        {"accounts": [{"name": "a", "token_env": "T", "topic": "a-data"}],
         "kafka": {"producer": {"bootstrap.servers": "x:1"}}}
    )  # fmt: skip
    builders = Builders(Normalizer, single_object_encoder(), "msgid")
    return DeadLetterTransform(builders, settings, reason, None, False, summary)


def test_a_fixed_whole_body_goes_to_the_accounts_data_topic() -> None:
    summary = Summary()
    [out] = dlq_transform(summary)(dead_letter(BODY, "invalid_response"))
    assert out.topic == "a-data" and summary.records == 1 and summary.left == {}


def test_what_still_fails_is_written_again_marked_and_counted() -> None:
    summary = Summary()
    outs = dlq_transform(summary)(dead_letter(b'{"result":0,"rpts":[', "invalid_response"))
    assert [o.topic for o in outs] == ["sms.status-reports.dlq"]
    assert dict(outs[0].headers)["replayed.from"] == b"archive/0/42"
    assert summary.left == {"invalid_response": 1} and summary.dead_letters == 1


def test_other_reasons_and_chunks_are_not_taken() -> None:
    summary = Summary()
    transform = dlq_transform(summary)
    assert transform(dead_letter(BODY, "invalid_report")) == []
    assert transform(dead_letter(BODY, "invalid_response", chunk=b"1/2")) == []
    assert summary.left == {"invalid_response": 1} and summary.bodies == 0


# 2024-01-02 03:04:05 in Asia/Shanghai (UTC+8), BODY's rtime, as epoch ms.
BODY_RTIME_MS = 1_704_135_845_000


def stamping_transform() -> ArchiveTransform:
    """kafka.record_timestamp = "rtime": the builders stamp records as the live connector's do."""
    stamps = RecordTimestamps(TimestampLimits(), wall_clock=lambda: BODY_RTIME_MS / 1000 + 60)
    builders = Builders(Normalizer, single_object_encoder(), "msgid", stamps)
    return ArchiveTransform(builders, "out", "out.dlq", Window())


def test_a_replay_stamps_records_with_rtime_as_the_live_connector_does() -> None:
    [stamped] = stamping_transform()(archived(BODY, 1000)[0])
    [plain] = transform()(archived(BODY, 1000)[0])
    assert (stamped.timestamp, plain.timestamp) == (BODY_RTIME_MS, 0)  # 0: the produce time
    producer = FakeProducer()
    log = [archived(BODY, 1000, offset=i)[0] for i in range(2)]
    TransactionalCopy(FakeConsumer(log), producer, "archive").run(stamping_transform())
    assert producer.timestamps == [BODY_RTIME_MS, BODY_RTIME_MS]
