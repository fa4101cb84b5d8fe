"""Noise shares (what a custodian calls) and post-processing (what the requester calls)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.dp._engine import opendp
from tessera.dp.plan import Aggregate, ReleasePlan
from tessera.errors import InputError

__all__ = ["Release", "postprocess", "sample_noise_share"]

Interval = tuple[float, float]
_INF = math.inf


def sample_noise_share(plan: ReleasePlan, cells: int | None = None) -> npt.NDArray[np.int64]:
    """This custodian's noise: int64 array ``[len(plan.statistics), cells]``.

    Row ``i`` is for ``plan.statistics[i]``; each entry is an independent discrete
    Gaussian ``N_Z(0, share_sigma^2)`` drawn by OpenDP's exact sampler (no floating
    point on the sampled values).  Rows of statistics without noise are zero.
    """
    cells = plan.cells if cells is None else cells
    if cells < 1:
        raise ValueError("cells must be >= 1")
    out = np.zeros((len(plan.statistics), cells), dtype=np.int64)
    if not plan.is_private:
        return out
    dp = opendp()
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64")
    zeros = [0] * cells
    for row, stat in enumerate(plan.statistics):
        if stat.noisy:
            meas = dp.m.make_gaussian(*space, scale=stat.share_sigma)
            out[row] = np.asarray(meas(zeros), dtype=np.int64)
    return out


@dataclass(frozen=True)
class Release:
    """Released values per cell and aggregate, with intervals and the guarantee.

    ``rows[c][j]`` is aggregate ``j`` of cell ``c`` (None when the cell is suppressed);
    ``intervals[c][j]`` its interval (None without DP): for one cell all intervals hold
    together with probability >= ``plan.confidence`` (noise only; clamping to the
    schema bounds is part of the query's definition).
    """

    columns: list[str]
    rows: list[list[float | None]]
    intervals: list[list[Interval | None]]
    suppressed: list[bool]
    plan: ReleasePlan

    def privacy(self, budget_remaining: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The JSON ``privacy`` object (docs/dp.md), or None for an exact release."""
        plan = self.plan
        if not plan.is_private:
            return None
        return {
            "mechanism": plan.mechanism,
            "accounting": "zCDP",
            "neighbouring": "add or remove one person (one row per person)",
            "rho": plan.rho,
            "epsilon": plan.epsilon,
            "delta": plan.delta,
            "requested_epsilon": plan.requested_epsilon,
            "charged_rho": plan.charge_rho,
            "custodians": plan.custodians,
            "threshold": plan.threshold,
            "honest_custodians_needed": plan.honest,
            "confidence": plan.confidence,
            "min_group_size": plan.min_group_size,
            "columns": [
                {
                    "column": name,
                    "intervals": [
                        None if row[j] is None else list(row[j])  # type: ignore[arg-type]
                        for row in self.intervals
                    ],
                }
                for j, name in enumerate(self.columns)
            ],
            "statistics": [
                {
                    "statistic": s.key,
                    "sensitivity": s.sensitivity,
                    "share_sigma": s.share_sigma,
                    "rho": s.rho,
                    "half_width": s.half_width,
                }
                for s in plan.statistics
            ],
            "suppressed_cells": [i for i, flag in enumerate(self.suppressed) if flag],
            "budget_remaining": dict(budget_remaining) if budget_remaining else None,
        }


def _div(a: Interval, b: Interval) -> Interval:
    corners = [x / y for x in a for y in b]
    return min(corners), max(corners)


def _clip(iv: Interval, lo: float, hi: float) -> Interval:
    return min(max(iv[0], lo), hi), max(min(iv[1], hi), lo)


class _Cell:
    """One cell's statistics as values with intervals."""

    def __init__(self, plan: ReleasePlan, values: Mapping[str, int]) -> None:
        self.values = values
        self.stats = {s.key: s for s in plan.statistics}
        self.private = plan.is_private

    def get(self, key: str) -> tuple[float, Interval]:
        value = float(self.values[key])
        h = self.stats[key].half_width
        return value, (value - h, value + h)

    def count(self, key: str) -> tuple[float, Interval]:
        value, (lo, hi) = self.get(key)
        return max(value, 0.0), (max(lo, 0.0), max(hi, 0.0))

    def aggregate(self, agg: Aggregate) -> tuple[float | None, Interval | None]:
        scale = float(agg.scale)
        lo_b, hi_b = agg.lower / scale, agg.upper / scale
        if agg.func in ("min", "max"):
            return float(self.values[f"{agg.func}:{agg.column}"]) / scale, None
        if agg.func == "count":
            return self.count(agg.count_key())
        s, s_iv = self.get(f"sum:{agg.column}")
        if agg.func == "sum":
            return s / scale, (s_iv[0] / scale, s_iv[1] / scale)
        c, c_iv = self.count(agg.count_key())
        if agg.func == "avg":
            mean = None if c < 1 else min(max(s / c, agg.lower), agg.upper) / scale
            if c_iv[0] < 1:
                return mean, (lo_b, hi_b)
            avg = _clip(_div(s_iv, c_iv), agg.lower, agg.upper)
            return mean, (avg[0] / scale, avg[1] / scale)
        q, q_iv = self.get(f"sumsq:{agg.column}")
        # The clamped sample variance is at most (hi - lo)^2 / 2 for two or more rows.
        var_cap = (agg.upper - agg.lower) ** 2 / 2.0
        var = None if c < 2 else min(max((q - s * s / c) / (c - 1), 0.0), var_cap)
        if c_iv[0] <= 1:
            var_iv: Interval = (0.0, var_cap)
        else:
            s2 = (
                (0.0, max(s_iv[0] ** 2, s_iv[1] ** 2))
                if s_iv[0] <= 0 <= s_iv[1]
                else (min(s_iv[0] ** 2, s_iv[1] ** 2), max(s_iv[0] ** 2, s_iv[1] ** 2))
            )
            s2c = (s2[0] / c_iv[1], s2[1] / c_iv[0])
            num = (q_iv[0] - s2c[1], q_iv[1] - s2c[0])
            var_iv = _clip(_div(num, (c_iv[0] - 1, c_iv[1] - 1)), 0.0, var_cap)
        sq = scale * scale
        if agg.func == "variance":
            return (None if var is None else var / sq), (var_iv[0] / sq, var_iv[1] / sq)
        return (
            None if var is None else math.sqrt(var) / scale,
            (math.sqrt(var_iv[0]) / scale, math.sqrt(var_iv[1]) / scale),
        )


def _as_columns(
    plan: ReleasePlan, noisy: Mapping[str, Sequence[int] | npt.NDArray[Any]] | npt.NDArray[Any]
) -> dict[str, list[int]]:
    if isinstance(noisy, np.ndarray):
        if noisy.shape != (len(plan.statistics), plan.cells):
            raise InputError(
                f"expected statistics of shape {(len(plan.statistics), plan.cells)}, "
                f"got {noisy.shape}"
            )
        return {key: [int(v) for v in noisy[i]] for i, key in enumerate(plan.keys)}
    missing = [k for k in plan.keys if k not in noisy]
    if missing:
        raise InputError(f"missing statistics: {', '.join(missing)}")
    out = {k: [int(v) for v in noisy[k]] for k in plan.keys}
    if any(len(v) != plan.cells for v in out.values()):
        raise InputError(f"every statistic needs {plan.cells} cells")
    return out


def postprocess(
    plan: ReleasePlan,
    noisy: Mapping[str, Sequence[int] | npt.NDArray[Any]] | npt.NDArray[Any],
) -> Release:
    """Turn the revealed (noisy) statistics into the query's aggregates with intervals.

    ``noisy`` maps each statistic key to its per-cell integers (or is an array in
    ``plan.keys`` order).  Cells whose (noisy) row count is below the policy minimum are
    suppressed; under DP that decision only uses released numbers (post-processing).
    """
    columns = _as_columns(plan, noisy)
    rows: list[list[float | None]] = []
    intervals: list[list[Interval | None]] = []
    suppressed: list[bool] = []
    for c in range(plan.cells):
        cell = _Cell(plan, {k: v[c] for k, v in columns.items()})
        small = columns["count"][c] < plan.min_group_size
        suppressed.append(small)
        row: list[float | None] = []
        ivs: list[Interval | None] = []
        for agg in plan.aggregates:
            value, iv = (None, None) if small else cell.aggregate(agg)
            row.append(value)
            ivs.append(iv if plan.is_private else None)
        rows.append(row)
        intervals.append(ivs)
    return Release(
        columns=[a.name for a in plan.aggregates],
        rows=rows,
        intervals=intervals,
        suppressed=suppressed,
        plan=plan,
    )
