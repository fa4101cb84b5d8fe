"""Create, widen and remove shared tables (``tessera table create/alter/rm``).

``create`` declares a table's schema before any hospital imports (no custodian is
contacted: a custodian learns of a table with its first chunk).  ``alter`` and ``rm``
change what the custodians hold, so each is a document signed by a steward of the
custodians' roster (the table's own steward when its policy names one) that every
custodian checks itself before acting (:func:`admit_table_change`):

- ``rm``: every custodian deletes its shares of the table;
- ``alter``: every custodian re-encodes its shares for the widened schema, locally
  (:mod:`tessera.tables.reshape`); chunks are validated again before the next DP
  release (the validation is tied to the declared columns).

The document names the chunks the steward saw, so it cannot be replayed against a table
that changed since, and it expires after :data:`CHANGE_WINDOW_S`.  A table under a
differential privacy policy keeps its confirmed bounds: ``alter`` refuses to widen
them unless ``confirm_bounds`` re-signs the policy with the new bounds (widening is
a strengthening: more noise); custodians refuse DP jobs whose policy bounds are
narrower than the stored range in the meantime.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from tessera.config import Environment
from tessera.errors import InputError, NotFoundError, PolicyError
from tessera.keys.documents import SignedDocument, verified_signers
from tessera.keys.people import Roster
from tessera.tables.encode import column_info
from tessera.tables.reshape import check_widening
from tessera.tables.schema import Column, Schema
from tessera.tables.store import Catalog, ShareStore, check_table_name
from tessera.workflows.nodes import broadcast
from tessera.workflows.people import Signer, require_role
from tessera.workflows.policies import installed_policy, set_policy
from tessera.workflows.tables import check_square_sums, new_manifest, read_schema, with_profile

__all__ = [
    "CHANGE_WINDOW_S",
    "TABLE_CHANGE_CONTEXT",
    "admit_table_change",
    "alter_table",
    "apply_table_change",
    "create_table",
    "remove_table",
    "widened_schema",
]

TABLE_CHANGE_CONTEXT = b"tessera-table-change-v1"
CHANGE_WINDOW_S = 300.0
_ACTIONS = ("remove", "alter")


def create_table(env: Environment, name: str, schema_path: Path) -> dict[str, Any]:
    """Declare table ``name`` with the schema in ``schema_path`` (no rows yet)."""
    check_table_name(name)
    catalog = Catalog(env.home)
    if catalog.exists(name):
        raise InputError(
            f"table {name} already exists: change it with 'tessera table alter {name}', or "
            f"remove it with 'tessera table rm {name}'"
        )
    schema = read_schema(schema_path)
    manifest = with_profile(new_manifest(name, env, schema, declared=True), schema_path)
    catalog.put(name, manifest)
    return {"table": name, "created": True, "columns": [c.to_dict() for c in schema.columns]}


def widened_schema(
    schema: Schema,
    *,
    bounds: Mapping[str, tuple[str, str]] | None = None,
    categories: Mapping[str, list[str]] | None = None,
) -> Schema:
    """``schema`` with new ``min``/``max`` (user units) and categories appended."""
    cols = []
    names = {c.name.lower() for c in schema.columns}
    for wanted in [*(bounds or {}), *(categories or {})]:
        if wanted.lower() not in names:
            raise InputError(f"the table has no column {wanted!r}")
    for col in schema.columns:
        doc = col.to_dict()
        for key, (lo, hi) in (bounds or {}).items():
            if key.lower() == col.name.lower():
                if not col.numeric:
                    raise InputError(f"column {col.name}: --bounds applies to numeric columns")
                doc["min"], doc["max"] = lo, hi
        for key, extra in (categories or {}).items():
            if key.lower() == col.name.lower():
                if col.kind != "categorical":
                    raise InputError(f"column {col.name}: --add-category applies to categoricals")
                doc["categories"] = [*col.categories, *extra]
        cols.append(Column.from_dict(doc))
    return Schema(tuple(cols))


def _change_document(
    signer: Signer, action: str, name: str, manifest: Mapping[str, Any], schema: Schema | None
) -> SignedDocument:
    body = {
        "kind": "table-change",
        "version": 1,
        "action": action,
        "table": name,
        "chunks": [str(c["id"]) for c in manifest["chunks"]],
        "schema": None if schema is None else schema.to_dict(),
        "issued_at": time.time(),
        "nonce": secrets.token_hex(16),
    }
    return signer.sign(SignedDocument(body), context=TABLE_CHANGE_CONTEXT)


def remove_table(env: Environment, name: str, signer: Signer) -> dict[str, Any]:
    """Remove table ``name``: every custodian deletes its shares, then the catalogue entry."""
    catalog = Catalog(env.home)
    manifest = catalog.get(name)
    require_role(env, signer, ("steward",), f"removing table {name}")
    removed_on = 0
    if manifest["chunks"]:
        document = _change_document(signer, "remove", name, manifest, None)
        answers = broadcast(env, "POST", f"/v1/tables/{name}/change", json=document.to_dict())
        removed_on = sum(1 for a in answers.values() if a.get("removed"))
    catalog.remove(name)
    return {"table": name, "removed": True, "custodians": removed_on, "rows": manifest["rows"]}


def alter_table(
    env: Environment,
    name: str,
    new_schema: Schema,
    signer: Signer,
    *,
    confirm_bounds: bool = False,
) -> dict[str, Any]:
    """Widen table ``name`` to ``new_schema`` on every custodian (re-encoding its shares)."""
    catalog = Catalog(env.home)
    manifest = catalog.get(name)
    old_schema = Schema.from_dict(manifest["schema"])
    changed = check_widening(old_schema, new_schema)
    if not changed:
        raise InputError(f"table {name} already has this schema: nothing to change")
    check_square_sums(new_schema, max(1, int(manifest["rows"])))
    require_role(env, signer, ("steward",), f"altering table {name}")
    current = installed_policy(env, name)
    bounds = _numeric_bounds(new_schema)
    private = (
        current is not None and current.policy.is_private and bounds != _numeric_bounds(old_schema)
    )
    if private and not confirm_bounds:
        raise PolicyError(
            f"table {name} has a differential privacy policy whose confirmed bounds this "
            "widens: add --confirm-bounds to sign the policy again with the new bounds (DP "
            "queries are refused until they are confirmed)"
        )
    updated = {
        **manifest,
        "bounds": "declared",
        "schema": new_schema.to_dict(),
        "columns": [column_info(c) for c in new_schema.columns],
    }
    if manifest["chunks"]:
        document = _change_document(signer, "alter", name, manifest, new_schema)
        broadcast(env, "POST", f"/v1/tables/{name}/change", json=document.to_dict())
    catalog.put(name, updated)
    report: dict[str, Any] = {"table": name, "altered": changed, "policy_bounds": None}
    if private and current is not None:
        policy = replace(current.policy, bounds=bounds)
        installed = set_policy(env, name, policy, steward=signer)
        report["policy_bounds"] = {"serial": installed.serial, "bounds": [list(b) for b in bounds]}
    return report


def _numeric_bounds(schema: Schema) -> tuple[tuple[str, int, int], ...]:
    """The bounds a DP policy confirms: numeric columns' (name, min, max) in units."""
    return tuple((c.name, c.min, c.max) for c in schema.columns if c.numeric)


