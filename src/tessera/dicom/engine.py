"""Apply a :class:`~tessera.dicom.profile.Profile` to a pydicom dataset, in place.

The walk visits every element at every sequence depth: listed attributes get their
table action, private elements are removed unless safe-listed, overlay and curve groups
follow their rows, unknown public elements of VR UN are removed (they cannot be
inspected), and sequences that are kept are cleaned item by item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydicom._dicom_dict import DicomDictionary
from pydicom._uid_dict import UID_dictionary
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from tessera.dicom._values import (
    FREE_TEXT_VRS,
    MAX_LENGTH,
    TEXT_VRS,
    dummy,
    scrubber,
    shift_date,
    shift_datetime,
)
from tessera.dicom.profile import BASIC_PROFILE_CODE, Option, Profile
from tessera.dicom.pseudonym import Pseudonymizer
from tessera.errors import DeidentificationError

__all__ = ["MAX_DEPTH", "Action", "Report", "deidentify"]

MAX_DEPTH = 64  # real objects nest far less; deeper is hostile (and costly to rewrite)

_SQ_TAGS = frozenset(t for t, entry in DicomDictionary.items() if entry[0] == "SQ")
_DICT_VR = {t: entry[0] for t, entry in DicomDictionary.items()}
_DICT_VM = {t: entry[1] for t, entry in DicomDictionary.items()}
# Required by the profile's text (E.1.1: digital signatures and MACs go), not by a row.
_EXTRA_RULES = {0x4FFE0001: "X", 0x04000500: "X"}
# Combined codes resolved by attribute type: D where the attribute is Type 1 in some IOD
# (a dummy keeps the instance valid), U* (keep, replace the UIDs inside) for references;
# otherwise Z where allowed (an empty value conforms for Type 2 and 3), else X.
_TYPE_CHOICE = {
    0x00080023: "D",  # Content Date (Type 1 in SR documents and enhanced images)
    0x00080033: "D",  # Content Time
    0x0008002A: "D",  # Acquisition DateTime (Type 1 in waveforms, enhanced images)
    0x300A0006: "D",  # RT Plan Date
    0x300A0007: "D",  # RT Plan Time
    0x00081140: "U",  # Referenced Image Sequence
    0x00082112: "U",  # Source Image Sequence
}
_ENHANCED_TYPE1 = {0x00181000: "D"}  # Device Serial Number (Enhanced General Equipment)
_FIXED_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "AT": 4, "SV": 8, "UV": 8}
_SWEPT_VRS = frozenset({"AE", "LO", "SH", "UR", "DA", "DT"})
_PATIENT_NAME, _PATIENT_ID, _ISSUER = 0x00100010, 0x00100020, 0x00100021
_SHARED_FG = 0x52009229
_IDENTIFYING_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC", "DA"})


@dataclass(frozen=True)
class Action:
    """One change: where (``path``), which attribute, and the action code applied."""

    path: str
    keyword: str
    action: str

    def as_json(self) -> dict[str, str]:
        """A JSON-ready mapping."""
        return {"path": self.path, "keyword": self.keyword, "action": self.action}


@dataclass
class Report:
    """What :func:`deidentify` did to one dataset."""

    actions: list[Action] = field(default_factory=list)
    pseudonym: str | None = None
    identity: dict[str, str] | None = None
    date_shift_days: int | None = None
    risks: list[str] = field(default_factory=list)


def _tag_text(tag: int) -> str:
    return f"{tag >> 16:04X},{tag & 0xFFFF:04X}"


def _keyword(tag: int) -> str:
    entry = DicomDictionary.get(tag)
    return entry[4] if entry else ("Private" if (tag >> 16) & 1 else "Unknown")


class _Walk:
    def __init__(self, ds: Dataset, profile: Profile, pseudo: Pseudonymizer) -> None:
        self.profile = profile
        self.pseudo = pseudo
        self.rules = {**profile.rules, **_EXTRA_RULES}
        self.patterns = profile.pattern_rules
        self.options = profile.options
        self.enhanced = _SHARED_FG in ds
        self.report = Report()
        self.shift = 0
        self._top = ds
        self._scrub: re.Pattern[str] | bool | None = False
        self._tokens: list[str] = []
        self._anywhere: re.Pattern[str] | None = None

    # helpers ---------------------------------------------------------------------------
    def note(self, path: str, tag: int, code: str) -> None:
        self.report.actions.append(Action(path + _tag_text(tag), _keyword(tag), code))

    def scrub_pattern(self) -> re.Pattern[str] | None:
        if self._scrub is False:
            self._tokens = [t.lower() for t in _identifying_tokens(self._top, self.pseudo)]
            self._scrub = scrubber(self._tokens)
        return self._scrub if isinstance(self._scrub, re.Pattern) else None

    def contains_token(self, text: str) -> bool:
        """Whether any identifying value occurs anywhere in ``text`` (even inside words)."""
        if self._anywhere is None:
            self.scrub_pattern()
            words = sorted({t for t in self._tokens if len(t) >= 3}, key=len, reverse=True)
            body = "|".join(re.escape(w) for w in words) or r"(?!x)x"
            self._anywhere = re.compile(body, re.IGNORECASE)
        return self._anywhere.search(text) is not None

    def scrub(self, text: str) -> str:
        pattern = self.scrub_pattern()
        return text if pattern is None else pattern.sub("*", text)

    def map_uids(self, value: Any) -> Any:
        if value is None or value == "":
            return value
        values = list(value) if isinstance(value, list | tuple) else [value]
        mapped = [v if _standard_or_empty(str(v)) else self.pseudo.uid(str(v)) for v in values]
        return mapped if len(mapped) > 1 else mapped[0]

    # the walk --------------------------------------------------------------------------
    def dataset(self, ds: Dataset, path: str, mode: str) -> None:
        kept_private: set[tuple[int, int]] = set()
        creators: list[int] = []
        for tag in list(ds.keys()):
            group, elem = tag >> 16, tag & 0xFFFF
            if group & 1:
                if 0x0010 <= elem <= 0x00FF:
                    creators.append(tag)
                elif self.private(ds, tag, path, mode):
                    kept_private.add((group, elem >> 8))
                continue
            if elem == 0 or group == 0x0002:
                del ds[tag]
                self.note(path, tag, "X")
                continue
            code = self.rules.get(tag)
            if code is None:
                if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
                    self.repeating(ds, tag, path)
                    continue
                self.unlisted(ds, tag, path, mode)
                continue
            self.apply(ds, tag, code, path)
        for creator in creators:
            if ((creator >> 16), creator & 0xFF) not in kept_private:
                del ds[creator]
                self.note(path, creator, "X")

    def private(self, ds: Dataset, tag: int, path: str, mode: str) -> bool:
        """Keep a safe private element under the option, else remove it."""
        if self.patterns.get("odd") == "C":
            group, elem = tag >> 16, tag & 0xFFFF
            creator = ds.get((group << 16) | (elem >> 8))
            name = str(creator.value).strip() if creator is not None else ""
            if (name, group, elem & 0xFF) in self.profile.safe_private:
                self.note(path, tag, "C")
                return True
        del ds[tag]
        self.note(path, tag, "X")
        return False

    def repeating(self, ds: Dataset, tag: int, path: str) -> None:
        """Overlay (60xx) and curve (50xx) groups follow their data rows as a whole."""
        group, elem = tag >> 16, tag & 0xFFFF
        overlay = group >= 0x6000
        data_rule = self.patterns.get("60xx3000" if overlay else "50xxxxxx", "X")
        if data_rule != "C":
            del ds[tag]
            self.note(path, tag, "X")
            return
        if overlay and elem in (0x4000, 0x1500):  # comments, label: free text
            element = ds[tag]
            element.value = self.scrub(str(element.value or ""))
            self.note(path, tag, "C")
        elif (overlay and elem == 0x3000) or not overlay:
            risk = "overlay or curve graphics retained under Clean Graphics"
            if risk not in self.report.risks:
                self.report.risks.append(risk)

    def unlisted(self, ds: Dataset, tag: int, path: str, mode: str) -> None:
        """Attributes the table does not list: kept, walked into, or made safe.

        Beyond the table: unknown public tags cannot be classified and are removed; person
        names are replaced; free text is scrubbed of the patient's identifiers (replaced
        inside sequences the profile replaces, D).
        """
        known = _DICT_VR.get(tag)
        if known is None:
            del ds[tag]
            self.note(path, tag, "X")
            return
        raw = ds.get_item(tag)
        vr = raw.VR if raw is not None and raw.VR not in (None, "UN") else known
        value = raw.value if raw is not None else None
        if _malformed(raw, vr, value):
            del ds[tag]  # a broken header or over-long value may smuggle other bytes
            self.note(path, tag, "X")
            return
        if vr in _SWEPT_VRS and value and self.contains_token(_text(value)):
            ds[tag].value = dummy(vr)  # an identifier where the table expects none
            self.note(path, tag, "D")
            return
        if vr == "SQ" or tag in _SQ_TAGS:
            self.sequence(ds[tag].value, path + _tag_text(tag), mode)
        elif vr in FREE_TEXT_VRS:
            element = ds[tag]
            value = element.value
            if value in (None, ""):
                return
            if mode == "D" or vr == "PN":
                element.value = dummy(vr)
                self.note(path, tag, "D")
                return
            cleaned = self.scrub(str(value)) if not isinstance(value, list) else value
            if cleaned != value:
                element.value = cleaned
                self.note(path, tag, "C")

    def sequence(self, items: Any, path: str, mode: str) -> None:
        if not isinstance(items, Sequence):
            return
        if path.count("[") >= MAX_DEPTH:
            raise DeidentificationError(f"sequences nested deeper than {MAX_DEPTH} levels")
        for i, item in enumerate(items):
            self.dataset(item, f"{path}[{i}].", mode)

    def apply(self, ds: Dataset, tag: int, code: str, path: str) -> None:
        if "/" in code:
            code = self.resolve(tag, code)
        element = ds[tag]
        vr = element.VR
        if code == "X":
            del ds[tag]
        elif vr == "SQ":
            if code == "Z":
                element.value = []
            else:  # D: dummy free text inside; C: clean inside; K, U: keep structure
                inner = code if code in ("D", "C") else "K"
                self.sequence(element.value, path + _tag_text(tag), inner)
        elif tag in (_PATIENT_ID, _PATIENT_NAME) and code in ("Z", "D"):
            element.value = self.patient_pseudonym(ds)
        elif code == "Z":
            element.value = "" if vr in TEXT_VRS or vr in ("DA", "DT", "TM", "DS", "IS") else None
        elif code == "D":
            element.value = self.map_uids(element.value) if vr == "UI" else dummy(vr)
        elif code == "U":
            if vr == "UI":
                element.value = self.map_uids(element.value)
        elif code == "C":
            self.clean(element, vr)
        self.note(path, tag, code)

    def resolve(self, tag: int, code: str) -> str:
        """A combined code: D or U* where the attribute is known to need it; else Z
        (an empty value conforms wherever the attribute is Type 2 or 3); else X."""
        choices = [c.rstrip("*") for c in code.split("/")]
        choice = _TYPE_CHOICE.get(tag) or (_ENHANCED_TYPE1.get(tag) if self.enhanced else None)
        if choice is not None and choice in choices:
            return choice
        return "Z" if "Z" in choices else "X"

    def clean(self, element: Any, vr: str) -> None:
        value = element.value
        if value in (None, ""):
            return
        if vr == "DA":
            if Option.RETAIN_MODIFIED_DATES in self.options:
                element.value = shift_date(str(value), self.shift) if self.shift else value
            return
        if vr == "DT":
            if Option.RETAIN_MODIFIED_DATES in self.options:
                element.value = shift_datetime(str(value), self.shift) if self.shift else value
            return
        if vr == "AE":  # titles run words together (STMARYS_CT1): replace if any match
            element.value = dummy("AE") if self.contains_token(str(value)) else value
            return
        if vr in TEXT_VRS and vr != "CS":
            if isinstance(value, list | tuple):
                element.value = [self.scrub(str(v)) for v in value]
            else:
                element.value = self.scrub(str(value))

    def patient_pseudonym(self, ds: Dataset) -> str:
        if ds is self._top and self.report.pseudonym is not None:
            return self.report.pseudonym
        pid = str(ds.get(_PATIENT_ID).value or "") if _PATIENT_ID in ds else ""
        issuer = str(ds.get(_ISSUER).value or "") if _ISSUER in ds else ""
        return self.pseudo.patient(pid, issuer)


_TOKEN_KEYWORDS = (
    "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientAddress",
    "PatientTelephoneNumbers", "PatientBirthDate", "MedicalRecordLocator",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "RegionOfResidence", "PatientInsurancePlanCodeSequence",
)  # fmt: skip
# Values whose occurrence in free text identifies: every person name the table lists and
# the patient's, institution's and device's identifiers.
_IDENTIFYING_TAGS = tuple(
    sorted(
        {t for t, c in Profile().rules.items() if c not in "KCU" and _DICT_VR.get(t) == "PN"}
        | {t for t, e in DicomDictionary.items() if e[4] in _TOKEN_KEYWORDS}
    )
)


def _identifying_tokens(ds: Dataset, pseudo: Pseudonymizer) -> list[str]:
    """Values of the top level's identifying attributes, for scrubbing free text."""
    tokens: list[str] = []
    for tag in _IDENTIFYING_TAGS:
        if tag not in ds:
            continue
        element = ds[tag]
        if element.VR not in _IDENTIFYING_VRS or element.value in (None, ""):
            continue
        values = element.value if isinstance(element.value, list) else [element.value]
        for value in values:
            text = str(value)
            if pseudo.is_our_patient(text) or text == "ANONYMIZED":
                continue
            tokens.append(text)
            if element.VR == "PN":
                tokens.extend(p for p in re.split(r"[\^=\s]+", text) if len(p) >= 3)
            if element.VR == "DA" and len(text) == 8:
                y, m, d = text[:4], text[4:6], text[6:]
                tokens += [f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y}"]
    return tokens


