from __future__ import annotations

import pytest

from tessera.errors import UnsupportedError
from tessera.mpc.result import decode_result, finish_rows
from tessera.mpc.sql import compile_sql
from tessera.tables.encode import column_info
from tessera.tables.schema import Column

TABLES = {
    "t": {
        "name": "t",
        "columns": [
            column_info(Column("bmi", "decimal", 100, 500, scale=1)),
            column_info(Column("sex", "categorical", categories=("F", "M"), nullable=False)),
        ],
        "hospitals": ["H1"],
    }
}


def test_decode_group_avg_variance_and_suppression() -> None:
    sql = "SELECT sex, COUNT(*) AS n, AVG(bmi), VAR_SAMP(bmi), MAX(bmi) FROM t GROUP BY sex"
    plan = compile_sql(sql, TABLES, min_group=5)
    names = [(m.kind, m.part) for m in plan.measures]
    assert names[0] == ("count", None)
    # F: bmi 20.0, 22.0, 24.0, 26.0, 28.0 (n=5); M suppressed (all cells zero)
    vals = {
        ("count", None): [5, 0],
        ("count", "t.bmi.valid"): [5, 0],
        ("sum", "t.bmi.val"): [1200, 0],
        ("sum", "t.bmi.sq"): [200 * 200 + 220 * 220 + 240 * 240 + 260 * 260 + 280 * 280, 0],
    }
    cells = [v for name in names for v in vals[name]]
    maxima = [280 - 100, 0]  # offset from min
    out = decode_result(plan, [1, 0, *cells, *maxima])
    assert out["columns"] == ["sex", "n", "AVG(bmi)", "VARIANCE(bmi)", "MAX(bmi)"]
    assert out["suppressed_groups"] == 1 and out["privacy"] is None
    (row,) = out["rows"]
    assert row[0] == "F" and row[1] == 5
    assert row[2] == pytest.approx(24.0)
    assert row[3] == pytest.approx(10.0)
    assert row[4] == pytest.approx(28.0)


def test_having_order_limit_applied_to_released_groups() -> None:
    sql = "SELECT sex, COUNT(*) AS n FROM t GROUP BY sex HAVING COUNT(*) > 6 ORDER BY n DESC"
    plan = compile_sql(sql, TABLES, min_group=1)
    out = decode_result(plan, [1, 1, 7, 9])
    assert out["rows"] == [["M", 9], ["F", 7]]
    out = decode_result(plan, [1, 1, 5, 9])
    assert out["rows"] == [["M", 9]]


def test_finish_rows_orders_dp_rows_by_output_columns() -> None:
    """The DP path's rows (values, intervals) go through the same ORDER BY and LIMIT."""
    sql = "SELECT sex, COUNT(*) AS n, AVG(bmi) FROM t GROUP BY sex ORDER BY n DESC, 1 LIMIT 3"
    plan = compile_sql(sql, TABLES, min_group=1)
    rows = [(["F", 7, None], ["iv-F"]), (["M", 9, 20.0], ["iv-M"]), (["X", 7, 1.0], ["iv-X"])]
    rows.append(([None, None, 3.0], ["iv-null"]))
    out = finish_rows(plan, rows)
    assert [r[0][0] for r in out] == ["M", "F", "X"]  # n DESC, then sex; NULL n last, cut
    assert [r[1] for r in out] == [["iv-M"], ["iv-F"], ["iv-X"]]
    by_avg = compile_sql("SELECT sex, AVG(bmi) FROM t GROUP BY sex ORDER BY AVG(bmi)", TABLES)
    out = finish_rows(by_avg, [(["F", None], 0), (["M", 2.0], 1), (["X", 1.0], 2)])
    assert [r[1] for r in out] == [2, 1, 0]  # NULLs last, ascending too
    expr = compile_sql("SELECT sex, COUNT(*) FROM t GROUP BY sex ORDER BY SUM(bmi)", TABLES)
    with pytest.raises(UnsupportedError, match="not an output column"):
        finish_rows(expr, [])
