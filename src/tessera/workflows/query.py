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

import itertools
import math
import time
from typing import Any

import sqlglot
import sqlglot.expressions

from tessera.config import Environment
from tessera.dp import Aggregate, ReleasePlan
from tessera.dp.policy import strictest
from tessera.errors import PolicyError, UnsupportedError
from tessera.mpc.result import decode_result
from tessera.mpc.sql import compile_sql, dp_measures
from tessera.tables.encode import PRIME
from tessera.tables.store import Catalog
from tessera.workflows.audit_cli import add_detail
from tessera.workflows.dp import PrivateAnswer, run_private_query
from tessera.workflows.job_checks import bound_aggregate
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


def plan_query(env: Environment, sql: str, *, min_group: int | None = None) -> dict[str, Any]:
    """The secure plan for ``sql`` (no custodian contacted)."""
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
) -> dict[str, Any]:
    """The answer ``{"columns", "rows", "privacy": None, ...}`` computed under MPC.

    ``noise``: for DP releases, ``{"cells": ..., ...}`` passed to every node's noise
    source; the cells are the plan's measures x groups, measure-major.
    """
    started = time.perf_counter()
    plan = plan_query(env, sql, min_group=min_group)
    values, metas = _run_plan(env, plan, noise, signer)
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


def _revealed_count(plan: dict[str, Any], values: list[int]) -> int | None:
    """Sum of COUNT(*) over the groups released (None: no COUNT(*), or every group hidden).

    The requester reconstructs these counts for every group that passed the minimum group
    size (see :mod:`tessera.mpc.result`), so recording their sum reveals nothing more;
    suppressed groups' counts are never reconstructed and are not in it.
    """
    measure = next(
        (int(s["count"]) for s in plan["aggregates"].values() if s.get("func") == "count_star"),
        None,
    )
    if measure is None:
        return None
    groups = math.prod(len(g["labels"]) for g in plan["groups"]) if plan["groups"] else 1
    flags, cells = values[:groups], values[groups:]
    released = [g for g in range(groups) if flags[g] == 1]
    if not released:
        return None
    return sum(int(cells[measure * groups + g]) for g in released)


def _run_plan(
    env: Environment, plan: dict[str, Any], noise: dict[str, Any] | None, signer: Signer
) -> tuple[list[int], list[dict[str, Any]]]:
    """Run a compiled plan as one ``sql`` job on the custodians."""
    catalog = Catalog(env.home)
    inputs = []
    for src in plan["sources"]:
        manifest = catalog.get(src["table"])
        inputs.append(
            {
                "alias": src["alias"],
                "table": src["table"],
                "parts": src["parts"],
                "chunks": [c["id"] for c in manifest["chunks"]],
            }
        )
    params = {"plan": plan, "prime": PRIME}
    return run_job(env, "sql", inputs, params, prime=PRIME, signer=signer, noise=noise)


# ----- differential privacy (issue 7) ------------------------------------------------

_DP_FUNCS: dict[str, str] = {
    "count_star": "count",
    "count": "count",
    "sum": "sum",
    "avg": "avg",
    "var_samp": "variance",
    "stddev_samp": "stddev",
}


def _tables_of(plan: dict[str, Any]) -> list[str]:
    return sorted({str(src["table"]) for src in plan["sources"]})


def _aggregate_key(expr: str) -> str:
    """The compiler's key for a SELECT/ORDER BY expression that is one aggregate."""
    node = sqlglot.parse_one(expr, read="duckdb")
    if isinstance(node, sqlglot.exp.Count) and (
        node.this is None or isinstance(node.this, sqlglot.exp.Star)
    ):
        return "COUNT(*)"
    return str(node.sql())


