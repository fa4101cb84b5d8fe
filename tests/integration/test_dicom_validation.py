"""dciodvfy (dicom3tools) on de-identified outputs: no error the input did not have."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tessera.dicom import Option, Profile, Pseudonymizer, deidentify_file

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed"),
]

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "rtstruct.dcm",
         "test-SR.dcm", "reportsi.dcm", "waveform_ecg.dcm", "JPEG2000.dcm"]  # fmt: skip
PROFILES = {
    "basic": Profile(),
    "modified-dates+clean-descriptors": Profile(
        frozenset({Option.RETAIN_MODIFIED_DATES, Option.CLEAN_DESCRIPTORS})
    ),
}


def errors(path: Path) -> set[str]:
    """dciodvfy's error lines, with UIDs and numbers masked (they change by design)."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return {re.sub(r"\d+(\.\d+)+", "<n>", line) for line in lines if line.startswith("Error")}


@pytest.mark.parametrize("profile", PROFILES, ids=list(PROFILES))
@pytest.mark.parametrize("name", FILES)
def test_no_new_dciodvfy_errors(tmp_path: Path, name: str, profile: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        source = Path(get_testdata_file(name))  # type: ignore[arg-type]
    outcome = deidentify_file(
        source, PROFILES[profile], Pseudonymizer(bytes(32)), keep_burned_in=True
    )
    assert outcome.status == "deidentified" and outcome.data is not None
    output = tmp_path / "out.dcm"
    output.write_bytes(outcome.data)
    assert errors(output) - errors(source) == set()
