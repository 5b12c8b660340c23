"""`desc` decoding: the seed's UTF-8 example and the platform's GB2312 messages both come out right.

The rule (connector/codec/desc.py): decode both ways; a reading that is all ASCII / CJK / CJK or
fullwidth punctuation is plausible; plausible UTF-8 wins, then plausible GB18030, then UTF-8.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from connector.codec.desc import is_plausible, read_desc
from connector.codec.report import decode_desc

SEED_DESC = "%e6%88%90%e5%8a%9f"  # 成功, UTF-8, in the seed's example answer
PLATFORM_MESSAGES = [
    "成功",
    "系统忙",
    "系统繁忙",
    "身份认证失败",
    "请求过于频繁",
    "参数错误",
    "账号余额不足",
]


def test_the_seeds_utf8_example() -> None:
    decoded = read_desc(SEED_DESC)
    assert (decoded.text, decoded.raw, decoded.encoding) == ("成功", SEED_DESC, "utf-8")


def test_gb2312_busy_is_not_read_as_its_utf8_mojibake() -> None:
    # cf b5 cd b3 c3 a6 is valid UTF-8 too: 'ϵͳæ'. UTF-8-first decoding got this wrong.
    assert bytes.fromhex("cfb5cdb3c3a6").decode("utf-8") == "ϵͳæ"
    decoded = read_desc("%cf%b5%cd%b3%c3%a6")
    assert (decoded.text, decoded.encoding) == ("系统忙", "gb2312")
    assert decoded.raw == "%cf%b5%cd%b3%c3%a6"  # the form as sent is kept
    assert "%cf%b5%cd%b3%c3%a6" in decoded.shown


@pytest.mark.parametrize("message", PLATFORM_MESSAGES)
@pytest.mark.parametrize("encoding", ["gb2312", "utf-8"])
@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_common_platform_messages_in_either_encoding(message: str, encoding: str, case) -> None:
    encoded = case(quote(message.encode(encoding)))
    assert decode_desc(encoded) == message


@pytest.mark.parametrize(
    ("encoded", "decoded", "encoding"),
    [
        ("success", "success", "ascii"),
        ("system+busy", "system busy", "ascii"),  # form encoding: '+' is a space
        ("%80%FF", "%80%FF", "none"),  # neither UTF-8 nor GB18030: kept as it came
        ("", "", "ascii"),
        (quote("Größe"), "Größe", "utf-8"),
        (
            quote("张喆，账号余额不足".encode("gbk")),
            "张喆，账号余额不足",
            "gb18030",
        ),  # 喆: GBK only  # not CJK, yet only UTF-8 decodes it
        (quote("请稍后再试（错误码：501）"), "请稍后再试（错误码：501）", "utf-8"),
        (
            quote("请稍后再试（错误码：501）".encode("gb2312")),
            "请稍后再试（错误码：501）",
            "gb2312",
        ),
    ],
)
def test_decode_desc_cases(encoded: str, decoded: str, encoding: str) -> None:
    result = read_desc(encoded)
    assert (result.text, result.encoding) == (decoded, encoding)


def test_a_missing_or_numeric_desc() -> None:
    assert (decode_desc(None), decode_desc(42)) == ("", "42")


# GB2312's hanzi (rows 16-87) and its CJK / fullwidth punctuation, plus ASCII.
def _gb2312_chars(leads: range) -> list[str]:
    chars = []
    for lead in leads:
        for trail in range(0xA1, 0xFF):
            try:
                chars.append(bytes([lead, trail]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return chars


HANZI = _gb2312_chars(range(0xB0, 0xF8))
PUNCTUATION = [c for c in _gb2312_chars(range(0xA1, 0xA4)) if is_plausible(c)]
chinese_text = st.text(
    alphabet=st.sampled_from(HANZI)
    | st.sampled_from(PUNCTUATION)
    | st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    min_size=1,
    max_size=24,
)


def _ambiguous(data: bytes) -> bool:
    """Both readings valid and plausible: no rule can tell such bytes apart."""
    try:
        readings = [data.decode("utf-8"), data.decode("gb2312")]
    except UnicodeDecodeError:
        return False
    return all(is_plausible(reading) for reading in readings)


def test_the_alphabet_is_big_and_plausible() -> None:
    assert len(HANZI) > 6700 and len(PUNCTUATION) > 100
    assert is_plausible("".join(HANZI + PUNCTUATION))


@given(chinese_text)
def test_chinese_text_round_trips_as_utf8(text: str) -> None:
    assert decode_desc(quote(text.encode("utf-8"))) == text


@given(chinese_text)
def test_chinese_text_round_trips_as_gb2312(text: str) -> None:
    data = text.encode("gb2312")
    assume(not _ambiguous(data))
    assert decode_desc(quote(data)) == text
