"""Keyed pseudonyms: deterministic per key, recognised on re-runs, in range."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tessera.dicom
from tessera.dicom import Pseudonymizer
from tessera.dicom.pseudonym import MAX_SHIFT_DAYS, MIN_SHIFT_DAYS

from .conftest import KEY

uids = st.from_regex(r"1\.2\.[1-9][0-9]{0,8}(\.[0-9]{1,6}){0,6}", fullmatch=True)


@settings(max_examples=60)
@given(uids)
def test_uid_mapping_is_stable_and_idempotent(uid: str) -> None:
    a, b = Pseudonymizer(KEY), Pseudonymizer(KEY)
    new = a.uid(uid)
    assert new == b.uid(uid)
    assert re.fullmatch(r"2\.25\.[1-9][0-9]*", new) and len(new) <= 64
    assert a.is_our_uid(new) and a.uid(new) == new
    assert not Pseudonymizer(b"x" * 32).is_our_uid(new)


@settings(max_examples=60)
@given(st.text(min_size=0, max_size=64), st.text(max_size=16))
def test_patient_pseudonyms(patient_id: str, issuer: str) -> None:
    pseudo = Pseudonymizer(KEY)
    p = pseudo.patient(patient_id, issuer)
    assert re.fullmatch(r"TS[0-9A-F]{20}", p)
    assert pseudo.patient(p) == p
    assert MIN_SHIFT_DAYS <= pseudo.date_offset(p) <= MAX_SHIFT_DAYS


def test_issuer_separates_patients_and_keys_differ() -> None:
    pseudo = Pseudonymizer(KEY)
    assert pseudo.patient("1", "A") != pseudo.patient("1", "B")
    assert pseudo.patient("1") != Pseudonymizer(b"y" * 32).patient("1")
    assert not pseudo.is_our_uid("2.25.12345")
    with pytest.raises(ValueError):
        Pseudonymizer(b"short")


def test_exported_members() -> None:
    assert len(set(tessera.dicom.__all__)) == len(tessera.dicom.__all__)
    for name in tessera.dicom.__all__:
        assert hasattr(tessera.dicom, name)
