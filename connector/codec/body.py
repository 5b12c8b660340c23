"""A get-rpt body → its reports: strict parsing first, then salvage report by report.

The read is destructive, so a body is never half-believed and never thrown away:

* Strict: msgspec decodes the whole body (integers of any size stay exact; no floats for
  msgids). Duplicated keys — which msgspec would resolve silently by keeping the last — make
  the body an `InvalidResponseError`: choosing one of two `rpts` lists drops the other.
* Salvage, only when strict decoding failed: a tolerant scanner (`connector.codec.jsonscan`) splits
  the envelope and the `rpts` array at the byte level; each report is decoded alone. A report
  that does not decode (a lone surrogate, a number with leading zeros) becomes a `Rejected`
  carrying its exact bytes and a `ReportError` naming the field; the others are kept. When the
  envelope itself is broken (cut off, not an object, `result` unreadable) the whole body is an
  `InvalidResponseError`, whose `raw` is every byte received.

Envelope rules: `result` 0 with `rpts` a list → the reports; `result` 0 with `rpts: null` → an
empty batch; 401 → AuthError; another non-zero `result` → PlatformResultError, with `raw` set
when reports came along anyway (the fetcher must keep that body).

Counting first, natively: `rpt_native.count_body` recognizes a clean strict body (the usual
answer: `result` 0, flat report objects, no repeated key, no float) and counts its reports
without building a Python object per report. Such a body's `ParsedBody.reports` is decoded
only when asked for (the pure-Python record path asks; the native one reads the raw bytes).
Any other body, and every body with RPT_NATIVE=0 or without the extension, is judged here.
Given a `read_ahead` (the account's native record builder, RecordBuilder.read_ahead), a body
it builds whole is not counted at all: its records, made in the same single pass, travel with
the body as `ParsedBody.ahead` (the fetch thread then does the one parse the body needs).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from connector.codec import jsonscan
from connector.codec.desc import read_desc
from connector.errors import AuthError, InvalidResponseError, PlatformResultError, ReportError

_AUTH_RESULT = 401
# A UTF-8 byte-order mark is not JSON (RFC 8259 §8.1 forbids sending one) but some Windows-side
# gateways add it; it carries no data, so it is skipped rather than failing the whole body.
_BOM = b"\xef\xbb\xbf"
# msgspec keeps integers of any size exact (orjson turns big negatives into floats).
_DECODER = msgspec.json.Decoder()
# msgspec raises more than DecodeError: invalid UTF-8 inside a string, or absurd nesting.
UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError)
# Every key ends with its closing quote, blanks, a colon. With the blanks deleted, counting `":`
# bounds the key occurrences from above (inside strings it can only over-count, e.g. `\":`);
# translate + count is one C pass each, a fraction of a regex scan.
_BLANKS = b" \t\r\n"
# A high surrogate escape not followed by a low one, or a low one on its own.
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_LEADING_ZERO = re.compile(rb"-?0[0-9]")
# A quote followed by a blank: only then can a key's closing quote be apart from its colon.
_QUOTE_BLANKS = (b'" ', b'"\t', b'"\r', b'"\n')


def _native_counter() -> Callable[[bytes], int | None] | None:
    """rpt_native.count_body, unless RPT_NATIVE=0 or the extension (or that function) is
    missing: then every body is judged in Python (connector.codec.native says which path runs)."""
    if os.environ.get("RPT_NATIVE", "1") == "0":
        return None
    try:
        from rpt_native import count_body
    except ImportError:
        return None
    return count_body


_count_native = _native_counter()
# A body → (its report count, its records), or None: the body is judged here as without it.
ReadAhead = Callable[[bytes], "tuple[int, object] | None"]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A report that could not be used, as JSON bytes, with the reason."""

    raw: bytes
    error: ReportError


