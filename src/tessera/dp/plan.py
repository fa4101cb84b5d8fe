"""Planning a release: which integer statistics the MPC computes and how much noise each gets.

A query's aggregates (COUNT, SUM, AVG, VARIANCE, STDDEV per group) are answered from
a few integer *statistics* per cell: ``count`` (rows), ``count:COL`` (non-null rows of a
nullable column), ``sum:COL`` and ``sumsq:COL`` over values clamped to the schema
bounds, in the MPC's integer encoding (fixed-point decimals are integers ``value *
scale``).  Each custodian adds one noise share per statistic and cell before anything
is revealed; AVG, VARIANCE and STDDEV are post-processing (:mod:`tessera.dp.release`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from tessera.dp.accounting import (
    distributed_gaussian_rho,
    epsilon_for_rho,
    solve_share_sigma,
    subgaussian_half_width,
)
from tessera.dp.policy import Policy
from tessera.errors import InputError, UnsupportedError

__all__ = [
    "PLAN_VERSION",
    "Aggregate",
    "ReleasePlan",
    "Statistic",
    "plan_release",
]

PLAN_VERSION = 1
AggregateFunc = Literal["count", "sum", "avg", "variance", "stddev", "min", "max"]
StatisticKind = Literal["count", "sum", "sum_squares", "min", "max"]
_DP_FUNCS = ("count", "sum", "avg", "variance", "stddev")
_ALL_FUNCS = (*_DP_FUNCS, "min", "max")


@dataclass(frozen=True)
class Aggregate:
    """One output column: ``func(column)`` with the column's clamp bounds.

    ``lower``/``upper`` are the schema bounds in the MPC's integer encoding and
    ``scale`` the integer units per 1.0 (1 for integers, 10**digits for fixed-point).
    ``column=None`` with ``func="count"`` is COUNT(*).  ``nullable`` columns get their
    own non-null count for COUNT(col), AVG, VARIANCE and STDDEV.
    """

    func: AggregateFunc
    column: str | None = None
    lower: int = 0
    upper: int = 0
    scale: int = 1
    nullable: bool = False
    label: str | None = None
    #: How many records one person can move in or out of the aggregated rows: 1 for SQL
    #: (a person is in or out), 2 for k-nearest-neighbour aggregates (one person entering
    #: the k nearest pushes one out).  Every statistic's sensitivity is multiplied by the
    #: largest factor among the release's aggregates.
    sensitivity_factor: int = 1

    def __post_init__(self) -> None:
        if self.func not in _ALL_FUNCS:
            raise UnsupportedError(f"aggregate {self.func!r} is not supported")
        if self.column is None and self.func != "count":
            raise ValueError(f"{self.func} needs a column")
        if self.lower > self.upper:
            raise ValueError(f"bounds of {self.column}: lower {self.lower} > upper {self.upper}")
        if self.scale < 1:
            raise ValueError("scale must be >= 1")
        if self.sensitivity_factor < 1:
            raise ValueError("sensitivity_factor must be >= 1")

    @property
    def name(self) -> str:
        """The output column label, e.g. ``avg(age)`` or ``count(*)``."""
        return self.label or f"{self.func}({self.column or '*'})"

    def count_key(self) -> str:
        """The statistic that counts this aggregate's rows."""
        return f"count:{self.column}" if self.nullable and self.column else "count"


@dataclass(frozen=True)
class Statistic:
    """One integer statistic per cell, with its clamp bounds and noise."""

    key: str
    kind: StatisticKind
    column: str | None
    lower: int
    upper: int
    sensitivity: int
    share_sigma: float = 0.0
    #: The L2 change of this statistic's cell vector (``sensitivity`` is the L1 change);
    #: None when they are equal (one person, one cell).
    l2_sensitivity: float | None = None
    rho: float = 0.0
    half_width: float = 0.0

    @property
    def noisy(self) -> bool:
        """True when custodians add noise to this statistic."""
        return self.share_sigma > 0


