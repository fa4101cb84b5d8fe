"""Replacement values: dummies by VR, date shifting, free-text scrubbing."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["MAX_LENGTH", "dummy", "scrubber", "shift_date", "shift_datetime"]

TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "AS"})
FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC", "PN"})
_DUMMY: dict[str, Any] = {
    "AE": "ANONYMOUS",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UR": "http://example.invalid/",
}
# maximum characters per value (PS3.5 Table 6.2-1; DA allows a range in queries)
MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "DA": 18, "DS": 16, "DT": 54, "IS": 12,
              "LO": 64, "SH": 16, "TM": 28, "UI": 64}  # fmt: skip
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMERIC = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"})


def dummy(vr: str) -> Any:
    """A non-empty value of ``vr`` that carries no information (not for SQ or UI)."""
    if vr in _DUMMY:
        return _DUMMY[vr]
    if vr in _BINARY:
        return b"\x00\x00"
    if vr in _NUMERIC:
        return 0
    return "ANONYMIZED"


def _shift(text: str, days: int, fmt_len: int) -> str | None:
    """Shift the leading YYYY[MM[DD]] of ``text`` back by ``days``; None if unparsable."""
    digits = text[:fmt_len]
    if not digits.isdigit() or len(digits) not in (4, 6, 8):
        return None
    year, month, day = int(digits[:4]), int(digits[4:6] or 1), int(digits[6:8] or 1)
    try:
        shifted = dt.date(year, month, day) - dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    full = f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}"
    return full[: len(digits)] + text[len(digits) :]


def shift_date(value: str, days: int) -> str:
    """A DA value (possibly multi-valued or a range) moved back ``days``; "" if invalid."""
    out = []
    for part in value.split("\\"):
        pieces = []
        for end in part.strip().split("-"):
            if not end:
                pieces.append("")
                continue
            moved = _shift(end, days, 8)
            if moved is None:
                return ""
            pieces.append(moved)
        out.append("-".join(pieces))
    return "\\".join(out)


def shift_datetime(value: str, days: int) -> str:
    """A DT value moved back whole ``days``; time of day and UTC offset are kept."""
    out = []
    for part in value.split("\\"):
        part = part.strip()
        if not part:
            out.append("")
            continue
        # the date is the leading run of digits (at most 8); the rest is time and offset
        head = re.match(r"\d{1,8}", part)
        if head is None:
            return ""
        moved = _shift(part, days, len(head.group(0)))
        if moved is None:
            return ""
        out.append(moved)
    return "\\".join(out)


def scrubber(tokens: Iterable[str]) -> re.Pattern[str] | None:
    """A case-insensitive pattern that finds any of ``tokens`` as whole words."""
    words = sorted({t.strip() for t in tokens if len(t.strip()) >= 2}, key=len, reverse=True)
    if not words:
        return None
    body = "|".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)
