"""Normalization of get-rpt reports: field rules, per-report errors, times in any zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector.codec.report import FIELDS, Normalizer
from connector.errors import ReportError

FETCHED_AT = 1_700_000_000_123

# The example of the API document, as msgspec decodes the body.
EXAMPLE = msgspec.json.decode(
    b"""{"msgid":9223372045854775808, "custid":"b3d0a2783d31b21b8573", "pknum":1, "pktotal":2,
    "mobile":"138xxxxxxxx", "countrycode":86, "spno":"1000457890006", "exno":"0006",
    "stime":"2016-08-04 17:38:55", "rtime":"2016-08-04 17:38:59", "status":0,
    "errcode":"DELIVRD", "errdesc":"success", "exdata":"exdata0002"}"""
)


def utc_millis(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def normalize(report: object, timezone: str = "Asia/Shanghai"):
    return Normalizer("acct-1", timezone).normalize_batch([report], FETCHED_AT)


def only_record(report: dict) -> dict:
    batch = normalize(report)
    assert batch.rejected == [], batch.rejected[0].error
    return batch.records[0]


def only_error(report: object) -> ReportError:
    batch = normalize(report)
    assert batch.records == []
    return batch.rejected[0].error


def test_the_api_example_becomes_a_complete_record():
    assert only_record(EXAMPLE) == {
        "msgid": "9223372045854775808",
        "custid": "b3d0a2783d31b21b8573",
        "pknum": 1,
        "pktotal": 2,
        "mobile": "138xxxxxxxx",
        "countrycode": 86,
        "spno": "1000457890006",
        "exno": "0006",
        "stime": utc_millis(2016, 8, 4, 9, 38, 55),  # Asia/Shanghai is UTC+8
        "rtime": utc_millis(2016, 8, 4, 9, 38, 59),
        "status": 0,
        "errcode": "DELIVRD",
        "errdesc": "success",
        "exdata": "exdata0002",
        "account": "acct-1",
        "fetched_at": FETCHED_AT,
    }


def test_strings_for_numbers_are_trimmed_and_parsed():
    record = only_record(
        {"msgid": " 123 ", "pknum": "1", "pktotal": " 2 ", "countrycode": "-1", "status": "0"}
    )
    assert (record["msgid"], record["pknum"], record["pktotal"]) == ("123", 1, 2)
    assert (record["countrycode"], record["status"]) == (-1, 0)


def test_absent_and_empty_optional_fields_are_null():
    record = only_record({"msgid": 1, "status": 0, "custid": "  ", "spno": "", "stime": ""})
    optional = [f for f in FIELDS if f not in ("msgid", "status")]
    assert all(record[f] is None for f in optional)


def test_numbers_for_string_fields_become_decimal_text():
    record = only_record({"msgid": 1, "status": 0, "mobile": 13800138000, "exno": 6})
    assert (record["mobile"], record["exno"]) == ("13800138000", "6")


def test_integral_floats_are_accepted_for_int_fields():
    assert only_record({"msgid": 1, "status": 3.0, "pktotal": 2.0})["pktotal"] == 2


@pytest.mark.parametrize(
    ("given_id", "stored"),
    [
        (-5, "-5"),
        ("-18446744073709551617", "-18446744073709551617"),
        ("+42", "42"),
        ("0042", "42"),
        ("-0", "0"),
        (10**63, str(10**63)),
    ],
)
def test_msgid_is_stored_as_canonical_exact_decimal(given_id, stored):
    assert only_record({"msgid": given_id, "status": 0})["msgid"] == stored


@pytest.mark.parametrize(
    ("given_id", "reason"),
    [
        (None, "missing"),
        (9.223372045854776e18, "not an integer"),
        (True, "not an integer"),
        ("12a", "not a decimal integer"),
        ("1 2", "not a decimal integer"),
        ("--1", "not a decimal integer"),
        ("١٢", "not a decimal integer"),  # Arabic-Indic digits: int() would take them
        ("1_000", "not a decimal integer"),  # int() would take this too
        ("", "not a decimal integer"),
        (10**64, "more than 64 digits"),
        ("9" * 65, "more than 64 digits"),
        ("1" * 5000, "more than 64 digits"),  # beyond int()'s digit limit: still a ReportError
        ([1], "not an integer"),
    ],
)
def test_bad_msgids_are_rejected_with_the_field_named(given_id, reason):
    error = only_error({"msgid": given_id, "status": 0})
    assert error.field == "msgid"
    assert error.value == given_id
    assert reason in error.reason


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("status", None, "missing"),
        ("status", " ", "missing"),
        ("status", "delivered", "not a 32-bit integer"),
        ("status", 2**31, "outside the 32-bit int range"),
        ("countrycode", "-2147483649", "outside the 32-bit int range"),
        ("pknum", 1.5, "not an integer"),
        ("pknum", float("nan"), "not an integer"),
        ("pktotal", False, "not an integer"),
        ("pktotal", "1e3", "not a 32-bit integer"),
        ("pktotal", "9" * 40, "not a 32-bit integer"),
        ("custid", {"a": 1}, "not a string"),
        ("errdesc", 1.5, "not a string"),
        ("exdata", True, "not a string"),
        ("stime", 1470303535, "not a 'YYYY-MM-DD HH:MM:SS' string"),
        ("stime", "2016-08-04", "not a 'YYYY-MM-DD HH:MM:SS' time"),
        ("rtime", "2016/08/04 17:38:59", "not a 'YYYY-MM-DD HH:MM:SS' time"),
        ("rtime", "2016-08-04 17:38:5x", "not a 'YYYY-MM-DD HH:MM:SS' time"),
        ("rtime", "2016-02-30 17:38:59", "not a valid date or time"),
        ("rtime", "2016-08-04 24:00:00", "not a valid date or time"),
        ("rtime", "2016-08-04 17:60:00", "minute or second out of range"),
        ("rtime", "2016-08-04 17:38:60", "minute or second out of range"),
    ],
)
def test_bad_values_are_rejected_with_field_value_and_reason(field, value, reason):
    error = only_error({"msgid": 7, "status": 0, field: value})
    assert (error.field, error.value) == (field, value)
    assert reason in error.reason
    assert field in str(error)


def test_one_bad_report_does_not_fail_its_batch():
    reports = [
        {"msgid": 1, "status": 0},
        {"msgid": 2, "status": "x"},
        "not an object",
        None,
        {"msgid": 3, "status": 1},
    ]
    batch = Normalizer("a").normalize_batch(reports, FETCHED_AT)
    assert [r["msgid"] for r in batch.records] == ["1", "3"]
    assert [r.error.field for r in batch.rejected] == ["status", "report", "report"]
    assert [r.raw for r in batch.rejected] == [
        b'{"msgid":2,"status":"x"}',
        b'"not an object"',
        b"null",
    ]


def test_rejected_raw_keeps_big_ints_exact_and_survives_unserializable_values():
    batch = normalize({"msgid": 2**80, "status": "bad"})
    assert batch.rejected[0].raw == b'{"msgid":1208925819614629174706176,"status":"bad"}'
    odd = {"msgid": object(), "status": 0}
    batch = normalize(odd)
    assert batch.rejected[0].raw == repr(odd).encode()


def test_unknown_fields_are_ignored_and_counted_per_batch():
    reports = [
        {"msgid": 1, "status": 0, "extra": 1, "more": [1]},
        {"msgid": 2, "status": 0},
        {"msgid": 3, "status": "bad", "new_field": "x"},
    ]
    batch = Normalizer("a").normalize_batch(reports, FETCHED_AT)
    assert batch.unknown_fields == 3
    assert "extra" not in batch.records[0]


@pytest.mark.parametrize(
    ("non_objects", "unknown"),
    [
        ([], 0),
        (["msgid", ["status", "exdata"]], 0),  # iterables of known names are still no objects
        (["extra", ["more"]], 0),
        ([7, None, 1.5, True], 0),
        ([[{"extra": 1}], [["x"]]], 0),  # unhashable contents
        ([{"msgid": 4, "status": 0, "extra": 1}], 1),
    ],
)
def test_only_the_keys_of_json_objects_count_as_unknown_fields(non_objects, unknown):
    known = [{"msgid": 1, "status": 0}, {"msgid": 2, "status": 0, "exdata": "x"}]
    batch = Normalizer("a").normalize_batch([*known, *non_objects], FETCHED_AT)
    assert batch.unknown_fields == unknown
    plus_one = Normalizer("a").normalize_batch([{"msgid": 3, "x": 1}, *non_objects], FETCHED_AT)
    assert plus_one.unknown_fields == unknown + 1


def test_iso_t_separator_and_surrounding_spaces_are_accepted():
    record = only_record({"msgid": 1, "status": 0, "stime": " 2016-08-04T17:38:55 "})
    assert record["stime"] == utc_millis(2016, 8, 4, 9, 38, 55)


def test_other_zones_and_dst():
    report = {
        "msgid": 1,
        "status": 0,
        "stime": "2021-07-01 12:00:00",
        "rtime": "2021-01-01 12:00:00",
    }
    record = normalize(report, "America/New_York").records[0]
    assert record["stime"] == utc_millis(2021, 7, 1, 16, 0, 0)  # EDT, UTC-4
    assert record["rtime"] == utc_millis(2021, 1, 1, 17, 0, 0)  # EST, UTC-5


def test_shanghai_summer_time_of_1986_to_1991_is_honoured():
    report = {"msgid": 1, "status": 0, "stime": "1988-07-01 12:00:00"}
    report["rtime"] = "1988-01-01 12:00:00"
    record = only_record(report)
    assert record["stime"] == utc_millis(1988, 7, 1, 3, 0, 0)  # CDT, UTC+9
    assert record["rtime"] == utc_millis(1988, 1, 1, 4, 0, 0)  # CST, UTC+8


def test_conversions_stay_right_after_the_caches_reset():
    normalizer = Normalizer("a")
    start = datetime(2020, 1, 1)
    reports = [
        {"msgid": i, "status": 0, "stime": f"{start + timedelta(seconds=7 * i):%Y-%m-%d %H:%M:%S}"}
        for i in range(20_000)  # more distinct strings and hours than either cache keeps
    ]
    records = normalizer.normalize_batch(reports, FETCHED_AT).records
    first = utc_millis(2019, 12, 31, 16, 0, 0)
    assert [r["stime"] for r in records] == [first + 7000 * i for i in range(20_000)]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def zoneinfo_millis(local: datetime, zone: str) -> int:
    """The reference: zoneinfo's instant for a naive local time (fold=0)."""
    return int((local.replace(tzinfo=ZoneInfo(zone)) - EPOCH).total_seconds()) * 1000


