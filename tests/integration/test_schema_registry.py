"""The Confluent wire format against a real schema registry (Apicurio Registry, ccompat API).

The registry is provisioned from Maven Central by devregistry/devregistry.py and started once
for this module on a free port; the fixture stops it at the end.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connector.codec.avro import load_schema, make_value_encoder
from connector.codec.report import Normalizer
from connector.config.settings import KafkaSettings, SchemaRegistrySettings
from connector.errors import RegistryError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "devregistry"))

from devregistry import Registry  # noqa: E402

pytestmark = pytest.mark.integration

REPORTS = [
    {"msgid": 9223372045854775808, "custid": "b3d0a2783d31b21b8573", "pknum": 1, "pktotal": 2,
     "mobile": "138xxxxxxxx", "countrycode": 86, "spno": "1000457890006", "exno": "0006",
     "stime": "2016-08-04 17:38:55", "rtime": "2016-08-04 17:38:59", "status": 0,
     "errcode": "DELIVRD", "errdesc": "success", "exdata": "exdata0002"},
    {"msgid": "-17", "status": "3", "stime": "", "countrycode": -1},
]  # fmt: skip


@pytest.fixture(scope="module")
def registry_url() -> Iterator[str]:
    with Registry() as registry:
        yield registry.ccompat_url


@pytest.fixture
def topic() -> str:
    return f"reports-{uuid.uuid4().hex[:8]}"


def kafka_settings() -> KafkaSettings:
    return KafkaSettings(producer={"bootstrap.servers": "unused:9092"}, value_format="confluent")


def as_read(record: dict) -> dict:
    times = ("stime", "rtime", "fetched_at")
    return {
        k: datetime.fromtimestamp(v / 1000, UTC) if k in times and v is not None else v
        for k, v in record.items()
    }


def test_stock_deserializer_reads_what_our_encoder_wrote(registry_url, topic):
    records = Normalizer("acct-1").normalize_batch(REPORTS, 1470303600000).records
    encoder = make_value_encoder(kafka_settings(), SchemaRegistrySettings(url=registry_url), topic)
    values = encoder.encode_batch(records)

    client = SchemaRegistryClient({"url": registry_url})
    latest = client.get_latest_version(f"{topic}-value")
    assert all(v[:5] == b"\x00" + latest.schema_id.to_bytes(4, "big") for v in values)
    deserializer = AvroDeserializer(client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    decoded = [deserializer(v, ctx) for v in values]
    assert decoded == [as_read(r) for r in records]
    assert decoded[0]["msgid"] == "9223372045854775808"


def test_registration_is_idempotent(registry_url, topic):
    settings = SchemaRegistrySettings(url=registry_url)
    first = make_value_encoder(kafka_settings(), settings, topic)
    again = make_value_encoder(kafka_settings(), settings, topic)
    assert first.prefix == again.prefix
    versions = SchemaRegistryClient({"url": registry_url}).get_versions(f"{topic}-value")
    assert len(versions) == 1


def test_without_auto_register_an_unknown_subject_is_a_registry_error(registry_url, topic):
    lookup_only = SchemaRegistrySettings(url=registry_url, auto_register=False)
    with pytest.raises(RegistryError, match="look up"):
        make_value_encoder(kafka_settings(), lookup_only, topic)
    registered = make_value_encoder(
        kafka_settings(), SchemaRegistrySettings(url=registry_url), topic
    )
    assert make_value_encoder(kafka_settings(), lookup_only, topic).prefix == registered.prefix


def test_the_shipped_schema_is_backward_compatible_with_the_baseline(registry_url, topic):
    client = SchemaRegistryClient({"url": registry_url})
    subject = f"{topic}-value"
    baseline = (REPO / "avro" / "history" / "status_report.v1.avsc").read_text()
    client.register_schema(subject, Schema(baseline, "AVRO"))
    client.set_compatibility(subject, "BACKWARD")
    assert client.test_compatibility(subject, Schema(json.dumps(load_schema()), "AVRO"))
    # The registry does enforce the rule: a new field without a default is refused.
    broken = load_schema()
    broken["fields"].append({"name": "extra", "type": "string"})
    assert not client.test_compatibility(subject, Schema(json.dumps(broken), "AVRO"))
