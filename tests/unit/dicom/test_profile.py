"""The generated table matches its generator and the reference; option parsing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tessera.dicom import Option, Profile, parse_option
from tessera.dicom.profile import TABLE
from tessera.errors import UnsupportedError, UsageError

ROOT = Path(__file__).resolve().parents[3]
GENERATOR = ROOT / "scripts" / "gen_dicom_profile.py"
MODULE = ROOT / "src" / "tessera" / "dicom" / "_profile_table.py"


def test_generated_module_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_dicom_profile", GENERATOR)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    source = generator.DEFAULT_SOURCE
    assert source.is_file(), f"{source} is part of the repository"
    rows = json.loads(source.read_text(encoding="utf-8"))
    assert len(rows) == 621
    assert generator.render(rows) == MODULE.read_text(encoding="utf-8")


def test_table_shape() -> None:
    assert len(TABLE) == 621
    codes = {r.action for r in TABLE}
    assert codes == {"X", "D", "U", "Z", "X/D", "X/Z", "X/Z/D", "Z/D", "X/Z/U*"}
    patient_name = next(r for r in TABLE if r.key == "00100010")
    assert patient_name.action == "Z" and patient_name.name == "Patient's Name"


def test_option_parsing() -> None:
    assert parse_option("113105") is Option.CLEAN_DESCRIPTORS
    assert parse_option("Retain-UIDs") is Option.RETAIN_UIDS
    with pytest.raises(UnsupportedError):
        parse_option("113101")
    with pytest.raises(UsageError):
        parse_option("bogus")
    with pytest.raises(UsageError):
        Profile.from_codes(["113106", "113107"])


def test_precedence_dates_then_keep_then_clean() -> None:
    calibration = next(r for r in TABLE if r.key == "0018700c")  # device id K, dates K/C
    both = frozenset({Option.RETAIN_DEVICE_IDENTITY, Option.RETAIN_MODIFIED_DATES})
    assert calibration.action_under(both) == "C"
    assert calibration.action_under(frozenset({Option.RETAIN_DEVICE_IDENTITY})) == "K"
    assert calibration.action_under(frozenset()) == "X/D"