def transition_days(zone: str, year: int) -> list[datetime]:
    tz = ZoneInfo(zone)
    days = [datetime(year, 1, 1) + timedelta(days=n) for n in range(365)]
    return [
        d
        for d in days
        if d.replace(tzinfo=tz).utcoffset() != d.replace(hour=23, minute=59, tzinfo=tz).utcoffset()
    ]


@pytest.mark.parametrize(
    ("zone", "years"),
    [
        ("Asia/Shanghai", range(1986, 1992)),
        ("America/New_York", [2021]),
        ("Australia/Lord_Howe", [2021]),  # 30-minute shifts
        ("Europe/London", [2021]),
    ],
)
def test_every_minute_of_transition_days_matches_zoneinfo(zone, years):
    days = [day for year in years for day in transition_days(zone, year)]
    assert len(days) == 2 * len(years)
    locals_ = [day + timedelta(minutes=m, seconds=m % 60) for day in days for m in range(1440)]
    reports = [
        {"msgid": 1, "status": 0, "rtime": f"{local:%Y-%m-%d %H:%M:%S}"} for local in locals_
    ]
    records = Normalizer("a", zone).normalize_batch(reports, FETCHED_AT).records
    assert [r["rtime"] for r in records] == [zoneinfo_millis(local, zone) for local in locals_]


