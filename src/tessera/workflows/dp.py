"""Privacy workflows: table policies, budgets, and charge -> run -> commit/refund.

The secure SQL side integrates with one call::

    answer = run_private_query(
        open_ledger(home), tables=["cohort"], researcher="alice",
        aggregates=[Aggregate("count"), Aggregate("avg", "age", 0, 120)],
        cells=len(groups), custodians=env.n, threshold=env.mpc_threshold,
        epsilon=args.epsilon, execute=lambda plan: run_mpc_job(plan, ...),
    )

``execute(plan)`` runs the MPC in which every node adds
``sample_noise_share(plan)`` (a node rebuilds the plan with ``ReleasePlan.from_dict``)
and returns the revealed statistics keyed by ``plan.keys``.  The budget is reserved
before ``execute`` runs (a refusal raises BudgetExhaustedError and nothing runs),
refunded when ``execute`` raises, committed as soon as it returns.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from tessera.dp import (
    Aggregate,
    Balance,
    Ledger,
    Policy,
    Release,
    ReleasePlan,
    plan_release,
    postprocess,
)
from tessera.errors import NotFoundError

__all__ = [
    "LEDGER_NAME",
    "PrivateAnswer",
    "budget_report",
    "combined_policy",
    "current_researcher",
    "ledger_path",
    "open_ledger",
    "run_private_query",
    "set_table_policy",
]

LEDGER_NAME = "privacy-ledger.sqlite3"

NoisyStatistics = Mapping[str, Sequence[int] | npt.NDArray[Any]] | npt.NDArray[Any]


def ledger_path(home: Path) -> Path:
    """Where the gateway keeps policies and budgets: ``HOME/gateway/privacy-ledger.sqlite3``."""
    return Path(home) / "gateway" / LEDGER_NAME


def open_ledger(home: Path) -> Ledger:
    """The environment's ledger (created on first use)."""
    return Ledger(ledger_path(home))


def current_researcher(explicit: str | None = None) -> str:
    """The researcher budgets are charged to: explicit, $TESSERA_RESEARCHER, else the user."""
    if explicit:
        return explicit
    return os.environ.get("TESSERA_RESEARCHER") or getpass.getuser()


def set_table_policy(ledger: Ledger, table: str, policy: Policy) -> Policy:
    """Store ``table``'s policy and return it."""
    ledger.set_policy(table, policy)
    return policy


def combined_policy(ledger: Ledger, tables: Sequence[str]) -> Policy:
    """The policy a query over ``tables`` runs under: the strictest of theirs.

    Tables without a policy release exactly (``Policy.none()``).
    """
    policies = [ledger.policy(t) or Policy.none() for t in tables]
    if not policies:
        raise ValueError("a query needs at least one table")
    min_group = max(p.min_group_size for p in policies)
    private = [p for p in policies if p.is_private]
    if not private:
        return Policy.none(min_group_size=min_group)
    caps = [p.max_epsilon for p in private if p.max_epsilon is not None]
    return Policy(
        mode="dp",
        total_rho=min(p.total_rho for p in private if p.total_rho is not None),
        researcher_rho=min(
            (p.researcher_rho for p in private if p.researcher_rho is not None), default=None
        ),
        default_epsilon=min(p.default_epsilon for p in private),
        max_epsilon=min(caps) if caps else None,
        delta=min(p.delta for p in private),
        min_group_size=min_group,
    )


@dataclass(frozen=True)
class PrivateAnswer:
    """A released answer: values, intervals, the plan, and the JSON privacy object."""

    release: Release
    budget: list[Balance]

    @property
    def privacy(self) -> dict[str, Any] | None:
        """The ``privacy`` object of ``tessera query --json`` (None without DP)."""
        remaining = {
            b.table: {"rho": b.remaining_rho, "epsilon": b.remaining_epsilon} for b in self.budget
        }
        return self.release.privacy(remaining)

    @property
    def columns(self) -> list[str]:
        """Output column labels."""
        return self.release.columns

    @property
    def rows(self) -> list[list[float | None]]:
        """One row per cell (None where suppressed)."""
        return self.release.rows


def run_private_query(
    ledger: Ledger,
    *,
    tables: Sequence[str],
    researcher: str,
    aggregates: Sequence[Aggregate],
    cells: int,
    custodians: int,
    threshold: int,
    execute: Callable[[ReleasePlan], NoisyStatistics],
    epsilon: float | None = None,
    note: str = "",
) -> PrivateAnswer:
    """Plan, reserve the budget, run ``execute(plan)``, commit (or refund on failure)."""
    policy = combined_policy(ledger, tables)
    plan = plan_release(
        policy,
        aggregates,
        cells=cells,
        custodians=custodians,
        threshold=threshold,
        epsilon=epsilon,
    )
    reservation = ledger.reserve(tables, researcher, plan.charge_rho, note=note)
    try:
        noisy = execute(plan)
    except BaseException:
        ledger.refund(reservation)
        raise
    # Once execute returned, the result exists outside the MPC: the charge is final.
    ledger.commit(reservation)
    release = postprocess(plan, noisy)
    budget = [ledger.balance(t, researcher) for t in reservation.tables]
    return PrivateAnswer(release=release, budget=budget)


def budget_report(
    ledger: Ledger, table: str | None = None, researcher: str | None = None
) -> list[Balance]:
    """Balances of ``table`` (or of every DP table), optionally for one researcher."""
    if table is not None:
        if ledger.policy(table) is None:
            raise NotFoundError(f"table {table!r} has no privacy policy")
        names = [table]
    else:
        names = [name for name, p in ledger.policies().items() if p.is_private]
    return [ledger.balance(name, researcher) for name in names]
