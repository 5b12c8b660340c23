"""kafka.record_headers against a real broker: read the data records back. By default each has
the headers account, content-type and schema-fingerprint; with `false` none, and the value
alone still says its account and its schema (the single-object fingerprint)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import drain_exactly_once
from kafka_helpers import consume_all

from connector.codec.avro import (
    SINGLE_OBJECT_CONTENT_TYPE,
    decode_single_object,
    schema_fingerprint,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("headers", [True, False])
def test_data_records_carry_the_headers_or_none(
    kafka_bootstrap: str, tmp_path: Path, headers: bool
) -> None:
    overrides = {"record_headers": headers}
    topics = drain_exactly_once(kafka_bootstrap, tmp_path, overrides, seed=5, reports=2000)
    records = consume_all(kafka_bootstrap, topics.data, timeout=60)
    assert len(records) == 2000
    expected = [
        ("account", b"main"),
        ("content-type", SINGLE_OBJECT_CONTENT_TYPE.encode()),
        ("schema-fingerprint", schema_fingerprint().encode()),
    ]
    for consumed in records:
        assert consumed.headers == (expected if headers else []), consumed.headers
        value = decode_single_object(consumed.value)  # checks the value's fingerprint
        assert value["account"] == "main"
        assert consumed.key == (value["custid"] or value["msgid"]).encode()
