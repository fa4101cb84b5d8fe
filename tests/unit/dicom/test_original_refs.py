"""Which kept originals a reference to ``tessera dicom original`` designates."""

from __future__ import annotations

import pytest

from tessera.errors import UsageError
from tessera.workflows.dicom import _original_names

P1, P2 = "TS" + "A" * 20, "TS" + "B" * 20
NAMES = [
    f"dicom/{P1}/2.25.1.dcm",
    f"dicom-original/{P1}/2.25.1.dcm",
    f"dicom-original/{P1}/2.25.12.dcm",
    f"dicom-original/{P2}/2.25.2.dcm",
    f"dicom-identity/{P1}",
]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("2.25.1", [f"dicom-original/{P1}/2.25.1.dcm"]),
        ("2.25.1.dcm", [f"dicom-original/{P1}/2.25.1.dcm"]),
        (f"dicom/{P1}/2.25.1.dcm", [f"dicom-original/{P1}/2.25.1.dcm"]),
        (f"dicom-original/{P2}/2.25.2.dcm", [f"dicom-original/{P2}/2.25.2.dcm"]),
        (P1, [f"dicom-original/{P1}/2.25.1.dcm", f"dicom-original/{P1}/2.25.12.dcm"]),
        (f"{P2}/2.25.1", []),
        ("2.25.3", []),
    ],
)
def test_references(ref: str, expected: list[str]) -> None:
    assert _original_names(NAMES, ref) == expected


@pytest.mark.parametrize(
    "ref", ["Doe^John", "TSxyz/2.25.1", "../2.25.1", "2.25.1/../x", "1" * 65, "", "dicom/"]
)
def test_bad_references_are_refused(ref: str) -> None:
    with pytest.raises(UsageError):
        _original_names(NAMES, ref)
