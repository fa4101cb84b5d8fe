"""Output checks computed inside the MPC (``checks.json``): real parties vs a clear oracle.

Three real party processes run the ``sql`` program on shared tables; the failure counts
they open (``meta["checks"]``) must equal the SACRO/ACRO rules computed in the clear on
the same rows, and nothing else about the release may change.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from party_jobs import Chunk, PartyResults, TableShares, prepare, run_parties

from tessera.errors import InputError
from tessera.mpc.sql import compile_sql
from tessera.tables.encode import PRIME, column_info, encode_rows
from tessera.tables.schema import Column, Schema

pytestmark = pytest.mark.integration

SEX = ("F", "M", "X")
COLUMNS = (
    Column("sex", "categorical", categories=SEX),
    Column("age", "integer", 18, 100),  # one-part thermometer
    Column("load", "integer", 0, 100000),  # five base-16 digits, minimum 0
    Column("dose", "decimal", 50, 9000, scale=1),  # four digits, minimum 5.0 > 0
    Column("smoker", "boolean"),
    Column("temp", "integer", -20, 40),  # negative minimum: not checked for dominance
)
NAMES = [c.name for c in COLUMNS]
BY_NAME = {c.name: c for c in COLUMNS}
ACRO = {"version": 1, "threshold": 10, "p_percent": 10.0, "nk_n": 2, "nk_k": 90.0, "zeros": True}
Row = dict[str, int | None]  # units; sex as its category index, smoker 0/1


# ----- tables -------------------------------------------------------------------------
def _cell(name: str, v: int | None) -> str:
    if v is None:
        return ""
    if name == "sex":
        return SEX[v]
    if name == "smoker":
        return "true" if v else "false"
    if name == "dose":
        return f"{v / 10:.1f}"
    return str(v)


def _encode(rows: Sequence[Row], chunks: Sequence[Chunk]) -> TableShares:
    enc = encode_rows(
        Schema(COLUMNS),
        NAMES,
        [(i + 2, [_cell(n, r[n]) for n in NAMES]) for i, r in enumerate(rows)],
    )
    assert not enc.errors and enc.rows == len(rows)
    return TableShares(enc.parts, (), chunks)


def _manifest(hospitals: Sequence[str]) -> dict[str, Any]:
    return {
        "t": {"name": "t", "columns": [column_info(c) for c in COLUMNS], "hospitals": hospitals}
    }


def _run(
    tmp: Path,
    sql: str,
    rows: Sequence[Row],
    chunks: Sequence[Chunk],
    checks: Mapping[str, Any] | None,
    history: Sequence[Sequence[int]] = (),
) -> PartyResults:
    plan = compile_sql(sql, _manifest([c.hospital for c in chunks]), min_group=1)
    job = {"type": "sql", "job_id": "0" * 32, "params": {"plan": plan.to_dict(), "prime": PRIME}}
    table = _encode(rows, chunks)
    table = TableShares(table.parts, plan.sources[0].parts, chunks)
    folders = prepare(tmp, job, {"t": table}, checks=checks, history=history)
    return run_parties(folders)


# ----- the oracle -----------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    sql: str
    where: Callable[[Row], bool]
    groups: Sequence[Callable[[Row, str], int]]  # group index of a row (and its hospital)
    sizes: Sequence[int]  # number of labels per GROUP BY column
    summed: Sequence[str]  # columns under SUM/AVG/VARIANCE/STDDEV


def _pct(value: float) -> Fraction:
    return Fraction(str(value)) / 100


def oracle(
    q: Query,
    rows: Sequence[Row],
    hospitals: Sequence[str],
    spec: Mapping[str, Any],
    history: Sequence[Sequence[int]],
) -> dict[str, int | None]:
    """The rules in the clear (see tessera.mpc.disclosure)."""
    threshold = spec["threshold"]
    sel = [bool(q.where(r)) for r in rows]
    combos = list(itertools.product(*(range(s) for s in q.sizes)))
    index = {c: i for i, c in enumerate(combos)}
    group = [index[tuple(g(r, h) for g in q.groups)] for r, h in zip(rows, hospitals, strict=True)]
    counts = np.bincount([g for g, s in zip(group, sel, strict=True) if s], minlength=len(combos))
    small = sum(1 for c in counts if 0 < c < threshold)
    # the zeros rule skips SQL's NULL group (the plan's combos name it None)
    try:
        plan = compile_sql(q.sql, _manifest(sorted(set(hospitals))), min_group=1)
        labelled = [None not in c for c in plan.combos()]
    except InputError:  # the join's second table: no NULL group in its queries
        labelled = [True] * len(combos)
    assert len(labelled) == len(combos)
    zeros = (
        sum(1 for c, keep in zip(counts, labelled, strict=True) if c == 0 and keep)
        if spec["zeros"] and len(combos) > 1
        else 0
    )
    p, k = _pct(spec["p_percent"]), _pct(spec["nk_k"])
    dominance = 0
    for col in q.summed:
        if BY_NAME[col].min < 0:
            continue
        for g in range(len(combos)):
            vals = sorted(
                (
                    v
                    for r, gg, s in zip(rows, group, sel, strict=True)
                    if s and gg == g and (v := r[col]) is not None
                ),
                reverse=True,
            )
            total = sum(vals)
            x1 = vals[0] if vals else 0
            x2 = vals[1] if len(vals) > 1 else 0
            top = x1 + x2 if spec["nk_n"] == 2 else x1
            p_fail = total - x1 - x2 < p * x1
            nk_fail = top > k * total
            dominance += total > 0 and (p_fail or nk_fail)
    differencing = 0
    for h in history:
        if len(h) > len(rows):
            continue
        padded = list(h) + [0] * (len(rows) - len(h))
        d = sum(1 for a, b in zip(sel, padded, strict=True) if int(a) != b)
        differencing += 0 < d < threshold
    return {
        "threshold": small,
        "dominance": dominance,
        "zeros": zeros,
        "differencing": differencing,
    }


def _sex(r: Row, _h: str) -> int:
    return 3 if r["sex"] is None else int(r["sex"])


def _smoker(r: Row, _h: str) -> int:
    return 2 if r["smoker"] is None else int(r["smoker"])


def _hospital(_r: Row, h: str) -> int:
    return ["H1", "H2"].index(h)


def _hospitals(chunks: Sequence[Chunk]) -> list[str]:
    return [c.hospital for c in chunks for _ in range(c.start, c.stop)]


# ----- a table made by hand -------------------------------------------------------------------
def _row(sex: int | None, load: int | None, dose: int, age: int = 50) -> Row:
    return {"sex": sex, "age": age, "load": load, "dose": dose, "smoker": 1, "temp": 0}


HAND = (
    # F: exactly 10 rows (passes the threshold); loads balanced; two rows share the
    # largest dose and dominate it (x2 = x1)
    [_row(0, 100 + i, 8000 if i < 2 else 50) for i in range(10)]
    # M: 15 rows, one load dominates; doses balanced (and one NULL load)
    + [_row(1, 90000 if i == 0 else (None if i == 1 else 10), 100) for i in range(15)]
    # NULL sex: 3 rows (below the threshold), loads balanced; two equal largest doses
    # fail n,k only because x2 = x1 (x1 + x2 = 10000 > 0.9 * 11000); X: no row at all
    + [_row(None, 50, d, age=30) for d in (5000, 5000, 1000)]
)
HAND_QUERY = Query(
    "SELECT sex, COUNT(*), SUM(load), AVG(dose) FROM t GROUP BY sex",
    lambda r: True,
    [_sex],
    [4],
    ["load", "dose"],
)


def _flip(n: int, count: int) -> list[int]:
    return [0] * count + [1] * (n - count)


def test_each_rule_fails_where_it_should_and_nothing_else_changes(tmp_path: Path) -> None:
    n = len(HAND)
    chunks = [Chunk("H1", 0, n)]
    history = [
        [1] * n,  # the same cohort: d = 0, passes
        _flip(n, 1),  # one row fewer: d = 1, fails
        [1] * (n - 2),  # older and shorter (padded): the two new rows differ, fails
        _flip(n, 9),  # d = 9 < 10: fails
        _flip(n, 10),  # d = 10: passes
        [0] * n,  # very different: d = n, passes
        [1] * (n + 3),  # longer than the table: not comparable, not counted
    ]
    res = _run(tmp_path / "on", HAND_QUERY.sql, HAND, chunks, ACRO, history)
    got = res.metas[0]["checks"]
    # NULL group of 3; X empty; M's load, F's and NULL's doses dominated
    assert got == {"threshold": 1, "dominance": 3, "zeros": 1, "differencing": 3}
    assert got == oracle(HAND_QUERY, HAND, _hospitals(chunks), ACRO, history)
    assert all(m["checks"] == got for m in res.metas)
    assert res.cohort() == [1] * n  # no WHERE: every row

    plain = _run(tmp_path / "off", HAND_QUERY.sql, HAND, chunks, None)
    assert all("checks" not in m for m in plain.metas)
    assert all(c is None for c in plain.cohorts)  # no cohort kept without checks
    assert plain.values() == res.values()


# Loads per group around each rule's boundary; doses balanced (pass every rule).
EDGES = (
    [_row(0, v, 100) for v in (1000, 1000, 150)]  # F: R = 150 >= 10% of 1000
    + [_row(1, v, 100) for v in (1000, 500, 99)]  # M: R = 99 < 10% of 1000
    + [_row(2, v, 100) for v in (1000, 100, 50, 50)]  # X: R = 10% of x1 exactly
    + [_row(None, v, 100) for v in (900, 900, 100, 100)]  # NULL: x1 + x2 = 90% of T
)
RULES = [  # spec, expected dominance
    ({"p_percent": 10.0, "nk_k": 100.0}, 1),  # p% only: M
    ({"p_percent": 0.0, "nk_n": 2, "nk_k": 90.0, "zeros": False}, 3),  # F, M, X (NULL: =)
    ({"p_percent": 0.0, "nk_n": 1, "nk_k": 60.0}, 2),  # x1 > 60% of T: M, X
]


@pytest.mark.parametrize(("spec", "dominance"), RULES, ids=["p", "nk2", "nk1"])
def test_each_dominance_rule_at_its_boundary(
    tmp_path: Path, spec: dict[str, Any], dominance: int
) -> None:
    spec = {**ACRO, "threshold": 4, **spec}
    chunks = [Chunk("H1", 0, len(EDGES))]
    res = _run(tmp_path, HAND_QUERY.sql, EDGES, chunks, spec)
    got = res.metas[0]["checks"]
    assert got == oracle(HAND_QUERY, EDGES, _hospitals(chunks), spec, [])
    assert got["dominance"] == dominance
    assert got["threshold"] == 2 and got["differencing"] == 0  # F and M have 3 rows
    assert got["zeros"] == 0  # no empty group (and none counted without zeros)


# ----- random tables ----------------------------------------------------------------------------
def _random_rows(rng: np.random.Generator, n: int, big_share: float = 0.08) -> list[Row]:
    def maybe(v: int, share: float = 0.05) -> int | None:
        return None if rng.random() < share else v

    rows: list[Row] = []
    for _ in range(n):
        sex = int(rng.choice(4, p=[0.5, 0.35, 0.05, 0.1]))
        big = rng.random() < big_share  # a few rows dominate their group's sums
        rows.append(
            {
                "sex": None if sex == 3 else sex,
                "age": maybe(int(rng.integers(18, 101))),
                "load": maybe(int(rng.integers(50000, 100001) if big else rng.integers(0, 200))),
                "dose": maybe(int(rng.integers(3000, 9001) if big else rng.integers(50, 300))),
                "smoker": maybe(int(rng.integers(0, 2)), 0.1),
                "temp": int(rng.integers(-20, 41)),
            }
        )
    return rows


def _history(rng: np.random.Generator, sel: Sequence[bool]) -> list[list[int]]:
    base = [int(s) for s in sel]
    n = len(base)
    out = [list(base)]  # identical
    for flips in (1, 3, 12):  # fails, fails, passes (d >= threshold)
        h = list(base)
        for i in rng.choice(n, flips, replace=False):
            h[i] = 1 - h[i]
        out.append(h)
    out.append([int(v) for v in rng.integers(0, 2, n)])  # very different
    out.append(base[:-4])  # shorter: rows appended since were not in it
    out.append([*base, 1, 1])  # longer: not comparable
    return out


ODD = {**ACRO, "threshold": 4, "p_percent": 250.0, "nk_n": 1, "nk_k": 95.5, "zeros": False}
P_ONLY = {**ACRO, "nk_k": 100.0}
RANDOM = [  # (seed, rows, checks, query)
    (
        1,
        90,
        ACRO,
        Query(
            "SELECT sex, COUNT(*), SUM(load), AVG(dose), SUM(temp) FROM t "
            "WHERE age > 30 AND smoker GROUP BY sex",
            lambda r: r["age"] is not None and r["age"] > 30 and r["smoker"] == 1,
            [_sex],
            [4],
            ["load", "dose", "temp"],
        ),
    ),
    (
        2,
        90,
        P_ONLY,
        Query(
            "SELECT hospital, smoker, COUNT(*), SUM(age), STDDEV(load) FROM t "
            "WHERE NOT (sex = 'M') GROUP BY hospital, smoker",
            lambda r: r["sex"] is not None and r["sex"] != 1,
            [_hospital, _smoker],
            [2, 3],
            ["age", "load"],
        ),
    ),
    (
        10,
        90,
        ACRO,
        Query(
            "SELECT COUNT(*), SUM(load), MAX(dose) FROM t WHERE dose >= 20.0",
            lambda r: r["dose"] is not None and r["dose"] >= 200,
            [],
            [],
            ["load"],
        ),
    ),
    (
        5,
        90,
        ACRO,
        Query(
            "SELECT hospital, sex, COUNT(*), SUM(dose), AVG(load) FROM t GROUP BY hospital, sex",
            lambda r: True,
            [_hospital, _sex],
            [2, 4],
            ["dose", "load"],
        ),
    ),
    (  # sums of 10^8 and more (p_b R > 2^29 wraps a comparison): saturation keeps it exact
        12,
        2000,
        ACRO,
        Query(
            "SELECT smoker, SUM(load), SUM(dose) FROM t WHERE age > 25 GROUP BY smoker",
            lambda r: r["age"] is not None and r["age"] > 25,
            [_smoker],
            [3],
            ["load", "dose"],
        ),
    ),
    (  # p = 250%, k = 95.5%: R is also clamped for the n,k comparison; zeros not asked
        13,
        2000,
        ODD,
        Query(
            "SELECT hospital, sex, SUM(load), AVG(dose) FROM t "
            "WHERE smoker AND NOT (sex = 'X') GROUP BY hospital, sex",
            lambda r: r["smoker"] == 1 and r["sex"] is not None and r["sex"] != 2,
            [_hospital, _sex],
            [2, 4],
            ["load", "dose"],
        ),
    ),
]


@pytest.mark.parametrize(("seed", "n", "checks", "query"), RANDOM, ids=[str(r[0]) for r in RANDOM])
def test_random_tables_match_the_oracle(
    tmp_path: Path, seed: int, n: int, checks: dict[str, Any], query: Query
) -> None:
    rng = np.random.default_rng(seed)
    rows = _random_rows(rng, n, 0.9 if n > 500 else 0.08)
    chunks = [Chunk("H1", 0, n // 2), Chunk("H2", n // 2, n)]
    sel = [bool(query.where(r)) for r in rows]
    history = _history(rng, sel)
    res = _run(tmp_path, query.sql, rows, chunks, checks, history)
    want = oracle(query, rows, _hospitals(chunks), checks, history)
    assert (want["differencing"] or 0) >= 1  # the near cohorts
    assert all(m["checks"] == want for m in res.metas)
    assert res.cohort() == [int(s) for s in sel]


def test_a_join_checks_its_rows_but_keeps_no_cohort(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    rows = _random_rows(rng, 40)
    pids = [f"{i:032x}" for i in range(40)]
    right = [int(v) for v in rng.integers(0, 40, 30)]  # u's rows: some patients twice
    chunks = [Chunk("H1", 0, 40)]
    u_col = Column("pid", "pseudonym", nullable=False)
    t_cols = [column_info(c) for c in (*COLUMNS, u_col)]
    tables = {
        "t": {"name": "t", "columns": t_cols, "hospitals": ["H1"]},
        "u": {"name": "u", "columns": [column_info(u_col)], "hospitals": ["H1"]},
    }
    sql = "SELECT a.sex, COUNT(*), SUM(a.load) FROM t a JOIN u b ON a.pid = b.pid GROUP BY a.sex"
    plan = compile_sql(sql, tables, min_group=1)
    job = {"type": "sql", "job_id": "0" * 32, "params": {"plan": plan.to_dict(), "prime": PRIME}}
    left = _encode(rows, chunks)
    ushares = TableShares({}, (), [Chunk("H1", 0, 30)], {"pid": [pids[j] for j in right]})
    inputs = {
        "a": TableShares(left.parts, plan.sources[0].parts, chunks, {"pid": pids}),
        "b": ushares,
    }
    folders = prepare(tmp_path, job, inputs, checks=ACRO, history=[[1] * 40])
    res = run_parties(folders)
    joined = [rows[i] for i in range(40) for j in right if j == i]
    want = oracle(
        Query(sql, lambda r: True, [_sex], [4], ["load"]), joined, ["H1"] * len(joined), ACRO, []
    )
    assert all(m["checks"] == {**want, "differencing": None} for m in res.metas)
    assert all(c is None for c in res.cohorts)
