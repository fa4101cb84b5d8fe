"""The typed SQL plan: an exact JSON round trip, and hostile plans refused on decoding."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from tessera.errors import InputError
from tessera.mpc.plan import MAX_LIST, PLAN_VERSION, Condition, Measure, SqlPlan
from tessera.mpc.sql import compile_sql

from .test_sql_compile import TABLES

QUERIES = [
    "SELECT COUNT(*) FROM t",
    "SELECT COUNT(*) FROM t WHERE age > 60 AND NOT (load BETWEEN 10 AND 2000)",
    "SELECT COUNT(*), SUM(bmi) FROM t WHERE bmi > 30.25 OR visit < '2020-01-01'",
    "SELECT COUNT(*) FROM t WHERE sex IN ('F') AND smoker AND load IN (1, 5, 70000)",
    "SELECT COUNT(*) FROM t WHERE hospital = 'H2' AND age IS NULL AND smoker IN (TRUE, FALSE)",
    "SELECT COUNT(*) FROM t WHERE TRUE AND hospital IS NULL AND sex <> 'X'",
    "SELECT sex, smoker, COUNT(*) AS n, AVG(bmi), STDDEV(bmi), VAR_POP(age) FROM t "
    "GROUP BY sex, smoker HAVING COUNT(*) > 10 ORDER BY n DESC, 1 LIMIT 3",
    "SELECT hospital, MIN(age), MAX(load), MIN(visit), MAX(bmi), COUNT(hospital) FROM t "
    "GROUP BY hospital ORDER BY MAX(load) * 2",
    "SELECT a.sex, COUNT(*), AVG(b.load), MAX(b.age) FROM t a JOIN u b ON a.pid = b.pid "
    "WHERE b.age > 40 GROUP BY a.sex",
    "SELECT COUNT(*), SUM(smoker), VARIANCE(smoker) FROM t WHERE smoker = FALSE",
]


BASE = (
    "SELECT sex, COUNT(*) AS n, AVG(bmi) FROM t WHERE age > 30 AND smoker GROUP BY sex "
    "ORDER BY n DESC LIMIT 3"
)


def compiled(sql: str = BASE) -> SqlPlan:
    return compile_sql(sql, TABLES, min_group=5)


@pytest.mark.parametrize("sql", QUERIES)
def test_round_trip_is_exact(sql: str) -> None:
    plan = compiled(sql)
    doc = plan.to_dict()
    assert doc["version"] == PLAN_VERSION
    wire = json.loads(json.dumps(doc))  # JSON-serialisable as it is
    assert wire == doc
    again = SqlPlan.from_dict(wire)
    assert again == plan
    assert again.to_dict() == doc


def test_plans_are_frozen_and_checked_on_replace() -> None:
    plan = compiled()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.min_group = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.cols["t.age"] = plan.cols["t.bmi"]  # type: ignore[index]
    with pytest.raises(InputError, match="min_group -1 is out of range"):
        dataclasses.replace(plan, min_group=-1)
    with pytest.raises(InputError, match="measure 0 must be COUNT"):
        dataclasses.replace(plan, measures=(Measure("sum", "t.bmi.val"), *plan.measures[1:]))
    with pytest.raises(InputError, match="unknown condition"):
        Condition("xor")


def test_a_dp_plan_replaces_the_measures() -> None:
    """The DP path's secure plan: its own measures, nothing exact (as run_sql makes it)."""
    plan = compiled("SELECT sex, COUNT(*), SUM(smoker), MAX(bmi) FROM t GROUP BY sex")
    assert plan.booleans == {"t.smoker"}
    measures = (Measure("count"), Measure("sum", "t.smoker.val"))
    secure = dataclasses.replace(plan, measures=measures, extremes=(), aggregates={}, min_group=0)
    assert SqlPlan.from_dict(secure.to_dict()) == secure
    with pytest.raises(InputError, match="no such measure"):  # aggregates must go too
        dataclasses.replace(plan, measures=measures[:1], extremes=(), min_group=0)


Edit = Callable[[dict[str, Any]], object]


