"""De-identify whole DICOM instances: parse, apply the profile, rebuild the file meta."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tessera.dicom.burnedin import burned_in_risks
from tessera.dicom.engine import Action, Report, deidentify
from tessera.dicom.profile import Option, Profile
from tessera.dicom.pseudonym import Pseudonymizer
from tessera.errors import DeidentificationError

__all__ = [
    "IMPLEMENTATION_UID",
    "Outcome",
    "deidentify_bytes",
    "deidentify_file",
    "deidentify_instance",
]

IMPLEMENTATION_UID = UID("2.25.61724089542069883458036516455766380381")
IMPLEMENTATION_VERSION = "TESSERA_0_1"
_DIRECTORY_CLASS = "1.2.840.10008.1.3.10"
_MEDIA_META_KEEP = (0x00020001, 0x00020002, 0x00020010)


@dataclass
class Outcome:
    """The result for one instance: status, reason, output name and bytes, report."""

    status: str  # "deidentified" | "quarantined" | "failed"
    reason: str | None = None
    name: str | None = None
    data: bytes | None = None
    report: Report | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields (without the output bytes)."""
        report = self.report
        return {
            "status": self.status,
            "reason": self.reason,
            "pseudonym": report.pseudonym if report else None,
            "date_shift_days": report.date_shift_days if report else None,
            "risks": list(report.risks) if report else [],
            "actions": [a.as_json() for a in report.actions] if report else [],
        }


def deidentify_file(
    path: Path, profile: Profile, pseudo: Pseudonymizer, *, keep_burned_in: bool = False
) -> Outcome:
    """De-identify the file at ``path``; never raises for bad input (status "failed")."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _read(path)
    except Exception as exc:  # hostile input may raise anything; report, never crash
        return Outcome("failed", f"not a readable DICOM file ({type(exc).__name__})")
    return deidentify_instance(ds, profile, pseudo, keep_burned_in=keep_burned_in)


def deidentify_bytes(
    data: bytes, profile: Profile, pseudo: Pseudonymizer, *, keep_burned_in: bool = False
) -> Outcome:
    """De-identify one encoded instance held in memory."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _read(BytesIO(data))
    except Exception as exc:
        return Outcome("failed", f"not a readable DICOM file ({type(exc).__name__})")
    return deidentify_instance(ds, profile, pseudo, keep_burned_in=keep_burned_in)


def _read(source: Any) -> Dataset:
    try:
        return dcmread(source)
    except Exception:
        if isinstance(source, BytesIO):
            source.seek(0)
        ds = dcmread(source, force=True)
        if "SOPClassUID" not in ds:
            raise
        return ds


def deidentify_instance(
    ds: Dataset, profile: Profile, pseudo: Pseudonymizer, *, keep_burned_in: bool = False
) -> Outcome:
    """De-identify a parsed instance (its ``file_meta`` included) and encode it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _deidentify(ds, profile, pseudo, keep_burned_in)
    except RecursionError:
        return Outcome("failed", "sequences nested too deeply")
    except DeidentificationError as exc:
        return Outcome("failed", str(exc))
    except Exception as exc:  # malformed values surface lazily while walking
        return Outcome("failed", f"cannot de-identify this file ({type(exc).__name__})")


def _deidentify(ds: Dataset, profile: Profile, pseudo: Pseudonymizer, keep: bool) -> Outcome:
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class == _DIRECTORY_CLASS or "DirectoryRecordSequence" in ds:
        return Outcome("failed", "DICOMDIR: rebuild it from the de-identified files instead")
    if not sop_class or not ds.get("SOPInstanceUID"):
        return Outcome("failed", "not a composite instance (no SOP Class/Instance UID)")
    risks = burned_in_risks(ds)
    if risks and not keep:
        return Outcome("quarantined", "burned-in text risk: " + "; ".join(risks))
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    report = deidentify(ds, profile, pseudo)
    report.risks[:0] = risks
    if report.risks and not keep:
        return Outcome(
            "quarantined", "burned-in text risk: " + "; ".join(report.risks), report=report
        )
    new_meta = _new_meta(ds, meta, profile, report)
    ds.file_meta = new_meta
    ds.preamble = b"\x00" * 128
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    name = f"{report.pseudonym}/{ds.SOPInstanceUID}.dcm"
    reason = (
        ("kept despite burned-in text risk: " + "; ".join(report.risks)) if report.risks else None
    )
    return Outcome("deidentified", reason, name, buffer.getvalue(), report)


def _new_meta(ds: Dataset, meta: Dataset, profile: Profile, report: Report) -> FileMetaDataset:
    """A fresh file meta: our implementation, the mapped instance UID, nothing else."""
    implicit, little = getattr(ds, "original_encoding", (True, True))
    syntax: str | None = meta.get("TransferSyntaxUID")
    if not syntax:
        if not little:
            syntax = ExplicitVRBigEndian
        else:
            syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if UID(syntax) != ImplicitVRLittleEndian and any(
        getattr(ds.get_item(t), "VR", "") is None for t in list(ds.keys())
    ):
        for _ in ds.iterall():  # read as implicit VR: give every element its VR before writing
            pass
    for tag in list(meta.keys()):
        if tag not in _MEDIA_META_KEEP and tag != 0x00020003 and tag != 0x00020000:
            report.actions.append(
                Action(f"{tag >> 16:04X},{tag & 0xFFFF:04X}", meta[tag].keyword or "Unknown", "X")
            )
    if 0x00020003 in meta:
        code = "K" if Option.RETAIN_UIDS in profile.options else "U"
        report.actions.append(Action("0002,0003", "MediaStorageSOPInstanceUID", code))
    new = FileMetaDataset()
    new.FileMetaInformationVersion = b"\x00\x01"
    new.MediaStorageSOPClassUID = ds.SOPClassUID
    new.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    new.TransferSyntaxUID = UID(syntax)
    new.ImplementationClassUID = IMPLEMENTATION_UID
    new.ImplementationVersionName = IMPLEMENTATION_VERSION
    return new