# ----- the custodian's side ----------------------------------------------------------


def admit_table_change(
    roster: Roster,
    document: SignedDocument,
    manifest: Mapping[str, Any],
    *,
    policy_steward: str | None,
    now: float | None = None,
) -> dict[str, Any]:
    """The change's body if this custodian may apply it to the table ``manifest`` describes.

    Refused (PolicyError) unless a steward of ``roster`` signed it, the table's own
    steward (``policy_steward``, from its installed policy) among them; unless it is at
    most :data:`CHANGE_WINDOW_S` old; and unless it names exactly the chunks held here.
    """
    body = _check_body(document.body)
    age = (time.time() if now is None else now) - float(body["issued_at"])
    if abs(age) > CHANGE_WINDOW_S:
        raise PolicyError("the table change expired (signed more than 5 minutes ago): run it again")
    signers = verified_signers(document, roster.keys(), context=TABLE_CHANGE_CONTEXT)
    stewards = {n for n in signers if (p := roster.get(n)) is not None and "steward" in p.roles}
    table = body["table"]
    if not stewards:
        raise PolicyError(
            f"changing table {table} needs a steward's signature (run it --as a steward)"
        )
    if policy_steward is not None and policy_steward not in stewards:
        raise PolicyError(
            f"changing table {table} needs its steward {policy_steward!r}'s signature"
        )
    held = [str(c.get("id")) for c in manifest.get("chunks", [])]
    if held != body["chunks"]:
        raise PolicyError(
            f"table {table} changed since the request was signed (other chunks): run it again"
        )
    return body


def _check_body(body: Mapping[str, Any]) -> dict[str, Any]:
    ok = (
        body.get("kind") == "table-change"
        and body.get("version") == 1
        and body.get("action") in _ACTIONS
        and isinstance(body.get("table"), str)
        and isinstance(body.get("chunks"), list)
        and all(isinstance(c, str) for c in body["chunks"])
        and isinstance(body.get("issued_at"), int | float)
        and (body.get("schema") is None or isinstance(body.get("schema"), dict))
    )
    if not ok or (body["action"] == "alter" and body.get("schema") is None):
        raise InputError("malformed table change document")
    check_table_name(body["table"])
    return dict(body)


def apply_table_change(store: ShareStore, body: Mapping[str, Any]) -> dict[str, Any]:
    """Apply an admitted change to this custodian's shares."""
    table = str(body["table"])
    if body["action"] == "remove":
        return {"table": table, "removed": store.remove(table)}
    try:
        manifest = store.manifest(table)
    except NotFoundError:
        raise NotFoundError(f"this custodian holds no table {table}") from None
    schema = Schema.from_dict(body["schema"])
    updated = {
        **manifest,
        "bounds": "declared",
        "schema": schema.to_dict(),
        "columns": [column_info(c) for c in schema.columns],
    }
    store.reshape(table, updated, schema)
    return {"table": table, "altered": True}