def _set(*path: Any, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _deep_not(doc: dict[str, Any]) -> None:
    where = doc["where"]
    for _ in range(200):
        where = {"op": "not", "arg": where}
    doc["where"] = where


HOSTILE: dict[str, tuple[Edit, str]] = {
    "version 2": (_set("version", value=2), "unsupported version"),
    "version text": (_set("version", value="1"), "unsupported version"),
    "version bool": (_set("version", value=True), "unsupported version"),
    "version missing": (lambda d: d.pop("version"), "unsupported version"),
    "unknown key": (_set("extra", value=1), "unknown key 'extra'"),
    "unknown source key": (_set("sources", 0, "chunks", value=[]), "unknown key 'chunks'"),
    "unknown aggregate key": (_set("aggregates", "COUNT(*)", "w", value=0), "unknown key 'w'"),
    "a sum on COUNT(*)": (_set("aggregates", "COUNT(*)", "sum", value=0), "and its sum"),
    "unknown condition key": (_set("where", "ref", value="t.age"), "unknown key 'ref'"),
    "missing key": (lambda d: d.pop("measures"), "has no 'measures'"),
    "negative min_group": (_set("min_group", value=-1), "min_group -1 is out of range"),
    "min_group text": (_set("min_group", value="5"), "min_group must be an int"),
    "min_group bool": (_set("min_group", value=True), "min_group must be an int"),
    "negative limit": (_set("limit", value=-3), "limit -3 is out of range"),
    "unknown part": (_set("measures", 1, "part", value="t.age.sq"), "measure part 't.age.sq'"),
    "unknown input": (_set("measures", 1, "part", value="x.bmi.val"), "measure part"),
    "bad part name": (_set("measures", 1, "part", value="t.bmi.v-l"), "not a valid name"),
    "measure 0 a sum": (
        _set("measures", 0, value={"kind": "sum", "part": "t.bmi.val"}),
        "measure 0 must be COUNT",
    ),
    "measure kind": (_set("measures", 0, "kind", value="max"), "unknown measure"),
    "measure index": (_set("aggregates", "COUNT(*)", "count", value=99), "no such measure"),
    "group index": (_set("items", 0, "group", value=5), "item 'sex'"),
    "order column": (_set("order", 0, "column", value=9), "ORDER BY"),
    "labels not the categories": (_set("groups", 0, "labels", value=["F"]), "the groups of"),
    "label type": (_set("groups", 0, "labels", value=["F", "M", 3]), "string, a boolean"),
    "unknown column": (_set("where", "args", 0, "ref", value="t.weight"), "not a known column"),
    "alias": (_set("sources", 0, "alias", value="a-b"), "not a valid name"),
    "alias newline": (_set("sources", 0, "alias", value="t\n"), "not a valid name"),
    "table path": (_set("sources", 0, "table", value="../t"), "not a valid name"),
    "parts not a list": (_set("sources", 0, "parts", value="age.th"), "must be a list"),
    "cols not an object": (_set("cols", value=[]), "must be an object"),
    "a column's kind": (_set("cols", "t.age", "kind", value="blob"), "unknown kind"),
    "a column's min": (_set("cols", "t.age", "min", value=1.5), "must be an int"),
    "huge measures": (
        _set("measures", value=[{"kind": "count", "part": None}] * (MAX_LIST + 5)),
        "more than",
    ),
    "huge IN": (_set("where", value={"op": "in", "ref": "t.age", "values": [1] * 5000}), "more"),
    "three sources": (
        _set("sources", value=[{"alias": f"a{i}", "table": "t", "parts": []} for i in range(3)]),
        "one table or joins two",
    ),
    "a join without two sources": (
        _set("join", value={"left": "t.pid", "right": "t.pid"}),
        "two sources need one JOIN",
    ),
    "unknown op": (_set("where", value={"op": "xor", "args": []}), "known op"),
    "two-argument not": (_set("where", value={"op": "and", "args": []}), "and takes 2"),
    "deep WHERE": (_deep_not, "nested more than"),
    "long expression": (_set("items", 2, "expr", value="x" * 5000), "longer than"),
    "empty": (lambda d: d.clear(), "unsupported version"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_plans_are_refused(case: str) -> None:
    edit, reason = HOSTILE[case]
    doc = copy.deepcopy(compiled().to_dict())
    edit(doc)
    with pytest.raises(InputError, match=reason) as info:
        SqlPlan.from_dict(doc)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("data", [None, [], "plan", 1])
def test_a_plan_is_an_object(data: Any) -> None:
    with pytest.raises(InputError, match="must be an object"):
        SqlPlan.from_dict(data)
