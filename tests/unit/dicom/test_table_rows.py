"""Every row of Table E.1-1, at top level and two sequence levels deep, under the basic
profile and each option: the value that comes out matches the row's action code."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tessera.dicom import Option, Profile, Pseudonymizer, deidentify
from tessera.dicom._profile_table import OPTION_COLUMNS, ROWS
from tessera.dicom._values import shift_date, shift_datetime

from .conftest import KEY

COLUMN = {
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
PROFILES: list[frozenset[Option]] = [frozenset()] + [frozenset({o}) for o in Option]
# group 0002 lives in the file meta only; tests/unit/dicom/test_files.py covers that row
CONCRETE = [r for r in ROWS if re.fullmatch(r"[0-9a-f]{8}", r[0]) and r[0][:4] != "0002"]
PROFILE_OF = {options: Profile(options) for options in PROFILES}
OUTER, INNER = 0x00089215, 0x00400260  # unlisted sequences: kept and walked
SECRET_PN = "Doe^Secret"
DATE_COLUMNS = ("rtnLongFullDatesOpt", "rtnLongModifDatesOpt")


def expected_code(row: tuple[str, str, str, str, bool], options: frozenset[Option]) -> str:
    """The action the table asks for; written apart from the engine's own resolution."""
    by_option = {COLUMN[c]: a for c, a in zip(OPTION_COLUMNS, row[2], strict=True) if a != "."}
    for column in DATE_COLUMNS:
        if COLUMN[column] in options and COLUMN[column] in by_option:
            return by_option[COLUMN[column]]
    chosen = {a for o, a in by_option.items() if o in options}
    return "K" if "K" in chosen else "C" if "C" in chosen else row[1]


def sample(tag: int, vr: str) -> Any:
    """A value of ``vr`` that contains the patient's surname where text is allowed."""
    return {
        "AE": "DOE1",
        "AS": "042Y",
        "CS": "DOE",
        "DA": "20200315",
        "DT": "20200315123000+0100",
        "TM": "123000",
        "DS": "1.5",
        "IS": "7",
        "US": 7,
        "OB": b"\x01\x02",
        "UN": b"\x01\x02",
        "UI": f"1.2.3.4.{tag}",
        "UR": "http://doe.example/x",
        "PN": "Doe^Other",
        "SH": "Doe x1",
    }.get(vr, f"Doe text {tag:08X}")


def sequence_value() -> Sequence:
    inner = Dataset()
    inner.CodeValue = "C1"
    inner.PersonName = SECRET_PN
    return Sequence([inner])


def build(tag: int, depth: int) -> tuple[Dataset, Dataset]:
    """A dataset holding the element at ``depth``; returns (top, container)."""
    vr = dictionary_VR(tag)
    top = Dataset()
    top.PatientName = "Doe^Jane"
    container = Dataset()
    value = sequence_value() if vr == "SQ" else sample(tag, vr)
    container.add_new(tag, vr, value)
    if depth == 0:
        if tag == 0x00100010:
            return container, container
        container.PatientName = top.PatientName
        return container, container
    middle = Dataset()
    middle.add_new(INNER, "SQ", Sequence([container]))
    top.add_new(OUTER, "SQ", Sequence([middle]))
    return top, container


def allowed(code: str) -> set[str]:
    """The concrete actions a (possibly combined) code permits."""
    return {c.rstrip("*") for c in code.split("/")}


def outcome(
    container: Dataset, tag: int, vr: str, original: Any, pseudo: Pseudonymizer, shift: int
) -> set[str]:
    """Which action codes the element's final state is consistent with."""
    if tag not in container:
        return {"X"}
    value = container[tag].value
    seen: set[str] = set()
    if vr == "SQ":
        if len(value) == 0:
            return {"Z"}
        if value[0].get("PersonName") != SECRET_PN and value[0].get("CodeValue") == "C1":
            seen |= {"K", "C", "D", "U"}
        return seen
    if tag in (0x00100010, 0x00100020):
        return {"Z", "D"} if pseudo.is_our_patient(str(value)) else set()
    if value in ("", None, b""):
        seen.add("Z")
    if value == original:
        seen.add("K")
    if vr == "UI" and value == pseudo.uid(original):
        seen |= {"U", "D"}
    if value not in ("", None, b"") and value != original and vr != "UI":
        seen.add("D")
    if vr == "DA" and value == shift_date(original, shift):
        seen.add("C")
    if vr == "DT" and value == shift_datetime(original, shift):
        seen.add("C")
    if vr in ("LO", "LT", "ST", "UT", "UC", "PN", "SH", "AE") and "doe" not in str(value).lower():
        seen.add("C")
    if vr not in ("DA", "DT", "LO", "LT", "ST", "UT", "UC", "PN", "SH", "AE") and value == original:
        seen.add("C")  # clean keeps values that cannot carry free text (TM, CS, numbers)
    return seen


@pytest.mark.parametrize("row", CONCRETE, ids=[r[0] for r in CONCRETE])
def test_row_at_top_level_and_two_levels_deep(row: tuple[str, str, str, str, bool]) -> None:
    tag = int(row[0], 16)
    vr = dictionary_VR(tag)
    pseudo = Pseudonymizer(KEY)
    failures = []
    for options in PROFILES:
        code = expected_code(row, options)
        for depth in (0, 2):
            top, container = build(tag, depth)
            original = container[tag].value
            report = deidentify(top, PROFILE_OF[options], pseudo)
            shift = report.date_shift_days or 0
            if depth and OUTER not in top:
                failures.append(f"{sorted(o.value for o in options)} depth {depth}: outer gone")
                continue
            got = outcome(container, tag, vr, original, pseudo, shift)
            if not got & allowed(code):
                state = container[tag].value if tag in container else "<removed>"
                failures.append(
                    f"{sorted(o.value for o in options)} depth {depth}: want {code}, "
                    f"got {state!r} (consistent with {sorted(got)})"
                )
            where = f"{row[0][:4]},{row[0][4:]}".upper()
            actions = {a.action for a in report.actions if a.path.endswith(where)}
            if code != "K" and not actions & allowed(code):
                failures.append(f"{sorted(o.value for o in options)} depth {depth}: {actions}")
    assert not failures, "\n".join(failures)


def test_every_row_is_covered() -> None:
    assert len(ROWS) == 621
    assert len(CONCRETE) == 616
    assert {r[0] for r in ROWS} - {r[0] for r in CONCRETE} == {
        "00020003",
        "50xxxxxx",
        "60xx3000",
        "60xx4000",
        "odd",
    }
