"""Anonymisation by generalisation and suppression, searched for the least information loss.

The search space is the generalisation lattice: one level per quasi-identifier, from
the raw values (0) to ``*``.  A node is *anonymous* when, after suppressing the records
of every equivalence class that violates the criteria (size < k, fewer than l distinct
sensitive values, EMD > t), no more than ``suppression_limit`` of the records are
suppressed.  These criteria are monotone under generalisation (a coarser node of an
anonymous one is anonymous), so the lattice is searched Flash-style
(:mod:`tessera.risk.lattice`: binary search along paths, tagging by closure in both
directions, ARX's predictive tagging); only minimal anonymous nodes are candidates,
and the candidate with the least loss wins.  (With t-closeness the monotonicity is an
approximation, as in ARX.)

Utility metrics of the chosen node:

* **loss** (Iyengar's loss metric, ARX "Loss"): per record and attribute
  ``(g - 1)/(|D| - 1)`` where g is the number of distinct original values generalised
  to the same label and |D| the attribute's number of distinct values; suppressed
  records count 1; averaged over records and attributes (0 = raw, 1 = everything ``*``).
* **discernibility**: ``sum |E|^2`` over kept classes ``+ suppressed * n``.
* **average class size** of the kept records.

Suppressed records are removed from the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from tessera.errors import InputError, PolicyError
from tessera.risk.classes import (
    ClassTable,
    SensitiveHistograms,
    combine_codes,
    encode_column,
    group_keys,
    histograms_from_codes,
)
from tessera.risk.hierarchy import Hierarchy
from tessera.risk.lattice import search
from tessera.risk.privacy import distinct_values, t_closeness_equal, t_closeness_ordered

__all__ = ["AnonymizationResult", "Criteria", "anonymize"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_MAX_LATTICE = 2_000_000


@dataclass(frozen=True)
class Criteria:
    """Privacy criteria every kept equivalence class must meet."""

    k: int
    l: int | None = None  # noqa: E741 - the model's name
    t: float | None = None
    suppression_limit: float = 0.05

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InputError("k must be at least 1")
        if self.l is not None and self.l < 1:
            raise InputError("l must be at least 1")
        if self.t is not None and not 0 <= self.t <= 1:
            raise InputError("t must be in [0, 1]")
        if not 0 <= self.suppression_limit <= 1:
            raise InputError("the suppression limit must be in [0, 1]")


@dataclass(frozen=True)
class AnonymizationResult:
    """The chosen generalisation, its output table and utility metrics."""

    data: pl.DataFrame
    levels: dict[str, int]
    labels: dict[str, str]
    rows_in: int
    suppressed: int
    classes: int
    k: int
    l: int | None  # noqa: E741
    t: float | None
    loss: float
    discernibility: float
    average_class_size: float
    nodes_evaluated: int
    lattice_size: int
    complete: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the table itself is written separately)."""
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_in - self.suppressed,
            "suppressed": self.suppressed,
            "levels": self.levels,
            "generalisation": self.labels,
            "equivalence_classes": self.classes,
            "k_anonymity": self.k,
            "l_diversity": self.l,
            "t_closeness": self.t,
            "utility": {
                "loss": self.loss,
                "discernibility": self.discernibility,
                "average_class_size": self.average_class_size,
            },
            "search": {
                "nodes_evaluated": self.nodes_evaluated,
                "lattice_size": self.lattice_size,
                "complete": self.complete,
            },
        }


@dataclass(frozen=True)
class _Column:
    name: str
    hierarchy: Hierarchy
    row_codes: IntArray  # per row: index of its distinct value
    level_codes: list[IntArray]  # per level: code of every distinct value
    level_card: list[int]
    level_loss: list[FloatArray]  # per level: loss of every distinct value

    def describe(self, level: int) -> str:
        if level == 0:
            return "original"
        if level == self.hierarchy.height - 1:
            return "*"
        step = self.hierarchy.steps[level - 1]
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if isinstance(step, dict):
            return f"category level {level}"
        return f"{self.hierarchy.kind} {step}"


def _column(df: pl.DataFrame, name: str, hierarchy: Hierarchy) -> _Column:
    series = df.get_column(name)
    row_codes, card = encode_column(series)
    distinct = series.unique().sort(nulls_last=False)
    codes, cards, losses = [], [], []
    for level in range(hierarchy.height):
        lab = hierarchy.generalise(distinct, level)
        c, cc = encode_column(lab)
        group = np.bincount(c, minlength=cc)[c]
        codes.append(c)
        cards.append(cc)
        losses.append((group - 1) / max(card - 1, 1))
    return _Column(name, hierarchy, row_codes, codes, cards, losses)


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    kept: BoolArray
    sizes: IntArray
    keep_class: BoolArray
    loss: float
    discernibility: float
    k: int
    l: int | None  # noqa: E741
    t: float | None


