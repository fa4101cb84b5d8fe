"""Burned-in text: which instances may carry identifying text in their pixels."""

from __future__ import annotations

from pydicom.dataset import Dataset

__all__ = ["burned_in_risks"]

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_ULTRASOUND = ("1.2.840.10008.5.1.4.1.1.6.", "1.2.840.10008.5.1.4.1.1.3.")
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def burned_in_risks(ds: Dataset) -> list[str]:
    """Reasons why the pixels of ``ds`` may show identifying text (empty: none known).

    At risk: BurnedInAnnotation present and not NO; ultrasound; secondary capture and
    screen saves (unless they declare BurnedInAnnotation NO).  Instances without pixel
    data carry no burned-in text.
    """
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return []
    reasons = []
    declared = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").upper()
    image_type = [str(v).upper() for v in _values(ds.get("ImageType"))]
    if declared and declared != "NO":
        reasons.append("BurnedInAnnotation is " + ("YES" if declared == "YES" else "not NO"))
    if declared == "NO":
        return reasons
    if modality == "US" or sop_class.startswith(_ULTRASOUND):
        reasons.append("ultrasound image without BurnedInAnnotation NO")
    if sop_class.startswith(_SECONDARY_CAPTURE) or modality in ("SC", "OT"):
        reasons.append("secondary capture without BurnedInAnnotation NO")
    if "SCREEN SAVE" in image_type or str(ds.get("ConversionType", "")).upper() == "WSD":
        reasons.append("screen save without BurnedInAnnotation NO")
    return reasons


def _values(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]
