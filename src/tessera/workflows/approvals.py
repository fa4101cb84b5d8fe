"""Requests, stewards' decisions and what a custodian checks of them (signed documents).

A researcher files a **request** (what they want to run, why, on which tables, at what
epsilon), signed with their own key under :data:`REQUEST_CONTEXT`::

    {"format": "tessera-request", "version": 1, "id": "<32 hex>", "kind": "sql",
     "researcher": NAME, "purpose": TEXT, "tables": [NAME, ...], "sql": TEXT,
     "epsilon": float | null, "filed_at": unix s}

A table's steward answers it with a **decision** signed under :data:`DECISION_CONTEXT`::

    {"format": "tessera-decision", "version": 1, "subject": "request" | "output",
     "id": REQUEST OR JOB ID, "digest": SHA-256 of the request body (requests) | "",
     "table": NAME, "decision": "approve" | "refuse", "reason": TEXT, "steward": NAME,
     "decided_at": unix s, "expires_at": unix s}

A job on a table whose policy says ``approval: required`` carries ``approval:
{"request": <signed request>, "decisions": [<signed decision>, ...]}``.  Every custodian
checks it on its own (:func:`check_approval`), against the roster and the policies it
holds: the request is signed by the job's requester; for every such table a decision of
that table's steward (as the custodian's copy of the policy names them), signed by them,
approves this very request and has not expired; and the job runs exactly the approved
SQL: the custodian compiles the request's SQL against the manifests it holds and
compares the plan (and, under DP, the released statistics and the epsilon).  Each
approval runs once (the custodian records its use; :class:`tessera.workflows.custodian.Custodian`).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tessera.dp import ReleasePlan
from tessera.dp.policy import TablePolicy
from tessera.errors import InputError, PolicyError
from tessera.keys.documents import SignedDocument, canonical_bytes, verified_signers
from tessera.keys.people import Roster
from tessera.mpc.plan import SqlPlan
from tessera.mpc.sql import compile_sql
from tessera.workflows.job_checks import dp_aggregates

__all__ = [
    "COLLECT_CONTEXT",
    "DECISION_CONTEXT",
    "DECISION_VALID_S",
    "REQUEST_CONTEXT",
    "check_approval",
    "decision_body",
    "digest",
    "is_time",
    "parse_decision",
    "parse_request",
    "request_body",
    "verified_decision",
]

REQUEST_CONTEXT = b"tessera-request-v1"
DECISION_CONTEXT = b"tessera-decision-v1"
COLLECT_CONTEXT = b"tessera-collect-v1"
DECISION_VALID_S = 30 * 86400
_FUTURE_S = 300
_ID = re.compile(r"^[0-9a-f]{32}$")
_TEXT_MAX = 2000
_SQL_MAX = 20000
KINDS = ("sql",)


def digest(body: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a body's canonical bytes: what a decision names."""
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def _text(value: Any, what: str, limit: int = _TEXT_MAX) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{what} must be non-empty text")
    if len(value) > limit:
        raise InputError(f"{what} is longer than {limit} characters")
    return value


def request_body(
    *,
    researcher: str,
    purpose: str,
    tables: Sequence[str],
    sql: str,
    epsilon: float | None = None,
    kind: str = "sql",
) -> dict[str, Any]:
    """A new request's body (fresh id), checked with :func:`parse_request`."""
    body = {
        "format": "tessera-request",
        "version": 1,
        "id": secrets.token_hex(16),
        "kind": kind,
        "researcher": researcher,
        "purpose": purpose.strip(),
        "tables": sorted(set(tables)),
        "sql": sql.strip(),
        "epsilon": epsilon,
        "filed_at": round(time.time(), 3),
    }
    return parse_request(body)


