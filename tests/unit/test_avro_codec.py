"""The schema, its evolution baseline, and both value wire formats (no network)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro.schema import fingerprint
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.codec.avro import (
    BodyWriter,
    confluent_encoder,
    decode_single_object,
    load_schema,
    make_value_encoder,
    parsed_schema,
    record_headers,
    record_keys,
    single_object_encoder,
)
from connector.codec.report import FIELDS, Normalizer
from connector.config.settings import KafkaSettings, SchemaRegistrySettings
from connector.errors import CodecError, RegistryError

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "avro" / "history" / "status_report.v1.avsc"
REQUIRED = {"msgid", "status", "account", "fetched_at"}

RECORD = {
    "msgid": "9223372045854775808",
    "custid": "b3d0a2783d31b21b8573",
    "pknum": 1,
    "pktotal": 2,
    "mobile": "138xxxxxxxx",
    "countrycode": -1,
    "spno": None,
    "exno": "0006",
    "stime": 1470303535000,
    "rtime": None,
    "status": 0,
    "errcode": "DELIVRD",
    "errdesc": "成功",
    "exdata": "exdata0002",
    "account": "acct-1",
    "fetched_at": 1470303540000,
}


def as_read(record: dict) -> dict:
    """What fastavro's readers return for a record: timestamp-millis as UTC datetimes."""
    out = dict(record)
    for field in ("stime", "rtime", "fetched_at"):
        if out[field] is not None:
            out[field] = datetime.fromtimestamp(out[field] / 1000, UTC)
    return out


def fastavro_body(record: dict, schema: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema or parsed_schema(), record)
    return buffer.getvalue()


# --------------------------------------------------------------------------- schema


def test_schema_is_a_documented_named_record_matching_the_normalizer():
    schema = load_schema()
    assert (schema["type"], schema["namespace"], schema["name"]) == (
        "record",
        "com.finovy.sms",
        "StatusReport",
    )
    names = [f["name"] for f in schema["fields"]]
    assert names == [*FIELDS, "account", "fetched_at"]
    assert all(f.get("doc") for f in schema["fields"])


def test_optional_fields_are_null_first_with_a_null_default():
    for field in load_schema()["fields"]:
        if field["name"] in REQUIRED:
            assert not isinstance(field["type"], list), field["name"]
        else:
            assert field["type"][0] == "null" and field["default"] is None, field["name"]


def test_times_are_timestamp_millis():
    types = {f["name"]: f["type"] for f in load_schema()["fields"]}
    assert types["stime"][1] == {"type": "long", "logicalType": "timestamp-millis"}
    assert types["rtime"][1] == {"type": "long", "logicalType": "timestamp-millis"}
    assert types["fetched_at"] == {"type": "long", "logicalType": "timestamp-millis"}


def test_the_installed_schema_is_the_contract_file():
    assert load_schema() == json.loads((REPO / "avro" / "status_report.avsc").read_text())


def test_current_schema_reads_every_field_written_with_the_released_baseline():
    """BACKWARD compatibility: a consumer on the new schema reads data written with v1."""
    old = fastavro.parse_schema(json.loads(BASELINE.read_text()))
    old_names = [f["name"] for f in old["fields"]]
    added = [f for f in load_schema()["fields"] if f["name"] not in old_names]
    assert all("default" in f for f in added), "new fields need a default"
    full = {name: RECORD[name] for name in old_names if name in RECORD}
    full.update(spno="1000457890006", rtime=1470303539000)
    sparse = {name: (full[name] if name in REQUIRED else None) for name in old_names}
    for written in (full, sparse):
        body = fastavro_body(written, old)
        read = fastavro.schemaless_reader(io.BytesIO(body), old, parsed_schema())
        for name in old_names:
            assert read[name] == as_read(written)[name], name
        for field in added:
            assert read[field["name"]] == field["default"]


# --------------------------------------------------------------------------- body encoding

optional_text = st.none() | st.text(max_size=30)
int32 = st.integers(-(2**31), 2**31 - 1)
millis = st.integers(-(2**62), 2**62)
record_fields = {
    "msgid": st.integers(-(10**40), 10**40).map(str),
    "custid": optional_text,
    "pknum": st.none() | int32,
    "pktotal": st.none() | int32,
    "mobile": optional_text,
    "countrycode": st.none() | int32,
    "spno": optional_text,
    "exno": optional_text,
    "stime": st.none() | millis,
    "rtime": st.none() | millis,
    "status": int32,
    "errcode": optional_text,
    "errdesc": st.none() | st.text(max_size=5000),  # lengths past the varint table
    "exdata": optional_text,
    "account": st.text(min_size=1, max_size=64),
    "fetched_at": millis,
}
records = st.fixed_dictionaries(record_fields)


@settings(max_examples=300)
@given(record=records)
def test_body_writer_writes_exactly_what_fastavro_writes(record):
    assert BodyWriter(load_schema()).write_batch([record], b"") == [fastavro_body(record)]


