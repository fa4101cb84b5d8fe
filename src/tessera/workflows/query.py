"""Answer SQL across the custodians with MPC (``tessera query``).

The requester compiles the SQL into a plan, sends it as a signed job to every node,
receives one re-randomised share of the result cells from each, checks that all shares
agree, reconstructs, and derives the answer (:func:`tessera.mpc.result.decode_result`).
"""

from __future__ import annotations

import time
from typing import Any

from tessera.config import Environment
from tessera.mpc.result import decode_result
from tessera.mpc.sql import compile_sql
from tessera.tables.encode import PRIME
from tessera.tables.store import Catalog
from tessera.workflows.nodes import run_job

__all__ = ["DEFAULT_MIN_GROUP", "min_group_policy", "plan_query", "run_query"]

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
    min_group: int | None = None,
    noise: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The answer ``{"columns", "rows", "privacy": None, ...}`` computed under MPC.

    ``noise``: for DP releases, ``{"cells": ..., ...}`` passed to every node's noise
    source; the cells are the plan's measures x groups, measure-major.
    """
    started = time.perf_counter()
    plan = plan_query(env, sql, min_group=min_group)
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
    values, metas = run_job(
        env, "sql", inputs, {"plan": plan, "prime": PRIME}, prime=PRIME, noise=noise
    )
    result = decode_result(plan, values)
    result["rows_scanned"] = int(metas[0].get("meta", {}).get("rows", 0))
    result["party_cpu_s"] = round(sum(float(m.get("meta", {}).get("cpu_s", 0)) for m in metas), 3)
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result