def _dp_aggregates(plan: dict[str, Any]) -> tuple[list[Aggregate], dict[str, int]]:
    """tessera.dp aggregates for the plan's SQL aggregates (refusing what DP cannot release)."""
    if plan["extremes"]:
        raise UnsupportedError(
            "MIN and MAX cannot be released under differential privacy (the table has a DP "
            "policy); ask for COUNT, SUM, AVG, VARIANCE or STDDEV"
        )
    if plan.get("having"):
        raise UnsupportedError(
            "HAVING under differential privacy (filter the released rows instead)"
        )
    aggs: list[Aggregate] = []
    index: dict[str, int] = {}
    for key, spec in plan["aggregates"].items():
        func = spec["func"]
        if func not in _DP_FUNCS:
            raise UnsupportedError(
                f"{key} under differential privacy (use COUNT, SUM, AVG, VARIANCE or STDDEV; "
                "VAR_POP/STDDEV_POP are not offered)"
            )
        if func == "count_star":
            aggs.append(Aggregate("count", label=key))
        else:
            ref = spec["ref"]
            info = plan["cols"][ref]
            if info["kind"] == "origin":
                aggs.append(Aggregate("count", label=key))
            elif info["kind"] == "boolean":
                aggs.append(
                    Aggregate(
                        _DP_FUNCS[func],  # type: ignore[arg-type]
                        ref,
                        0,
                        1,
                        nullable=bool(info["nullable"]),
                        label=key,
                    )
                )
            else:
                scale = 10 ** int(info.get("scale") or 0) if info["kind"] == "decimal" else 1
                aggs.append(
                    Aggregate(
                        _DP_FUNCS[func],  # type: ignore[arg-type]
                        ref,
                        int(info["min"]),
                        int(info["max"]),
                        scale=scale,
                        nullable=bool(info["nullable"]),
                        label=key,
                    )
                )
        index[key] = len(aggs) - 1
    return aggs, index


def _order_and_limit(
    plan: dict[str, Any], rows: list[tuple[list[Any], list[Any]]]
) -> list[tuple[list[Any], list[Any]]]:
    """ORDER BY (an output column, by position, name or expression) and LIMIT."""
    items = plan["items"]
    for spec in reversed(plan["order"]):
        expr = spec["expr"]
        node = sqlglot.parse_one(expr, read="duckdb")
        pos = -1
        if isinstance(node, sqlglot.exp.Literal) and not node.is_string:
            pos = int(node.this) - 1
        else:
            for j, it in enumerate(items):
                same_name = str(it["name"]).lower() == expr.lower()
                same_expr = "expr" in it and _aggregate_key(it["expr"]) == _aggregate_key(expr)
                if same_name or same_expr:
                    pos = j
                    break
        if not 0 <= pos < len(items):
            raise UnsupportedError(f"ORDER BY {expr} under differential privacy (not a column)")
        present = [r for r in rows if r[0][pos] is not None]
        missing = [r for r in rows if r[0][pos] is None]

        def key(r: tuple[list[Any], list[Any]], p: int = pos) -> Any:
            return r[0][p]

        present.sort(key=key, reverse=spec["desc"])
        rows = present + missing
    if plan.get("limit") is not None:
        rows = rows[: plan["limit"]]
    return rows


def _shape_answer(
    plan: dict[str, Any], answer: PrivateAnswer, index: dict[str, int]
) -> dict[str, Any]:
    """Output rows (group labels + released values) with per-column intervals."""
    groups = plan["groups"]
    combos = list(itertools.product(*[g["labels"] for g in groups])) if groups else [()]
    items = plan["items"]
    picks: list[int | None] = []
    for it in items:
        if "group" in it:
            picks.append(None)
            continue
        key = _aggregate_key(it["expr"])
        if key not in index:
            raise UnsupportedError(
                f"{it['expr']} under differential privacy: each SELECT item must be a GROUP BY "
                "column or one aggregate"
            )
        picks.append(index[key])
    release = answer.release
    out: list[tuple[list[Any], list[Any]]] = []
    for c, labels in enumerate(combos):
        if release.suppressed[c]:
            continue
        row: list[Any] = []
        ivs: list[Any] = []
        for it, j in zip(items, picks, strict=True):
            if j is None:
                row.append(labels[it["group"]])
                ivs.append(None)
                continue
            value = release.rows[c][j]
            agg = release.plan.aggregates[j]
            if value is not None and (agg.func == "count" or (agg.func, agg.scale) == ("sum", 1)):
                value = int(value)  # noisy counts and integer sums are integers
            row.append(value)
            iv = release.intervals[c][j]
            ivs.append(None if iv is None else [float(iv[0]), float(iv[1])])
        out.append((row, ivs))
    out = _order_and_limit(plan, out)
    privacy = answer.privacy or {}
    privacy["columns"] = [
        {
            "column": it["name"],
            "statistic": None if j is None else release.columns[j],
            "intervals": None if j is None else [ivs[k] for _, ivs in out],
        }
        for k, (it, j) in enumerate(zip(items, picks, strict=True))
    ]
    privacy["suppressed_cells"] = [i for i, flag in enumerate(release.suppressed) if flag]
    return {
        "columns": [it["name"] for it in items],
        "rows": [row for row, _ in out],
        "privacy": privacy,
        "suppressed_groups": sum(release.suppressed),
        "min_group": release.plan.min_group_size,
    }