def _standard_or_empty(uid: str) -> bool:
    """A well-known UID (SOP class, transfer syntax...) or a placeholder such as "0"."""
    return uid in UID_dictionary or not any(c in "123456789" for c in uid)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return "\\".join(map(str, value)) if isinstance(value, list | MultiValue) else str(value)


def _malformed(raw: Any, vr: str, value: Any) -> bool:
    """A VR that did not parse, a length that does not fit the VR, an over-long value."""
    if raw is None:
        return False
    size = _FIXED_SIZE.get(vr)
    vm = _DICT_VM.get(raw.tag, "")
    if isinstance(raw, RawDataElement):
        if raw.VR is None and not raw.is_implicit_VR:
            return True
        if size is not None and (
            raw.length % size or (vm.isdigit() and raw.length > int(vm) * size)
        ):
            return True
    elif size is not None and vm.isdigit() and int(vm) < raw.VM:
        return True
    return vr in MAX_LENGTH and not _fits(value, vr)


def _fits(value: Any, vr: str) -> bool:
    """Whether each component of a string value fits the VR's maximum length."""
    if value is None:
        return True
    limit = MAX_LENGTH[vr]
    if isinstance(value, bytes):
        return all(len(part.strip()) <= limit for part in value.split(b"\\"))
    values = value if isinstance(value, list | MultiValue) else [value]
    return all(len(str(v).strip()) <= limit for v in values)


