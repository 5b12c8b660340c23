"""Hostile input never escapes as an unhandled exception: it becomes records or dead letters.

The contract checked here, for any bytes a platform could send:
* `parse_body(raw)` returns a ParsedBody or raises a `PlatformError` (the fetcher spools the
  body and it is dead-lettered);
* `Normalizer.normalize_body` never raises: every entry of `rpts` is a record or a `Rejected`;
* every record it returns encodes with the single-object encoder.

Also here: Kafka security settings reach librdkafka unchanged, and configuration files that are
not text are a `ConfigError`.
"""

from __future__ import annotations

import json
import math

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.codec.avro import single_object_encoder
from connector.codec.report import FIELDS, Normalizer, ParsedBody, parse_body
from connector.config.settings import KafkaSettings, load_settings
from connector.errors import ConfigError, InvalidResponseError, PlatformError, ReportError
from connector.kafka import publisher

ENCODER = single_object_encoder()
FETCHED_AT_MS = 1_700_000_000_000

# Bodies msgspec rejects with something other than DecodeError (found by these tests):
# parse_body must salvage them or turn them into InvalidResponseError like any other body.
_NOT_DECODE_ERRORS = (UnicodeDecodeError, RecursionError)


def _msgspec_raises_other_errors(raw: bytes) -> bool:
    try:
        msgspec.json.decode(raw)
    except _NOT_DECODE_ERRORS:
        return True
    except msgspec.DecodeError:
        return False
    return False


def check_parse(raw: bytes) -> ParsedBody | None:
    """parse_body's contract: a ParsedBody, or a PlatformError (None then)."""
    try:
        parsed = parse_body(raw)
    except PlatformError:
        return None
    assert isinstance(parsed, ParsedBody)
    assert all(type(report) is dict for report in parsed.reports)
    for rejected in parsed.rejects:
        assert rejected.raw in raw  # a reject is the report's own bytes, as received
    return parsed


def check_normalize(reports: list | ParsedBody) -> None:
    """normalize_body's contract: no exception, nothing lost, every record encodes."""
    parsed = reports if isinstance(reports, ParsedBody) else ParsedBody(reports)
    batch = Normalizer("acct").normalize_body(parsed, FETCHED_AT_MS)
    assert len(batch.records) + len(batch.rejected) == parsed.count
    for rejected in batch.rejected:
        assert isinstance(rejected.raw, bytes)
        assert isinstance(rejected.error, ReportError)
    values = ENCODER.encode_batch(batch.records)
    assert len(values) == len(batch.records)


def body(reports: object, result: object = 0) -> bytes:
    return json.dumps({"result": result, "rpts": reports}, ensure_ascii=False).encode()


# --- property tests ------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**1000), max_value=10**1000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
field_values = (
    json_scalars
    | st.from_regex(r"\A[+-]?\d{1,70}\Z")
    | st.from_regex(r"\A\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\Z")
    | st.lists(json_scalars, max_size=2)
    | st.dictionaries(st.text(max_size=4), json_scalars, max_size=2)
)
reports_strategy = st.lists(
    st.dictionaries(st.sampled_from((*FIELDS, "extra")), field_values) | json_values,
    max_size=8,
)


@given(st.binary(max_size=2048))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_bytes_parse_to_a_body_or_a_platform_error(raw: bytes) -> None:
    reports = check_parse(raw)
    if reports is not None:
        check_normalize(reports)


@given(st.binary(max_size=512), st.sampled_from([b'{"result":0,"rpts":[', b'{"result":']))
def test_json_prefixes_with_garbage_tails(tail: bytes, prefix: bytes) -> None:
    raw = prefix + tail
    check_parse(raw)


@given(json_values)
def test_any_json_document_parses_to_a_body_or_a_platform_error(document: object) -> None:
    reports = check_parse(msgspec.json.encode(document))
    if reports is not None:
        check_normalize(reports)


@given(reports_strategy)
@settings(max_examples=400)
def test_every_report_becomes_a_record_or_a_rejection(reports: list) -> None:
    parsed = check_parse(msgspec.json.encode({"result": 0, "rpts": reports}))
    assert parsed is not None
    check_normalize(parsed)


