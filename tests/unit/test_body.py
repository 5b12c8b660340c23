"""parse_body: strict first, then per-report salvage; never a silently chosen list, never a loss.

The bodies come from tests/hostile_platform.py, the same builders the integration tests serve
over real sockets, so each case here is one the connector meets end to end.
"""

from __future__ import annotations

import json

import hostile_platform as hostile
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.codec import jsonscan
from connector.codec.report import Normalizer, parse_body
from connector.errors import Disposition, InvalidResponseError, PlatformResultError


@pytest.fixture
def reports() -> hostile.Reports:
    return hostile.Reports()


def all_msgids(parsed) -> list[str]:
    """What the body yields: good reports' msgids, then the rejects' (from their raw bytes)."""
    good = [str(r["msgid"]) for r in parsed.reports]
    return good + [m for rejected in parsed.rejects for m in hostile.msgids_in(rejected.raw)]


def test_a_good_body_is_parsed_strictly_with_exact_msgids(reports: hostile.Reports) -> None:
    answer = hostile.good(reports, 5)
    parsed = parse_body(answer.body)
    assert parsed.rejects == []
    assert [r["msgid"] for r in parsed.reports] == [int(m) for m in answer.msgids]
    assert all(type(r["msgid"]) is int for r in parsed.reports)  # never a float
    assert parsed.count == 5


@pytest.mark.parametrize("builder", [hostile.duplicate_rpts, hostile.duplicate_msgid])
def test_a_duplicated_key_makes_the_whole_body_invalid(builder, reports: hostile.Reports) -> None:
    answer = builder(reports, 3)
    with pytest.raises(InvalidResponseError, match="repeats the key") as caught:
        parse_body(answer.body)
    assert caught.value.raw == answer.body  # dead-lettered whole: both lists kept
    assert caught.value.disposition is Disposition.DEAD_LETTER


def test_a_duplicated_key_is_found_on_the_salvage_path_too(reports: hostile.Reports) -> None:
    # The lone surrogate forces the salvage path; the repeated rpts must still be caught.
    bad = hostile.lone_surrogate(reports, 3)
    body = bad.body[:-1] + b',"rpts":[]}'
    with pytest.raises(InvalidResponseError, match="repeats the key 'rpts'"):
        parse_body(body)


def test_a_duplicated_key_inside_a_salvaged_report(reports: hostile.Reports) -> None:
    bad = hostile.lone_surrogate(reports, 3)
    body = bad.body.replace(b'"status": 0', b'"status": 0, "status": 1', 1)
    with pytest.raises(InvalidResponseError, match="repeats the key 'status'"):
        parse_body(body)


def test_an_escaped_quote_colon_in_a_value_is_not_a_duplicate(reports: hostile.Reports) -> None:
    # The fast key count over-counts `\":` inside strings; the exact check clears it.
    body = hostile.batch([reports.one(errdesc='he said "rpts": no')])
    assert b'\\": no' in body
    assert len(parse_body(body).reports) == 1


def test_a_nested_object_with_repeated_keys_elsewhere_is_judged_exactly(
    reports: hostile.Reports,
) -> None:
    nested = reports.one()
    body = hostile.batch([nested]).replace(b'"exdata"', b'"extra": {"a": 1, "a": 2}, "exdata"')
    with pytest.raises(InvalidResponseError, match="repeats the key 'a'"):
        parse_body(body)


def test_result_501_with_reports_keeps_the_body(reports: hostile.Reports) -> None:
    answer = hostile.result_with_reports(reports, 4)
    with pytest.raises(PlatformResultError) as caught:
        parse_body(answer.body)
    error = caught.value
    assert (error.result, error.desc) == (501, "系统忙")
    assert error.raw == answer.body  # the fetcher must spool it: the reports were handed out
    assert error.desc_raw == hostile.BUSY_GB2312


def test_result_501_without_reports_keeps_nothing() -> None:
    with pytest.raises(PlatformResultError) as caught:
        parse_body(hostile.batch([], result=501, desc=hostile.BUSY_GB2312))
    assert caught.value.raw is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"result":0,"desc":"ok","rpts":null}',
        b'{"result":0,"desc":"ok"}',
        b'{"result":"0","rpts":null}',
    ],
)
def test_rpts_null_or_absent_with_result_0_is_an_empty_batch(raw: bytes) -> None:
    parsed = parse_body(raw)
    assert (parsed.reports, parsed.rejects) == ([], [])


