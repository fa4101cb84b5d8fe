"""Privacy workflow: plan a DP release from the custodians' policy, run it, post-process.

The secure SQL and recommendation sides integrate with one call::

    answer = run_private_query(
        policy=combined, aggregates=[...], cells=len(groups), custodians=env.n,
        threshold=env.mpc_threshold, epsilon=args.epsilon,
        execute=lambda plan: run_mpc_job(plan, ...), budget=lambda: remaining(...),
    )

``execute(plan)`` runs the MPC in which every custodian adds noise from the release
plan *it* derives from its own copy of the table's policy (a job whose plan differs is
refused) and returns the revealed statistics keyed by ``plan.keys``.  The budget is
reserved, committed or refunded by each custodian in its own ledger; the requester
keeps none (:mod:`tessera.workflows.custodian`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from tessera.dp import Aggregate, Policy, Release, ReleasePlan, plan_release, postprocess

__all__ = ["PrivateAnswer", "run_private_query"]

NoisyStatistics = Mapping[str, Sequence[int] | npt.NDArray[Any]] | npt.NDArray[Any]


@dataclass(frozen=True)
class PrivateAnswer:
    """A released answer: values, intervals, the plan, and what budget is left."""

    release: Release
    remaining: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def privacy(self) -> dict[str, Any] | None:
        """The ``privacy`` object of ``tessera query --json`` (None without DP)."""
        return self.release.privacy(self.remaining)

    @property
    def columns(self) -> list[str]:
        """Output column labels."""
        return self.release.columns

    @property
    def rows(self) -> list[list[float | None]]:
        """One row per cell (None where suppressed)."""
        return self.release.rows


def run_private_query(
    *,
    policy: Policy,
    aggregates: Sequence[Aggregate],
    cells: int,
    custodians: int,
    threshold: int,
    execute: Callable[[ReleasePlan], NoisyStatistics],
    epsilon: float | None = None,
    budget: Callable[[], dict[str, dict[str, float]]] | None = None,
) -> PrivateAnswer:
    """Plan the release under ``policy``, run ``execute(plan)``, post-process the result."""
    plan = plan_release(
        policy,
        aggregates,
        cells=cells,
        custodians=custodians,
        threshold=threshold,
        epsilon=epsilon,
    )
    noisy = execute(plan)
    release = postprocess(plan, noisy)
    return PrivateAnswer(release=release, remaining=budget() if budget else {})
