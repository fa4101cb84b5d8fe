"""``assess``: every risk measure of a table in one pass over its equivalence classes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from tessera.errors import InputError
from tessera.risk.classes import ClassTable, build_classes, combine_codes, encode_column
from tessera.risk.identifiers import IdentifierFinding, find_identifiers
from tessera.risk.privacy import DiversityProfile, diversity_profile, recursive_c
from tessera.risk.reident import ReidentificationRisk, reidentification_risk
from tessera.risk.uniqueness import UniquenessEstimate, estimate_uniqueness

__all__ = ["RiskReport", "WorstClass", "assess", "population_class_sizes"]


@dataclass(frozen=True)
class WorstClass:
    """One of the riskiest equivalence classes: its QI values and measures."""

    values: dict[str, Any]
    size: int
    distinct: int | None
    t: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready class summary."""
        return {"values": self.values, "size": self.size, "distinct": self.distinct, "t": self.t}


@dataclass(frozen=True)
class RiskReport:
    """What :func:`assess` measured; ``as_dict`` gives the ``risk assess --json`` shape."""

    rows: int
    qi: list[str]
    sensitive: str | None
    classes: int
    k_anonymity: int
    sample_uniques: int
    reidentification: ReidentificationRisk
    l_diversity: int | None = None
    entropy_l: float | None = None
    recursive_l: int | None = None
    recursive_c: float | None = None
    t_ordered: float | None = None
    t_equal: float | None = None
    t_variant: str | None = None
    delta: float | None = None
    uniqueness: UniquenessEstimate | None = None
    identifiers: list[IdentifierFinding] = field(default_factory=list)
    worst: list[WorstClass] = field(default_factory=list)
    class_size_histogram: dict[int, int] = field(default_factory=dict)

    @property
    def t_closeness(self) -> float | None:
        """t for the attribute's kind: ordered EMD for ordered data, equal EMD otherwise."""
        return self.t_ordered if self.t_variant == "ordered" else self.t_equal

    def as_dict(self) -> dict[str, Any]:
        """The ``risk assess`` JSON shape of docs/architecture.md, with more keys."""
        r = self.reidentification
        rec_c = self.recursive_c
        return {
            "rows": self.rows,
            "quasi_identifiers": self.qi,
            "sensitive": self.sensitive,
            "equivalence_classes": self.classes,
            "average_class_size": self.rows / self.classes,
            "k_anonymity": self.k_anonymity,
            "l_diversity": self.l_diversity,
            "entropy_l_diversity": self.entropy_l,
            "recursive_cl_diversity": None
            if self.recursive_l is None
            else {
                "l": self.recursive_l,
                "c": None if rec_c is None or math.isinf(rec_c) else rec_c,
                "smallest_integer_c": None
                if rec_c is None or math.isinf(rec_c)
                else math.floor(rec_c) + 1,
            },
            "t_closeness": self.t_closeness,
            "t_closeness_detail": None
            if self.t_variant is None
            else {"variant": self.t_variant, "ordered": self.t_ordered, "equal": self.t_equal},
            "delta_disclosure": self.delta,
            "prosecutor": r.prosecutor.as_dict(r.threshold),
            "journalist": r.journalist.as_dict(r.threshold) | {"model": r.population_model},
            "marketer": r.marketer,
            "sample_uniques": self.sample_uniques,
            "sample_uniqueness": self.sample_uniques / self.rows,
            "population_uniqueness": None if self.uniqueness is None else self.uniqueness.as_dict(),
            "direct_identifiers": [f.as_dict() for f in self.identifiers],
            "worst_classes": [w.as_dict() for w in self.worst],
            "class_size_histogram": {str(k): v for k, v in self.class_size_histogram.items()},
        }


def population_class_sizes(
    sample: pl.DataFrame, population: pl.DataFrame, qi: Sequence[str], table: ClassTable
) -> np.ndarray:
    """Size in ``population`` of every equivalence class of ``sample`` (same QIs)."""
    missing = [c for c in qi if c not in population.columns]
    if missing:
        raise InputError(f"population table lacks column(s): {', '.join(missing)}")
    try:
        both = pl.concat(
            [sample.select(qi), population.select(qi)], how="vertical_relaxed", rechunk=True
        )
    except (pl.exceptions.SchemaError, pl.exceptions.ComputeError) as exc:
        raise InputError("population table columns do not match the sample's types") from exc
    key, _ = combine_codes(
        [encode_column(both.get_column(c), ordered=False) for c in qi], both.height
    )
    skey, pkey = key[: sample.height], key[sample.height :]
    rep = skey[table.first_row]
    uniq, counts = np.unique(pkey, return_counts=True)
    pos = np.clip(np.searchsorted(uniq, rep), 0, max(uniq.size - 1, 0))
    found = uniq.size > 0
    sizes = np.where(found & (uniq[pos] == rep), counts[pos], 0) if found else np.zeros_like(rep)
    if np.any(sizes < table.sizes):
        raise InputError("the sample is not contained in the population table")
    return sizes.astype(np.int64)