ZONES = ["Asia/Shanghai", "America/New_York", "Australia/Lord_Howe", "Europe/London", "UTC"]


@settings(max_examples=400)
@given(
    local=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
    zone=st.sampled_from(ZONES),
    separator=st.sampled_from([" ", "T"]),
)
# The draws that made this test fail at random: fold=1 in New York's fall-back hour (ambiguous)
# and in its spring-forward gap (a time that never existed). Pinned so every run tries them.
@example(datetime(2021, 11, 7, 1, 30, fold=1), "America/New_York", " ")
@example(datetime(2021, 3, 14, 2, 30, fold=1), "America/New_York", "T")
def test_any_local_time_maps_to_the_zoneinfo_instant(local, zone, separator):
    """The text carries no fold, so hypothesis's `fold` never reaches the connector: the rule
    (connector/codec/report.py) reads every local text as zoneinfo does with fold=0. An ambiguous
    time (a fall-back hour) is the earlier of its two instants; a time in a spring-forward gap
    is taken with the offset in force before the gap."""
    local = local.replace(microsecond=0)
    text = local.isoformat(sep=separator)
    rtime = normalize({"msgid": 1, "status": 0, "rtime": text}, zone).records[0]["rtime"]
    assert rtime == zoneinfo_millis(local.replace(fold=0), zone)
    if _is_ambiguous(local, zone):
        assert rtime == min(zoneinfo_millis(local.replace(fold=f), zone) for f in (0, 1))


def _is_ambiguous(local: datetime, zone: str) -> bool:
    """Both folds name a real instant that reads back as `local` (a repeated wall-clock time)."""
    tz = ZoneInfo(zone)
    readings = [local.replace(tzinfo=tz, fold=f) for f in (0, 1)]
    same_wall = all(
        r.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local for r in readings
    )
    return same_wall and readings[0].utcoffset() != readings[1].utcoffset()


@settings(max_examples=300)
@given(
    number=st.integers(min_value=-(10**30) + 1, max_value=10**30 - 1),
    as_string=st.booleans(),
    padding=st.sampled_from(["", " ", "\t"]),
)
def test_msgid_of_up_to_30_digits_survives_exactly(number, as_string, padding):
    raw = msgspec.json.encode({"msgid": f"{padding}{number}{padding}" if as_string else number})
    report = msgspec.json.decode(raw)
    report["status"] = 0
    assert only_record(report)["msgid"] == str(number)