@given(reports_strategy)
def test_normalizer_takes_python_values_directly(reports: list) -> None:
    check_normalize(reports)


# --- hand-picked hostile bodies --------------------------------------------------------------

GOOD = {"msgid": "123", "status": 0, "stime": "2024-01-01 00:00:00"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00" * 64,
        b"null",
        b"[]",
        b'"result"',
        b'{"result": 0}',
        b'{"result": 0, "rpts": {}}',
        b'{"result": "abc", "rpts": []}',
        b'{"result": 1e400, "rpts": []}',
        b'{"result": -1e400, "rpts": []}',
        b'{"result": ' + b"9" * 1000 + b', "rpts": []}',
        b'{"result": 401, "desc": "%E4%BD%A0%ZZ"}',
        b'{"result": 500, "desc": ' + b"[" * 50 + b"]" * 50 + b"}",
        b'{"result": 0, "rpts": [' + b"1" * 1000 + b"]}",
        b'{"result": 0, "rpts": [1e400]}',
        b'{"result": 0, "rpts": [{"msgid": 1e400, "status": 0}]}',
        b'\xef\xbb\xbf{"result": 0, "rpts": []}',  # UTF-8 BOM
        b'\xff\xfe{\x00"\x00r\x00"\x00:\x000\x00}\x00',  # UTF-16 LE with BOM
        b'\xfe\xff\x00{\x00"\x00r\x00"\x00:\x000\x00}',  # UTF-16 BE with BOM
        b'{"result": 0, "rpts": [' + b'{"msgid": 1, "status": 0},' * 50_000 + b"{}]}",
        b'{"result": 0, "rpts": ["' + b"x" * (8 * 2**20) + b'"]}',
        b"[" * 200 + b"]" * 200,
    ],
    ids=lambda raw: repr(raw[:24]),
)
def test_hostile_bodies(raw: bytes) -> None:
    reports = check_parse(raw)
    if reports is not None:
        check_normalize(reports)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 10_000 + b"]" * 10_000, id="10k-deep-list"),
        pytest.param(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, id="10k-deep-object"),
        pytest.param(b'{"result": 500, "desc": "\xc4\xe3"}', id="gbk-in-desc"),
    ],
)
def test_undecodable_envelopes_are_invalid_responses(raw: bytes) -> None:
    assert _msgspec_raises_other_errors(raw)
    with pytest.raises(InvalidResponseError) as caught:
        parse_body(raw)
    assert caught.value.raw == raw


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        pytest.param({"errdesc": "你好".encode("gb18030")}, "errdesc", id="gb18030-in-string"),
        pytest.param({"mobile": b"\xff\xfe"}, "mobile", id="bad-utf8"),
    ],
)
def test_undecodable_bytes_in_one_report_reject_that_report_only(bad: dict, field: str) -> None:
    ((name, value),) = bad.items()
    broken = b'{"msgid": "9", "status": 0, "%s": "%s"}' % (name.encode(), value)
    raw = b'{"result": 0, "rpts": [%s, %s]}' % (json.dumps(GOOD).encode(), broken)
    assert _msgspec_raises_other_errors(raw)
    parsed = parse_body(raw)
    assert parsed.reports == [GOOD]
    (rejected,) = parsed.rejects
    assert rejected.raw == broken
    assert rejected.error.field == field
    assert "invalid UTF-8" in rejected.error.reason


