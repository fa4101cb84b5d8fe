"""Direct identifiers: HIPAA Safe Harbor categories found by column names and by values.

45 CFR 164.514(b)(2) lists 18 kinds of identifiers.  A column is flagged when its
*name* matches a category's pattern, or when enough of its *values* (a sample of up to
2,000 non-missing values) match a category's value pattern (e-mail, telephone, SSN, IP,
URL, ZIP code, full date, MRN-like codes).  An age column (by name) holding ages over
89 is flagged under (C): Safe Harbor allows them only pooled as "90 or older".  A text
column whose values are almost all distinct is flagged as "other unique identifying
number" (category R).  The detector is a screening aid: it reports evidence, it does
not prove absence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

__all__ = ["CATEGORIES", "IdentifierFinding", "find_identifiers"]

# Safe Harbor letters (A)..(R) -> short names.
CATEGORIES: dict[str, str] = {
    "A": "names",
    "B": "geographic subdivisions smaller than a state",
    "C": "dates (except year) directly related to an individual, and ages over 89",
    "D": "telephone numbers",
    "E": "fax numbers",
    "F": "e-mail addresses",
    "G": "social security numbers",
    "H": "medical record numbers",
    "I": "health plan beneficiary numbers",
    "J": "account numbers",
    "K": "certificate/license numbers",
    "L": "vehicle identifiers and serial numbers",
    "M": "device identifiers and serial numbers",
    "N": "web URLs",
    "O": "IP addresses",
    "P": "biometric identifiers",
    "Q": "full-face photographs",
    "R": "any other unique identifying number or code",
}

_SEP = r"(?:^|[_\W])"
_END = r"(?:$|[_\W])"


def _words(*words: str) -> re.Pattern[str]:
    alt = "|".join(words)
    return re.compile(rf"{_SEP}(?:{alt}){_END}", re.IGNORECASE)


_NAME_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "A",
        _words(
            "name",
            "names",
            "first_?name",
            "last_?name",
            "surname",
            "given_?name",
            "family_?name",
            "full_?name",
            "patient_?name",
            "forename",
            "maiden_?name",
        ),
    ),
    (
        "B",
        _words(
            "address",
            "street",
            "addr",
            "city",
            "town",
            "county",
            "zip",
            "zipcode",
            "zip_?code",
            "postcode",
            "post_?code",
            "postal_?code",
            "postal",
            "latitude",
            "longitude",
            "lat",
            "lon",
            "lng",
        ),
    ),
    (
        "C",
        _words(
            "dob",
            "birth_?date",
            "date_?of_?birth",
            "birthday",
            "admission_?date",
            "discharge_?date",
            "death_?date",
            "date_?of_?death",
            "dod",
            "admit_?date",
            "visit_?date",
        ),
    ),
    ("D", _words("phone", "telephone", "tel", "mobile", "phone_?number")),
    ("E", _words("fax", "fax_?number")),
    ("F", _words("email", "e_?mail")),
    (
        "G",
        _words(
            "ssn",
            "social_?security",
            "social_?security_?number",
            "nhs_?number",
            "national_?id",
            "insee",
            "bsn",
            "personnummer",
        ),
    ),
    (
        "H",
        _words(
            "mrn",
            "medical_?record",
            "medical_?record_?number",
            "record_?number",
            "patient_?id",
            "patientid",
            "chart_?number",
            "hospital_?number",
        ),
    ),
    (
        "I",
        _words(
            "beneficiary",
            "health_?plan",
            "insurance_?id",
            "member_?id",
            "policy_?number",
            "insurance_?number",
            "medicaid",
            "medicare",
        ),
    ),
    ("J", _words("account", "account_?number", "acct", "iban", "bank_?account")),
    ("K", _words("license", "licence", "certificate", "license_?number", "licence_?number")),
    ("L", _words("vin", "license_?plate", "licence_?plate", "vehicle")),
    ("M", _words("device_?id", "serial", "serial_?number", "udi", "imei", "mac_?address")),
    ("N", _words("url", "website", "homepage", "uri")),
    ("O", _words("ip", "ip_?address", "ipv4", "ipv6")),
    ("P", _words("fingerprint", "retina", "iris", "voiceprint", "biometric", "face_?print")),
    ("Q", _words("photo", "photograph", "picture", "portrait", "image_?face")),
    (
        "R",
        re.compile(
            r"^(id|uuid|guid|pid|pidnum|subject_?id|person_?id|participant_?id|"
            r"record_?id|patient_?key)$",
            re.IGNORECASE,
        ),
    ),
]

_VALUE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("F", re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$")),
    ("G", re.compile(r"^\d{3}-\d{2}-\d{4}$")),
    ("N", re.compile(r"^(https?|ftp)://\S+$", re.IGNORECASE)),
    (
        "O",
        re.compile(r"^(\d{1,3}\.){3}\d{1,3}$|^[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}$", re.IGNORECASE),
    ),
    ("D", re.compile(r"^(\+\d{1,3}[ .-]?)?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}$")),
    (
        "C",
        re.compile(
            r"^(\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}\.\d{1,2}\.\d{4})"
            r"([ T]\d{2}:\d{2}(:\d{2})?)?$"
        ),
    ),
    ("B", re.compile(r"^\d{5}(-\d{4})?$|^[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}$")),
    ("H", re.compile(r"^(MRN|PAT|P)[-_]?\d{4,}$", re.IGNORECASE)),
]

_AGE = _words("age", "ages", "age_?years", "age_?at_?\\w+", "patient_?age", "age_?yrs")
_OLDEST_AGE = 89  # Safe Harbor: ages over 89 are identifying unless pooled as 90+
_SAMPLE = 2000
_VALUE_SHARE = 0.8
_UNIQUE_SHARE = 0.95
_MIN_ROWS_FOR_UNIQUENESS = 20


@dataclass(frozen=True)
class IdentifierFinding:
    """One column that looks like a direct identifier, and why."""

    column: str
    category: str
    evidence: str
    share: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready finding."""
        return {
            "column": self.column,
            "category": self.category,
            "category_name": CATEGORIES[self.category],
            "evidence": self.evidence,
            "share": self.share,
        }


