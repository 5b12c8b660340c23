"""Without the rpt_native extension (a failed build) the connector runs the pure-Python path,
says so once, and builds the same records as ever."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pytest

from connector.codec import native
from connector.codec.avro import decode_single_object, single_object_encoder
from connector.codec.report import Normalizer
from connector.kafka.records import RecordBuilder


@dataclass
class Entry:
    body: bytes
    fetched_at: float = 1_764_590_000.5
    seq: int = 3
    note: str | None = None
    memo: object | None = None


def test_a_missing_extension_means_the_python_path_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(native, "rpt_native", None)
    monkeypatch.setattr(native, "_MISSING", "ImportError: No module named 'rpt_native'")
    monkeypatch.setattr(native, "_said", set())
    caplog.set_level(logging.INFO, logger="connector.native")
    builders = [
        RecordBuilder(name, Normalizer(name), single_object_encoder(), "msgid")
        for name in ("a", "b")
    ]
    assert all(b._native is None for b in builders)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "not installed" in warnings[0].getMessage()
    report = {"msgid": "42", "custid": "c-1", "status": 0, "rtime": "2024-05-06 07:08:09"}
    body = json.dumps({"result": 0, "rpts": [report]}).encode()
    out = builders[0].build(Entry(body))
    assert out.keys == [b"c-1"]
    assert decode_single_object(out.values[0])["msgid"] == "42"


class ShoutingNormalizer(Normalizer):
    """A normalizer with a rule of its own, as a replay after a fix hands one in."""

    def normalize_batch(self, reports: list, fetched_at_ms: int):  # type: ignore[no-untyped-def]
        batch = super().normalize_batch(reports, fetched_at_ms)
        for record in batch.records:
            record["exdata"] = (record["exdata"] or "").upper()
        return batch


def test_a_normalizer_of_another_class_keeps_the_python_path() -> None:
    if native.rpt_native is None:
        pytest.fail("rpt_native is not built: make install builds it (cargo is on this machine)")
    stock = RecordBuilder("a", Normalizer("a"), single_object_encoder(), "msgid")
    custom = RecordBuilder("a", ShoutingNormalizer("a"), single_object_encoder(), "msgid")
    assert stock._native is not None
    assert custom._native is None  # its rule would be skipped by the native encoder
    body = json.dumps(
        {"result": 0, "rpts": [{"msgid": "1", "status": "0", "exdata": "abc"}]}
    ).encode()
    out = custom.build(Entry(body))
    assert decode_single_object(out.values[0])["exdata"] == "ABC"