class ParsedBody:
    """The reports of one get-rpt answer: the usable ones, and the rejected ones as bytes.

    `counted` makes one whose reports are decoded on first use: the body is known to be
    clean (no rejects), and the native record path never needs them as dicts.
    """

    __slots__ = ("_count", "_reports", "_text", "ahead", "rejects")

    def __init__(self, reports: list[dict], rejects: list[Rejected] | None = None) -> None:
        self._reports: list[dict] | None = reports
        self._text = b""
        self.rejects: list[Rejected] = [] if rejects is None else rejects
        self._count = len(reports) + len(self.rejects)
        self.ahead: object | None = None

    @classmethod
    def counted(cls, text: bytes, count: int, ahead: object | None = None) -> ParsedBody:
        """A clean strict body (BOM stripped) of `count` reports, decoded when first asked;
        `ahead`: its records, where the read-ahead built them."""
        body = cls.__new__(cls)
        body._reports, body._text, body._count, body.rejects = None, text, count, []
        body.ahead = ahead
        return body

    @property
    def reports(self) -> list[dict]:
        if self._reports is None:
            self._reports = _DECODER.decode(self._text).get("rpts") or []
            self._text = b""
        return self._reports

    @property
    def count(self) -> int:
        """Every report the platform handed out in this answer, good or not."""
        return self._count

    @property
    def decoded(self) -> bool:
        """Whether the reports exist as Python objects yet (a counted body: once asked for)."""
        return self._reports is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParsedBody):
            return NotImplemented
        return (self.reports, self.rejects) == (other.reports, other.rejects)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return f"ParsedBody(count={self._count}, rejects={len(self.rejects)})"


def parse_body(raw: bytes, read_ahead: ReadAhead | None = None) -> ParsedBody:
    """A get-rpt body → ParsedBody; raises InvalidResponseError, AuthError, PlatformResultError."""
    text = raw[len(_BOM) :] if raw.startswith(_BOM) else raw
    if read_ahead is not None and type(raw) is bytes:
        ahead = read_ahead(raw)  # only ever a clean strict body (tests/unit/test_native_count)
        if ahead is not None:
            return ParsedBody.counted(text, ahead[0], ahead[1])
    if _count_native is not None and type(raw) is bytes:  # rpt_native reads bytes only
        count = _count_native(raw)
        if count is not None:
            return ParsedBody.counted(text, count)
    try:
        body = _DECODER.decode(text)
    except UNDECODABLE:
        return _salvage(raw, len(raw) - len(text))
    if not isinstance(body, dict):
        raise InvalidResponseError("get-rpt body is not a JSON object", raw)
    duplicate = _duplicate_key(text, body)
    if duplicate is not None:
        raise InvalidResponseError(f"get-rpt body repeats the key {brief(duplicate)}", raw)
    reports = _envelope(body, raw)
    if not all(type(r) is dict for r in reports):
        return ParsedBody(*_split_objects(reports))
    return ParsedBody(reports)


def _envelope(body: dict, raw: bytes) -> list:
    """Judge `result` and `rpts`; the entries of `rpts` (or [] for null)."""
    if "result" not in body:
        raise InvalidResponseError("get-rpt body has no 'result'", raw)
    result = result_code(body["result"])
    if result is None:
        message = f"get-rpt 'result' is not an integer: {brief(body['result'])}"
        raise InvalidResponseError(message, raw)
    reports = body.get("rpts")
    if result != 0:
        desc = read_desc(body.get("desc"))
        if result == _AUTH_RESULT:
            raise AuthError(f"get-rpt result 401: {desc.shown[:300]}")
        # Reports next to a failure code: the platform may count them as delivered. Keep them.
        kept = raw if isinstance(reports, list) and reports else None
        error = PlatformResultError(result, desc.text[:300], raw=kept)
        error.desc_raw = desc.raw  # the percent-encoded form as sent, to check the decoding
        raise error
    if reports is None:
        return []  # "rpts": null (or absent) with result 0: nothing to hand out
    if not isinstance(reports, list):
        kind = type(reports).__name__
        raise InvalidResponseError(f"get-rpt 'rpts' is a JSON {kind}, not a list", raw)
    return reports


def result_code(value: object) -> int | None:
    """`result` (or a login `code`) as an int: a JSON integer or a decimal string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _split_objects(reports: list) -> tuple[list[dict], list[Rejected]]:
    """Entries of `rpts` that are not JSON objects are rejected one by one."""
    good: list[dict] = []
    rejects: list[Rejected] = []
    for entry in reports:
        if type(entry) is dict:
            good.append(entry)
        else:
            error = ReportError("report", entry, "not a JSON object")
            rejects.append(Rejected(msgspec.json.encode(entry), error))
    return good, rejects


# --- duplicated keys --------------------------------------------------------------------------
def _duplicate_key(text: bytes, body: dict) -> str | None:
    """A key repeated in any object of the body, or None. Fast unless the count is off."""
    keys = len(body)
    reports = body.get("rpts")
    if isinstance(reports, list):
        keys += sum(len(r) for r in reports if type(r) is dict)
    if text.count(b'":') == keys and not any(q in text for q in _QUOTE_BLANKS):
        return None  # compact JSON (no blank after any quote): no translate pass needed
    if text.translate(None, _BLANKS).count(b'":') == keys:
        return None  # every key occurrence is a distinct decoded key (nested objects aside)
    return _first_duplicate(text)


def _first_duplicate(text: bytes) -> str | None:
    """The exact check, on the slow path: json's object_pairs_hook sees every pair."""
    found: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen and not found:
                found.append(key)
            seen.add(key)
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs)
    except ValueError:
        return None  # json and msgspec disagree on validity; msgspec already accepted it
    return found[0] if found else None