def _by_values(values: list[str]) -> tuple[str, float] | None:
    best: tuple[str, float] | None = None
    for cat, pattern in _VALUE_PATTERNS:
        share = sum(1 for v in values if pattern.match(v)) / len(values)
        if share >= _VALUE_SHARE and (best is None or share > best[1]):
            best = (cat, share)
    return best


def _ages_over_89(name: str, col: pl.Series) -> IdentifierFinding | None:
    """Safe Harbor (C) also covers ages over 89 (they must be pooled as "90 or older")."""
    if not _AGE.search(name):
        return None
    ages = col.cast(pl.Float64, strict=False).drop_nulls()
    if not ages.len():
        return None
    over = int((ages > _OLDEST_AGE).sum())
    if not over:
        return None
    return IdentifierFinding(name, "C", f"ages over {_OLDEST_AGE}", over / ages.len())


def find_identifiers(df: pl.DataFrame) -> list[IdentifierFinding]:
    """Columns of ``df`` that look like Safe Harbor direct identifiers."""
    findings: list[IdentifierFinding] = []
    for name in df.columns:
        col = df.get_column(name)
        aged = _ages_over_89(name, col)
        if aged is not None:
            findings.append(aged)
            continue
        by_name = next((cat for cat, pat in _NAME_PATTERNS if pat.search(name)), None)
        nonnull = col.drop_nulls()
        values: list[str] = []
        if nonnull.len():
            sample = nonnull.head(_SAMPLE)
            values = [str(v).strip() for v in sample.cast(pl.String).to_list()]
        by_value = _by_values(values) if values and not col.dtype.is_float() else None
        if by_value is not None and not (col.dtype.is_integer() and by_value[0] in "BD"):
            findings.append(IdentifierFinding(name, by_value[0], "values", by_value[1]))
            continue
        if by_name is not None:
            findings.append(IdentifierFinding(name, by_name, "name", 1.0))
            continue
        n = nonnull.len()
        if n >= _MIN_ROWS_FOR_UNIQUENESS and col.dtype == pl.String:
            share = nonnull.n_unique() / n
            if share >= _UNIQUE_SHARE:
                findings.append(IdentifierFinding(name, "R", "distinct values", share))
    return findings
