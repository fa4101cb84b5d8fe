"""The PS3.15 Annex E confidentiality profile and its options, resolved per tag.

:data:`TABLE` is Table E.1-1 (generated into :mod:`tessera.dicom._profile_table`).  A
:class:`Profile` names the options in force; :meth:`Profile.rules` turns the table into
one action code per tag (``D``, ``Z``, ``X``, ``K``, ``C``, ``U`` or a combined code such
as ``X/Z/D``, resolved later by the attribute's type in the instance at hand).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from tessera.dicom._profile_table import OPTION_COLUMNS, ROWS
from tessera.errors import UnsupportedError, UsageError

__all__ = [
    "BASIC_PROFILE_CODE",
    "SAFE_PRIVATE",
    "TABLE",
    "Option",
    "Profile",
    "Row",
    "parse_option",
]

BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")


class Option(enum.Enum):
    """Profile options, valued by their CID 7050 code (DCM coding scheme)."""

    CLEAN_STRUCTURED_CONTENT = "113104"
    CLEAN_GRAPHICS = "113103"
    CLEAN_DESCRIPTORS = "113105"
    RETAIN_FULL_DATES = "113106"
    RETAIN_MODIFIED_DATES = "113107"
    RETAIN_PATIENT_CHARACTERISTICS = "113108"
    RETAIN_DEVICE_IDENTITY = "113109"
    RETAIN_UIDS = "113110"
    RETAIN_SAFE_PRIVATE = "113111"
    RETAIN_INSTITUTION_IDENTITY = "113112"

    @property
    def meaning(self) -> str:
        """The CID 7050 code meaning."""
        return _MEANINGS[self]

    @property
    def slug(self) -> str:
        """The command-line spelling, e.g. ``clean-descriptors``."""
        return self.name.lower().replace("_", "-")


_MEANINGS = {
    Option.CLEAN_STRUCTURED_CONTENT: "Clean Structured Content Option",
    Option.CLEAN_GRAPHICS: "Clean Graphics Option",
    Option.CLEAN_DESCRIPTORS: "Clean Descriptors Option",
    Option.RETAIN_FULL_DATES: "Retain Longitudinal Temporal Information Full Dates Option",
    Option.RETAIN_MODIFIED_DATES: (
        "Retain Longitudinal Temporal Information Modified Dates Option"
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: "Retain Patient Characteristics Option",
    Option.RETAIN_DEVICE_IDENTITY: "Retain Device Identity Option",
    Option.RETAIN_UIDS: "Retain UIDs Option",
    Option.RETAIN_SAFE_PRIVATE: "Retain Safe Private Option",
    Option.RETAIN_INSTITUTION_IDENTITY: "Retain Institution Identity Option",
}
_COLUMN_OPTION = {
    "cleanDescOpt": Option.CLEAN_DESCRIPTORS,
    "cleanStructContOpt": Option.CLEAN_STRUCTURED_CONTENT,
    "cleanGraphOpt": Option.CLEAN_GRAPHICS,
    "rtnLongFullDatesOpt": Option.RETAIN_FULL_DATES,
    "rtnLongModifDatesOpt": Option.RETAIN_MODIFIED_DATES,
    "rtnPatCharsOpt": Option.RETAIN_PATIENT_CHARACTERISTICS,
    "rtnDevIdOpt": Option.RETAIN_DEVICE_IDENTITY,
    "rtnUIDsOpt": Option.RETAIN_UIDS,
    "rtnSafePrivOpt": Option.RETAIN_SAFE_PRIVATE,
    "rtnInstIdOpt": Option.RETAIN_INSTITUTION_IDENTITY,
}
_DATE_OPTIONS = frozenset({Option.RETAIN_FULL_DATES, Option.RETAIN_MODIFIED_DATES})
_UNSUPPORTED = {
    "113101": "Clean Pixel Data Option",
    "113102": "Clean Recognizable Visual Features Option",
}


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1."""

    key: str  # 8 hex digits, "x" for repeating-group digits, or "odd" (private groups)
    action: str  # basic profile action code
    options: Mapping[Option, str]
    name: str
    in_standard_iods: bool

    @property
    def tag(self) -> int | None:
        """The tag as an int, or None for the repeating/private rows."""
        return None if "x" in self.key or self.key == "odd" else int(self.key, 16)

    def action_under(self, options: frozenset[Option]) -> str:
        """The action code for this row with ``options`` in force.

        Date options decide the rows they name; otherwise K (retain) wins over C (clean),
        which wins over the basic action.
        """
        dated = [o for o in _DATE_OPTIONS if o in options and o in self.options]
        if dated:
            return self.options[dated[0]]
        chosen = {self.options[o] for o in options if o in self.options}
        for code in ("K", "C"):
            if code in chosen:
                return code
        return self.action


