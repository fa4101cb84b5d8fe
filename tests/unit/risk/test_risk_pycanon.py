"""Cross-checks against pycanon on public medical datasets shipped in PyPI packages.

Datasets: ACTG175 (lifelines), flchain (scikit-survival), randhie (statsmodels).
pycanon loops over classes and values in Python, so sensitive attributes with many
distinct values, and large tables, are checked on a subsample (the same rows for both
libraries).

Where the definitions differ we say so rather than bend ours: pycanon's recursive
(c,l)-diversity sorts the class counts ascending (Machanavajjhala et al. sort them
descending), so only its l is compared; entropy l-diversity is compared as pycanon's
integer part of exp(min entropy).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import polars as pl
import pytest
from pycanon import anonymity as pc
from risk_data import load_dataset

from tessera.risk import assess

CASES = [
    ("actg175", "arms"),
    ("actg175", "karnof"),
    ("actg175", "cd40"),
    ("flchain", "chapter"),
    ("flchain", "flc_grp"),
    ("flchain", "creatinine"),
    ("randhie", "mdvis_cap"),
    ("randhie", "hlthp"),
]

_MANY_VALUES = 30
_ROWS = 1500  # pycanon's cost grows with rows x classes x values
_ROWS_MANY_VALUES = 150


def _data(name: str, sa: str) -> tuple[pd.DataFrame, list[str]]:
    d, qi, _ = load_dataset(name)
    d = d[[*qi, sa]]
    rows = _ROWS_MANY_VALUES if d[sa].nunique() > _MANY_VALUES else _ROWS
    if len(d) > rows:
        d = d.sample(n=rows, random_state=1).reset_index(drop=True)
    return d, qi


@pytest.mark.parametrize(("name", "sa"), CASES)
def test_matches_pycanon(name: str, sa: str) -> None:
    d, qi = _data(name, sa)
    r = assess(pl.from_pandas(d), qi, sa, detect_identifiers=False)
    assert r.k_anonymity == pc.k_anonymity(d, qi)
    assert r.l_diversity == pc.l_diversity(d, qi, [sa])
    assert r.entropy_l is not None
    assert math.floor(r.entropy_l + 1e-9) == pc.entropy_l_diversity(d, qi, [sa])
    assert r.t_closeness == pytest.approx(pc.t_closeness(d, qi, [sa]), rel=1e-9, abs=1e-12)
    assert r.delta == pytest.approx(pc.delta_disclosure(d, qi, [sa]), rel=1e-9)
    assert r.recursive_l == pc.recursive_c_l_diversity(d, qi, [sa])[1]


def test_datasets_are_not_trivial() -> None:
    """The cross-checks exercise several classes and both EMD variants."""
    seen = set()
    for name, sa in CASES:
        d, qi = _data(name, sa)
        r = assess(pl.from_pandas(d), qi, sa, detect_identifiers=False)
        assert r.classes > 10
        seen.add(r.t_variant)
    assert seen == {"ordered", "equal"}


def test_random_tables_match_pycanon() -> None:
    rng = np.random.default_rng(5)
    for trial in range(4):
        n = 400
        d = pd.DataFrame(
            {
                "a": rng.integers(0, 4, n),
                "b": rng.choice(["x", "y", "z"], n),
                "s_num": rng.integers(0, 6 + trial, n),
                "s_cat": rng.choice(["p", "q", "r", "s"], n, p=[0.5, 0.3, 0.15, 0.05]),
            }
        )
        for sa in ("s_num", "s_cat"):
            r = assess(pl.from_pandas(d), ["a", "b"], sa, detect_identifiers=False)
            assert r.k_anonymity == pc.k_anonymity(d, ["a", "b"])
            assert r.l_diversity == pc.l_diversity(d, ["a", "b"], [sa])
            assert r.t_closeness == pytest.approx(pc.t_closeness(d, ["a", "b"], [sa]), rel=1e-9)
            assert r.delta == pytest.approx(pc.delta_disclosure(d, ["a", "b"], [sa]), rel=1e-9)
