"""Test data for tessera.risk: a small hand-computed table and public medical datasets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import polars as pl
import pytest

HAND = pl.DataFrame(
    {
        # Three classes over (age, zip): (30, A) x3, (40, B) x2, (50, C) x1
        "age": [30, 30, 30, 40, 40, 50],
        "zip": ["A", "A", "A", "B", "B", "C"],
        # Sensitive, ordered 1 < 2 < 3: global p = (2/6, 2/6, 2/6)
        "score": [1, 1, 2, 2, 3, 3],
        # Sensitive, categorical
        "dx": ["flu", "flu", "cold", "flu", "cold", "hiv"],
    }
)


def _lifelines_actg175() -> pd.DataFrame:
    import lifelines

    path = Path(lifelines.__file__).parent / "datasets" / "ACTG175.csv"
    return pd.read_csv(path)


def load_dataset(name: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(data, quasi-identifiers, sensitive attributes) of a public dataset."""
    if name == "actg175":
        d = _lifelines_actg175()
        d["age_band"] = (d["age"] // 10) * 10
        d["wt_band"] = (d["wtkg"] // 20) * 20
        qi = ["age_band", "gender", "race", "homo", "drugs", "wt_band"]
        return (
            d[[*qi, "arms", "karnof", "cd40"]].dropna().reset_index(drop=True),
            qi,
            [
                "arms",
                "karnof",
                "cd40",
            ],
        )
    if name == "flchain":
        sksurv = pytest.importorskip("sksurv.datasets")
        x, _ = sksurv.load_flchain()
        d = x.copy()
        d["age_band"] = (d["age"] // 5 * 5).astype(int)
        d["sex"] = d["sex"].astype(str)
        d["year"] = d["sample.yr"].astype(str)
        d["chapter"] = d["chapter"].astype(str)
        d["flc_grp"] = d["flc.grp"].astype(int)
        d = d.dropna(subset=["creatinine"])
        qi = ["age_band", "sex", "year", "mgus"]
        d["mgus"] = d["mgus"].astype(str)
        return (
            d[[*qi, "chapter", "flc_grp", "creatinine"]].reset_index(drop=True),
            qi,
            [
                "chapter",
                "flc_grp",
                "creatinine",
            ],
        )
    if name == "randhie":
        sm = pytest.importorskip("statsmodels.api")
        d = sm.datasets.randhie.load_pandas().data.copy()
        d["disea_band"] = (d["disea"] // 5).astype(int)
        d["physlm"] = (d["physlm"] > 0).astype(int)
        qi = ["lncoins", "idp", "physlm", "disea_band", "hlthg", "hlthf"]
        d["mdvis_cap"] = d["mdvis"].clip(upper=15)
        return d[[*qi, "mdvis_cap", "hlthp"]].reset_index(drop=True), qi, ["mdvis_cap", "hlthp"]
    raise KeyError(name)
