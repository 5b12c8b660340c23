"""kafka.record_headers: the data records' headers (account, content-type, schema-fingerprint),
or none. The key, its checks, the record builder on both record paths, and what reaches
librdkafka's produce() (a FakeProducer that keeps the headers argument as given)."""

from __future__ import annotations

import json

import pytest

from connector.codec import native
from connector.codec.avro import record_headers, single_object_encoder
from connector.codec.report import Normalizer
from connector.config.settings import settings_from_dict
from connector.errors import ConfigError
from connector.kafka.records import RecordBuilder
from tests.unit.test_record_timestamp import StampingProducer, publisher

MINIMAL = {
    "accounts": [{"name": "main", "token_env": "RPT_TEST_TOKEN"}],
    "kafka": {"producer": {"bootstrap.servers": "127.0.0.1:9092"}},
}
BODY = json.dumps(
    {"result": 0, "rpts": [{"msgid": 2**64 + 1, "custid": "c1", "status": "0"}]}
).encode()


class Entry:
    seq, fetched_at, body, note, memo = 1, 1_700_000_000.0, BODY, None, None


def test_headers_are_on_unless_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_dict(MINIMAL).kafka.record_headers is True
    off = {**MINIMAL, "kafka": {**MINIMAL["kafka"], "record_headers": False}}
    assert settings_from_dict(off).kafka.record_headers is False
    monkeypatch.setenv("RPT_KAFKA__RECORD_HEADERS", "false")
    assert settings_from_dict(MINIMAL).kafka.record_headers is False


def test_a_value_that_is_not_a_boolean_names_the_key() -> None:
    bad = {**MINIMAL, "kafka": {**MINIMAL["kafka"], "record_headers": "sometimes"}}
    with pytest.raises(ConfigError, match=r"kafka\.record_headers"):
        settings_from_dict(bad)


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "python"])
@pytest.mark.parametrize("headers", [True, False])
def test_the_builder_gives_the_headers_or_none(
    use_native: bool, headers: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not use_native:
        monkeypatch.setenv("RPT_NATIVE", "0")
    encoder = single_object_encoder()
    builder = RecordBuilder("main", Normalizer("main"), encoder, "msgid", headers=headers)
    assert (builder._native is not None) == (use_native and native.rpt_native is not None)
    built = builder.build(Entry())
    assert built.keys == [b"c1"] and len(built.values) == 1
    assert builder.headers == (record_headers("main", encoder) if headers else None)


def test_no_headers_reach_produce_as_none() -> None:
    pub, made = publisher()
    producer: StampingProducer = made[0]
    given: list[object] = []
    produce = producer.produce

    def keep(topic, value=None, key=None, partition=-1, headers=None, **extra) -> None:
        given.append(headers)
        produce(topic, value, key, partition, headers, **extra)

    producer.produce = keep  # type: ignore[method-assign]
    pub.produce_many("t", [b"v1", b"v2"], [b"k", None], None)
    pub.produce_many("t", [b"v3"], [b"k"], [("account", b"main")])
    assert given == [None, None, [("account", b"main")]]
