"""The pattern rows (private groups, overlays, curves), UN elements, marking, dates."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tessera.dicom import Option, Profile, Pseudonymizer, deidentify
from tessera.dicom._values import shift_date, shift_datetime

from .conftest import base_dataset, item, seq

SAFE = Profile(frozenset({Option.RETAIN_SAFE_PRIVATE}))
GRAPHICS = Profile(frozenset({Option.CLEAN_GRAPHICS}))


def with_private(ds: Dataset) -> Dataset:
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "DS", "1000")  # B value: on the safe list
    block.add_new(0x20, "LO", "Doe^Jane home address")  # not on it
    other = ds.private_block(0x0029, "ACME SECRET", create=True)
    other.add_new(0x01, "LO", "PID-4711")
    return ds


def nested(inner: Dataset) -> Dataset:
    """``inner`` two levels down inside unlisted sequences of a base dataset."""
    ds = base_dataset()
    ds.DerivationCodeSequence = seq(item(PerformedProtocolCodeSequence=seq(inner)))
    return ds


def innermost(ds: Dataset) -> Dataset:
    return ds.DerivationCodeSequence[0].PerformedProtocolCodeSequence[0]


@pytest.mark.parametrize("depth", [0, 2])
def test_private_elements_removed_by_the_basic_profile(pseudo: Pseudonymizer, depth: int) -> None:
    inner = with_private(Dataset() if depth else base_dataset())
    ds = nested(inner) if depth else inner
    report = deidentify(ds, Profile(), pseudo)
    target = innermost(ds) if depth else ds
    assert not [t for t in list(target.keys()) if t.group & 1]
    assert any(a.keyword == "Private" and a.action == "X" for a in report.actions)


@pytest.mark.parametrize("depth", [0, 2])
def test_safe_private_retained_under_the_option(pseudo: Pseudonymizer, depth: int) -> None:
    inner = with_private(Dataset() if depth else base_dataset())
    ds = nested(inner) if depth else inner
    deidentify(ds, SAFE, pseudo)
    target = innermost(ds) if depth else ds
    assert target[0x0019100C].value == "1000"
    assert target[0x00190010].value == "SIEMENS MR HEADER"
    assert 0x00191020 not in target
    assert 0x00291001 not in target and 0x00290010 not in target


def with_overlay(ds: Dataset) -> Dataset:
    ds.add_new(0x60000010, "US", 2)
    ds.add_new(0x60000011, "US", 2)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\x0f\x00")
    ds.add_new(0x60004000, "LT", "Doe overlay comment")
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50003000, "OW", b"\x01\x00")
    return ds


@pytest.mark.parametrize("depth", [0, 2])
def test_overlays_and_curves_removed_by_the_basic_profile(
    pseudo: Pseudonymizer, depth: int
) -> None:
    inner = with_overlay(Dataset() if depth else base_dataset())
    ds = nested(inner) if depth else inner
    deidentify(ds, Profile(), pseudo)
    target = innermost(ds) if depth else ds
    assert not [t for t in list(target.keys()) if 0x5000 <= t.group <= 0x60FF]


@pytest.mark.parametrize("depth", [0, 2])
def test_clean_graphics_keeps_overlays_and_flags_them(pseudo: Pseudonymizer, depth: int) -> None:
    inner = with_overlay(Dataset() if depth else base_dataset())
    ds = nested(inner) if depth else inner
    report = deidentify(ds, GRAPHICS, pseudo)
    target = innermost(ds) if depth else ds
    assert target[0x60003000].value == b"\x0f\x00"
    assert "doe" not in str(target[0x60004000].value).lower()
    assert 0x50003000 in target
    assert report.risks  # retained graphics are a burned-in-text risk to review


def test_unknown_public_un_element_is_removed(pseudo: Pseudonymizer) -> None:
    ds = base_dataset()
    ds.add_new(0x00231000 - 0x00010000, "UN", b"Doe^Jane")  # (0022,1000): unknown tag
    ds.add_new(0x0011FFFE - 0x00010000 + 0x00100000, "UN", b"x")
    deidentify(ds, Profile(), pseudo)
    assert 0x00221000 not in ds


def test_known_tag_stored_as_un_is_handled_by_its_row(pseudo: Pseudonymizer) -> None:
    ds = base_dataset()
    ds.add_new(0x00101040, "UN", b"1 Main Street ")  # Patient's Address as UN
    deidentify(ds, Profile(), pseudo)
    assert 0x00101040 not in ds


def test_icon_and_signatures_removed(pseudo: Pseudonymizer) -> None:
    ds = base_dataset()
    ds.IconImageSequence = seq(item(Rows=1, Columns=1, PixelData=b"\x00\x00"))
    ds.add_new(0xFFFAFFFA, "SQ", Sequence([item(DigitalSignatureUID="1.2.3")]))
    ds.add_new(0x4FFE0001, "SQ", Sequence([item(MACIDNumber=1)]))
    ds.add_new(0x04000500, "SQ", Sequence([]))
    deidentify(ds, Profile(), pseudo)
    for tag in (0x00880200, 0xFFFAFFFA, 0x4FFE0001, 0x04000500):
        assert tag not in ds


def test_marks_the_dataset(pseudo: Pseudonymizer) -> None:
    ds = base_dataset()
    profile = Profile(frozenset({Option.CLEAN_DESCRIPTORS, Option.RETAIN_MODIFIED_DATES}))
    deidentify(ds, profile, pseudo)
    assert ds.PatientIdentityRemoved == "YES"
    codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113105", "DCM"), ("113107", "DCM")]
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    ds2 = base_dataset()
    deidentify(ds2, Profile(), pseudo)
    assert ds2.LongitudinalTemporalInformationModified == "REMOVED"
    ds3 = base_dataset()
    deidentify(ds3, Profile(frozenset({Option.RETAIN_FULL_DATES})), pseudo)
    assert ds3.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_dates_shift_once_per_patient_and_keep_time_zones(pseudo: Pseudonymizer) -> None:
    profile = Profile(frozenset({Option.RETAIN_MODIFIED_DATES}))
    a, b = base_dataset(), base_dataset()
    for ds in (a, b):
        ds.StudyDate = "20240229"
        ds.AcquisitionDateTime = "20240229233000.5+0100"
        ds.TimezoneOffsetFromUTC = "+0100"
        ds.StudyTime = "233000"
    b.SOPInstanceUID = "1.2.3.999"
    ra, rb = deidentify(a, profile, pseudo), deidentify(b, profile, pseudo)
    assert ra.date_shift_days == rb.date_shift_days and ra.date_shift_days
    days = ra.date_shift_days
    assert a.StudyDate == b.StudyDate == shift_date("20240229", days)
    assert a.AcquisitionDateTime == shift_datetime("20240229233000.5+0100", days)
    assert a.AcquisitionDateTime.endswith("233000.5+0100")
    assert a.TimezoneOffsetFromUTC == "+0100"
    assert a.StudyTime == "233000"
    # a second run on the output does not shift again
    again = deidentify(a, profile, pseudo)
    assert again.date_shift_days == 0
    assert a.StudyDate == shift_date("20240229", days)


def test_shift_helpers() -> None:
    assert shift_date("20240301", 1) == "20240229"
    assert shift_date("20240301-20240302", 1) == "20240229-20240301"
    assert shift_date("garbage", 3) == ""
    assert shift_datetime("2024", 1) == "2023"
    assert shift_datetime("20240101000000-0500", 1) == "20231231000000-0500"


def test_references_follow_and_standard_uids_stay(pseudo: Pseudonymizer) -> None:
    first, second = base_dataset(), base_dataset()
    second.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.2001"
    second.ReferencedImageSequence = seq(
        item(ReferencedSOPClassUID=first.SOPClassUID, ReferencedSOPInstanceUID=first.SOPInstanceUID)
    )
    second.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.77"
    deidentify(first, Profile(), pseudo)
    deidentify(second, Profile(), pseudo)
    ref = second.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert first.StudyInstanceUID == second.StudyInstanceUID
    assert second.FrameOfReferenceUID == pseudo.uid("1.2.826.0.1.3680043.8.498.77")
    assert first.SOPInstanceUID.startswith("2.25.")


def test_retain_uids_keeps_them(pseudo: Pseudonymizer) -> None:
    ds = base_dataset()
    deidentify(ds, Profile(frozenset({Option.RETAIN_UIDS})), pseudo)
    assert ds.SOPInstanceUID == "1.2.826.0.1.3680043.8.498.1001"


def test_identity_recorded_once_and_pseudonym_set(pseudo: Pseudonymizer) -> None:
    ds = base_dataset()
    ds.PatientBirthDate = "19700101"
    report = deidentify(ds, Profile(), pseudo)
    assert report.identity == {
        "PatientID": "PID-4711",
        "PatientName": "Doe^Jane",
        "PatientBirthDate": "19700101",
    }
    assert ds.PatientID == ds.PatientName == report.pseudonym
    again = deidentify(ds, Profile(), pseudo)
    assert again.identity is None and again.pseudonym == report.pseudonym


def test_clean_descriptors_scrubs_identifiers(pseudo: Pseudonymizer) -> None:
    ds = base_dataset()
    ds.StudyDescription = "CT head for Jane DOE (PID-4711)"
    ds.SeriesDescription = "axial"
    deidentify(ds, Profile(frozenset({Option.CLEAN_DESCRIPTORS})), pseudo)
    assert ds.StudyDescription == "CT head for * * (*)"
    assert ds.SeriesDescription == "axial"


def test_structured_content_text_is_replaced_or_cleaned(pseudo: Pseudonymizer) -> None:
    def sr() -> Dataset:
        ds = base_dataset()
        ds.ContentSequence = seq(
            item(ValueType="TEXT", TextValue="Jane Doe, seen at home"),
            item(ValueType="PNAME", PersonName="Doe^Jane"),
        )
        return ds

    basic = sr()
    deidentify(basic, Profile(), pseudo)
    assert basic.ContentSequence[0].TextValue == "ANONYMIZED"
    assert basic.ContentSequence[1].PersonName == "ANONYMIZED"
    clean = sr()
    deidentify(clean, Profile(frozenset({Option.CLEAN_STRUCTURED_CONTENT})), pseudo)
    assert clean.ContentSequence[0].TextValue == "* *, seen at home"
