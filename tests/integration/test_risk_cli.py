"""``tessera risk`` through the installed entry point, as scripts and the demo use it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tessera.samples

pytestmark = pytest.mark.integration

EXAMPLES = Path(tessera.samples.__file__).parent / "risk"


def _tessera() -> str:
    exe = Path(sys.executable).with_name("tessera")
    found = str(exe) if exe.exists() else shutil.which("tessera")
    if found is None:
        pytest.skip("the tessera entry point is not installed")
    return found


def test_assess_anonymize_recommend(tmp_path: Path) -> None:
    tessera = _tessera()
    cohort = EXAMPLES / "cohort.csv"
    run = subprocess.run(
        [
            tessera,
            "risk",
            "assess",
            str(cohort),
            "--qi",
            "zip,birth_date,sex",
            "--sensitive",
            "diagnosis",
            "--population",
            "250000",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    doc = json.loads(run.stdout)
    assert doc["rows"] == 2000
    assert doc["k_anonymity"] == 1
    assert {f["column"] for f in doc["direct_identifiers"]} >= {"patient_id", "email"}

    out = tmp_path / "anon.csv"
    subprocess.run(
        [
            tessera,
            "risk",
            "anonymize",
            str(cohort),
            "--qi",
            "age,zip,sex,admitted",
            "--k",
            "5",
            "--hierarchies",
            str(EXAMPLES / "hierarchies.yaml"),
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    again = subprocess.run(
        [tessera, "risk", "assess", str(out), "--qi", "age,zip,sex,admitted", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(again.stdout)["k_anonymity"] >= 5

    rec = subprocess.run(
        [tessera, "risk", "recommend", str(EXAMPLES / "request.yaml"), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(rec.stdout)["primary"] == "deidentification"


def test_error_exit_code_and_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [_tessera(), "risk", "assess", str(EXAMPLES / "cohort.csv"), "--qi", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.strip().count("\n") == 0 and "nope" in run.stderr
