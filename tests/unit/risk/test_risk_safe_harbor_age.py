"""Safe Harbor screening flags ages over 89; a model without an estimate says why (#18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tessera.cli.main import main
from tessera.risk.identifiers import find_identifiers
from tessera.risk.uniqueness import estimate_uniqueness


def test_ages_over_89_are_a_safe_harbor_identifier() -> None:
    df = pl.DataFrame({"age": [30, 91, 45, None], "stage": [1, 2, 3, 4], "page": [95] * 4})
    (finding,) = find_identifiers(df)
    assert (finding.column, finding.category) == ("age", "C")
    assert finding.evidence == "ages over 89" and finding.share == pytest.approx(1 / 3)


def test_ages_up_to_89_and_text_ages_are_handled() -> None:
    assert find_identifiers(pl.DataFrame({"age": [30, 89, 45]})) == []
    (finding,) = find_identifiers(pl.DataFrame({"age_at_diagnosis": ["80", "95", "x"]}))
    assert finding.category == "C"


def test_a_model_without_an_estimate_says_so() -> None:
    doc = estimate_uniqueness(np.array([1, 1, 1, 2]), 1000).as_dict()
    assert doc["models"]["pitman"] == {
        "uniques": None,
        "fraction": None,
        "note": "did not converge",
    }


def test_assess_prints_why_pitman_has_no_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    csv = tmp_path / "t.csv"
    csv.write_text("zip,age\n1001,30\n1002,91\n1003,45\n1004,50\n1004,50\n")
    argv = ["risk", "assess", str(csv), "--qi", "zip", "--population", "1000"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "pitman" in out and "did not converge" in out
    assert "age: (C)" in out and "ages over 89" in out