def run_sql(
    env: Environment,
    sql: str,
    *,
    signer: Signer,
    epsilon: float | None = None,
    min_group: int | None = None,
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
    tables = _tables_of(plan)
    policies = effective_policies(env, tables)
    policy = strictest(list(policies.values()))
    if not policy.is_private:
        if epsilon is not None:
            raise PolicyError(
                f"--epsilon: {', '.join(tables)} has no differential privacy policy "
                "(tessera table policy NAME --mode dp ...)"
            )
        floor = max(policy.min_group_size, min_group or min_group_policy(env))
        return run_query(env, sql, signer=signer, min_group=floor)
    aggregates, index = _dp_aggregates(plan)
    ensure_validated(env, [t for t in tables if policies[t].is_private], signer)
    for it in plan["items"]:  # refuse unsupported items before any budget is spent
        if "expr" in it and _aggregate_key(it["expr"]) not in index:
            raise UnsupportedError(
                f"{it['expr']} under differential privacy: each SELECT item must be a GROUP BY "
                "column or one aggregate"
            )
    _order_and_limit(plan, [])  # an ORDER BY it cannot apply is refused before any spending
    catalog = Catalog(env.home)
    manifests = {t: catalog.get(t) for t in tables}
    aliases = {str(src["alias"]): str(src["table"]) for src in plan["sources"]}
    aggregates = [bound_aggregate(a, aliases, policies, manifests, 1) for a in aggregates]
    booleans = {ref for ref, info in plan["cols"].items() if info.get("kind") == "boolean"}
    groups = plan["groups"]
    cells = math.prod(len(g["labels"]) for g in groups) if groups else 1
    metas: list[dict[str, Any]] = []

    def execute(release: ReleasePlan) -> dict[str, list[int]]:
        secure = dict(plan)
        secure["measures"] = dp_measures(list(release.keys), booleans)
        secure["extremes"] = []
        secure["min_group"] = 0  # never compare an exact count: suppression is post-processing
        k = len(release.statistics)
        noise = {"cells": k * cells, "groups": cells, "release_plan": release.to_dict()}
        values, node_metas = _run_plan(env, secure, noise, signer)
        metas.extend(node_metas)
        body = values[cells : cells + k * cells]
        return {key: body[i * cells : (i + 1) * cells] for i, key in enumerate(release.keys)}

    def budget() -> dict[str, dict[str, float]]:
        rows = node_budgets(env, researcher=signer.name)
        return remaining([r for r in rows if r["table"] in tables])

    answer = run_private_query(
        policy=policy,
        aggregates=aggregates,
        cells=cells,
        custodians=len(env.nodes),
        threshold=env.mpc_threshold,
        execute=execute,
        epsilon=epsilon,
        budget=budget,
    )
    result = _shape_answer(plan, answer, index)
    meta = metas[0].get("meta", {}) if metas else {}
    result["rows_scanned"] = int(meta.get("rows", 0))
    result["party_cpu_s"] = round(sum(float(m.get("meta", {}).get("cpu_s", 0)) for m in metas), 3)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result