def _identity(ds: Dataset) -> dict[str, str]:
    out = {}
    for keyword in ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate"):
        value = ds.get(keyword)
        if value not in (None, ""):
            out[keyword] = str(value)
    return out


def deidentify(ds: Dataset, profile: Profile, pseudo: Pseudonymizer) -> Report:
    """Apply ``profile`` to ``ds`` in place (meta excluded) and report every action."""
    walk = _Walk(ds, profile, pseudo)
    report = walk.report
    already = str(ds.get("PatientIdentityRemoved", "")).upper() == "YES"
    pid = str(ds.get("PatientID", "") or "")
    issuer = str(ds.get("IssuerOfPatientID", "") or "")
    if not pid:  # no ID: key the patient on name and birth date instead
        pid = f"{ds.get('PatientName', '')}\x00{ds.get('PatientBirthDate', '')}"
    report.pseudonym = pseudo.patient(pid, issuer)
    if not pseudo.is_our_patient(pid):
        report.identity = _identity(ds)
    shifted = str(ds.get("LongitudinalTemporalInformationModified", "")).upper() == "MODIFIED"
    if Option.RETAIN_MODIFIED_DATES in profile.options:
        report.date_shift_days = (
            0 if (already and shifted) else pseudo.date_offset(report.pseudonym)
        )
        walk.shift = report.date_shift_days
    walk.scrub_pattern()  # collect identifying values before the walk changes them
    walk.dataset(ds, "", "K")
    ds.PatientID = report.pseudonym
    ds.PatientName = report.pseudonym
    _mark(ds, profile, shifted and already)
    return report


def _mark(ds: Dataset, profile: Profile, was_modified: bool) -> None:
    """PatientIdentityRemoved, the method code sequence, and the temporal flag."""
    ds.PatientIdentityRemoved = "YES"
    codes = [BASIC_PROFILE_CODE] + [(o.value, o.meaning) for o in profile.ordered_options()]
    ds.DeidentificationMethod = "Tessera PS3.15 E.1-1" + "".join(
        f"; {o.slug}" for o in profile.ordered_options()
    )
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    if Option.RETAIN_FULL_DATES in profile.options:
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if was_modified else "UNMODIFIED"
    elif Option.RETAIN_MODIFIED_DATES in profile.options:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"