@dataclass(frozen=True)
class ReleasePlan:
    """Everything custodians and the requester need to release one query.

    ``rho`` is the guarantee the honest custodians' noise alone gives (zCDP, adding or
    removing one person); ``charge_rho`` what the ledger charges (>= ``rho``);
    ``epsilon`` the (epsilon, ``delta``)-DP that ``rho`` implies.
    """

    mechanism: str
    cells: int
    custodians: int
    threshold: int
    statistics: tuple[Statistic, ...]
    aggregates: tuple[Aggregate, ...]
    min_group_size: int
    confidence: float = 0.95
    rho: float = 0.0
    charge_rho: float = 0.0
    epsilon: float = 0.0
    delta: float = 0.0
    requested_epsilon: float | None = None
    version: int = PLAN_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_private(self) -> bool:
        """True when the release carries DP."""
        return self.mechanism != "none"

    @property
    def honest(self) -> int:
        """How many custodians' noise the guarantee rests on (n - t)."""
        return self.custodians - self.threshold

    @property
    def keys(self) -> tuple[str, ...]:
        """Statistic keys, in the order of :func:`sample_noise_share`'s rows."""
        return tuple(s.key for s in self.statistics)

    def check(self, *, rho: float | None = None, epsilon: float | None = None) -> bool:
        """True when the plan's guarantee is within ``rho`` and/or ``epsilon`` (OpenDP style)."""
        ok = True
        if rho is not None:
            ok = ok and self.rho <= rho
        if epsilon is not None:
            ok = ok and (not self.is_private or self.epsilon <= epsilon)
        return ok

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what a node receives inside a signed job)."""
        doc = asdict(self)
        doc["statistics"] = [asdict(s) for s in self.statistics]
        doc["aggregates"] = [asdict(a) for a in self.aggregates]
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ReleasePlan:
        """Inverse of :meth:`to_dict`; InputError when malformed."""
        try:
            if int(doc["version"]) != PLAN_VERSION:
                raise InputError(f"unsupported release plan version {doc['version']!r}")
            fields = dict(doc)
            fields["statistics"] = tuple(Statistic(**s) for s in doc["statistics"])
            fields["aggregates"] = tuple(Aggregate(**a) for a in doc["aggregates"])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a valid release plan: {exc}") from None


def _statistics_for(aggregates: Sequence[Aggregate], private: bool) -> list[Statistic]:
    stats: dict[str, Statistic] = {"count": Statistic("count", "count", None, 0, 1, 1)}

    def add(stat: Statistic) -> None:
        known = stats.get(stat.key)
        if known is not None and (known.lower, known.upper) != (stat.lower, stat.upper):
            raise ValueError(f"column {stat.column} given with two different bounds")
        stats.setdefault(stat.key, stat)

    for agg in aggregates:
        if private and agg.func not in _DP_FUNCS:
            raise UnsupportedError(
                f"{agg.func.upper()} cannot be released under differential privacy"
            )
        col, lo, hi = agg.column, agg.lower, agg.upper
        if agg.func in ("min", "max"):
            add(Statistic(f"{agg.func}:{col}", agg.func, col, lo, hi, 0))
            continue
        if agg.column is not None and agg.func != "sum":
            key = agg.count_key()
            if key != "count":
                add(Statistic(key, "count", col, 0, 1, 1))
        if agg.func in ("sum", "avg", "variance", "stddev"):
            add(Statistic(f"sum:{col}", "sum", col, lo, hi, max(abs(lo), abs(hi))))
        if agg.func in ("variance", "stddev"):
            top = max(lo * lo, hi * hi)
            bottom = 0 if lo <= 0 <= hi else min(lo * lo, hi * hi)
            add(Statistic(f"sumsq:{col}", "sum_squares", col, bottom, top, top))
    factor = max(agg.sensitivity_factor for agg in aggregates)
    return [_moved(s, factor) for s in stats.values()]


def _moved(stat: Statistic, factor: int) -> Statistic:
    """``stat`` when one person can move ``factor`` records in or out.

    For 2 (k nearest: one record in, one out) the change touches at most two cells:
    in two cells each moves by at most ``sensitivity`` (L1 ``2 D``, L2 ``sqrt(2) D``),
    in one cell by at most ``upper - lower``.  Other factors: ``factor * D`` for both.
    """
    if factor == 1:
        return stat
    l1 = stat.sensitivity * factor
    l2 = float(l1)
    if factor == 2:
        l2 = min(l2, max(math.sqrt(2.0) * stat.sensitivity, float(stat.upper - stat.lower)))
    return replace(stat, sensitivity=l1, l2_sensitivity=None if l2 == l1 else l2)


def plan_release(
    policy: Policy,
    aggregates: Sequence[Aggregate],
    *,
    cells: int,
    custodians: int,
    threshold: int,
    epsilon: float | None = None,
    confidence: float = 0.95,
) -> ReleasePlan:
    """Plan a release of ``aggregates`` over ``cells`` groups by ``custodians`` nodes.

    Under a DP policy the query's rho (from ``epsilon``, default the policy's) is split
    evenly over the noisy statistics; each custodian's share sigma is the smallest for
    which any ``custodians - threshold`` honest shares alone meet that rho (KLS21 bound,
    :mod:`tessera.dp.accounting`).  Each statistic's half-width holds for the sum of all
    ``custodians`` shares, at a level chosen so all statistics of one cell hold together
    with probability >= ``confidence``.
    """
    if cells < 1:
        raise ValueError("cells must be >= 1")
    if not 0 <= threshold < custodians:
        raise ValueError("need 0 <= threshold < custodians")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    if not aggregates:
        raise ValueError("nothing to release")
    stats = _statistics_for(aggregates, policy.is_private)
    base: dict[str, Any] = {
        "cells": cells,
        "custodians": custodians,
        "threshold": threshold,
        "aggregates": tuple(aggregates),
        "min_group_size": policy.min_group_size,
        "confidence": confidence,
    }
    if not policy.is_private:
        return ReleasePlan(mechanism="none", statistics=tuple(stats), **base)
    charge = policy.query_rho(epsilon)
    honest = custodians - threshold
    per_stat = charge / len(stats)
    beta = (1.0 - confidence) / len(stats)  # union bound over the statistics of a cell
    planned = []
    for stat in stats:
        l2 = stat.l2_sensitivity
        sigma = solve_share_sigma(stat.sensitivity, per_stat, honest, cells, l2=l2)
        planned.append(
            Statistic(
                **{
                    **asdict(stat),
                    "share_sigma": sigma,
                    "rho": distributed_gaussian_rho(stat.sensitivity, sigma, honest, cells, l2=l2),
                    "half_width": subgaussian_half_width(sigma, custodians, 1.0 - beta),
                }
            )
        )
    rho = math.fsum(s.rho for s in planned)  # zCDP composes by addition
    return ReleasePlan(
        mechanism="distributed discrete Gaussian",
        statistics=tuple(planned),
        rho=rho,
        charge_rho=max(charge, rho),
        epsilon=epsilon_for_rho(rho, policy.delta),
        delta=policy.delta,
        requested_epsilon=policy.default_epsilon if epsilon is None else epsilon,
        **base,
    )
