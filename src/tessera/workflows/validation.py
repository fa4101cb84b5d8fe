"""Have the custodians validate uploaded chunks before any DP release reads them.

A custodian cannot see whether the shares a hospital uploaded encode valid rows (an
age inside its bounds, bits that are bits); a DP sensitivity holds only if they do.
The ``validate`` job (:mod:`tessera.mpc.validate`) checks every encoding constraint of
the listed chunks inside the MPC and opens one bit; each custodian records the outcome
itself and refuses DP jobs over chunks that failed or were never checked.
:func:`ensure_validated` runs that job for the chunks still unchecked (``tessera
query`` and ``tessera recommend`` call it before a DP release; ``tessera table
validate`` runs it on demand).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tessera.config import Environment
from tessera.errors import PolicyError
from tessera.tables.encode import PRIME
from tessera.tables.store import Catalog
from tessera.workflows.job_checks import shared_parts
from tessera.workflows.nodes import broadcast, run_job
from tessera.workflows.people import Signer

__all__ = ["chunk_states", "ensure_validated", "validate_table"]


def chunk_states(env: Environment, table: str) -> dict[str, bool | None]:
    """Per chunk: True when every custodian validated it, False when any found it
    invalid, None when some custodian has not checked it."""
    answers = broadcast(env, "GET", f"/v1/tables/{table}/validation")
    seen: dict[str, list[bool | None]] = {}
    for answer in answers.values():
        for chunk, ok in answer["chunks"].items():
            seen.setdefault(chunk, []).append(ok)
    return {
        chunk: False if False in oks else None if None in oks else True
        for chunk, oks in seen.items()
    }


def validate_table(env: Environment, table: str, signer: Signer) -> dict[str, Any]:
    """Validate the chunks of ``table`` no custodian has checked yet; the outcome."""
    manifest = Catalog(env.home).get(table)
    states = chunk_states(env, table)
    pending = sorted(c for c, ok in states.items() if ok is None)
    if pending:
        parts = shared_parts(manifest["columns"])
        inputs = [{"alias": "t", "table": table, "parts": parts, "chunks": pending}]
        params = {"columns": manifest["columns"], "alias": "t", "prime": PRIME}
        run_job(env, "validate", inputs, params, prime=PRIME, signer=signer)
        states = chunk_states(env, table)
    return {
        "table": table,
        "checked_now": len(pending),
        "valid": sorted(c for c, ok in states.items() if ok),
        "failed": sorted(c for c, ok in states.items() if ok is False),
        "unchecked": sorted(c for c, ok in states.items() if ok is None),
    }


def ensure_validated(env: Environment, tables: Sequence[str], signer: Signer) -> None:
    """Validate what is unchecked in ``tables``; PolicyError naming a failed chunk."""
    for table in tables:
        outcome = validate_table(env, table, signer)
        if outcome["failed"]:
            chunk = outcome["failed"][0]
            hospital = next(
                (c["hospital"] for c in Catalog(env.home).get(table)["chunks"] if c["id"] == chunk),
                "?",
            )
            raise PolicyError(
                f"table {table}: the chunk from {hospital} ({chunk[:12]}) failed the "
                "custodians' validation (its shares do not encode valid rows); DP releases "
                "of this table are refused until it is removed"
            )
