"""``tessera risk`` through tessera.cli.main.main (exit codes, JSON shapes, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

import tessera.samples
from tessera.cli.main import main

EXAMPLES = Path(tessera.samples.__file__).parent / "risk"


@pytest.fixture
def csv(tmp_path: Path, hand: pl.DataFrame) -> Path:
    path = tmp_path / "hand.csv"
    hand.write_csv(path)
    return path


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, object]:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # exactly one document


def test_assess_json_shape(csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(
        capsys,
        [
            "risk",
            "assess",
            str(csv),
            "--qi",
            "age,zip",
            "--sensitive",
            "score",
            "--population",
            "60",
            "--json",
        ],
    )
    for key in (
        "rows",
        "k_anonymity",
        "l_diversity",
        "t_closeness",
        "prosecutor",
        "journalist",
        "marketer",
    ):
        assert key in doc
    assert doc["rows"] == 6 and doc["k_anonymity"] == 1
    assert doc["t_closeness"] == pytest.approx(0.5)
    assert set(doc["prosecutor"]) >= {"highest", "average"}  # type: ignore[arg-type]
    assert set(doc["journalist"]) >= {"highest", "average"}  # type: ignore[arg-type]
    assert isinstance(doc["marketer"], float)
    assert doc["population_uniqueness"]["population"] == 60  # type: ignore[index]
    assert len(doc["worst_classes"]) == 3  # type: ignore[arg-type]


def test_assess_readable_report(csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["risk", "assess", str(csv), "--qi", "age,zip", "--sensitive", "dx"]) == 0
    out = capsys.readouterr().out
    assert "k-anonymity" in out and "Riskiest equivalence classes" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--qi", "age,nope"], "unknown quasi-identifier column(s): nope"),
        (["--qi", "age", "--sensitive", "nope"], "unknown sensitive column(s): nope"),
        (["--qi", "age", "--population", "3"], "smaller than the sample"),
        (["--qi", "age", "--threshold", "2"], "threshold"),
    ],
)
def test_assess_errors_are_one_line(
    csv: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["risk", "assess", str(csv), *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_malformed_and_missing_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b'a,b\n1,2\n3,"4\n5,6,7,8\n')
    assert main(["risk", "assess", str(bad), "--qi", "a"]) == 1
    assert "not a readable CSV table" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert main(["risk", "assess", str(empty), "--qi", "a"]) == 1
    assert "empty" in capsys.readouterr().err
    assert main(["risk", "assess", str(tmp_path / "none.csv"), "--qi", "a"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_anonymize_writes_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "anon.csv"
    doc = _json(
        capsys,
        [
            "risk",
            "anonymize",
            str(EXAMPLES / "cohort.csv"),
            "--qi",
            "age,zip,sex",
            "--k",
            "5",
            "--l",
            "2",
            "--sensitive",
            "diagnosis",
            "--hierarchies",
            str(EXAMPLES / "hierarchies.yaml"),
            "--out",
            str(out),
            "--json",
        ],
    )
    assert doc["k_anonymity"] >= 5  # type: ignore[operator]
    written = pl.read_csv(out, schema_overrides={"zip": pl.String})
    assert written.height == doc["rows_out"]
    assert set(doc["utility"]) == {"loss", "discernibility", "average_class_size"}  # type: ignore[arg-type]
    assert main(["risk", "assess", str(out), "--qi", "age,zip,sex", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["k_anonymity"] >= 5


def test_anonymize_refusal_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "anon.csv"
    code = main(
        [
            "risk",
            "anonymize",
            str(EXAMPLES / "cohort.csv"),
            "--qi",
            "age,zip,sex",
            "--k",
            "5000",
            "--suppression-limit",
            "0",
            "--hierarchies",
            str(EXAMPLES / "hierarchies.yaml"),
            "--out",
            str(out),
        ]
    )
    assert code == 1
    assert "no generalisation" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_anonymize_bad_hierarchies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = tmp_path / "h.yaml"
    h.write_text("age: [unclosed\n")
    code = main(
        [
            "risk",
            "anonymize",
            str(EXAMPLES / "cohort.csv"),
            "--qi",
            "age",
            "--k",
            "2",
            "--hierarchies",
            str(h),
        ]
    )
    assert code == 1
    assert "not a valid hierarchies file" in capsys.readouterr().err


def test_recommend_from_example(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(capsys, ["risk", "recommend", str(EXAMPLES / "request.yaml"), "--json"])
    assert doc["primary"] == "deidentification"
    assert doc["risk_level"] == "high"
    assert doc["request"]["risk"]["k_anonymity"] == 1  # type: ignore[index]
    assert main(["risk", "recommend", str(EXAMPLES / "request.yaml")]) == 0
    assert "Recommendation for readmission-study" in capsys.readouterr().out


def test_recommend_bad_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req = tmp_path / "r.yaml"
    req.write_text("output: everything\n")
    assert main(["risk", "recommend", str(req)]) == 1
    assert "output must be one of" in capsys.readouterr().err


def test_anonymize_drops_identifier_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "anon.csv"
    base = [
        "risk",
        "anonymize",
        str(EXAMPLES / "cohort.csv"),
        "--qi",
        "age,sex",
        "--k",
        "3",
        "--hierarchies",
        str(EXAMPLES / "hierarchies.yaml"),
        "--out",
        str(out),
    ]
    assert main([*base, "--drop", "patient_id,email,birth_date"]) == 0
    capsys.readouterr()
    columns = pl.read_csv(out).columns
    assert "patient_id" not in columns and "email" not in columns and "age" in columns
    assert main([*base, "--drop", "nope"]) == 1
    assert "unknown column(s) to drop: nope" in capsys.readouterr().err
    assert main([*base, "--drop", "age"]) == 1
    assert "cannot drop age" in capsys.readouterr().err
