"""The archive record in the live pipeline, in-process over the transactional Kafka model:
one record per body, in the transaction of its records, in either delivery mode."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest

from connector.errors import InvalidResponseError
from connector.replay.archived import ProgressBar, ReplayParts, replay_archive
from connector.replay.cli import Gauges
from tests.fakes import FaultySpool, ScriptedPlatform, kafka_error, report
from tests.unit.pipeline_kit import ACCOUNT, SPOOL_ID, make_rig

RAW = "sms.status-reports.raw"


def with_archive(rig: object) -> object:
    rig.pipeline.limits = dataclasses.replace(rig.pipeline.limits, archive_topic=RAW)
    return rig


def bodies(*sizes: int) -> list[list[dict]]:
    out, n = [], 0
    for size in sizes:
        out.append([report(n + i) for i in range(size)])
        n += size
    return out


def archived_msgids(rig: object) -> list[list[int]]:
    return [[r["msgid"] for r in json.loads(rec.value)["rpts"]] for rec in rig.kafka.visible(RAW)]


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_every_body_is_archived_once_with_its_headers(tmp_path, delivery: str) -> None:
    rig = with_archive(make_rig(tmp_path, ScriptedPlatform(bodies(3, 2, 4)), delivery=delivery))
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 9 and len(rig.kafka.visible(RAW)) == 3)
    rig.stop()
    assert archived_msgids(rig) == [[0, 1, 2], [3, 4], [5, 6, 7, 8]]
    for seq, record in enumerate(rig.kafka.visible(RAW), start=1):
        headers = dict(record.headers)
        assert record.key == ACCOUNT.encode() and headers["account"] == ACCOUNT.encode()
        assert headers["spool.sequence"] == str(seq).encode()
        assert headers["spool.id"] == SPOOL_ID.encode()
        assert headers["content-type"] == b"application/json"
        assert int(headers["fetched_at"]) > 1_600_000_000_000
    summaries = [args[0] for args, _ in rig.observer.named("committed")]
    assert sum(s.archive_records for s in summaries) == 3
    raw_bytes = sum(len(r.value) for r in rig.kafka.visible(RAW))
    assert sum(s.archive_bytes for s in summaries) == raw_bytes


def test_an_aborted_transaction_takes_its_archive_records_with_it(tmp_path) -> None:
    rig = with_archive(make_rig(tmp_path, ScriptedPlatform(bodies(5))))
    rig.kafka.fail("commit_transaction", kafka_error("abortable"))
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 5)
    rig.stop()
    assert [r.topic for r in rig.kafka.aborted].count(RAW) == 1
    assert archived_msgids(rig) == [[0, 1, 2, 3, 4]]


def test_a_body_that_is_a_dead_letter_is_archived_too(tmp_path) -> None:
    bad = InvalidResponseError("get-rpt body is not JSON", raw=b'{"result":0,"rpts":[{')
    rig = with_archive(make_rig(tmp_path, ScriptedPlatform([bad, *bodies(1)])))
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 1 and len(rig.kafka.visible(RAW)) == 2)
    rig.stop()
    assert rig.kafka.visible(RAW)[0].value == b'{"result":0,"rpts":[{'


def test_a_body_the_spool_could_not_take_is_archived_with_sequence_0(tmp_path) -> None:
    broken = FaultySpool
    rig = make_rig(
        tmp_path, ScriptedPlatform(bodies(4)), spool_wrapper=lambda s: failing(broken(s))
    )
    with_archive(rig).pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 4 and rig.kafka.visible(RAW))
    rig.stop()
    [record] = rig.kafka.visible(RAW)
    assert archived_msgids(rig) == [[0, 1, 2, 3]]
    assert dict(record.headers)["spool.sequence"] == b"0"


def failing(spool: object) -> FaultySpool:
    wrapped = FaultySpool(spool)
    wrapped.append_failures = 10**6  # the disk stays broken
    return wrapped


def test_no_archive_topic_no_archive_records(tmp_path) -> None:
    rig = make_rig(tmp_path, ScriptedPlatform(bodies(2)))
    rig.pipeline.start()
    rig.wait_for(lambda: len(rig.msgids()) == 2)
    rig.stop()
    assert {r.topic for r in rig.kafka.committed} == {
        "sms.status-reports",
        "rpt-connector.progress",
    }


def test_replay_refuses_a_topic_the_connector_writes() -> None:
    from connector.config.settings import settings_from_dict

    settings = settings_from_dict(
        {"accounts": [{"name": "a", "token_env": "T"}],
         "kafka": {"producer": {"bootstrap.servers": "x:1"}}}
    )  # fmt: skip
    with pytest.raises(ValueError, match="a topic the connector writes"):
        replay_archive(settings, ReplayParts.from_settings(settings), to_topic="sms.status-reports")
    off = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"archive_topic": ""})}
    )
    with pytest.raises(ValueError, match="no archive"):
        replay_archive(off, ReplayParts.from_settings(off), to_topic="new")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_only_on_a_terminal_and_gauges_follow() -> None:
    pipe, tty = io.StringIO(), Tty()
    ProgressBar("replay", pipe)(5, 10)
    bar = ProgressBar("replay", tty)
    bar(10, 10)
    bar.close()
    assert pipe.getvalue() == "" and "10/10 messages" in tty.getvalue()
    gauges = Gauges(None)
    gauges(3, 8)
    assert gauges.registry.get_sample_value("rpt_replay_messages_read") == 3
    assert gauges.registry.get_sample_value("rpt_replay_messages_total") == 8
