"""Multi-hospital import: the reserved ``hospital`` column and ``--origin-column`` (#18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.errors import InputError, UsageError
from tessera.tables.encode import read_csv
from tessera.tables.schema import Column
from tessera.workflows.tables import import_csv, split_origins

CSV = b"hospital,age,sex\nA,40,F\nB,50,M\nA,60,F\n,70,M\nC,80,F\n"


def test_a_hospital_column_is_refused_as_reserved_naming_the_flag() -> None:
    header, rows = read_csv(CSV)
    with pytest.raises(InputError) as caught:
        split_origins(header, rows, None, "file")
    message = str(caught.value)
    assert "reserved" in message and "--origin-column hospital" in message


def test_a_declared_hospital_column_says_reserved() -> None:
    with pytest.raises(InputError, match=r"reserved.*--origin-column"):
        Column("Hospital", "integer", 0, 1)


def test_origin_column_splits_rows_by_value_in_order() -> None:
    header, rows = read_csv(CSV)
    rest, groups, errors = split_origins(header, rows, "HOSPITAL", "file")
    assert rest == ["age", "sex"]
    assert list(groups) == ["A", "B", "C"]
    assert [r for _, r in groups["A"]] == [["40", "F"], ["60", "F"]]
    assert [line for line, _ in groups["C"]] == [6]
    assert errors == ["line 5: the origin column must hold 1..64 characters"]


def test_origin_column_missing_names_the_option() -> None:
    header, rows = read_csv(CSV)
    with pytest.raises(InputError, match=r"no column 'site'.*--origin-column"):
        split_origins(header, rows, "site", "file")


def test_hospital_and_origin_column_together_is_a_usage_error(tmp_path: Path) -> None:
    csv = tmp_path / "all.csv"
    csv.write_bytes(CSV)
    with pytest.raises(UsageError, match="not both"):
        import_csv(object(), csv, "t", hospital="X", origin_column="hospital")  # type: ignore[arg-type]