def test_deep_nesting_inside_a_report_is_rejected_or_kept_not_raised() -> None:
    nested: object = 1
    for _ in range(200):
        nested = [nested]
    check_normalize([{**GOOD, "errdesc": nested}, {**GOOD, "exdata": {"a": nested}}])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("msgid", 1.0),
        ("msgid", 1e400),
        ("msgid", [1]),
        ("msgid", True),
        ("msgid", None),
        ("msgid", {"a": 1}),
        ("msgid", 10**1000),
        ("msgid", "1" * 1000),
        ("msgid", "١٢٣"),  # Arabic-Indic digits: not ASCII
        ("status", "abc"),
        ("status", 1.5),
        ("status", math.inf),
        ("status", -math.inf),
        ("status", 10**1000),
        ("status", 1e300),
        ("status", True),
        ("status", "9" * 1000),
        ("stime", 1_700_000_000),
        ("stime", 1.5),
        ("stime", "0000-01-01 00:00:00"),
        ("stime", "2024-02-30 00:00:00"),
        ("stime", "2024-01-01 24:00:00"),
        ("rtime", "２０２４-01-01 00:00:00"),  # full-width digits
        ("rtime", ["2024-01-01 00:00:00"]),
        ("mobile", 1.5),
        ("mobile", ["138"]),
        ("pknum", "1e3"),
        ("countrycode", 2**31),
    ],
)
def test_wrong_types_are_rejected_with_the_field_named(field: str, value: object) -> None:
    batch = Normalizer("acct").normalize_batch([{**GOOD, field: value}, GOOD], FETCHED_AT_MS)
    assert len(batch.records) == 1
    (rejected,) = batch.rejected
    assert rejected.error.field == field
    assert len(str(rejected.error)) < 300  # a 1000-digit value is cut in the message
    check_normalize([{**GOOD, field: value}])


@pytest.mark.parametrize(
    "stime", ["0001-01-01 00:00:00", "9999-12-31 23:59:59", "1970-01-01 00:00:00"]
)
def test_extreme_valid_times_encode(stime: str) -> None:
    check_normalize([{**GOOD, "stime": stime, "rtime": stime}])


@pytest.mark.parametrize("escape", [rb"\ud800", rb"\udc00", rb"\ud800\u0041"])
def test_lone_surrogate_escapes_reject_their_report_only(escape: bytes) -> None:
    # A str holding a lone surrogate could not be UTF-8 encoded into the Avro record.
    bad = b'{"msgid": 1, "status": 0, "mobile": "%s"}' % escape
    parsed = check_parse(b'{"result": 0, "rpts": [%s, {"msgid": 2, "status": 0}]}' % bad)
    assert parsed is not None
    assert parsed.reports == [{"msgid": 2, "status": 0}]
    (rejected,) = parsed.rejects
    assert (rejected.raw, rejected.error.field) == (bad, "mobile")
    assert "lone UTF-16 surrogate" in rejected.error.reason
    check_normalize(parsed)


# --- Kafka security settings pass through ------------------------------------------------------

SASL_SSL = {
    "bootstrap.servers": "kafka-1.example:9093",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "rpt-connector",
    "sasl.password": "kafka-pw-Zq81",
    "ssl.ca.location": "/etc/ssl/certs/kafka-ca.pem",
    "ssl.endpoint.identification.algorithm": "https",
}


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_producer_config_keeps_security_settings_unchanged(delivery: str) -> None:
    kafka = KafkaSettings(producer=SASL_SSL, delivery=delivery)
    config = publisher.producer_config(kafka, "main", None, lambda _error: None)
    assert {k: config[k] for k in SASL_SSL} == SASL_SSL


def test_progress_consumer_and_admin_client_get_the_security_settings() -> None:
    kafka = KafkaSettings(producer={**SASL_SSL, "linger.ms": 5, "compression.type": "zstd"})
    consumer = publisher.ProgressTopic(kafka)._consumer_config("read_committed")
    assert {k: consumer[k] for k in SASL_SSL} == SASL_SSL
    assert "linger.ms" not in consumer and "compression.type" not in consumer  # producer-only
    assert all(publisher._is_client_wide(key) for key in SASL_SSL)
    assert not publisher._is_client_wide("transactional.id")


# --- configuration files that are not text ---------------------------------------------------


@pytest.mark.parametrize("kind", ["not-utf8", "directory"])
def test_unreadable_configuration_is_a_config_error(tmp_path, kind: str) -> None:
    path = tmp_path / "connector.toml"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b'[kafka]\ntopic = "\xff\xfe"\n')
    with pytest.raises(ConfigError):
        load_settings(path)