def parse_request(body: Any) -> dict[str, Any]:
    """``body`` if it is a well-formed request body; InputError otherwise."""
    if not isinstance(body, dict) or body.get("format") != "tessera-request":
        raise InputError("not a Tessera request (format tessera-request)")
    if body.get("version") != 1:
        raise InputError("unsupported request version")
    if not isinstance(body.get("id"), str) or not _ID.match(body["id"]):
        raise InputError("a request id is 32 hex digits")
    if body.get("kind") not in KINDS:
        raise InputError(f"a request's kind is one of {', '.join(KINDS)}")
    _text(body.get("researcher"), "the researcher", 64)
    _text(body.get("purpose"), "the purpose")
    _text(body.get("sql"), "the SQL", _SQL_MAX)
    tables = body.get("tables")
    if not (isinstance(tables, list) and tables and all(isinstance(t, str) for t in tables)):
        raise InputError("a request names its tables")
    eps = body.get("epsilon")
    if eps is not None and (
        isinstance(eps, bool)
        or not isinstance(eps, int | float)
        or not (math.isfinite(eps) and eps > 0)
    ):
        raise InputError("a request's epsilon is a positive number or null")
    if not is_time(body.get("filed_at")):
        raise InputError("a request states when it was filed (unix seconds)")
    return body


def decision_body(
    *,
    subject: str,
    target: str,
    table: str,
    approve: bool,
    reason: str,
    steward: str,
    request: Mapping[str, Any] | None = None,
    valid_s: float = DECISION_VALID_S,
) -> dict[str, Any]:
    """A steward's decision on a request (``subject="request"``, ``request`` its body) or
    on a held output (``subject="output"``, ``target`` the job id)."""
    now = round(time.time(), 3)
    body = {
        "format": "tessera-decision",
        "version": 1,
        "subject": subject,
        "id": target,
        "digest": digest(request) if request is not None else "",
        "table": table,
        "decision": "approve" if approve else "refuse",
        "reason": reason.strip(),
        "steward": steward,
        "decided_at": now,
        "expires_at": now + valid_s,
    }
    return parse_decision(body)


def parse_decision(body: Any) -> dict[str, Any]:
    """``body`` if it is a well-formed decision body; InputError otherwise."""
    if not isinstance(body, dict) or body.get("format") != "tessera-decision":
        raise InputError("not a Tessera decision (format tessera-decision)")
    if body.get("version") != 1:
        raise InputError("unsupported decision version")
    if body.get("subject") not in ("request", "output"):
        raise InputError("a decision is about a request or an output")
    if not isinstance(body.get("id"), str) or not _ID.match(body["id"]):
        raise InputError("a decision names a request or job id (32 hex digits)")
    if body.get("decision") not in ("approve", "refuse"):
        raise InputError("a decision approves or refuses")
    _text(body.get("reason"), "the reason")
    _text(body.get("table"), "the table", 64)
    _text(body.get("steward"), "the steward", 64)
    if not isinstance(body.get("digest"), str):
        raise InputError("a decision carries the request's digest")
    for key in ("decided_at", "expires_at"):
        if not is_time(body.get(key)):
            raise InputError(f"a decision states {key} (unix seconds)")
    return body


def is_time(value: Any) -> bool:
    """True for unix seconds: a finite int or float in (0, 1e11), not a bool."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and 0 < value < 1e11
    )


def verified_decision(
    document: SignedDocument,
    roster: Roster,
    policy: TablePolicy | None,
    *,
    subject: str,
    target: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The body of ``document`` if it is a valid decision on ``target`` by the steward of
    its table (as ``policy``, the custodian's copy, names them); PolicyError otherwise."""
    body = parse_decision(document.body)
    now = time.time() if now is None else now
    table = str(body["table"])
    if body["subject"] != subject or body["id"] != target:
        raise PolicyError(f"the decision on {table} is about another {subject}")
    if policy is None:
        raise PolicyError(f"table {table} has no policy naming its steward")
    if body["steward"] != policy.steward:
        raise PolicyError(f"the decision on {table} is not by its steward {policy.steward}")
    if policy.steward not in verified_signers(document, roster.keys(), context=DECISION_CONTEXT):
        raise PolicyError(f"the decision on {table} is not signed by its steward {policy.steward}")
    if float(body["decided_at"]) > now + _FUTURE_S:
        raise PolicyError(f"the decision on {table} is dated in the future")
    if float(body["expires_at"]) < now:
        raise PolicyError(f"the approval on {table} has expired")
    return body


