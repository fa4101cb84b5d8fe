"""What a custodian checks in a job against the policies it holds (per job type).

:func:`check_exact_job` guards tables released exactly: the SQL plan's minimum group
size may be raised, never lowered, and no DP noise is asked for on a table without a DP
policy.  :func:`check_dp_job` guards tables under DP: the custodian rebuilds the release
plan itself, from its own policy (budget, epsilon cap, delta, minimum group) and the
steward-confirmed bounds, for the aggregates the job names, and refuses the job unless
the plan the job carries is exactly that one; then it checks that the program releases
nothing but those noisy statistics (no exact count compared, no MIN/MAX).  The noise the
custodian adds is drawn from its own plan.  A SQL job's plan is decoded and checked with
:meth:`tessera.mpc.plan.SqlPlan.from_dict` first: a malformed plan is refused (InputError).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tessera.dp import Aggregate, Policy, ReleasePlan, plan_release
from tessera.errors import InputError, PolicyError, UnsupportedError
from tessera.mpc.knn_spec import KnnJob
from tessera.mpc.plan import Measure, SqlPlan
from tessera.mpc.sql import ORIGIN, column_info, origin_info

__all__ = [
    "DP_FUNCS",
    "bound_aggregate",
    "check_dp_job",
    "check_exact_job",
    "check_sql_job",
    "check_validate_job",
    "columns_digest",
    "dp_aggregates",
    "dp_measures",
    "shared_parts",
]

_NUMERIC = ("integer", "decimal", "date")

#: SQL aggregate -> tessera.dp aggregate function (what a DP release offers).
DP_FUNCS: dict[str, str] = {
    "count_star": "count",
    "count": "count",
    "sum": "sum",
    "avg": "avg",
    "var_samp": "variance",
    "stddev_samp": "stddev",
}


def dp_aggregates(plan: SqlPlan) -> tuple[list[Aggregate], dict[str, int]]:
    """tessera.dp aggregates for the plan's SQL aggregates, and their index by key."""
    aggs: list[Aggregate] = []
    index: dict[str, int] = {}
    for key, spec in plan.aggregates.items():
        func: Any = DP_FUNCS[spec.func]  # one of tessera.dp's aggregate functions
        info = None if spec.ref is None else plan.cols[spec.ref]
        if info is None or info.kind == "origin":
            aggs.append(Aggregate("count", label=key))
        elif info.kind == "boolean":
            aggs.append(Aggregate(func, spec.ref, 0, 1, nullable=info.nullable, label=key))
        else:
            scale = 10**info.scale if info.kind == "decimal" else 1
            aggs.append(
                Aggregate(
                    func,
                    spec.ref,
                    info.min,
                    info.max,
                    scale=scale,
                    nullable=info.nullable,
                    label=key,
                )
            )
        index[key] = len(aggs) - 1
    return aggs, index


def check_exact_job(job: Mapping[str, Any], policy: Policy, tables: tuple[str, ...]) -> None:
    """Refuse an exact job that lowers the minimum group size or asks for noise."""
    if job.get("noise"):
        raise PolicyError(f"{', '.join(tables)} has no DP policy: this custodian adds no noise")
    if job["type"] == "sql":
        asked = _sql_plan(job).min_group
        floor = policy.min_group_size
    elif job["type"] == "knn":
        knn = _knn_factor(job)[1]
        # a table smaller than its minimum group hides every treatment (rows + 1)
        asked, floor = knn.min_group, min(policy.min_group_size, knn.rows + 1)
    else:
        return
    if asked < floor:
        raise PolicyError(
            f"minimum group size {asked} is below {', '.join(tables)}'s {policy.min_group_size}"
        )


def check_sql_job(job: Mapping[str, Any], manifests: Mapping[str, Mapping[str, Any]]) -> None:
    """A SQL job's plan must describe every column as this custodian's manifest does
    (bounds, categories, digits: the minimum group, the output checks and the DP
    sensitivities rest on them), measure 0 must be COUNT(*), and the job must read every
    chunk of its tables once, in order (a repeated chunk counts its rows twice)."""
    plan = _sql_plan(job)
    aliases = {str(item["alias"]): str(item["table"]) for item in job["inputs"]}
    if not plan.measures or plan.measures[0] != Measure("count", None):
        raise PolicyError("the job's first measure is not COUNT(*)")
    for ref, info in plan.cols.items():
        alias, _, name = ref.partition(".")
        table = aliases.get(alias)
        if table is None or table not in manifests:
            raise InputError(f"the plan reads {alias}, which is not one of the job's inputs")
        manifest = manifests[table]
        mine = (
            origin_info(manifest.get("hospitals", []))
            if name == ORIGIN
            else column_info(_column(manifests, table, name))
        )
        if info != mine:
            raise PolicyError(
                f"the job's plan describes {table}.{name} otherwise than this custodian's copy "
                "of the table"
            )
    check_chunks(job, manifests)


