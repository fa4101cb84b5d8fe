"""Every NULL cell says why; DP values whose interval tells nothing are flagged (#18)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tessera.cli.query import _cell, _legend
from tessera.mpc.result import (
    NO_VALUES,
    NULL_GROUP,
    TOO_FEW,
    UNINFORMATIVE,
    decode_result,
    interval_decimals,
    uninformative,
)
from tessera.mpc.sql import compile_sql
from tessera.tables.encode import column_info
from tessera.tables.schema import Column

TABLES = {
    "t": {
        "name": "t",
        "columns": [
            column_info(Column("bmi", "decimal", 100, 500, scale=1)),
            column_info(Column("sex", "categorical", categories=("F", "M"))),
        ],
        "hospitals": ["H1"],
    }
}


def test_null_cells_carry_their_reason() -> None:
    sql = "SELECT sex, COUNT(*), AVG(bmi), VAR_SAMP(bmi) FROM t GROUP BY sex"
    plan = compile_sql(sql, TABLES, min_group=1)
    names = [(m.kind, m.part) for m in plan.measures]
    # groups F, M, NULL: F has no bmi at all, M one bmi, the NULL-sex group two
    vals = {
        ("count", None): [3, 2, 2],
        ("count", "t.bmi.valid"): [0, 1, 2],
        ("sum", "t.bmi.val"): [0, 200, 400],
        ("sum", "t.bmi.sq"): [0, 40000, 80000],
    }
    cells = [v for name in names for v in vals[name]]
    out = decode_result(plan, [1, 1, 1, *cells])
    by_sex = {row[0]: (row, notes) for row, notes in zip(out["rows"], out["notes"], strict=True)}
    row, notes = by_sex["F"]
    assert row[2:] == [None, None] and notes[2:] == [NO_VALUES, NO_VALUES]
    row, notes = by_sex["M"]
    assert row[2] == pytest.approx(20.0) and row[3] is None
    assert notes[2:] == [None, TOO_FEW]
    row, notes = by_sex[None]
    assert notes[0] == NULL_GROUP and notes[2:] == [None, None]


@pytest.mark.parametrize(
    ("func", "interval", "flagged"),
    [
        ("avg", [3.0, 20.0], True),  # AVG(hba1c) 20 [3, 20] on a declared [3, 20]
        ("avg", [6.5, 8.1], False),
        ("avg", [3.0, 11.4], False),  # 49%
        ("stddev", [0.0, 9.0], True),  # of a possible 8.5
        ("count", [-40.0, 90.0], False),  # no declared range
        ("sum", [0.0, 1e9], False),
    ],
)
def test_uninformative_when_the_interval_covers_half_the_range(
    func: str, interval: list[float], flagged: bool
) -> None:
    assert uninformative(func, 3.0, 20.0, interval) is flagged


def test_human_cells_show_reasons_and_round_to_the_interval() -> None:
    assert _cell(None, None, NO_VALUES) == "NULL (no rows)"
    assert _cell(20.0, [3.0, 20.0], UNINFORMATIVE) == "20.0 [3.0, 20.0] (uninformative)"
    assert _cell(7.312345, [6.81, 7.86], None) == "7.31 [6.81, 7.86]"
    assert _cell(15, [3.2, 27.9], None) == "15 [3, 28]"
    assert interval_decimals([1000.0, 3000.0]) == 0
    assert _legend([[None, UNINFORMATIVE], [NO_VALUES, None]]) == [
        f"(no rows): {NO_VALUES}",
        f"(uninformative): {UNINFORMATIVE}",
    ]


def test_dp_answer_flags_uninformative_values_in_json() -> None:
    """``AVG(hba1c) 20 [3, 20]``: a small group's interval spans the declared range."""
    from tessera.dp import Policy
    from tessera.dp.plan import plan_release
    from tessera.dp.release import postprocess
    from tessera.workflows.dp import PrivateAnswer
    from tessera.workflows.job_checks import dp_aggregates as _dp_aggregates
    from tessera.workflows.query import _shape_answer

    tables = {
        "t": {
            "name": "t",
            "columns": [
                column_info(Column("hba1c", "decimal", 30, 200, scale=1, nullable=False)),
                column_info(Column("sex", "categorical", categories=("F", "M"), nullable=False)),
            ],
            "hospitals": ["H1"],
        }
    }
    plan = compile_sql("SELECT sex, COUNT(*), AVG(hba1c) FROM t GROUP BY sex", tables)
    aggregates, index = _dp_aggregates(plan)
    aggregates = [a if a.column is None else replace(a, lower=30, upper=200) for a in aggregates]
    policy = Policy.dp(total_epsilon=10.0, default_epsilon=0.5, min_group_size=2)
    release_plan = plan_release(policy, aggregates, cells=2, custodians=3, threshold=1)
    # F: 4 noisy rows summing to 20.0 on average; M: 40 000 rows averaging 7.3
    noisy = {"count": [4, 40000], "sum:t.hba1c": [800, 2_920_000]}
    release = postprocess(release_plan, noisy)
    doc = _shape_answer(plan, PrivateAnswer(release), index)
    avg = doc["privacy"]["columns"][2]
    assert avg["uninformative"] == [True, False]
    assert doc["notes"][0][2] == UNINFORMATIVE and doc["notes"][1] == [None, None, None]
    assert doc["privacy"]["columns"][0]["uninformative"] is None