# --- salvage ----------------------------------------------------------------------------------
def _salvage(raw: bytes, first: int) -> ParsedBody:
    """Strict decoding failed: keep the envelope's verdict, reject only the reports that fail.

    Scans `raw` from `first` (past a BOM), so byte offsets in messages are offsets in `raw`.
    """
    try:
        members = jsonscan.object_members(raw, first, whole=True)
    except jsonscan.ScanError as exc:
        raise InvalidResponseError(f"get-rpt body is not JSON: {exc}", raw) from None
    names = [name for name, _ in members]
    repeated = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if repeated is not None:
        raise InvalidResponseError(f"get-rpt body repeats the key {brief(repeated)}", raw)
    envelope: dict[str, object] = {}
    spans = dict(members)
    for name, (start, end) in members:
        if name == "rpts":
            continue
        try:
            envelope[name] = _DECODER.decode(raw[start:end])
        except UNDECODABLE as exc:
            why = _why(exc, raw[start:end])
            message = f"get-rpt {brief(name)} is not valid JSON at byte {start}: {why}"
            raise InvalidResponseError(message, raw) from None
    rpts = spans.get("rpts")
    if rpts is not None and raw[rpts[0] : rpts[1]] != b"null":
        envelope["rpts"] = [None]  # a stand-in: the real entries are split below
    _envelope(envelope, raw)  # judges result and desc; raises on a non-zero result
    if rpts is None or "rpts" not in envelope:
        return ParsedBody([])
    if raw[rpts[0] : rpts[0] + 1] != b"[":
        raise InvalidResponseError(f"get-rpt 'rpts' is not a list (byte {rpts[0]})", raw)
    return _salvage_reports(raw, rpts[0])


def _salvage_reports(raw: bytes, start: int) -> ParsedBody:
    try:
        spans = jsonscan.array_items(raw, start)
    except jsonscan.ScanError as exc:
        raise InvalidResponseError(f"get-rpt 'rpts' is not JSON: {exc}", raw) from None
    good: list[dict] = []
    rejects: list[Rejected] = []
    for item_start, item_end in spans:
        item = raw[item_start:item_end]
        try:
            report = _DECODER.decode(item)
        except UNDECODABLE as exc:
            rejects.append(Rejected(item, _report_error(item, exc, raw)))
            continue
        if type(report) is not dict:
            rejects.append(Rejected(item, ReportError("report", report, "not a JSON object")))
            continue
        duplicate = _duplicate_key(item, report)
        if duplicate is not None:
            message = f"get-rpt report at byte {item_start} repeats the key {brief(duplicate)}"
            raise InvalidResponseError(message, raw)
        good.append(report)
    return ParsedBody(good, rejects)


def _report_error(item: bytes, exc: Exception, raw: bytes) -> ReportError:
    """Name the field whose value does not decode (or the report, if it is not an object)."""
    try:
        members = jsonscan.object_members(item, 0, whole=True)
    except jsonscan.ScanError as scan:
        return ReportError("report", _shown(item), f"not a JSON object: {scan}")
    names = [name for name, _ in members]
    for index, (name, (start, end)) in enumerate(members):
        if name in names[:index]:
            raise InvalidResponseError(f"get-rpt report repeats the key {brief(name)}", raw)
        try:
            _DECODER.decode(item[start:end])
        except UNDECODABLE as bad:
            value = item[start:end]
            return ReportError(name, _shown(value), f"not valid JSON: {_why(bad, value)}")
    return ReportError("report", _shown(item), f"not valid JSON: {_why(exc, item)}")


def brief(value: object, limit: int = 60) -> str:
    """repr() for a message, cut: a key or value from the body may be megabytes long."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _shown(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _why(exc: Exception, fragment: bytes = b"") -> str:
    """What is wrong with a fragment: named for the usual cases, else msgspec's reason."""
    surrogate = _LONE_SURROGATE.search(fragment)
    if surrogate is not None:
        return f"a lone UTF-16 surrogate escape ({surrogate.group().decode()})"
    if _LEADING_ZERO.match(fragment):
        return "a number with leading zeros"
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 ({exc.reason})"
    return re.sub(r"\s*\(byte \d+\)$", "", str(exc)) or type(exc).__name__
