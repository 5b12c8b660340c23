"""The native hot path against its oracle: the Python normalizer and encoder.

For arbitrary get-rpt bodies, a RecordBuilder with rpt_native and one without must build the
same records byte for byte: values, keys, dead letters (raw bytes, error class and message),
reasons, observations, unknown-field counts, and (kafka.record_timestamp = "rtime") the record
timestamps and their clamps. Bodies mix every edge case the suite knows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.codec import native
from connector.codec.avro import AvroEncoder, decode_single_object, single_object_encoder
from connector.codec.report import FIELDS, Normalizer, parse_body
from connector.kafka.records import EntryRecords, RecordBuilder, RecordTimestamps, TimestampLimits

pytestmark = pytest.mark.skipif(native.rpt_native is None, reason="rpt_native is not built")

ZONES = ("Asia/Shanghai", "UTC", "Asia/Kolkata", "Etc/GMT-8")
CONFLUENT = AvroEncoder(b"\x00" + (7).to_bytes(4, "big"), "confluent; schema-id=7", "ff" * 8)
# Python's str.isspace() set includes \x1c-\x1f, which Rust's char::is_whitespace does not.
BLANKS = st.sampled_from(["", " ", "\t", "\x1c", "\u3000", "\xa0", "\u2028", "\x85", "\n "])
TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("你好成功失败𠀀€"),
    max_size=12,
)


@dataclass
class Entry:
    body: bytes
    fetched_at: float = 1_764_590_000.123
    seq: int = 1
    note: str | None = None
    memo: object | None = None


def padded(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(BLANKS, inner, BLANKS).map("".join)


DIGITS = st.text("0123456789", min_size=1, max_size=70)
SIGNED = st.tuples(st.sampled_from(["", "-", "+"]), DIGITS).map("".join)
BIG = st.integers(min_value=-(10**66), max_value=10**66) | st.sampled_from([2**64, -(2**64) - 1])
ODD = st.sampled_from([1.5, 3.0, -0.0, 1e20, True, False, "abc", "+", "1_000", "١٢"])
MSGID = BIG | padded(SIGNED) | ODD | st.none()
INT = (
    st.integers(min_value=-(2**31) - 2, max_value=2**31 + 1)
    | padded(SIGNED.filter(lambda s: len(s) < 15))
    | ODD
    | st.none()
    | st.just("")
)
STRING = padded(TEXT) | st.integers(min_value=-(10**30), max_value=10**30) | ODD | st.none()


@st.composite
def local_time(draw: st.DrawFn) -> str:
    when = draw(st.datetimes(min_value=datetime(1899, 1, 1), max_value=datetime(2300, 1, 1)))
    text = when.strftime("%Y-%m-%d") + draw(st.sampled_from([" ", "T"])) + when.strftime("%T")
    broken = st.sampled_from(
        [
            text[:11] + "24" + text[13:],
            text[:14] + "61" + text[16:],
            text[:5] + "02-30" + text[10:],
            "0000" + text[4:],
            text[:-1],
        ]
    )
    return draw(padded(st.just(text)) | broken)


TIME = local_time() | st.sampled_from(["", " ", "1991-09-15 01:30:00", "1991-09-15 04:00:00"])
TIME = TIME | st.integers(0, 10**10) | st.none()
KINDS = {"msgid": MSGID, "pknum": INT, "pktotal": INT, "countrycode": INT, "status": INT}
KINDS |= {"stime": TIME, "rtime": TIME}


@st.composite
def report(draw: st.DrawFn) -> dict:
    out = {}
    for name in FIELDS:
        if draw(st.integers(0, 9)) == 0:
            continue  # missing
        out[name] = draw(KINDS.get(name, STRING))
    extra = st.dictionaries(st.text(max_size=6).filter(lambda k: k not in FIELDS), STRING | BIG)
    out.update(draw(extra.filter(lambda d: len(d) < 3)))
    return out


def body(reports: list, *, ensure_ascii: bool = False) -> bytes:
    return json.dumps(
        {"result": 0, "desc": "成功", "rpts": reports}, ensure_ascii=ensure_ascii
    ).encode()


def builders(
    zone: str, encoder: AvroEncoder, empty: str, stamps: RecordTimestamps | None = None
) -> tuple[RecordBuilder, RecordBuilder]:
    fast = RecordBuilder("acc-1", Normalizer("acc-1", zone), encoder, empty, stamps)
    slow = RecordBuilder("acc-1", Normalizer("acc-1", zone), encoder, empty, stamps)
    slow._native = None
    assert fast._native is not None
    return fast, slow


def same(fast: RecordBuilder, slow: RecordBuilder, entry: Entry) -> EntryRecords:
    got, want = fast.build(entry), slow.build(entry)
    assert got.values == want.values
    assert got.keys == want.keys
    assert got.dead_letters == want.dead_letters
    assert got.reasons == want.reasons
    assert got.observed == want.observed
    assert got.unknown_fields == want.unknown_fields
    assert got.timestamps == want.timestamps
    assert got.clamped == want.clamped
    return got


NOW = 1_764_590_000.5  # the wall clock of the record timestamps below (2025-12-01)
LIMITS = st.sampled_from([TimestampLimits(), TimestampLimits(3_600_000, 10 * 365 * 86_400_000)])


def expected_stamps(built: EntryRecords, limits: TimestampLimits) -> list[int]:
    """Each record's rtime where the limits (less the margin) allow it, else 0."""
    low = max(1, round(NOW * 1000) - (limits.before_ms - min(300_000, limits.before_ms // 2)))
    high = round(NOW * 1000) + limits.after_ms - 300_000
    epoch, ms = datetime(1970, 1, 1, tzinfo=UTC), timedelta(milliseconds=1)
    rtimes = [decode_single_object(value)["rtime"] for value in built.values]
    millis = [None if t is None else (t - epoch) // ms for t in rtimes]
    return [t if t is not None and low <= t <= high else 0 for t in millis]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    reports=st.lists(report(), max_size=8),
    zone=st.sampled_from(ZONES),
    confluent=st.booleans(),
    empty=st.sampled_from(["msgid", "null"]),
    ascii_escapes=st.booleans(),
    memo=st.sampled_from(["none", "parsed", "read ahead"]),
    limits=st.none() | LIMITS,
)
def test_native_and_python_build_the_same_records(
    reports: list,
    zone: str,
    confluent: bool,
    empty: str,
    ascii_escapes: bool,
    memo: str,
    limits: TimestampLimits | None,
) -> None:
    encoder = CONFLUENT if confluent else single_object_encoder()
    stamps = None if limits is None else RecordTimestamps(limits, wall_clock=lambda: NOW)
    fast, slow = builders(zone, encoder, empty, stamps)
    raw = body(reports, ensure_ascii=ascii_escapes)
    assert fast._native.encode(raw, 0) is not None  # flat objects: always the native path
    # With the fetcher's parsed body, or its records read ahead on the fetch thread (the live
    # path), and without (read back from disk).
    entry = Entry(raw)
    if memo == "parsed":
        entry.memo = parse_body(raw)
    elif memo == "read ahead":
        entry.memo = parse_body(raw, lambda b: fast.read_ahead(b, round(entry.fetched_at * 1000)))
    built = same(fast, slow, entry)
    if limits is None:
        assert built.timestamps is None and not built.clamped
    elif not confluent:
        assert built.timestamps == expected_stamps(built, limits)
        assert sum(built.clamped.values()) == built.timestamps.count(0)


@settings(max_examples=100)
@given(
    reports=st.lists(report(), max_size=4),
    junk=st.sampled_from([1, "x", [1], None, {"a": {"b": 1}}, {"msgid": 1, "status": [0]}]),
    where=st.integers(0, 4),
)
def test_bodies_the_native_path_leaves_to_python_come_out_the_same(
    reports: list, junk: object, where: int
) -> None:
    fast, slow = builders("Asia/Shanghai", single_object_encoder(), "msgid")
    reports.insert(min(where, len(reports)), junk)
    same(fast, slow, Entry(body(reports)))


GOOD = {"msgid": "123", "custid": "c", "status": 0, "rtime": "2024-05-06 07:08:09"}


def test_records_read_ahead_are_used_only_for_the_entry_fetched_then() -> None:
    fast, slow = builders("Asia/Shanghai", single_object_encoder(), "msgid")
    raw = body([GOOD, {**GOOD, "msgid": str(2**64 + 5)}])
    entry = Entry(raw)
    fetched_at_ms = round(entry.fetched_at * 1000)
    count, ahead = fast.read_ahead(raw, fetched_at_ms)
    assert count == 2 and ahead[0] == fetched_at_ms
    entry.memo = parse_body(raw, lambda b: (count, ahead))
    assert entry.memo.ahead is ahead and entry.memo.count == 2
    assert fast.build(entry).values is ahead[1].values  # taken as it is: no second encode
    # Made for another fetch time (its fetched_at field would differ): encoded again.
    entry.memo = parse_body(raw, lambda b: fast.read_ahead(b, fetched_at_ms + 1))
    assert fast.build(entry).values == slow.build(entry).values
    assert fast.build(entry).values != entry.memo.ahead[1].values


def test_a_body_needing_the_python_normalizer_is_not_read_ahead() -> None:
    fast, _ = builders("Asia/Shanghai", single_object_encoder(), "msgid")
    needs_python = body([GOOD, {**GOOD, "status": 1.5}])  # a float: Python judges that report
    assert fast._native.encode(needs_python, 0) is not None
    assert fast.read_ahead(needs_python, 0) is None
    assert parse_body(needs_python, lambda b: fast.read_ahead(b, 0)).ahead is None
    python_only = RecordBuilder(
        "a", Normalizer("a", "Europe/Berlin"), single_object_encoder(), "msgid"
    )
    assert python_only.read_ahead(body([GOOD]), 0) is None


@pytest.mark.parametrize(
    "raw",
    [
        body([GOOD, {**GOOD, "msgid": str(2**64 + 5)}, {**GOOD, "msgid": -(2**70)}]),
        body([{**GOOD, "custid": ""}, {**GOOD, "custid": "  "}, {**GOOD, "pknum": " 00042 "}]),
        body([{**GOOD, "errdesc": "短信发送成功𠀀"}, {**GOOD, "zz": 1, "yy": None}]),
        b"\xef\xbb\xbf" + body([GOOD]),
    ],
    ids=["big-msgids", "empty-custid-and-string-numbers", "cjk-and-unknown", "bom"],
)
def test_good_bodies_take_the_native_path(raw: bytes) -> None:
    fast, slow = builders("Asia/Shanghai", single_object_encoder(), "msgid")
    assert fast._native.encode(raw, 0) is not None
    got = same(fast, slow, Entry(raw))
    assert not got.dead_letters
    assert decode_single_object(got.values[0])["msgid"] == "123"


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_a_body_that_is_not_bytes_is_read_all_the_same(kind: type) -> None:
    fast, _ = builders("Asia/Shanghai", single_object_encoder(), "msgid")
    raw = body([GOOD, {**GOOD, "msgid": "x"}])
    got, want = fast._native.encode(kind(raw), 0), fast._native.encode(raw, 0)
    assert (got.values, got.keys, got.observed) == (want.values, want.keys, want.observed)
    assert len(got.values) == 1
    assert [(r.raw, str(r.error)) for r in got.rejected] == [
        (r.raw, str(r.error)) for r in want.rejected
    ]


def test_a_broken_report_inside_a_good_body_is_python_s_reject_in_its_place() -> None:
    reports = [GOOD, {**GOOD, "msgid": "12a"}, {**GOOD, "stime": "2024-02-30 00:00:00"}, GOOD]
    fast, slow = builders("Asia/Shanghai", single_object_encoder(), "msgid")
    got = same(fast, slow, Entry(body(reports)))
    assert len(got.values) == 2
    messages = [dict(d.headers)["error.message"] for d in got.dead_letters]
    assert messages == [
        b"field 'msgid': not a decimal integer (got '12a')",
        b"field 'stime': not a valid date or time: day is out of range for month "
        b"(got '2024-02-30 00:00:00')",
    ]


def test_utc8_times_are_the_instants_python_computes() -> None:
    fast, _ = builders("Asia/Shanghai", single_object_encoder(), "msgid")
    out = fast._native.encode(body([GOOD]), 0)
    record = decode_single_object(out.values[0])
    assert record["rtime"] == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=8)))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"result": 0, "rpts": [{"msgid": 1, "msgid": 2, "status": 0}]}',
        b'{"result": 0, "result": 0, "rpts": []}',
        b'{"result": "0", "rpts": [{"msgid": 1, "status": 0}]}',
        b'{"result": 0, "rpts": [{"msgid": "\\ud800", "status": 0}]}',
        b'{"result": 0, "desc": 1e400, "rpts": []}',
        b'{"result": 0, "rpts": [{"msgid": 1, "status": 0, "x": 1e400}]}',
        b'{"result": 0, "rpts": [{"msgid": 01, "status": 0}]}',
        b'{"result": 0, "rpts": [{"msgid": "\xff", "status": 0}]}',
        b'{"result": 0, "rpts": null}',
        b'{"result": 0, "rpts": [{"msgid": 1, "status": 0, "errdesc": "\xc4\xe3\xba\xc3"}]}',
        b'{"result": 0, "rpts": [{"msgid": 1, "status": 0}]} x',
    ],
)
def test_odd_bodies_are_left_to_python(raw: bytes) -> None:
    fast, slow = builders("Asia/Shanghai", single_object_encoder(), "msgid")
    assert fast._native.encode(raw, 0) is None
    same(fast, slow, Entry(raw))


def test_a_zone_with_daylight_saving_keeps_the_python_path() -> None:
    builder = RecordBuilder("a", Normalizer("a", "Europe/Berlin"), single_object_encoder(), "msgid")
    assert builder._native is None


def test_rpt_native_0_forces_the_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RPT_NATIVE", "0")
    builder = RecordBuilder("a", Normalizer("a"), single_object_encoder(), "msgid")
    assert builder._native is None


def test_shanghai_is_native_from_the_end_of_its_last_daylight_saving() -> None:
    offset, from_local = native.fixed_offset(Normalizer("a").zone)
    assert offset == 8 * 3600
    # DST ended 1991-09-15 02:00 local (back to 01:00): from two hours later on.
    assert from_local == datetime(1991, 9, 15, 4, tzinfo=UTC).timestamp()