def test_a_bom_is_stripped(reports: hostile.Reports) -> None:
    answer = hostile.with_bom(reports, 3)
    assert answer.body.startswith(hostile.BOM)
    assert all_msgids(parse_body(answer.body)) == answer.msgids


@pytest.mark.parametrize(
    ("builder", "field", "reason"),
    [
        (hostile.lone_surrogate, "errdesc", r"lone UTF-16 surrogate escape (\ud83d)"),
        (hostile.leading_zero, "pknum", "a number with leading zeros"),
    ],
)
def test_one_bad_token_rejects_one_report_and_keeps_the_others(
    builder, field: str, reason: str, reports: hostile.Reports
) -> None:
    answer = builder(reports, 4, bad=2)
    parsed = parse_body(answer.body)
    assert len(parsed.reports) == 3
    (rejected,) = parsed.rejects
    assert rejected.raw in answer.body and rejected.raw.startswith(b"{")
    assert hostile.msgids_in(rejected.raw) == [answer.msgids[2]]
    assert rejected.error.field == field
    assert reason in rejected.error.reason
    assert sorted(all_msgids(parsed)) == sorted(answer.msgids)  # every report, exactly once
    assert all(type(r["msgid"]) is int for r in parsed.reports)


def test_salvaged_reports_normalize_like_strict_ones(reports: hostile.Reports) -> None:
    answer = hostile.lone_surrogate(reports, 3, bad=0)
    batch = Normalizer("main").normalize_body(parse_body(answer.body), 0)
    assert [r["msgid"] for r in batch.records] == answer.msgids[1:]
    assert [r.raw for r in batch.rejected] == [parse_body(answer.body).rejects[0].raw]


def test_a_report_that_is_not_an_object_is_rejected_alone(reports: hostile.Reports) -> None:
    body = hostile.batch([reports.one(), reports.one()]).replace(b"[{", b"[07, {", 1)
    parsed = parse_body(body)
    assert len(parsed.reports) == 2
    (rejected,) = parsed.rejects
    assert (rejected.raw, rejected.error.field) == (b"07", "report")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"result":0,"rpts":[{"msgid":1}', "cut off"),
        (b'{"result":0,"rpts":[{"msgid":1},', "cut off"),
        (b'{"result":0,"rpts":[{"msgid":"1', "cut off"),
        (b'{"result":0,"rpts":[]} trailing', "data after the end"),
        (b'{"result":01,"rpts":[]}', "'result' is not valid JSON"),
        (b'{"result":0,"desc":"\\ud83d","rpts":[]}', "'desc' is not valid JSON"),
        (b'{"result":0,"rpts":[{"msgid":1}}', "unbalanced"),
        (b'{"result":0,"rpts":{"msgid":01}}', "'rpts' is not a list"),
        (b"<html>502</html>", "expected '{'"),
        (b"", "expected '{'"),
    ],
)
def test_a_broken_envelope_is_an_invalid_response_with_a_specific_reason(
    raw: bytes, message: str
) -> None:
    with pytest.raises(InvalidResponseError, match=message) as caught:
        parse_body(raw)
    assert caught.value.raw == raw
    assert len(str(caught.value)) < 200


def test_a_cut_seed_body_is_invalid_not_salvaged(reports: hostile.Reports) -> None:
    answer = hostile.cut(reports, 5)
    with pytest.raises(InvalidResponseError, match="cut off"):
        parse_body(answer.body[: answer.cut_at])


# --- the scanner, against the strict decoder ------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)


@given(st.lists(json_values, max_size=6), st.sampled_from([None, 2]))
def test_the_scanner_splits_arrays_exactly_where_json_does(items: list, indent: int | None) -> None:
    text = json.dumps(items, indent=indent, ensure_ascii=False).encode()
    spans = jsonscan.array_items(text, 0)
    assert [msgspec.json.decode(text[a:b]) for a, b in spans] == items


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5))
def test_the_scanner_finds_every_member(document: dict) -> None:
    text = json.dumps(document, separators=(" ,", " : ")).encode()
    members = jsonscan.object_members(text, 0, whole=True)
    assert {name: msgspec.json.decode(text[a:b]) for name, (a, b) in members} == document