def _worst(
    df: pl.DataFrame,
    qi: Sequence[str],
    table: ClassTable,
    prof: DiversityProfile | None,
    t: np.ndarray | None,
    limit: int,
) -> list[WorstClass]:
    if prof is not None and t is not None:
        order = np.lexsort((-t, prof.distinct, table.sizes))
    else:
        order = np.argsort(table.sizes, kind="stable")
    pick = order[:limit]
    rows = df.select(qi)[table.first_row[pick].tolist()].to_dicts()
    out = []
    for cls, values in zip(pick.tolist(), rows, strict=True):
        out.append(
            WorstClass(
                values=values,
                size=int(table.sizes[cls]),
                distinct=None if prof is None else int(prof.distinct[cls]),
                t=None if t is None else float(t[cls]),
            )
        )
    return out


def assess(
    df: pl.DataFrame,
    qi: Sequence[str],
    sensitive: str | None = None,
    *,
    population: int | None = None,
    population_table: pl.DataFrame | None = None,
    threshold: float = 0.2,
    recursive_l: int | None = None,
    worst: int = 5,
    detect_identifiers: bool = True,
) -> RiskReport:
    """Measure the re-identification and attribute-disclosure risk of ``df``.

    ``qi`` are the quasi-identifiers, ``sensitive`` the sensitive attribute (optional:
    without it only k-anonymity and re-identification risks are measured).  Give the
    population size (``population``) for uniqueness estimates and journalist risk, or
    the population itself (``population_table``) for exact journalist risk.
    """
    qi = list(qi)
    if not 0 < threshold <= 1:
        raise InputError("the risk threshold must be in (0, 1]")
    if population is not None and population < df.height:
        raise InputError(f"the population ({population}) is smaller than the sample ({df.height})")
    table = build_classes(df, qi, sensitive)
    pop_sizes = (
        population_class_sizes(df, population_table, qi, table)
        if population_table is not None
        else None
    )
    if population is None and population_table is not None:
        population = population_table.height
    reid = reidentification_risk(
        table.sizes, threshold=threshold, population=population, population_sizes=pop_sizes
    )
    vals, freq = np.unique(table.sizes, return_counts=True)
    hist = {int(v): int(c) for v, c in zip(vals[:20], freq[:20], strict=True)}
    sample_uniques = int(freq[vals == 1].sum())
    uniq = estimate_uniqueness(table.sizes, population) if population is not None else None
    ids = find_identifiers(df) if detect_identifiers else []
    if table.sensitive is None:
        return RiskReport(
            rows=table.n,
            qi=qi,
            sensitive=None,
            classes=table.num_classes,
            k_anonymity=int(table.sizes.min()),
            sample_uniques=sample_uniques,
            reidentification=reid,
            uniqueness=uniq,
            identifiers=ids,
            worst=_worst(df, qi, table, None, None, worst),
            class_size_histogram=hist,
        )
    prof = diversity_profile(table)
    l_distinct = int(prof.distinct.min())
    ell = l_distinct if recursive_l is None else recursive_l
    rec_c = float(recursive_c(table, ell).max()) if ell >= 1 else math.inf
    variant = "ordered" if table.sensitive.ordered else "equal"
    t = prof.t_ordered if variant == "ordered" else prof.t_equal
    return RiskReport(
        rows=table.n,
        qi=qi,
        sensitive=sensitive,
        classes=table.num_classes,
        k_anonymity=int(table.sizes.min()),
        sample_uniques=sample_uniques,
        reidentification=reid,
        l_diversity=l_distinct,
        entropy_l=float(np.exp(prof.entropy.min())),
        recursive_l=ell,
        recursive_c=rec_c,
        t_ordered=float(prof.t_ordered.max()),
        t_equal=float(prof.t_equal.max()),
        t_variant=variant,
        delta=float(prof.delta.max()),
        uniqueness=uniq,
        identifiers=ids,
        worst=_worst(df, qi, table, prof, t, worst),
        class_size_histogram=hist,
    )
