"""The platform's `desc` (and login `msg`): percent-encoded text in GB2312 — or UTF-8.

The seed says `urlencode(GB2312)`, yet its own example (`%e6%88%90%e5%8a%9f`, 成功) is UTF-8.
Trying UTF-8 first is wrong: many GB2312 byte strings are valid UTF-8 too — 系统忙 is
`cf b5 cd b3 c3 a6`, which reads as UTF-8 `ϵͳæ`. GB2312 pairs two bytes of 0xA1-0xFE; as
UTF-8 such pairs make 2-byte sequences (Latin-1, Greek, Cyrillic, ... never a CJK character),
or, rarely, 3-byte ones. So the rule:

1. Pure ASCII: the text as it is.
2. A reading is *plausible* when every character is ASCII, a CJK ideograph, or CJK, fullwidth
   or general punctuation. A plausible UTF-8 reading wins (the seed's example); then a
   plausible strict-GB2312 reading (系统忙).
3. Otherwise any valid UTF-8 (self-validating, so the less likely accident: "Größe" is valid
   GBK too), then GB18030 (the superset of GB2312 and GBK, for characters beyond GB2312),
   else the text is kept as sent.

GB2312 is decoded with Python's `gb2312` codec first because GB18030 maps a few GB2312 codes
differently (A1AA is U+2015 in GB2312, U+2014 in GB18030; A1A4 becomes U+00B7).

The raw (percent-encoded) form is kept beside the text, so a wrong guess can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

_PLAUSIBLE_RANGES = (
    (0x2000, 0x206F),  # general punctuation: “ ” … —
    (0x3000, 0x303F),  # CJK symbols and punctuation: 。 、 「 」
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xFF00, 0xFFEF),  # fullwidth forms: ， ： （ ）
)


@dataclass(frozen=True, slots=True)
class DecodedDesc:
    text: str  # what the platform meant, as far as the rule above can tell
    raw: str  # exactly as sent (percent-encoded)
    encoding: str  # "ascii", "utf-8", "gb2312", "gb18030", or "none" (kept as sent)

    @property
    def shown(self) -> str:
        """For messages: the text, plus the form as sent when a guess was involved."""
        if self.encoding in ("ascii", "none") or self.text == self.raw:
            return self.text
        return f"{self.text} (desc as sent: {self.raw[:120]}, read as {self.encoding})"


def read_desc(value: object) -> DecodedDesc:
    """Percent-decode a `desc`, choosing between UTF-8 and GB2312/GB18030 by the rule above."""
    if value is None:
        return DecodedDesc("", "", "ascii")
    text = str(value)
    # The platform form-encodes (Java URLEncoder style), where '+' stands for a space.
    data = unquote_to_bytes(text.replace("+", " "))
    if data.isascii():
        return DecodedDesc(data.decode("ascii"), text, "ascii")
    utf8, gb2312, gb18030 = (_decode(data, enc) for enc in ("utf-8", "gb2312", "gb18030"))
    if utf8 is not None and is_plausible(utf8):
        return DecodedDesc(utf8, text, "utf-8")
    if gb2312 is not None and is_plausible(gb2312):
        return DecodedDesc(gb2312, text, "gb2312")
    if utf8 is not None:
        return DecodedDesc(utf8, text, "utf-8")  # valid UTF-8 is rarely an accident
    if gb18030 is not None:
        return DecodedDesc(gb18030, text, "gb18030")  # GBK / GB18030 beyond GB2312
    return DecodedDesc(text, text, "none")


def decode_desc(value: object) -> str:
    """The text of a `desc` (see `read_desc`)."""
    return read_desc(value).text


def _decode(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def is_plausible(text: str) -> bool:
    """Every character ASCII, a CJK ideograph, or CJK / fullwidth / general punctuation."""
    return all(
        ch.isascii() or any(lo <= ord(ch) <= hi for lo, hi in _PLAUSIBLE_RANGES) for ch in text
    )
