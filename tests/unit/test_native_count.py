"""The fetch thread's native count (rpt_native.count_body in body.parse_body) against Python.

For arbitrary get-rpt bodies — good, odd, damaged byte by byte, the hostile builders — the
outcome of parse_body (reports, rejects, errors and their messages) is the same with the
native count as without it; where the native code counts, Python takes every entry whole.
"""

from __future__ import annotations

import json

import hostile_platform as hostile
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.codec import body as body_module
from connector.codec import native
from connector.codec.avro import single_object_encoder
from connector.codec.report import Normalizer, parse_body
from connector.errors import PlatformError
from connector.kafka.records import RecordBuilder
from tests.unit.test_native import GOOD, body, report

pytestmark = pytest.mark.skipif(native.rpt_native is None, reason="rpt_native is not built")
rpt_native = native.rpt_native


def judged(raw: bytes, *, native_count: bool, read_ahead: RecordBuilder | None = None) -> tuple:
    """parse_body's whole outcome, with or without the native count (and a read-ahead)."""
    saved = body_module._count_native
    body_module._count_native = saved if native_count else None
    ahead = None if read_ahead is None else (lambda b: read_ahead.read_ahead(b, 0))
    try:
        parsed = parse_body(raw, ahead)
    except PlatformError as exc:
        return ("raises", type(exc).__name__, str(exc), getattr(exc, "raw", None))
    finally:
        body_module._count_native = saved
    rejects = [(r.raw, type(r.error).__name__, str(r.error)) for r in parsed.rejects]
    return ("parsed", parsed.count, parsed.reports, rejects)


READ_AHEAD = RecordBuilder("a", Normalizer("a"), single_object_encoder(), "msgid")


def same_judgement(raw: bytes) -> None:
    python = judged(raw, native_count=False)
    assert judged(raw, native_count=True) == python
    count = rpt_native.count_body(raw)
    if count is not None:  # counted natively: Python takes every entry, rejects none
        assert python[:2] == ("parsed", count)
        assert python[3] == []
    # The fetch thread's read-ahead takes only bodies the count takes, with the same count.
    ahead = READ_AHEAD.read_ahead(raw, 1_764_590_000_123)
    if ahead is not None:
        assert count == ahead[0]
        assert judged(raw, native_count=True, read_ahead=READ_AHEAD) == python


# Byte-level damage the platform's gateways have produced or could: each turns a good body
# into one the count must leave to Python (or count exactly like Python).
DAMAGE = st.sampled_from(
    [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"0", b"1.5", b"1e400", b"\x00", b"\x1f",
     b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\\ud800", b"\\udc00", b"\\u00e9", b"null", b"true",
     b" ", b"\t", b"\r\n", b'"rpts":[]', b'"result":1', b'"msgid":1', b'{"a":{"a":1}}']
)  # fmt: skip


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(any_body()))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["insert", "delete", "cut"]))
        if kind == "insert":
            raw[at:at] = draw(DAMAGE)
        elif kind == "delete":
            del raw[at : at + draw(st.integers(1, 3))]
        else:
            del raw[at:]
    return bytes(raw)


@st.composite
def any_body(draw: st.DrawFn) -> bytes:
    """A get-rpt answer: arbitrary reports, envelope variants, compact or spaced JSON."""
    reports = draw(st.lists(report() | st.sampled_from([1, "x", None, [], {"a": [1]}]), max_size=4))
    envelope = {"result": draw(st.sampled_from([0, 0, 0, "0", 1, 401, -0])), "rpts": reports}
    if draw(st.booleans()):
        envelope["desc"] = draw(st.sampled_from(["成功", "%e6%88%90", 1.5, None, {"x": 1}]))
    if draw(st.integers(0, 5)) == 0:
        envelope["rpts"] = draw(st.sampled_from([None, {}, "[]"]))
    if draw(st.integers(0, 5)) == 0:
        del envelope["rpts"]
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (",\n", " :\t")]))
    text = json.dumps(envelope, ensure_ascii=draw(st.booleans()), separators=separators)
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + text.encode("utf-8", "surrogatepass")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(raw=any_body() | damaged())
def test_the_native_count_judges_every_body_as_python_does(raw: bytes) -> None:
    same_judgement(raw)


@pytest.mark.parametrize(
    "build",
    [
        hostile.good, hostile.duplicate_rpts, hostile.duplicate_msgid, hostile.with_bom,
        hostile.result_with_reports, hostile.lone_surrogate, hostile.leading_zero, hostile.cut,
    ],
)  # fmt: skip
def test_the_native_count_judges_the_hostile_bodies_as_python_does(build) -> None:
    same_judgement(build(hostile.Reports(), 4).body)


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        (body([GOOD, GOOD, {}]), 3),
        (b'{"result": 0, "rpts": null}', 0),
        (b'{"result": 0}', 0),
        (b'\xef\xbb\xbf{"result":0,"rpts":[{"a":true,"b":null,"c":-0,"d":"\\ud83d\\ude00"}]}', 1),
        (b'{"result": 0, "rpts": [{"a": 1, "a": 1}]}', None),  # a repeated key: Python raises
        (b'{"result": 0, "rpts": [{"a": "x", "b": "y", "a\\u0000": 1, "a": 2}]}', None),
        (b'{"result": 0, "rpts": [{"a": 1.0}]}', None),  # a float: msgspec may refuse it
        (b'{"result": 0, "rpts": [{"a": 1e400}]}', None),  # ... as it does this one
        (b'{"result": 0, "rpts": [{"a": {"b": 1}}]}', None),  # nested: judged in Python
        (b'{"result": 0, "rpts": [1]}', None),  # not an object: Python rejects that one
        (b'{"result": "0", "rpts": []}', None),
        (b'{"result": 0, "rpts": [], "result": 0}', None),
    ],
)  # fmt: skip
def test_the_native_count_takes_only_clean_strict_bodies(raw: bytes, count: int | None) -> None:
    assert rpt_native.count_body(raw) == count
    same_judgement(raw)


def test_a_counted_body_decodes_its_reports_only_when_asked() -> None:
    raw = body([GOOD, {**GOOD, "msgid": 2**70}])
    parsed = parse_body(raw)
    assert parsed.count == 2 and parsed.rejects == []
    assert not parsed.decoded  # the fetch thread built no dict per report
    assert parsed.reports == json.loads(raw)["rpts"]  # exact msgids, once asked for
    assert parsed.decoded
