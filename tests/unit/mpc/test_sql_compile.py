from __future__ import annotations

from typing import Any

import pytest

from tessera.errors import InputError, UnsupportedError
from tessera.mpc.plan import Extreme, Join, Measure, SqlPlan
from tessera.mpc.sql import compile_sql
from tessera.tables.encode import column_info
from tessera.tables.schema import Column

COLS = [
    Column("pid", "pseudonym", nullable=False),
    Column("age", "integer", 18, 100),
    Column("load", "integer", 0, 100000),
    Column("bmi", "decimal", 120, 600, scale=1),
    Column("sex", "categorical", categories=("F", "M")),
    Column("smoker", "boolean"),
    Column("visit", "date", 16000, 20000),
]
TABLES: dict[str, Any] = {
    "t": {"name": "t", "columns": [column_info(c) for c in COLS], "hospitals": ["H1", "H2"]},
    "u": {
        "name": "u",
        "columns": [column_info(c) for c in COLS[:3]],
        "hospitals": ["H1"],
    },
}


def plan(sql: str) -> SqlPlan:
    return compile_sql(sql, TABLES)


def test_count_where_needs_only_thermometer() -> None:
    p = plan("SELECT COUNT(*) FROM t WHERE age > 60")
    assert p.sources[0].parts == ("age.th", "age.valid")
    assert p.where is not None
    assert p.where.to_dict() == {"op": "range", "ref": "t.age", "lo": 61, "hi": None}
    assert p.measures[0] == Measure("count", None)


def test_decimal_and_date_constants_in_units() -> None:
    p = plan("SELECT COUNT(*) FROM t WHERE bmi > 30.25 AND visit < '2020-01-01'")
    assert p.where is not None
    left, right = p.where.args
    assert left.lo == 303  # 30.25 -> 302.5 units; > means >= 303
    assert right.hi == 18261  # days before 2020-01-01


def test_aggregates_decompose_into_measures() -> None:
    p = plan("SELECT sex, AVG(bmi), STDDEV(bmi), MAX(load) FROM t GROUP BY sex")
    kinds = [(m.kind, m.part) for m in p.measures]
    assert ("sum", "t.bmi.val") in kinds and ("sum", "t.bmi.sq") in kinds
    assert p.groups[0].labels == ("F", "M", None)
    assert p.extremes == (Extreme("t.load", "max"),)


def test_join_on_pseudonyms() -> None:
    p = plan("SELECT COUNT(*) FROM t a JOIN u b ON a.pid = b.pid WHERE b.age > 40")
    assert p.join == Join("a.pid", "b.pid")


@pytest.mark.parametrize(
    ("sql", "columns"),
    [
        ("SELECT sex, COUNT(*) AS n FROM t GROUP BY sex ORDER BY 2 DESC, sex", [1, 0]),
        ("SELECT sex, COUNT(*) AS n FROM t GROUP BY sex ORDER BY n, COUNT(*)", [1, 1]),
        ("SELECT sex, AVG(bmi) FROM t GROUP BY sex ORDER BY avg(bmi)", [1]),
        ("SELECT sex, COUNT(*) FROM t GROUP BY sex ORDER BY COUNT(*) * 2", [None]),
        ("SELECT sex, COUNT(*) FROM t GROUP BY sex ORDER BY SUM(age)", [None]),
    ],
)
def test_order_by_names_output_columns_once(sql: str, columns: list[int | None]) -> None:
    assert [o.column for o in plan(sql).order] == columns


def test_order_by_position_out_of_range() -> None:
    with pytest.raises(InputError, match="ORDER BY 3: the answer has 2 columns"):
        plan("SELECT sex, COUNT(*) FROM t GROUP BY sex ORDER BY 3")


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("SELECT COUNT(*) FROM t WHERE age < load", "comparison of two columns"),
        ("SELECT * FROM t", "SELECT \\*"),
        ("SELECT age FROM t", "outside GROUP BY"),
        ("SELECT COUNT(*) FROM t GROUP BY age", "GROUP BY integer"),
        ("SELECT SUM(sex) FROM t", "SUM of categorical"),
        ("SELECT COUNT(*) FROM t WHERE sex > 'F'", "> on categorical"),
        ("SELECT COUNT(*) FROM t a JOIN u b ON a.age = b.age", "only pseudonymous key"),
        ("SELECT COUNT(*) FROM t LEFT JOIN u ON t.pid = u.pid", "LEFT JOIN"),
        ("SELECT COUNT(DISTINCT age) FROM t", "DISTINCT"),
        ("DELETE FROM t", "DELETE"),
        ("SELECT COUNT(*) FROM (SELECT * FROM t)", "subquer"),
        ("SELECT AVG(visit) FROM t", "AVG of date"),
        ("SELECT COUNT(*) FROM t WHERE sex LIKE 'F%'", "LIKE"),
        ("SELECT COUNT(*) FROM t GROUP BY sex HAVING MEDIAN(age) > 3", "MEDIAN"),
        ("SELECT COUNT(*) FROM t WHERE age IN (SELECT age FROM u)", "subquer"),
        ("WITH x AS (SELECT 1) SELECT COUNT(*) FROM t", "WITH"),
        ("SELECT DISTINCT sex FROM t", "DISTINCT"),
    ],
)
def test_unsupported_constructs_are_named(sql: str, named: str) -> None:
    """Every refusal of a construct starts with ``unsupported:`` (docs/sql.md) and names it."""
    with pytest.raises(UnsupportedError, match=named) as caught:
        plan(sql)
    assert str(caught.value).startswith("unsupported: "), str(caught.value)


def test_unknown_names_are_input_errors() -> None:
    with pytest.raises(InputError, match="no table"):
        plan("SELECT COUNT(*) FROM nope")
    with pytest.raises(InputError, match="no column"):
        plan("SELECT COUNT(*) FROM t WHERE weight > 3")
    with pytest.raises(InputError, match="does not parse"):
        plan("SELEC COUNT(*) FROM t")
