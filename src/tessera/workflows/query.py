"""Answer SQL across the custodians with MPC (``tessera query``).

The requester compiles the SQL into a plan, sends it as a signed job to every node,
receives one re-randomised share of the result cells from each, checks that all shares
agree, reconstructs, and derives the answer (:func:`tessera.mpc.result.decode_result`).

:func:`run_sql` is what ``tessera query`` calls: tables under a differential privacy
policy are answered through :func:`tessera.workflows.dp.run_private_query` (budget
reserved first, noise added inside the MPC by every custodian, intervals); the others
exactly through :func:`run_query`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from tessera.config import Environment
from tessera.dp import ReleasePlan
from tessera.dp.policy import OutputChecks, strictest
from tessera.dp.release import Release
from tessera.errors import PolicyError, UnsupportedError
from tessera.mpc.plan import SqlPlan
from tessera.mpc.result import (
    NOISY_EMPTY,
    NULL_GROUP,
    UNINFORMATIVE,
    answer,
    decode_result,
    finish_rows,
    uninformative,
)
from tessera.mpc.sql import aggregate_key, compile_sql
from tessera.tables.encode import PRIME
from tessera.tables.store import Catalog
from tessera.workflows.audit_cli import add_detail
from tessera.workflows.catalog_sync import sync_catalog
from tessera.workflows.dp import PrivateAnswer, run_private_query
from tessera.workflows.job_checks import DP_FUNCS, bound_aggregate, dp_aggregates, dp_measures
from tessera.workflows.nodes import run_job
from tessera.workflows.people import Signer
from tessera.workflows.policies import effective_policies, node_budgets, remaining
from tessera.workflows.validation import ensure_validated

__all__ = ["DEFAULT_MIN_GROUP", "min_group_policy", "plan_query", "run_query", "run_sql"]

DEFAULT_MIN_GROUP = 5


def min_group_policy(env: Environment) -> int:
    """The minimum group size (``[mpc] min_group`` in tessera.toml, default 5)."""
    mpc = env.extra.get("mpc", {})
    return max(1, int(mpc.get("min_group", DEFAULT_MIN_GROUP))) if isinstance(mpc, dict) else 5


def plan_query(env: Environment, sql: str, *, min_group: int | None = None) -> SqlPlan:
    """The secure plan for ``sql`` (no custodian contacted, except that a consortium
    client first reads the tables' manifests from them)."""
    sync_catalog(env)
    catalog = Catalog(env.home)
    tables = {name: catalog.get(name) for name in catalog.names()}
    return compile_sql(sql, tables, min_group=min_group or min_group_policy(env))


def run_query(
    env: Environment,
    sql: str,
    *,
    signer: Signer,
    min_group: int | None = None,
    noise: dict[str, Any] | None = None,
    approval: dict[str, Any] | None = None,
    checks: OutputChecks | None = None,
) -> dict[str, Any]:
    """The answer ``{"columns", "rows", "privacy": None, ...}`` computed under MPC.

    ``checks``: the output checks the tables' policies ask for (declared in the job;
    every custodian refuses a job that declares other ones than its policy's).

    ``noise``: for DP releases, ``{"cells": ..., ...}`` passed to every node's noise
    source; the cells are the plan's measures x groups, measure-major.
    """
    started = time.perf_counter()
    plan = plan_query(env, sql, min_group=min_group)
    values, metas = _run_plan(env, plan, noise, signer, approval, checks)
    result = decode_result(plan, values)
    result["rows_scanned"] = int(metas[0].get("meta", {}).get("rows", 0))
    result["party_cpu_s"] = round(sum(float(m.get("meta", {}).get("cpu_s", 0)) for m in metas), 3)
    result["seconds"] = round(time.perf_counter() - started, 3)
    if noise is None:  # exact release: the cohort the requester's COUNT(*) revealed
        rows = _revealed_count(plan, values)
        if rows is not None:
            add_detail(rows=rows)
        if result["suppressed_groups"]:
            add_detail(suppressed_groups=int(result["suppressed_groups"]))
    return result


def _revealed_count(plan: SqlPlan, values: list[int]) -> int | None:
    """Sum of COUNT(*) over the groups released (None: no COUNT(*), or every group hidden).

    The requester reconstructs these counts for every group that passed the minimum group
    size (see :mod:`tessera.mpc.result`), so recording their sum reveals nothing more;
    suppressed groups' counts are never reconstructed and are not in it.
    """
    measure = next((s.count for s in plan.aggregates.values() if s.func == "count_star"), None)
    if measure is None:
        return None
    groups = plan.cells
    flags, cells = values[:groups], values[groups:]
    released = [g for g in range(groups) if flags[g] == 1]
    if not released:
        return None
    return sum(int(cells[measure * groups + g]) for g in released)


def _run_plan(
    env: Environment,
    plan: SqlPlan,
    noise: dict[str, Any] | None,
    signer: Signer,
    approval: dict[str, Any] | None = None,
    checks: OutputChecks | None = None,
) -> tuple[list[int], list[dict[str, Any]]]:
    """Run a compiled plan as one ``sql`` job on the custodians."""
    catalog = Catalog(env.home)
    inputs = []
    for src in plan.sources:
        manifest = catalog.get(src.table)
        inputs.append(
            {
                "alias": src.alias,
                "table": src.table,
                "parts": list(src.parts),
                "chunks": [c["id"] for c in manifest["chunks"]],
            }
        )
    params = {
        "plan": plan.to_dict(),
        "prime": PRIME,
        "checks": None if checks is None else checks.to_dict(),
    }
    return run_job(
        env, "sql", inputs, params, prime=PRIME, signer=signer, noise=noise, approval=approval
    )


# ----- differential privacy (issue 7) ------------------------------------------------


def _refuse_under_dp(plan: SqlPlan) -> None:
    """What a DP release cannot give, refused before any budget is spent."""
    if plan.extremes:
        raise UnsupportedError(
            "unsupported: MIN and MAX cannot be released under differential privacy (the "
            "table has a DP policy); ask for COUNT, SUM, AVG, VARIANCE or STDDEV"
        )
    if plan.having is not None:
        raise UnsupportedError(
            "unsupported: HAVING under differential privacy (filter the released rows instead)"
        )
    for key, spec in plan.aggregates.items():
        if spec.func not in DP_FUNCS:
            raise UnsupportedError(
                f"unsupported: {key} under differential privacy (use COUNT, SUM, AVG, "
                "VARIANCE or STDDEV; VAR_POP/STDDEV_POP are not offered)"
            )
    for it in plan.items:
        if it.expr is not None and aggregate_key(it.expr) not in plan.aggregates:
            raise UnsupportedError(
                f"unsupported: {it.expr} under differential privacy: each SELECT item must be "
                "a GROUP BY column or one aggregate"
            )
    for o in plan.order:
        if o.column is None:
            raise UnsupportedError(
                f"unsupported: ORDER BY {o.expr} under differential privacy (not a column)"
            )


def _shape_answer(plan: SqlPlan, answered: PrivateAnswer, index: dict[str, int]) -> dict[str, Any]:
    """Output rows (group labels + released values) with per-column intervals."""
    picks = [None if it.expr is None else index[aggregate_key(it.expr)] for it in plan.items]
    release = answered.release
    out: list[tuple[list[Any], tuple[list[Any], list[str | None]]]] = []
    for c, labels in enumerate(plan.combos()):
        if release.suppressed[c]:
            continue
        row: list[Any] = []
        ivs: list[Any] = []
        notes: list[str | None] = []
        for it, j in zip(plan.items, picks, strict=True):
            if j is None:
                label = labels[it.group] if it.group is not None else None
                row.append(label)
                ivs.append(None)
                notes.append(NULL_GROUP if label is None else None)
                continue
            value, iv, note = _dp_cell(release, c, j)
            row.append(value)
            ivs.append(iv)
            notes.append(note)
        out.append((row, (ivs, notes)))
    out = finish_rows(plan, out)
    privacy = answered.privacy or {}
    privacy["columns"] = [
        {
            "column": it.name,
            "statistic": None if j is None else release.columns[j],
            "intervals": None if j is None else [extra[0][k] for _, extra in out],
            "uninformative": None
            if j is None
            else [extra[1][k] == UNINFORMATIVE for _, extra in out],
        }
        for k, (it, j) in enumerate(zip(plan.items, picks, strict=True))
    ]
    privacy["suppressed_cells"] = [i for i, flag in enumerate(release.suppressed) if flag]
    return answer(
        plan,
        [row for row, _ in out],
        privacy=privacy,
        suppressed=sum(release.suppressed),
        min_group=release.plan.min_group_size,
        notes=[extra[1] for _, extra in out],
    )


def _dp_cell(release: Release, c: int, j: int) -> tuple[Any, list[float] | None, str | None]:
    """Released value ``j`` of cell ``c``, its interval, and why it is NULL or tells nothing."""
    value = release.rows[c][j]
    agg = release.plan.aggregates[j]
    if value is not None and (agg.func == "count" or (agg.func, agg.scale) == ("sum", 1)):
        value = int(value)  # noisy counts and integer sums are integers
    raw = release.intervals[c][j]
    iv = None if raw is None else [float(raw[0]), float(raw[1])]
    if value is None:
        return None, iv, NOISY_EMPTY
    lower, upper = agg.lower / agg.scale, agg.upper / agg.scale
    return value, iv, UNINFORMATIVE if uninformative(agg.func, lower, upper, iv) else None


def run_sql(
    env: Environment,
    sql: str,
    *,
    signer: Signer,
    epsilon: float | None = None,
    min_group: int | None = None,
    approval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``tessera query``: exact under MPC, or a DP release when a table's policy says so.

    The policies are the custodians' (they must agree); the requester keeps none.  An
    exact release uses the tables' minimum group size, which ``min_group`` may raise but
    never lower.  Under DP every custodian derives the release plan from its own policy
    and refuses a job whose plan differs, reserves the budget in its own ledger before
    the MPC starts, adds its discrete Gaussian share inside the MPC; no exact count is
    compared there (groups are suppressed on noisy counts), and AVG/VARIANCE/STDDEV are
    post-processing of the noisy sums and counts.
    """
    started = time.perf_counter()
    plan = plan_query(env, sql, min_group=min_group)
    tables = plan.tables
    policies = effective_policies(env, tables)
    policy = strictest(list(policies.values()))
    if policy.approval_required and approval is None:
        needing = ", ".join(t for t, p in policies.items() if p.approval_required)
        raise PolicyError(
            f"{needing} requires an approved request: file one (tessera request file "
            "--sql ... --purpose ...) and run it once its steward approved it"
        )
    if not policy.is_private:
        if epsilon is not None:
            raise PolicyError(
                f"--epsilon: {', '.join(tables)} has no differential privacy policy "
                "(tessera table policy NAME --mode dp ...)"
            )
        floor = max(policy.min_group_size, min_group or min_group_policy(env))
        return run_query(
            env,
            sql,
            signer=signer,
            min_group=floor,
            approval=approval,
            checks=policy.output_checks,
        )
    _refuse_under_dp(plan)  # before any budget is spent
    aggregates, index = dp_aggregates(plan)
    ensure_validated(env, [t for t in tables if policies[t].is_private], signer)
    catalog = Catalog(env.home)
    manifests = {t: catalog.get(t) for t in tables}
    aliases = {src.alias: src.table for src in plan.sources}
    aggregates = [bound_aggregate(a, aliases, policies, manifests, 1) for a in aggregates]
    cells = plan.cells
    metas: list[dict[str, Any]] = []

    def execute(release: ReleasePlan) -> dict[str, list[int]]:
        # the MPC releases the DP statistics and nothing exact: no MIN/MAX, no exact count
        # compared (suppression is post-processing); aggregates are derived from the release
        secure = replace(
            plan,
            measures=dp_measures(release.keys, plan.booleans),
            extremes=(),
            aggregates={},
            min_group=0,
        )
        k = len(release.statistics)
        noise = {"cells": k * cells, "groups": cells, "release_plan": release.to_dict()}
        values, node_metas = _run_plan(env, secure, noise, signer, approval)
        metas.extend(node_metas)
        body = values[cells : cells + k * cells]
        return {key: body[i * cells : (i + 1) * cells] for i, key in enumerate(release.keys)}

    def budget() -> dict[str, dict[str, float]]:
        rows = node_budgets(env, researcher=signer.name)
        return remaining([r for r in rows if r["table"] in tables])

    private = run_private_query(
        policy=policy,
        aggregates=aggregates,
        cells=cells,
        custodians=len(env.nodes),
        threshold=env.mpc_threshold,
        execute=execute,
        epsilon=epsilon,
        budget=budget,
    )
    result = _shape_answer(plan, private, index)
    meta = metas[0].get("meta", {}) if metas else {}
    result["rows_scanned"] = int(meta.get("rows", 0))
    result["party_cpu_s"] = round(sum(float(m.get("meta", {}).get("cpu_s", 0)) for m in metas), 3)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result
