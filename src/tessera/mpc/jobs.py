"""MPC job specs: validation and the program registry.

A job is a JSON object::

    {"version": 1, "type": "sql", "job_id": "<32 hex>", "requester": "<roster name>",
     "issued_at": <unix seconds>,
     "parties": [["host", port], ...],          # MPyC party i listens at parties[i]
     "inputs": [{"alias": "a", "table": "cohort", "parts": ["age.th", ...]}],
     "noise": {"cells": 12, "mechanism": "..."} | null,   # per-party private DP noise
     "params": {...},                           # program-specific (the SQL plan, ...)
     "approval": {"request": {...}, "decisions": [...]} | absent}  # signed documents

The requester signs the job with their own ML-DSA-65 key
(:func:`tessera.workflows.nodes.sign_job`, a :class:`tessera.keys.documents.SignedDocument`
under context ``tessera-mpc-job-v2``); each custodian checks the signature against its
roster and the job against its policies (:mod:`tessera.workflows.custodian`) and refuses
unsigned, replayed or malformed jobs.

Programs: ``PROGRAMS`` maps a job type to the module that runs it inside each party
process (``async def run(ctx: tessera.mpc.party.PartyContext) -> None``).  To add a job
type, add one entry here and write the module (see docs/nodes.md).
"""

from __future__ import annotations

import importlib.util
import math
import re
from typing import Any

from tessera.errors import InputError, IntegrityError
from tessera.version import PROTOCOL_VERSION, __version__

__all__ = [
    "PROGRAMS",
    "program_module",
    "result_shares",
    "validate_job",
]

PROGRAMS: dict[str, str] = {
    "sql": "tessera.mpc.sql_program",
    "knn": "tessera.mpc.knn",  # issue 6 (recommend): module owned by that feature
    "validate": "tessera.mpc.validate",  # custodians check uploaded shares' encoding
}

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\.[a-z]{1,8}[0-9]{0,2}$")


def program_module(job_type: str) -> str:
    """The module that runs ``job_type``; InputError if unknown or not installed."""
    module = PROGRAMS.get(job_type)
    if module is None or importlib.util.find_spec(module) is None:
        raise InputError(f"unknown job type {job_type[:40]!r}")
    return module


def _is_time(value: Any) -> bool:
    """Unix seconds: a finite int or float within the range of a float (no bool, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) < 1 << 53 and math.isfinite(value)


def validate_job(job: Any, *, parties: int) -> dict[str, Any]:
    """``job`` as a dict if well formed for ``parties`` custodians; InputError otherwise."""
    if not isinstance(job, dict):
        raise InputError("job is not an object")
    if job.get("version") != 1:
        raise InputError("unsupported job version")
    protocol = job.get("protocol", 1)
    if protocol != PROTOCOL_VERSION:
        raise InputError(
            f"the job speaks protocol {str(protocol)[:12]}; this node speaks "
            f"{PROTOCOL_VERSION} (tessera {__version__})"
        )
    program_module(str(job.get("type")))
    if not isinstance(job.get("job_id"), str) or not _JOB_ID.match(job["job_id"]):
        raise InputError("job_id must be 32 hex digits")
    if not _is_time(job.get("issued_at")):
        raise InputError("issued_at missing (unix seconds, a finite number)")
    ps = job.get("parties")
    if not isinstance(ps, list) or len(ps) != parties:
        raise InputError(f"parties must list {parties} addresses")
    for p in ps:
        if not (
            isinstance(p, list)
            and len(p) == 2
            and isinstance(p[0], str)
            and isinstance(p[1], int)
            and 0 < p[1] < 65536
        ):
            raise InputError("a party address is [host, port]")
    inputs = job.get("inputs")
    if not isinstance(inputs, list) or len(inputs) > 8:
        raise InputError("inputs must be a list")
    for item in inputs:
        if not isinstance(item, dict):
            raise InputError("an input is an object")
        if not (
            _NAME.match(str(item.get("alias", ""))) and _NAME.match(str(item.get("table", "")))
        ):
            raise InputError("an input needs an alias and a table name")
        pts = item.get("parts")
        if not isinstance(pts, list) or not all(isinstance(x, str) and _PART.match(x) for x in pts):
            raise InputError("input parts must be COLUMN.PART names")
    noise = job.get("noise")
    if noise is not None and not (
        isinstance(noise, dict) and isinstance(noise.get("cells"), int) and noise["cells"] >= 0
    ):
        raise InputError("noise must be null or {'cells': int, ...}")
    if not isinstance(job.get("params"), dict):
        raise InputError("params must be an object")
    approval = job.get("approval")
    if approval is not None and not (
        isinstance(approval, dict)
        and isinstance(approval.get("request"), dict)
        and isinstance(approval.get("decisions"), list)
    ):
        raise InputError("approval must be null or {'request': {...}, 'decisions': [...]}")
    return job


def result_shares(result: Any, party: int) -> list[int]:
    """A node's answer to a job (``{"party": i, "shares": [int, ...]}``) as its shares;
    IntegrityError if it is malformed or answers for another party."""
    if not isinstance(result, dict) or type(result.get("party")) is not int:
        raise IntegrityError(f"node {party + 1} answered with a malformed result")
    if result["party"] != party:
        raise IntegrityError(f"node {party + 1} answered for another party")
    shares = result.get("shares")
    if not isinstance(shares, list) or not all(type(v) is int for v in shares):
        raise IntegrityError(f"node {party + 1} answered with malformed shares")
    return list(shares)