# A get-rpt answer: records sharing account and fetched_at objects, drawing strings and numbers
# from a few values so that the writer's memos and per-answer shortcut are hit, and missed.
few_texts = st.sampled_from([None, "", "DELIVRD", "成功", "x" * 200, "0006"]) | optional_text
few_ints = st.sampled_from([None, 0, -1, 86, 4095, 4096, 2**31 - 1, -(2**31)]) | int32
answers = st.tuples(
    st.lists(
        st.fixed_dictionaries(
            {
                **record_fields,
                "pktotal": few_ints,
                "countrycode": few_ints,
                "spno": few_texts,
                "exno": few_texts,
                "errcode": few_texts,
                "errdesc": few_texts,
                "stime": st.sampled_from([None, 1470303535000, -1, 2**62]) | millis,
            }
        ),
        max_size=12,
    ),
    st.sampled_from(["acct-1", "acct-2"]) | st.text(max_size=20),  # an account answers often
    st.sampled_from([1470303540000, 2**40]) | millis,
)


@settings(max_examples=300)
@given(batches=st.lists(answers, max_size=4))
def test_batches_are_exactly_what_fastavro_writes_record_by_record(batches):
    writer = BodyWriter(load_schema())  # one writer across answers, as in the connector
    batches_by_answer = [
        [{**r, "account": account, "fetched_at": fetched_at} for r in drafts]
        for drafts, account, fetched_at in batches
    ]
    for batch in [*batches_by_answer, [r for b in batches_by_answer for r in b]]:
        expected = [b"\xc3\x01" + fastavro_body(record) for record in batch]
        assert writer.write_batch(batch, b"\xc3\x01") == expected


def test_records_of_different_accounts_in_one_batch_keep_their_own_values():
    batch = [
        {**RECORD, "account": account, "fetched_at": fetched_at}
        for account, fetched_at in [("a", 1), ("a", 1), ("b", 1), ("b", 2**40), ("a", 2**40)]
    ]
    values = single_object_encoder().encode_batch(batch)
    assert [decode_single_object(v)["account"] for v in values] == ["a", "a", "b", "b", "a"]
    assert [fastavro_body(r) for r in batch] == [v[10:] for v in values]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", 2**31),
        ("pknum", -(2**31) - 1),
        ("stime", 2**63),
        ("status", None),
        ("msgid", None),
        ("custid", 5),
        ("status", "0"),
        ("pktotal", 1.5),
    ],
)
def test_values_off_the_schema_raise_codec_error(field, value):
    with pytest.raises(CodecError):
        single_object_encoder().encode_batch([{**RECORD, field: value}])


def test_a_long_seen_before_is_still_range_checked_as_an_int():
    encoder = single_object_encoder()
    encoder.encode_batch([{**RECORD, "stime": 2**40}])  # memoized as a long
    with pytest.raises(CodecError):
        encoder.encode_batch([{**RECORD, "status": 2**40}])


def test_a_missing_field_raises_codec_error():
    record = dict(RECORD)
    del record["status"]
    with pytest.raises(CodecError):
        single_object_encoder().encode_batch([record])


def test_body_writer_refuses_types_it_cannot_write():
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "double"}]}
    with pytest.raises(CodecError, match="not supported"):
        BodyWriter(schema)


# --------------------------------------------------------------------------- single-object


def test_single_object_layout_follows_the_avro_spec():
    encoder = single_object_encoder()
    (value,) = encoder.encode_batch([RECORD])
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == bytes.fromhex(encoder.fingerprint)
    assert value[10:] == fastavro_body(RECORD)
    pcf = fastavro.schema.to_parsing_canonical_form(load_schema())
    assert encoder.fingerprint == fingerprint(pcf, "CRC-64-AVRO")


def test_fingerprint_bytes_are_the_little_endian_java_fingerprint():
    # Test vector of the Avro project (share/test/data/schema-tests.txt): "null" → this long.
    java_long = 7195948357588979594
    raw = bytes.fromhex(fingerprint('"null"', "CRC-64-AVRO"))
    assert int.from_bytes(raw, "little") == java_long


def test_single_object_round_trips_through_the_consumer_decoder():
    values = single_object_encoder().encode_batch([RECORD, {**RECORD, "custid": None}])
    assert [decode_single_object(v) for v in values] == [
        as_read(RECORD),
        as_read({**RECORD, "custid": None}),
    ]


def test_consumer_decoding_needs_only_the_schema_file():
    """The README recipe: fastavro and avro/status_report.avsc, nothing of the connector."""
    (value,) = single_object_encoder().encode_batch([RECORD])
    schema = fastavro.parse_schema(json.loads((REPO / "avro" / "status_report.avsc").read_text()))
    pcf = fastavro.schema.to_parsing_canonical_form(schema)
    assert value[:2] == b"\xc3\x01"
    assert value[2:10].hex() == fingerprint(pcf, "CRC-64-AVRO")
    assert fastavro.schemaless_reader(io.BytesIO(value[10:]), schema) == as_read(RECORD)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda v: b"\x00" + v[1:], "no C3 01 header"),
        (lambda v: v[:2] + bytes(8) + v[10:], "another schema"),
        (lambda v: v[:9], "no C3 01 header"),
        (lambda v: v[:20], "corrupt Avro body"),
    ],
)
def test_decoding_rejects_foreign_or_damaged_values(mangle, message):
    (value,) = single_object_encoder().encode_batch([RECORD])
    with pytest.raises(CodecError, match=message):
        decode_single_object(mangle(value))


