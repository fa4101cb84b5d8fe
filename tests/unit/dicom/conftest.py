"""Fixtures for the DICOM tests: a key, a pseudonymizer, synthetic instances."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from io import BytesIO

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from tessera.dicom import Pseudonymizer

KEY = bytes(range(32))
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def pseudo() -> Pseudonymizer:
    return Pseudonymizer(KEY)


@pytest.fixture(autouse=True)
def _quiet_pydicom() -> Iterator[None]:
    # pydicom warns about quirks of its own odd test files; those are inputs, not bugs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def base_dataset(patient_id: str = "PID-4711", name: str = "Doe^Jane") -> Dataset:
    """A minimal CT-like instance with a file meta."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1001"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1002"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1003"
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.Modality = "CT"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def encode(ds: Dataset) -> bytes:
    """``ds`` as a DICOM file."""
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def item(**values: object) -> Dataset:
    """A sequence item with the given keyword values."""
    out = Dataset()
    for keyword, value in values.items():
        setattr(out, keyword, value)
    return out


def seq(*items: Dataset) -> Sequence:
    return Sequence(list(items))