@given(st.lists(json_values, min_size=1, max_size=6), st.data())
def test_any_cut_of_an_array_is_a_scan_error_or_a_prefix(items: list, data) -> None:
    text = json.dumps(items).encode()
    end = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    with pytest.raises(jsonscan.ScanError):
        jsonscan.array_items(text[:end], 0)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"result":"' + b"x" * 100_000 + b'","rpts":[]}',
        b'{"result":0,"' + b"k" * 100_000 + b'":1,"' + b"k" * 100_000 + b'":2,"rpts":[]}',
        b'{"result":0,"rpts":[{"msgid":1}],"' + b"k" * 100_000 + b'":01}',
        b'{"result":0,"' + b"k" * 100_000 + b'" 1}',
    ],
    ids=["huge-result", "huge-repeated-key", "huge-bad-member", "huge-key-no-colon"],
)
def test_reasons_stay_short_whatever_the_body_holds(raw: bytes) -> None:
    with pytest.raises(InvalidResponseError) as caught:
        parse_body(raw)
    assert len(str(caught.value)) < 200


def test_a_huge_desc_is_cut_in_the_message() -> None:
    with pytest.raises(PlatformResultError) as caught:
        parse_body(hostile.batch([], result=500, desc="busy" * 50_000))
    assert len(str(caught.value)) < 400


blank = st.sampled_from(["", " ", "\n  ", "\t", "\r\n"])
pair_keys = st.sampled_from(["msgid", "status", "errdesc", "a\\u0062", "ab"])  # "a\u0062" is "ab"
pair_values = st.sampled_from(["1", '"x"', '"he said \\": no"', '"a : b"', "[1, 2]"])


def render(pairs: list[tuple[str, str]], sep) -> str:
    members = [f'"{key}"{sep()}:{sep()}{value}' for key, value in pairs]
    return "{" + sep() + ("," + sep()).join(members) + sep() + "}"


@given(st.lists(st.lists(st.tuples(pair_keys, pair_values), max_size=5), max_size=4), st.data())
def test_repeated_keys_are_found_whatever_the_blanks_and_values(reports: list, data) -> None:
    sep = lambda: data.draw(blank)  # noqa: E731
    body = '{"result":0,' + sep() + '"rpts":' + sep() + "["
    body += ",".join(render(pairs, sep) for pairs in reports) + "]}"
    canonical = [[key.replace("\\u0062", "b") for key, _ in pairs] for pairs in reports]
    repeated = any(len(keys) != len(set(keys)) for keys in canonical)
    if repeated:
        with pytest.raises(InvalidResponseError, match="repeats the key"):
            parse_body(body.encode())
    else:
        assert parse_body(body.encode()).count == len(reports)


CORRUPTIONS = {
    # name: (field it breaks, how the report's JSON is changed)
    "lone_surrogate": (
        "errdesc",
        lambda t: t.replace(b'"errdesc": "success"', b'"errdesc": "\\udc00"'),
    ),
    "leading_zero": ("pknum", lambda t: t.replace(b'"pknum": 1', b'"pknum": 00')),
    "bad_utf8": ("mobile", lambda t: t.replace(b'"mobile": "13800138000"', b'"mobile": "\xff1"')),
    "nan": ("status", lambda t: t.replace(b'"status": 0', b'"status": NaN')),
}


@given(
    st.lists(st.sampled_from([None, *CORRUPTIONS]), min_size=1, max_size=12),
    st.sampled_from([b",", b", ", b",\n  "]),
    st.booleans(),
)
def test_salvage_keeps_every_report_exactly_once(
    plan: list[str | None], separator: bytes, bom: bool
) -> None:
    made = hostile.Reports()
    items, broken = [], {}
    for corruption in plan:
        item = hostile.encode([made.one()])[1:-1]
        if corruption is not None:
            field, change = CORRUPTIONS[corruption]
            item = change(item)
            broken[hostile.msgids_in(item)[0]] = field
        items.append(item)
    raw = (hostile.BOM if bom else b"") + b'{"result":0,"rpts":[' + separator.join(items) + b"]}"
    parsed = parse_body(raw)
    assert sorted(all_msgids(parsed)) == sorted(
        m for item in items for m in hostile.msgids_in(item)
    )
    assert {hostile.msgids_in(r.raw)[0]: r.error.field for r in parsed.rejects} == broken
    assert all(type(r["msgid"]) is int for r in parsed.reports)
    assert [r.raw for r in parsed.rejects] == [
        i for i in items if hostile.msgids_in(i)[0] in broken
    ]


def test_byte_offsets_in_reasons_count_from_the_start_of_the_body_bom_included() -> None:
    raw = hostile.BOM + b'{"result":01,"rpts":[]}'
    with pytest.raises(InvalidResponseError) as caught:
        parse_body(raw)
    assert (
        str(caught.value)
        == "get-rpt 'result' is not valid JSON at byte 13: a number with leading zeros"
    )
    assert raw[13:15] == b"01"