@settings(max_examples=200)
@given(
    msgid=st.integers(-(10**30) + 1, 10**30 - 1),
    as_string=st.booleans(),
    local=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2099, 12, 31)),
    status=int32,
    custid=st.text(max_size=20),
    countrycode=st.integers(-1, 999) | st.integers(-1, 999).map(str),
)
def test_normalize_encode_decode_round_trip(msgid, as_string, local, status, custid, countrycode):
    text = f"{local:%Y-%m-%d %H:%M:%S}"
    report = {
        "msgid": str(msgid) if as_string else msgid,
        "status": status,
        "custid": custid,
        "countrycode": countrycode,
        "stime": text,
        "rtime": text,
    }
    batch = Normalizer("acct", "UTC").normalize_batch([report], 1470303540000)
    (value,) = single_object_encoder().encode_batch(batch.records)
    decoded = decode_single_object(value)
    instant = local.replace(microsecond=0, tzinfo=UTC)
    assert decoded["msgid"] == str(msgid)
    assert (decoded["stime"], decoded["rtime"]) == (instant, instant)
    assert decoded["status"] == status
    assert decoded["custid"] == (custid.strip() or None)
    assert decoded["countrycode"] == int(countrycode)
    assert decoded == as_read(batch.records[0])


# --------------------------------------------------------------------------- confluent


def test_confluent_bytes_are_read_by_the_stock_avro_deserializer():
    client = SchemaRegistryClient.new_client(
        {"url": "mock://codec-test"}
    )  # one client: shared store
    encoder = confluent_encoder(client, "reports-value", auto_register=True)
    values = encoder.encode_batch([RECORD, {**RECORD, "stime": None}])
    schema_id = client.get_latest_version("reports-value").schema_id
    assert values[0][:5] == b"\x00" + schema_id.to_bytes(4, "big")
    assert encoder.content_type.endswith(f"schema-id={schema_id}")
    deserializer = AvroDeserializer(client)
    ctx = SerializationContext("reports", MessageField.VALUE)
    assert [deserializer(v, ctx) for v in values] == [
        as_read(RECORD),
        as_read({**RECORD, "stime": None}),
    ]


def test_without_auto_register_the_schema_must_already_be_registered():
    client = SchemaRegistryClient.new_client({"url": "mock://codec-test-2"})
    with pytest.raises(RegistryError, match="look up"):
        confluent_encoder(client, "reports-value", auto_register=False)
    registered = confluent_encoder(client, "reports-value", auto_register=True)
    looked_up = confluent_encoder(client, "reports-value", auto_register=False)
    assert looked_up.encode_batch([RECORD]) == registered.encode_batch([RECORD])


def kafka(value_format: str) -> KafkaSettings:
    return KafkaSettings(producer={"bootstrap.servers": "x:9092"}, value_format=value_format)


def test_make_value_encoder_picks_the_configured_format():
    assert make_value_encoder(kafka("avro-single-object"), None, "t").prefix[:2] == b"\xc3\x01"
    registry = SchemaRegistrySettings(url="mock://codec-test-3")
    encoder = make_value_encoder(kafka("confluent"), registry, "t")
    assert encoder.encode_batch([RECORD])[0][:1] == b"\x00"
    assert encoder.fingerprint == single_object_encoder().fingerprint


def test_registry_password_never_shows_in_errors(monkeypatch):
    monkeypatch.setenv("RPT_TEST_REGISTRY_PASSWORD", "s3cret-pw")
    registry = SchemaRegistrySettings(
        url="http://127.0.0.1:9", username="u", password_env="RPT_TEST_REGISTRY_PASSWORD"
    )
    with pytest.raises(RegistryError) as caught:
        make_value_encoder(kafka("confluent"), registry, "t")
    assert "s3cret-pw" not in str(caught.value)
    assert "s3cret-pw" not in repr(caught.value)


# --------------------------------------------------------------------------- keys and headers


def test_record_key_is_custid_else_msgid_or_none():
    records = [RECORD, {**RECORD, "custid": "客户1"}, {**RECORD, "custid": None}]
    custid, chinese, msgid = b"b3d0a2783d31b21b8573", "客户1".encode(), b"9223372045854775808"
    assert record_keys(records, "msgid") == [custid, chinese, msgid]
    assert record_keys(records, "null") == [custid, chinese, None]


def test_record_headers_name_account_content_type_and_fingerprint():
    encoder = single_object_encoder()
    assert record_headers("acct-1", encoder) == [
        ("account", b"acct-1"),
        ("content-type", b"application/vnd.apache.avro+binary; encoding=single-object"),
        ("schema-fingerprint", encoder.fingerprint.encode()),
    ]
