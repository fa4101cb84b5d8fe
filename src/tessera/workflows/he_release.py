"""Release decrypted HE aggregates through the DP layer: ``tessera he decrypt --release``.

The key set's owner decrypts exact aggregates of their own data; what they *release* to
others from a table with a policy goes through :mod:`tessera.dp`, exactly as a secure
SQL answer does: the same policy (read from the custodians, who hold the steward's
signed copy), the same statistics (``count``, ``sum:C``, ``sumsq:C`` in the table's
integer units, the sensitivities from the policy's confirmed bounds), the same discrete
Gaussian from OpenDP's exact sampler (here drawn by the releasing client alone: one
party, nobody to collude with), the same post-processing with 95 % intervals.

**What is enforced where.**  The custodians never see an HE job (the data went from its
owner to the untrusted server), so they cannot charge it.  The budget is charged in the
releasing client's own ledger, ``HOME/he/budget.sqlite3`` (:class:`tessera.dp.Ledger`):
its allowance is the table's total (and the researcher's share) *minus what the
custodians report already spent* on SQL releases, so HE releases never take the table
past its total from what the custodians know.  The converse is not enforced: the
custodians do not see HE spending.  The owner of the data can decrypt exact values
anyway (it is their data); the policy governs what they release.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from tessera.config import Environment
from tessera.dp import (
    Aggregate,
    Ledger,
    Policy,
    Release,
    ReleasePlan,
    plan_release,
    postprocess,
    sample_noise_share,
)
from tessera.errors import BudgetExhaustedError, PolicyError, UsageError
from tessera.he.results import unit_statistics
from tessera.workflows.he import DecryptedResult
from tessera.workflows.policies import effective_policies, node_budgets

__all__ = ["LEDGER", "release", "release_with"]

LEDGER = "he/budget.sqlite3"
_FUNCS = {"sum": ("sum",), "mean": ("avg",), "variance": ("avg", "variance")}


def _aggregates(
    kind: str, columns: list[dict[str, Any]], chosen: list[str], policy: Policy
) -> list[Aggregate]:
    if kind not in _FUNCS:
        raise PolicyError(
            f"a {kind} result cannot be released under the table's privacy policy "
            "(sum, mean and variance can)"
        )
    by_name = {str(c["name"]): c for c in columns}
    out = [Aggregate("count")]
    for name in chosen:
        col = by_name[name]
        lo, hi = int(col["lo_units"]), int(col["hi_units"])
        if policy.is_private and col["kind"] != "boolean":
            bound = policy.bound(name)
            if bound is None:
                raise PolicyError(
                    f"column {name} has no confirmed bounds in the table's policy: no DP release"
                )
            if not (bound[0] <= lo and hi <= bound[1]):
                raise PolicyError(
                    f"column {name} was encrypted with bounds wider than the policy's: refused"
                )
            lo, hi = bound
        for func in _FUNCS[kind]:
            out.append(Aggregate(func, name, lo, hi, int(col["scale"])))  # type: ignore[arg-type]
    return out


def release_with(
    ledger_path: Path,
    policy: Policy,
    decrypted: DecryptedResult,
    researcher: str,
    *,
    epsilon: float | None = None,
    custodians_spent: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    """Release ``decrypted`` under ``policy``; ``custodians_spent`` is (table spent,
    researcher spent) rho as the custodians report it."""
    info = decrypted.info
    table = info.table
    if table is None or info.columns is None:
        raise UsageError(
            "the data was encrypted without --table: no policy applies to it; "
            "decrypt without --release"
        )
    if policy.grants is not None and researcher not in policy.grants:
        raise PolicyError(f"{researcher} is not granted table {table}")
    if policy.approval_required or policy.output_checks is not None:
        raise PolicyError(
            f"table {table}'s policy requires approval or output checks, which the custodians "
            "enforce on secure SQL only: release through tessera request"
        )
    job = decrypted.result.job
    chosen = list(job.columns) or [str(c["name"]) for c in info.columns]
    aggregates = _aggregates(job.kind, info.columns, chosen, policy)
    plan = plan_release(policy, aggregates, cells=1, custodians=1, threshold=0, epsilon=epsilon)
    stats = unit_statistics(decrypted.opened.reduced, info.columns, info.layout.rows)
    exact = {key: np.asarray([stats[key]], dtype=np.int64) for key in plan.keys}
    remaining: dict[str, dict[str, float]] = {}
    if not plan.is_private:
        released = postprocess(plan, exact)
    else:
        allowance = _allowance(policy, custodians_spent, table)
        released, remaining = _noisy(ledger_path, allowance, plan, exact, table, researcher, job)
    values = released.rows[0]
    intervals = released.intervals[0]
    return {
        "table": table,
        "kind": job.kind,
        "columns": released.columns,
        "values": values,
        "intervals": [None if iv is None else list(iv) for iv in intervals],
        "suppressed": released.suppressed[0],
        "privacy": released.privacy(remaining),
    }


def _noisy(
    ledger_path: Path,
    allowance: Policy,
    plan: ReleasePlan,
    exact: dict[str, Any],
    table: str,
    researcher: str,
    job: Any,
) -> tuple[Release, dict[str, dict[str, float]]]:
    """Charge the ledger, add the noise, post-process; the release and what is left."""
    ledger = Ledger(ledger_path)
    try:
        ledger.set_policy(table, allowance)
        reservation = ledger.reserve(table, researcher, plan.charge_rho, note=job.digest)
        noise = sample_noise_share(plan)
        noisy = {key: exact[key] + noise[i] for i, key in enumerate(plan.keys)}
        released = postprocess(plan, noisy)
        ledger.commit(reservation)
        balance = ledger.balance(table, researcher)
        left = {table: {"rho": balance.remaining_rho, "epsilon": balance.remaining_epsilon}}
        return released, left
    finally:
        ledger.close()


def _allowance(policy: Policy, spent: tuple[float, float], table: str) -> Policy:
    """The policy with the custodians' spending taken off its budgets."""
    assert policy.total_rho is not None
    total = policy.total_rho - spent[0]
    mine = None if policy.researcher_rho is None else policy.researcher_rho - spent[1]
    if total <= 0 or (mine is not None and mine <= 0):
        raise BudgetExhaustedError(
            f"privacy budget exhausted for table {table!r}: the custodians report it spent"
        )
    return dataclasses.replace(policy, total_rho=total, researcher_rho=mine)


def release(
    env: Environment,
    researcher: str,
    decrypted: DecryptedResult,
    *,
    epsilon: float | None = None,
) -> dict[str, Any]:
    """Release ``decrypted`` under its table's policy as the custodians hold it."""
    table = decrypted.info.table
    if table is None:
        raise UsageError(
            "the data was encrypted without --table: no policy applies to it; "
            "decrypt without --release"
        )
    policy = effective_policies(env, [table])[table]
    spent = (0.0, 0.0)
    if policy.is_private:
        rows = node_budgets(env, researcher=researcher)
        row = next((r for r in rows if r.get("table") == table), None)
        if row is not None:
            spent = (
                float(row.get("spent_rho", 0.0)) + float(row.get("pending_rho", 0.0) or 0.0),
                float(row.get("researcher_spent_rho") or 0.0),
            )
    return release_with(
        env.home / LEDGER, policy, decrypted, researcher, epsilon=epsilon, custodians_spent=spent
    )
