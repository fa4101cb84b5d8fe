"""Table policies as the custodians hold them: read, sign and install, budgets.

The requester keeps no policy and no ledger of its own: each custodian holds every
table's signed policy and its own budget ledger (:mod:`tessera.workflows.custodian`).
A query reads the policies from the custodians (they must agree), plans its release
from them, and the custodians check it; deleting anything on the requester's side
changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tessera.config import Environment
from tessera.dp import Policy
from tessera.dp.policy import TablePolicy, weakenings
from tessera.errors import InputError, PolicyError
from tessera.keys.documents import SignedDocument
from tessera.tables.store import Catalog
from tessera.workflows.custodian import DEFAULT_POLICY, POLICY_CONTEXT
from tessera.workflows.nodes import broadcast
from tessera.workflows.people import Signer

__all__ = [
    "catalog_bounds",
    "effective_policies",
    "installed_policy",
    "node_budgets",
    "remaining",
    "set_policy",
]


def installed_policy(env: Environment, table: str) -> TablePolicy | None:
    """``table``'s policy as every custodian holds it (None: none installed)."""
    answers = broadcast(env, "GET", f"/v1/policies/{table}")
    docs = {i: a.get("policy") for i, a in answers.items()}
    serials = {i: (d or {}).get("body", {}).get("serial") for i, d in docs.items()}
    if len(set(map(str, serials.values()))) != 1:
        detail = ", ".join(f"node {i}: {s or 'none'}" for i, s in sorted(serials.items()))
        raise PolicyError(f"the custodians hold different policies for {table} ({detail})")
    doc = next(iter(docs.values()))
    if doc is None:
        return None
    return TablePolicy.from_body(SignedDocument.from_dict(doc).body)


def effective_policies(env: Environment, tables: Sequence[str]) -> dict[str, Policy]:
    """The rules the custodians apply to each table (their default where none is set)."""
    out = {}
    for table in tables:
        current = installed_policy(env, table)
        out[table] = DEFAULT_POLICY if current is None else current.policy
    return out


def catalog_bounds(env: Environment, table: str) -> tuple[tuple[tuple[str, int, int], ...], bool]:
    """The numeric columns' bounds (units) from the catalogue, and whether they were inferred."""
    manifest = Catalog(env.home).get(table)
    bounds = tuple(
        (str(c["name"]), int(c["min"]), int(c["max"]))
        for c in manifest["columns"]
        if c["kind"] in ("integer", "decimal", "date")
    )
    return bounds, manifest.get("bounds") != "declared"


def set_policy(
    env: Environment,
    table: str,
    policy: Policy,
    *,
    steward: Signer,
    cosigners: Sequence[Signer] = (),
) -> TablePolicy:
    """Sign ``table``'s new policy (steward, then co-signers) and install it everywhere.

    A policy that weakens the current one needs a co-signer (an officer or a second
    steward); refused here with the reason before any custodian is asked, and by every
    custodian on its own if it got there anyway.
    """
    current = installed_policy(env, table)
    weaker = weakenings(current.policy if current else DEFAULT_POLICY, policy)
    if weaker and not [c for c in cosigners if c.name != steward.name]:
        raise PolicyError(
            f"{table}: this weakens the policy ({'; '.join(weaker)}); a second person "
            "(an officer or another steward) must co-sign it (--cosign NAME)"
        )
    serial = 1 if current is None else current.serial + 1
    new = TablePolicy(table, serial, steward.name, policy)
    document = steward.sign(SignedDocument(new.body()), context=POLICY_CONTEXT)
    for cosigner in cosigners:
        document = cosigner.sign(document, context=POLICY_CONTEXT)
    broadcast(env, "POST", "/v1/policies", json=document.to_dict())
    return new


def node_budgets(
    env: Environment, table: str | None = None, researcher: str | None = None
) -> list[dict[str, Any]]:
    """Each DP table's balance: per table the custodian that counts the most spent.

    Custodians keep their own ledgers; they agree unless a job failed on some of them
    after others released their share, so the largest spend is the safe figure.
    """
    params = {"researcher": researcher} if researcher else None
    answers = broadcast(env, "GET", "/v1/budgets", params=params)
    merged: dict[str, dict[str, Any]] = {}
    for rows in answers.values():
        for row in rows:
            name = str(row["table"])
            known = merged.get(name)
            if known is None or float(row["spent_rho"]) > float(known["spent_rho"]):
                merged[name] = row
    if table is not None:
        if table not in merged:
            raise InputError(f"table {table!r} has no differential privacy policy")
        return [merged[table]]
    return [merged[k] for k in sorted(merged)]


def remaining(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{table: {"rho": ..., "epsilon": ...}}`` for the privacy object of a release."""
    return {
        str(r["table"]): {
            "rho": float(r["remaining_rho"]),
            "epsilon": float(r["remaining_epsilon"]),
        }
        for r in rows
    }