def _load() -> tuple[Row, ...]:
    rows = []
    for key, action, opts, name, std in ROWS:
        options = {
            _COLUMN_OPTION[col]: code
            for col, code in zip(OPTION_COLUMNS, opts, strict=True)
            if code != "."
        }
        rows.append(Row(key, action, options, name, std))
    return tuple(rows)


TABLE: tuple[Row, ...] = _load()

# A subset of PS3.15 Table E.3.10-1 (safe private attributes): (creator, group, element
# low byte).  Extend per deployment through Profile(safe_private=...).
SAFE_PRIVATE: frozenset[tuple[str, int, int]] = frozenset(
    {
        ("SIEMENS MR HEADER", 0x0019, 0x0B),  # slice measurement duration
        ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B value
        ("SIEMENS MR HEADER", 0x0019, 0x0D),  # diffusion directionality
        ("SIEMENS MR HEADER", 0x0019, 0x0E),  # diffusion gradient direction
        ("SIEMENS MR HEADER", 0x0019, 0x27),  # B matrix
        ("GEMS_PARM_01", 0x0043, 0x27),  # scan pitch ratio
        ("GEMS_PARM_01", 0x0043, 0x39),  # slop_int_6..9 (b value)
        ("GEMS_ACQU_01", 0x0019, 0x9E),  # internal pulse sequence name
        ("Philips MR Imaging DD 001", 0x2001, 0x03),  # diffusion b-factor
        ("Philips MR Imaging DD 001", 0x2001, 0x04),  # diffusion direction
    }
)


@dataclass(frozen=True)
class Profile:
    """The basic profile plus ``options``; ``safe_private`` lists retainable private tags."""

    options: frozenset[Option] = frozenset()
    safe_private: frozenset[tuple[str, int, int]] = SAFE_PRIVATE

    def __post_init__(self) -> None:
        if self.options >= _DATE_OPTIONS:
            raise UsageError("choose one of the full-dates and modified-dates options, not both")

    @classmethod
    def from_codes(cls, codes: Iterable[str]) -> Profile:
        """A profile from option codes or slugs (``113105`` or ``clean-descriptors``)."""
        return cls(frozenset(parse_option(c) for c in codes))

    @cached_property
    def rules(self) -> dict[int, str]:
        """Action code per concrete tag under this profile's options."""
        return {row.tag: row.action_under(self.options) for row in TABLE if row.tag is not None}

    @cached_property
    def pattern_rules(self) -> dict[str, str]:
        """Action codes of the repeating-group rows and the private row, by key."""
        return {row.key: row.action_under(self.options) for row in TABLE if row.tag is None}

    def ordered_options(self) -> list[Option]:
        """The options in code order (for the method code sequence)."""
        return sorted(self.options, key=lambda o: o.value)


def parse_option(text: str) -> Option:
    """An option from its CID 7050 code or slug; a usage error names the valid ones."""
    wanted = text.strip().lower()
    for option in Option:
        if wanted in (option.value, option.slug, option.name.lower()):
            return option
    if wanted in _UNSUPPORTED:
        raise UnsupportedError(f"{_UNSUPPORTED[wanted]} ({wanted}) is not supported")
    valid = ", ".join(f"{o.value} ({o.slug})" for o in Option)
    raise UsageError(f"unknown profile option {text!r}; valid: {valid}")