def check_chunks(job: Mapping[str, Any], manifests: Mapping[str, Mapping[str, Any]]) -> None:
    """Every input names all of its table's chunks this custodian holds, once, in order
    (or none: then this custodian reads them all)."""
    for item in job["inputs"]:
        chunks = item.get("chunks")
        manifest = manifests.get(str(item["table"]))
        if chunks is None or manifest is None:
            continue
        held = [str(c["id"]) for c in manifest.get("chunks", [])]
        if list(chunks) != held:
            raise PolicyError(
                f"the job reads other chunks of {item['table']} than this custodian holds "
                "(repeated, missing or reordered): refresh the catalogue and ask again"
            )


def _sql_plan(job: Mapping[str, Any]) -> SqlPlan:
    plan = job["params"].get("plan")
    if not isinstance(plan, dict):
        raise InputError("a sql job carries its plan")
    return SqlPlan.from_dict(plan)


def _column(manifests: Mapping[str, Mapping[str, Any]], table: str, name: str) -> Mapping[str, Any]:
    manifest = manifests.get(table)
    if manifest is None:
        raise InputError(f"this custodian holds no table {table}")
    for info in manifest.get("columns", []):
        if info.get("name") == name:
            return dict(info)
    raise InputError(f"table {table} has no column {name}")


def bound_aggregate(
    agg: Aggregate,
    aliases: Mapping[str, str],
    policies: Mapping[str, Policy],
    manifests: Mapping[str, Mapping[str, Any]],
    factor: int,
) -> Aggregate:
    """``agg`` with the bounds, nullability and sensitivity this custodian derives."""
    if agg.column is None:
        if agg.func != "count":
            raise InputError(f"{agg.func} needs a column")
        return replace(agg, lower=0, upper=0, nullable=False, sensitivity_factor=factor)
    alias, _, name = agg.column.rpartition(".")
    if not alias:
        if len(aliases) != 1:
            raise InputError(f"column {name} must name its table")
        alias = next(iter(aliases))
    table = aliases.get(alias)
    if table is None:
        raise InputError(f"unknown input {alias}")
    info = _column(manifests, table, name)
    if info["kind"] == "boolean":
        lower, upper = 0, 1
    elif info["kind"] in _NUMERIC:
        bound = policies[table].bound(name)
        if bound is None:
            raise PolicyError(
                f"the bounds of {table}.{name} are not confirmed in the table's policy "
                "(tessera table policy ... --confirm-bounds)"
            )
        lower, upper = bound
        if lower > int(info["min"]) or upper < int(info["max"]):
            raise PolicyError(
                f"the policy's bounds of {table}.{name} are narrower than the stored range"
            )
    elif agg.func == "count":
        lower, upper = 0, 0
    else:
        raise PolicyError(f"{agg.func} of {table}.{name} ({info['kind']}) under DP")
    nullable = bool(info.get("nullable"))
    return replace(agg, lower=lower, upper=upper, nullable=nullable, sensitivity_factor=factor)


def _knn_factor(job: Mapping[str, Any]) -> tuple[int, KnnJob]:
    spec = job["params"].get("job")
    knn = KnnJob.from_json(spec if isinstance(spec, str) else json.dumps(spec))
    return (2 if knn.mode == "k" else 1), knn