def check_approval(
    job: Mapping[str, Any],
    requester: str,
    roster: Roster,
    policies: Mapping[str, TablePolicy | None],
    manifests: Mapping[str, Mapping[str, Any]],
    release: ReleasePlan | None,
    *,
    default_epsilon: float | None = None,
) -> str:
    """The id of the request whose approval lets ``job`` run; PolicyError if none does.

    ``policies``: the custodian's policy of each table the job reads (None: none
    installed); approval is checked for those whose policy requires it.
    """
    needing = sorted(t for t, p in policies.items() if p is not None and p.policy.approval_required)
    approval = job.get("approval")
    if not isinstance(approval, dict):
        raise PolicyError(
            f"{', '.join(needing)} requires an approved request "
            "(tessera request file, then its steward approves it)"
        )
    request = SignedDocument.from_dict(approval.get("request"))
    body = parse_request(request.body)
    if body["researcher"] != requester:
        raise PolicyError("the approved request was filed by someone else")
    if requester not in verified_signers(request, roster.keys(), context=REQUEST_CONTEXT):
        raise PolicyError("the request is not signed by the researcher who filed it")
    tables = sorted({str(item["table"]) for item in job["inputs"]})
    if body["tables"] != tables:
        raise PolicyError("the job reads other tables than the approved request")
    decisions = approval.get("decisions")
    if not isinstance(decisions, list) or len(decisions) > 8:
        raise InputError("an approval carries a list of decisions")
    approved: set[str] = set()
    for raw in decisions:
        doc = SignedDocument.from_dict(raw)
        table = str(doc.body.get("table", ""))
        if table not in needing:
            continue
        decided = verified_decision(
            doc, roster, policies[table], subject="request", target=str(body["id"])
        )
        if decided["digest"] != digest(body):
            raise PolicyError(f"the decision on {table} approves another version of the request")
        if decided["decision"] != "approve":
            raise PolicyError(f"the steward of {table} refused the request: {decided['reason']}")
        if decided["steward"] == requester:
            raise PolicyError(f"{requester} cannot approve their own request on {table}")
        approved.add(table)
    missing = [t for t in needing if t not in approved]
    if missing:
        raise PolicyError(f"the request is not approved by the steward of {', '.join(missing)}")
    _check_runs_request(job, body, manifests, release, default_epsilon)
    return str(body["id"])


_DP_REWRITTEN = ("measures", "extremes", "aggregates", "min_group")


def _check_runs_request(
    job: Mapping[str, Any],
    body: Mapping[str, Any],
    manifests: Mapping[str, Mapping[str, Any]],
    release: ReleasePlan | None,
    default_epsilon: float | None,
) -> None:
    """PolicyError unless ``job`` runs exactly the request's SQL (compiled here)."""
    if job["type"] != "sql" or not isinstance(job["params"].get("plan"), dict):
        raise PolicyError("the job is not the approved SQL query")
    claimed = SqlPlan.from_dict(job["params"]["plan"])
    missing = [t for t in body["tables"] if t not in manifests]
    if missing:
        raise PolicyError(f"this custodian holds no table {missing[0]}")
    compiled = compile_sql(str(body["sql"]), manifests, min_group=max(1, claimed.min_group))
    mine, theirs = compiled.to_dict(), claimed.to_dict()
    ignored = _DP_REWRITTEN if release is not None else ("min_group",)
    for key in ignored:
        mine.pop(key, None)
        theirs.pop(key, None)
    if mine != theirs:
        raise PolicyError("the job does not run the approved query")
    if release is None:
        if body["epsilon"] is not None:
            raise PolicyError("the approved request asks for an epsilon; the job adds no noise")
        return
    expected = [(a.func, a.column) for a in dp_aggregates(compiled)[0]]
    if [(a.func, a.column) for a in release.aggregates] != expected:
        raise PolicyError("the job does not release the approved query's statistics")
    epsilon = body["epsilon"] if body["epsilon"] is not None else default_epsilon
    if epsilon is None or not math.isclose(float(release.requested_epsilon or 0), float(epsilon)):
        raise PolicyError("the job spends another epsilon than the approved request")
