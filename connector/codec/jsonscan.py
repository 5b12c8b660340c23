"""A tolerant JSON scanner: where the values are, without judging the values themselves.

Used only when strict decoding of a get-rpt body failed, to cut the body into the envelope's
members and the `rpts` array into its report objects, so that one bad token costs one report.
It respects strings (with their escapes) and nesting; a scalar is whatever runs up to the next
`,` `]` `}` or blank, so a malformed number or a bad literal still has a span of its own. What
the spans hold is judged later by the strict decoder, fragment by fragment.
"""

from __future__ import annotations

import json
import re

# A JSON string, escapes included; possessive so that a long string costs no backtracking.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BLANKS = re.compile(rb"[ \t\r\n]*")
_SCALAR = re.compile(rb"[^,\]}\s]+")
_STRUCTURE = re.compile(rb'["\[\]{}]')
_OPEN = {b"["[0]: b"]"[0], b"{"[0]: b"}"[0]}


class ScanError(ValueError):
    """The text is not JSON even tolerantly (cut off, unbalanced, not an object)."""


Span = tuple[int, int]


def object_members(text: bytes, start: int, *, whole: bool = False) -> list[tuple[str, Span]]:
    """The members of the object at `start` as (name, value span), in order, repeats kept.

    With `whole`, nothing but blanks may follow the object.
    """
    i = _skip(text, start)
    if text[i : i + 1] != b"{":
        raise ScanError(f"expected '{{' at byte {i}")
    members: list[tuple[str, Span]] = []
    i = _skip(text, i + 1)
    if text[i : i + 1] == b"}":
        return _finish(members, text, i + 1, whole)
    while True:
        name, i = _name(text, i)
        i = _skip(text, i)
        if text[i : i + 1] != b":":
            raise ScanError(f"expected ':' after the key {name[:40]!r} at byte {i}")
        value_start = _skip(text, i + 1)
        value_end = value_end_at(text, value_start)
        members.append((name, (value_start, value_end)))
        i = _skip(text, value_end)
        sep = text[i : i + 1]
        if sep == b"}":
            return _finish(members, text, i + 1, whole)
        if sep != b",":
            raise ScanError(_unexpected(text, i, "',' or '}'"))
        i = _skip(text, i + 1)


def array_items(text: bytes, start: int) -> list[Span]:
    """The spans of the items of the array at `start`."""
    i = _skip(text, start)
    if text[i : i + 1] != b"[":
        raise ScanError(f"expected '[' at byte {i}")
    items: list[Span] = []
    i = _skip(text, i + 1)
    if text[i : i + 1] == b"]":
        return items
    while True:
        end = value_end_at(text, i)
        items.append((i, end))
        i = _skip(text, end)
        sep = text[i : i + 1]
        if sep == b"]":
            return items
        if sep != b",":
            raise ScanError(_unexpected(text, i, "',' or ']'"))
        i = _skip(text, i + 1)


def value_end_at(text: bytes, start: int) -> int:
    """Where the value starting at `start` ends (exclusive)."""
    first = text[start : start + 1]
    if first == b'"':
        return _string_end(text, start)
    if first in (b"{", b"["):
        return _container_end(text, start)
    match = _SCALAR.match(text, start)
    if match is None:
        raise ScanError(_unexpected(text, start, "a value"))
    return match.end()


def _container_end(text: bytes, start: int) -> int:
    """Matching bracket of the `{` or `[` at `start`; strings are skipped whole."""
    closers = [_OPEN[text[start]]]
    i = start + 1
    while closers:
        match = _STRUCTURE.search(text, i)
        if match is None:
            raise ScanError(f"cut off: {len(closers)} bracket(s) still open at the end")
        char = text[match.start()]
        if char == 0x22:  # '"'
            i = _string_end(text, match.start())
        elif char in _OPEN:
            closers.append(_OPEN[char])
            i = match.start() + 1
        elif char == closers[-1]:
            closers.pop()
            i = match.start() + 1
        else:
            raise ScanError(f"unbalanced {chr(char)!r} at byte {match.start()}")
    return i


def _string_end(text: bytes, start: int) -> int:
    match = _STRING.match(text, start)
    if match is None:
        raise ScanError(f"cut off: the string at byte {start} never ends")
    return match.end()


def _name(text: bytes, i: int) -> tuple[str, int]:
    if text[i : i + 1] != b'"':
        raise ScanError(_unexpected(text, i, "a key"))
    end = _string_end(text, i)
    try:  # escapes decoded, so that "rpt\u0073" and "rpts" are the same key
        name = json.loads(text[i:end])
    except ValueError:  # a lone surrogate or bad UTF-8 in the key itself
        name = text[i + 1 : end - 1].decode("utf-8", "backslashreplace")
    return name, end


def _skip(text: bytes, i: int) -> int:
    match = _BLANKS.match(text, i)
    return match.end() if match else i


def _finish(members: list, text: bytes, end: int, whole: bool) -> list:
    if whole and _skip(text, end) != len(text):
        raise ScanError(f"data after the end of the JSON object at byte {_skip(text, end)}")
    return members


def _unexpected(text: bytes, i: int, wanted: str) -> str:
    if i >= len(text):
        return f"cut off after {len(text)} bytes (expected {wanted})"
    return f"expected {wanted} at byte {i}, found {text[i : i + 1]!r}"