class _Evaluator:
    def __init__(
        self, columns: list[_Column], criteria: Criteria, sens: tuple[IntArray, int, bool] | None
    ) -> None:
        self.columns = columns
        self.criteria = criteria
        self.sens = sens
        self.n = columns[0].row_codes.size

    def evaluate(self, node: Sequence[int]) -> _Outcome:
        n, c = self.n, self.criteria
        parts = [
            (col.level_codes[lv][col.row_codes], col.level_card[lv])
            for col, lv in zip(self.columns, node, strict=True)
        ]
        key, card = combine_codes(parts, n)
        inverse, sizes, first = group_keys(key, card)
        good = sizes >= c.k
        distinct: IntArray | None = None
        tvals: FloatArray | None = None
        if self.sens is not None and (c.l is not None or c.t is not None):
            codes, m, ordered = self.sens
            hist: SensitiveHistograms = histograms_from_codes(inverse, codes, m, [], ordered)
            table = ClassTable(n, inverse, sizes, first, hist)
            if c.l is not None:
                distinct = distinct_values(table)
                good &= distinct >= c.l
            if c.t is not None:
                tvals = t_closeness_ordered(table) if ordered else t_closeness_equal(table)
                good &= tvals <= c.t + 1e-12
        suppressed = int(sizes[~good].sum())
        kept = good[inverse]
        ok = suppressed <= c.suppression_limit * n and suppressed < n
        loss_sum = float(suppressed) * len(self.columns)
        for col, lv in zip(self.columns, node, strict=True):
            loss_sum += float(col.level_loss[lv][col.row_codes[kept]].sum())
        kept_sizes = sizes[good]
        disc = float(np.sum(kept_sizes.astype(np.float64) ** 2)) + float(suppressed) * n
        return _Outcome(
            ok=ok,
            kept=kept,
            sizes=sizes,
            keep_class=good,
            loss=loss_sum / (n * len(self.columns)),
            discernibility=disc,
            k=int(kept_sizes.min()) if kept_sizes.size else 0,
            l=None if distinct is None or not good.any() else int(distinct[good].min()),
            t=None if tvals is None or not good.any() else float(tvals[good].max()),
        )


def anonymize(
    df: pl.DataFrame,
    qi: Sequence[str],
    criteria: Criteria,
    hierarchies: Mapping[str, Hierarchy],
    *,
    sensitive: str | None = None,
    max_nodes: int = 5000,
) -> AnonymizationResult:
    """Generalise and suppress ``df`` to meet ``criteria`` with the least loss."""
    qi = list(qi)
    missing = [c for c in [*qi, *([sensitive] if sensitive else [])] if c not in df.columns]
    if missing:
        raise InputError(f"unknown column(s): {', '.join(missing)}")
    if (criteria.l is not None or criteria.t is not None) and sensitive is None:
        raise InputError("l-diversity and t-closeness need a sensitive column (--sensitive)")
    if df.height == 0:
        raise InputError("the table has no rows")
    columns = [_column(df, c, hierarchies.get(c) or Hierarchy(c, "suppress", ())) for c in qi]
    sens = None
    if sensitive is not None:
        s = df.get_column(sensitive)
        codes, m = encode_column(s)
        sens = (codes, m, s.dtype.is_numeric() or s.dtype.is_temporal())
    heights = [col.hierarchy.height for col in columns]
    size = int(np.prod(heights))
    if size > _MAX_LATTICE:
        raise InputError(f"the generalisation lattice has {size} nodes; use fewer levels")
    ev = _Evaluator(columns, criteria, sens)

    def judge(node: tuple[int, ...]) -> tuple[bool, tuple[float, float]]:
        out = ev.evaluate(node)
        return out.ok, (out.loss, out.discernibility)

    found = search(heights, judge, max_evaluations=max_nodes)
    if not found.minimal:
        raise PolicyError(
            "no generalisation meets the criteria within the suppression limit"
            + ("" if found.complete else f" (search stopped after {max_nodes} nodes)")
        )
    node = min(found.minimal, key=lambda item: (item[1], item[0]))[0]
    out = ev.evaluate(node)
    data = _materialise(df, columns, node, out.kept)
    kept_n = int(out.kept.sum())
    return AnonymizationResult(
        data=data,
        levels={col.name: lv for col, lv in zip(columns, node, strict=True)},
        labels={col.name: col.describe(lv) for col, lv in zip(columns, node, strict=True)},
        rows_in=df.height,
        suppressed=df.height - kept_n,
        classes=int(out.keep_class.sum()),
        k=out.k,
        l=out.l,
        t=out.t,
        loss=out.loss,
        discernibility=out.discernibility,
        average_class_size=kept_n / max(int(out.keep_class.sum()), 1),
        nodes_evaluated=found.evaluated,
        lattice_size=size,
        complete=found.complete,
    )


def _materialise(
    df: pl.DataFrame, columns: list[_Column], node: Sequence[int], kept: BoolArray
) -> pl.DataFrame:
    out = df.filter(pl.Series(kept))
    for col, lv in zip(columns, node, strict=True):
        if lv == 0:
            continue
        series = out.get_column(col.name)
        out = out.with_columns(col.hierarchy.generalise(series, lv).alias(col.name))
    return out