def check_dp_job(
    job: Mapping[str, Any],
    policies: Mapping[str, Policy],
    combined: Policy,
    manifests: Mapping[str, Mapping[str, Any]],
    *,
    parties: int,
    threshold: int,
) -> ReleasePlan:
    """This custodian's release plan for a DP job; PolicyError if the job deviates."""
    private = ", ".join(t for t, p in policies.items() if p.is_private)
    noise = job.get("noise")
    if not isinstance(noise, dict) or not isinstance(noise.get("release_plan"), dict):
        raise PolicyError(f"{private} is under differential privacy: a job without noise")
    claimed = ReleasePlan.from_dict(noise["release_plan"])
    aliases = {str(item["alias"]): str(item["table"]) for item in job["inputs"]}
    plan = _sql_plan(job) if job["type"] == "sql" else None
    if plan is not None:
        factor, groups = 1, plan.cells
    elif job["type"] == "knn":
        factor, knn = _knn_factor(job)
        groups = knn.treatments
        if knn.min_group != 0:  # noisy counts are released, never compared in the clear
            raise PolicyError("a DP job must not compare exact group sizes (min_group 0)")
    else:
        raise PolicyError(f"job type {job['type']} under differential privacy")
    aggregates = [
        bound_aggregate(a, aliases, policies, manifests, factor) for a in claimed.aggregates
    ]
    mine = plan_release(
        combined,
        aggregates,
        cells=groups,
        custodians=parties,
        threshold=threshold,
        epsilon=claimed.requested_epsilon,
        confidence=claimed.confidence,
    )
    if mine.to_dict() != claimed.to_dict():
        raise PolicyError(
            f"the job's noise does not match {private}'s policy held by this custodian"
        )
    if noise.get("cells") != len(mine.statistics) * groups or noise.get("groups") != groups:
        raise PolicyError("the job's noise cells do not match its result cells")
    if plan is not None:
        _check_sql_release(plan, mine, aliases, manifests)
    return mine


def _check_sql_release(
    plan: SqlPlan,
    release: ReleasePlan,
    aliases: Mapping[str, str],
    manifests: Mapping[str, Mapping[str, Any]],
) -> None:
    """The SQL program must release exactly the noisy statistics, nothing exact."""
    if plan.min_group != 0:
        raise PolicyError("a DP job must not compare exact group sizes (min_group 0)")
    if plan.extremes:
        raise PolicyError("MIN and MAX are not released under differential privacy")
    booleans = set()
    for stat in release.statistics:
        ref = stat.column or ""
        alias, _, name = ref.rpartition(".")
        if alias in aliases and _column(manifests, aliases[alias], name)["kind"] == "boolean":
            booleans.add(ref)
    if plan.measures != dp_measures(release.keys, booleans):
        raise PolicyError("the job's measures are not the DP release's statistics")


def dp_measures(keys: Sequence[str], booleans: Collection[str]) -> tuple[Measure, ...]:
    """The SQL program's measures for a DP release's statistic keys, in their order.

    ``count`` -> COUNT(*); ``count:REF`` -> non-null rows; ``sum:REF`` -> the values;
    ``sumsq:REF`` -> the squares (a boolean's square is itself).  ``booleans`` names
    the boolean column refs.  The requester builds a DP job's measures with this and
    every custodian checks them with it, so they cannot differ.
    """
    measures: list[Measure] = []
    for key in keys:
        kind, _, ref = key.partition(":")
        if kind == "count":
            measures.append(Measure("count", f"{ref}.valid" if ref else None))
        elif kind == "sum":
            measures.append(Measure("sum", f"{ref}.val"))
        elif kind == "sumsq":
            measures.append(Measure("sum", f"{ref}.{'val' if ref in booleans else 'sq'}"))
        else:
            raise UnsupportedError(f"statistic {key} under differential privacy")
    return tuple(measures)


def shared_parts(columns: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every ``COLUMN.PART`` a table's shares hold (what a validation checks), sorted."""
    return sorted(
        f"{c['name']}.{p}" for c in columns if c["kind"] != "pseudonym" for p in c["parts"]
    )


def columns_digest(columns: Sequence[Any]) -> str:
    """A fingerprint of a table's declared columns (what a validation checked against)."""
    return hashlib.sha256(json.dumps(list(columns), sort_keys=True).encode()).hexdigest()


def check_validate_job(job: Mapping[str, Any], manifests: Mapping[str, Mapping[str, Any]]) -> None:
    """A ``validate`` job must check every part of every column this custodian holds for
    the table, as its own manifest declares them, on an explicit list of chunks."""
    if job.get("noise"):
        raise InputError("a validate job adds no noise")
    inputs = job["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0].get("chunks"), list):
        raise InputError("a validate job names one table and its chunks")
    item = inputs[0]
    manifest = manifests.get(str(item["table"]))
    if manifest is None:
        raise InputError(f"this custodian holds no table {item['table']}")
    columns = manifest.get("columns", [])
    if job["params"].get("columns") != columns or job["params"].get("alias") != item["alias"]:
        raise PolicyError("the validate job does not check the columns this custodian holds")
    if set(item["parts"]) != set(shared_parts(columns)):
        raise PolicyError("the validate job does not check every part of the table")
