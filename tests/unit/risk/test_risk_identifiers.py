"""Direct-identifier detection (HIPAA Safe Harbor categories)."""

from __future__ import annotations

import polars as pl

from tessera.risk import find_identifiers


def _found(df: pl.DataFrame) -> dict[str, tuple[str, str]]:
    return {f.column: (f.category, f.evidence) for f in find_identifiers(df)}


def test_by_values() -> None:
    n = 30
    df = pl.DataFrame(
        {
            "contact": [f"user{i}@example.org" for i in range(n)],
            "x1": [f"123-45-{6000 + i}" for i in range(n)],
            "x2": [f"10.0.0.{i}" for i in range(n)],
            "x3": [f"https://example.org/p/{i}" for i in range(n)],
            "x4": [f"+44 20 7946 {1000 + i}" for i in range(n)],
            "x5": [f"2020-01-{1 + i % 28:02d}" for i in range(n)],
            "x6": [f"{10000 + i}" for i in range(n)],
        }
    )
    got = _found(df)
    assert got["contact"] == ("F", "values")
    assert got["x1"] == ("G", "values")
    assert got["x2"] == ("O", "values")
    assert got["x3"] == ("N", "values")
    assert got["x4"] == ("D", "values")
    assert got["x5"] == ("C", "values")
    assert got["x6"] == ("B", "values")


def test_by_names() -> None:
    df = pl.DataFrame(
        {
            "Patient_Name": ["a", "b"],
            "phone": [1, 2],
            "MRN": [5, 6],
            "date_of_birth": ["x", "y"],
            "postcode": ["p", "q"],
            "ssn": ["1", "2"],
        }
    )
    got = _found(df)
    assert got == {
        "Patient_Name": ("A", "name"),
        "phone": ("D", "name"),
        "MRN": ("H", "name"),
        "date_of_birth": ("C", "name"),
        "postcode": ("B", "name"),
        "ssn": ("G", "name"),
    }


def test_unique_codes_and_no_false_alarms() -> None:
    n = 50
    df = pl.DataFrame(
        {
            "token_x": [f"T{i:06d}q" for i in range(n)],
            "age": [20 + i % 30 for i in range(n)],
            "diagnosis": ["I10", "E11"] * (n // 2),
            "length_of_stay": [i % 9 for i in range(n)],
            "income": [40000 + i * 7 for i in range(n)],  # five digits, but numbers
            "weight": [60.5 + i for i in range(n)],
            "cell_count": [i % 7 for i in range(n)],
        }
    )
    got = _found(df)
    assert got == {"token_x": ("R", "distinct values")}
    f = find_identifiers(df)[0].as_dict()
    assert f["category_name"] == "any other unique identifying number or code"
