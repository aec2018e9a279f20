"""How many SMS segments a text takes, to warn a template author before a long SMS costs more.

A text in the GSM 03.38 alphabet goes as 7-bit characters: 160 in one segment, or 153 per
segment once split (the rest carries the joining header), the extension characters
(``^{}\\[~]|€`` and form feed) counting two. Any other character makes the whole text UCS-2:
70 UTF-16 code units in one segment, 67 per segment once split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class SmsSegments:
    encoding: Encoding
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int

    @property
    def single_segment_limit(self) -> int:
        return 160 if self.encoding == "GSM-7" else 70


def sms_segments(text: str) -> SmsSegments:
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENSION for c in text):
        units = sum(2 if c in _GSM7_EXTENSION else 1 for c in text)
        return SmsSegments("GSM-7", units, _count(units, single=160, each=153))
    units = len(text.encode("utf-16-le")) // 2
    return SmsSegments("UCS-2", units, _count(units, single=70, each=67))


def _count(units: int, *, single: int, each: int) -> int:
    if units <= single:
        return 1
    return -(-units // each)
