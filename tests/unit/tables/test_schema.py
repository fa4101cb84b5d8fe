from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.errors import InputError
from tessera.tables.schema import Column, Schema, format_units, infer_schema, parse_value


def test_infer_kinds_and_bounds() -> None:
    header = ["id", "age", "bmi", "sex", "smoker", "visit"]
    rows = [
        ["a1", "34", "21.5", "F", "true", "2020-01-02"],
        ["a2", "61", "", "M", "false", "2021-12-31"],
        ["a3", "", "30.25", "F", "", "2019-05-05"],
    ]
    schema = infer_schema(header, rows, keys=("id",))
    kinds = {c.name: c.kind for c in schema.columns}
    assert kinds == {
        "id": "pseudonym",
        "age": "integer",
        "bmi": "decimal",
        "sex": "categorical",
        "smoker": "boolean",
        "visit": "date",
    }
    assert (schema.column("age").min, schema.column("age").max) == (34, 61)
    bmi = schema.column("bmi")
    assert bmi.scale == 2 and (bmi.min, bmi.max) == (2150, 3025)
    assert schema.column("sex").categories == ("F", "M")


def test_free_text_is_refused_with_column_name() -> None:
    rows = [[f"note {i}"] for i in range(100)]
    with pytest.raises(InputError, match="column remark"):
        infer_schema(["remark"], rows)


def test_yaml_round_trip() -> None:
    schema = Schema(
        (
            Column("age", "integer", 0, 120),
            Column("bmi", "decimal", 120, 600, scale=1),
            Column("visit", "date", 0, 20000),
            Column("sex", "categorical", categories=("F", "M")),
            Column("ok", "boolean", nullable=False),
        )
    )
    assert Schema.from_yaml(schema.to_yaml()) == schema


@pytest.mark.parametrize(
    ("col", "text", "message"),
    [
        (Column("age", "integer", 0, 120), "130", "outside"),
        (Column("age", "integer", 0, 120), "x", "not an integer"),
        (Column("bmi", "decimal", 0, 600, scale=1), "12.25", "more than 1 decimals"),
        (Column("bmi", "decimal", 0, 600, scale=1), "Infinity", "not a finite"),
        (Column("sex", "categorical", categories=("F", "M")), "X", "not one of the declared"),
        (Column("ok", "boolean", nullable=False), "", "non-nullable"),
        (Column("ok", "boolean"), "maybe", "not a boolean"),
        (Column("day", "date", 0, 20000), "2020-13-45", "not a date"),
    ],
)
def test_bad_values(col: Column, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_value(col, text)
    assert text not in str(caught.value) or not text  # the value is never echoed


def test_bad_schema_entries() -> None:
    with pytest.raises(InputError, match="categories"):
        Schema.from_yaml("columns:\n- {name: sex, type: categorical}\n")
    with pytest.raises(InputError, match="unknown type"):
        Schema.from_yaml("columns:\n- {name: x, type: blob}\n")
    with pytest.raises(InputError, match="reserved"):
        Column("hospital", "integer", 0, 1)
    with pytest.raises(InputError, match="invalid column name"):
        Column("9lives", "integer", 0, 1)


@given(st.integers(min_value=-(10**9), max_value=10**9), st.integers(min_value=0, max_value=4))
def test_decimal_units_round_trip(units: int, scale: int) -> None:
    col = Column("x", "decimal", -(10**9), 10**9, scale=scale)
    assert parse_value(col, str(format_units(col, units))) == units


@pytest.mark.parametrize("bound", ["1e999991", "99999999999999999999", "-1e30"])
def test_bounds_beyond_the_encodable_range_are_refused_at_once(bound: str) -> None:
    # a schema is outside input: a huge exponent must not become a million-digit integer
    text = f"columns:\n- {{name: x, type: decimal, scale: 1, min: '{bound}', max: '2'}}\n"
    with pytest.raises(InputError, match="out of range"):
        Schema.from_yaml(text)
    with pytest.raises(ValueError, match="out of range"):
        parse_value(Column("x", "integer", -5, 5), "1" * 40)
