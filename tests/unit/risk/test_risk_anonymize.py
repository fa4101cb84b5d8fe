"""Generalisation hierarchies and the lattice search for the least information loss."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from tessera.errors import InputError, PolicyError
from tessera.risk import Criteria, anonymize, assess, parse_hierarchies
from tessera.risk.anonymize import _column, _Evaluator

SPEC = {
    "age": {"type": "bands", "widths": [5, 10, 20]},
    "zip": {"type": "prefix", "lengths": [4, 3, 2]},
    "admitted": {"type": "date", "levels": ["month", "year"]},
    "dx": {"type": "category", "levels": [{"I10": "circ", "I21": "circ", "C50": "neo"}]},
}


def _cohort(n: int = 600, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "zip": [f"{z:05d}" for z in rng.integers(2000, 2600, n)],
            "sex": rng.choice(["F", "M"], n),
            "admitted": [
                f"2024-{m:02d}-{d:02d}"
                for m, d in zip(rng.integers(1, 13, n), rng.integers(1, 29, n), strict=True)
            ],
            "dx": rng.choice(["I10", "I21", "C50"], n),
            "los": rng.integers(1, 20, n),
        }
    )


def test_hierarchy_levels() -> None:
    h = parse_hierarchies(SPEC)
    ages = pl.Series("age", [42, 17, 60])
    assert h["age"].generalise(ages, 1).to_list() == ["[40, 45)", "[15, 20)", "[60, 65)"]
    assert h["age"].generalise(ages, 3).to_list() == ["[40, 60)", "[0, 20)", "[60, 80)"]
    assert h["age"].generalise(ages, 4).to_list() == ["*", "*", "*"]
    assert h["age"].height == 5
    zips = pl.Series("zip", ["02139", "10001"])
    assert h["zip"].generalise(zips, 2).to_list() == ["021**", "100**"]
    dates = pl.Series("d", ["2024-03-14", "1999-12-31"])
    assert h["admitted"].generalise(dates, 1).to_list() == ["2024-03", "1999-12"]
    assert h["admitted"].generalise(dates, 2).to_list() == ["2024", "1999"]
    assert h["dx"].generalise(pl.Series(["I21", "C50"]), 1).to_list() == ["circ", "neo"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "non-empty mapping"),
        ({"a": {"type": "bands"}}, "widths"),
        ({"a": {"type": "bands", "widths": [10, 5]}}, "grow"),
        ({"a": {"type": "prefix", "lengths": [1, 3]}}, "shrink"),
        ({"a": {"type": "date", "levels": ["week"]}}, "month, year, decade"),
        ({"a": {"type": "category", "levels": "x"}}, "list of mappings"),
        ({"a": {"type": "nope"}}, "unknown type"),
        ({"a": 3}, "mapping with a 'type'"),
    ],
)
def test_bad_hierarchies(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_hierarchies(spec)


def test_category_without_parent_is_an_error() -> None:
    h = parse_hierarchies({"dx": SPEC["dx"]})["dx"]
    with pytest.raises(InputError, match="no level-1 parent for 'J45'"):
        h.generalise(pl.Series(["J45"]), 1)


def test_result_meets_the_criteria() -> None:
    df = _cohort()
    qi = ["age", "zip", "sex", "admitted"]
    crit = Criteria(k=5, l=2, t=0.4, suppression_limit=0.05)
    r = anonymize(df, qi, crit, parse_hierarchies(SPEC), sensitive="dx")
    assert r.suppressed <= 0.05 * df.height
    again = assess(r.data, qi, "dx", detect_identifiers=False)
    assert again.k_anonymity >= 5 and r.k == again.k_anonymity
    assert again.l_diversity is not None and again.l_diversity >= 2
    assert r.data.height == df.height - r.suppressed
    assert 0 < r.loss < 1
    assert r.average_class_size == pytest.approx(r.data.height / again.classes)
    assert r.as_dict()["search"]["complete"]


def test_least_loss_without_suppression_matches_brute_force() -> None:
    df = _cohort(300, seed=9)
    qi = ["age", "zip", "sex"]
    hier = parse_hierarchies(SPEC)
    crit = Criteria(k=4, suppression_limit=0.0)
    r = anonymize(df, qi, crit, hier)
    cols = [
        _column(df, c, hier[c])
        if c in hier
        else _column(
            df, c, parse_hierarchies({c: {"type": "category", "levels": [{"F": "*", "M": "*"}]}})[c]
        )
        for c in qi
    ]
    ev = _Evaluator(cols, crit, None)
    heights = [c.hierarchy.height for c in cols]
    best = min(
        (o.loss, node)
        for node in itertools.product(*(range(h) for h in heights))
        if (o := ev.evaluate(node)).ok
    )
    assert r.loss == pytest.approx(best[0])
    assert r.nodes_evaluated < np.prod(heights)


def test_impossible_criteria_are_refused() -> None:
    df = _cohort(50)
    with pytest.raises(PolicyError, match="no generalisation"):
        anonymize(df, ["age"], Criteria(k=100, suppression_limit=0.0), parse_hierarchies(SPEC))


def test_bad_criteria_and_columns() -> None:
    df = _cohort(50)
    with pytest.raises(InputError, match="k must be"):
        Criteria(k=0)
    with pytest.raises(InputError, match="unknown column"):
        anonymize(df, ["nope"], Criteria(k=2), {})
    with pytest.raises(InputError, match="sensitive column"):
        anonymize(df, ["age"], Criteria(k=2, l=2), {})


def test_search_budget_is_reported() -> None:
    df = _cohort(200)
    hier = parse_hierarchies(SPEC)
    crit = Criteria(k=3, suppression_limit=0.0)
    r = anonymize(df, ["age", "zip", "admitted"], crit, hier, max_nodes=3)
    assert r.nodes_evaluated == 3 and not r.as_dict()["search"]["complete"]
    assert assess(r.data, ["age", "zip", "admitted"], detect_identifiers=False).k_anonymity >= 3
    with pytest.raises(PolicyError, match="stopped after 1 nodes"):
        anonymize(
            df,
            ["age", "zip", "admitted"],
            Criteria(k=300, suppression_limit=0.0),
            hier,
            max_nodes=1,
        )
