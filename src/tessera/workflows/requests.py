"""Requests and approvals: file, decide, run, and held outputs (``tessera request``).

The folder ``HOME/requests/`` keeps one JSON record per request: the signed request (or
re-identification) document, the stewards' signed decisions, and the state.  It is a
convenience for people, never an authority: the custodians check every signature and
every approval themselves (:mod:`tessera.workflows.approvals`,
:mod:`tessera.workflows.airlock`), so editing a record changes nothing they accept.

Kinds and states:

* ``sql``: ``pending`` -> ``approved`` | ``refused`` -> ``done`` (ran) | ``held`` (its
  release was held back: see the ``output`` request it points to);
* ``output`` (a release the custodians held back for the steward, with the checker's
  reasons): ``held`` -> ``released`` | ``withheld``;
* ``reidentify``: ``pending`` -> ``approved`` (enough people signed) | ``refused`` ->
  ``done``.

Every step is an audit event (the command's or the gateway request's own, with the
request id added as detail).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tessera.config import Environment
from tessera.core.prime import InconsistentSharesError, reconstruct_array, to_signed
from tessera.dp.policy import TablePolicy
from tessera.errors import (
    IntegrityError,
    NotFoundError,
    OutputHeldError,
    PolicyError,
    UsageError,
)
from tessera.keys.documents import SignedDocument
from tessera.keys.ephemeral import Receiver, open_sealed
from tessera.mpc.jobs import result_shares
from tessera.mpc.plan import SqlPlan
from tessera.mpc.result import decode_result
from tessera.tables.encode import PRIME
from tessera.workflows.airlock import collect_body
from tessera.workflows.approvals import (
    COLLECT_CONTEXT,
    DECISION_CONTEXT,
    REQUEST_CONTEXT,
    decision_body,
    request_body,
)
from tessera.workflows.audit_cli import add_detail
from tessera.workflows.nodes import broadcast
from tessera.workflows.people import Signer
from tessera.workflows.policies import installed_policy
from tessera.workflows.query import plan_query, run_sql

__all__ = [
    "Decision",
    "Request",
    "decide",
    "file_request",
    "list_requests",
    "request_result",
    "run_request",
    "run_sql_recorded",
    "show_request",
]

_FOLDER = "requests"


@dataclass(frozen=True)
class Decision:
    """One person's decision on a request, as the record shows it."""

    by: str
    decision: str
    reason: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"by": self.by, "decision": self.decision, "reason": self.reason, "at": self.at}


@dataclass(frozen=True)
class Request:
    """A request as the record shows it (the signed documents stay in the record)."""

    id: str
    kind: str
    state: str
    researcher: str
    purpose: str
    sql: str | None
    tables: tuple[str, ...]
    epsilon: float | None
    filed_at: float
    decisions: tuple[Decision, ...] = ()
    reasons: tuple[str, ...] = ()
    job_id: str | None = None
    parent: str | None = None
    refs: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``tessera request show --json``, the gateway)."""
        return {
            "version": 1,
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "researcher": self.researcher,
            "purpose": self.purpose,
            "sql": self.sql,
            "tables": list(self.tables),
            "epsilon": self.epsilon,
            "filed_at": self.filed_at,
            "decisions": [d.to_dict() for d in self.decisions],
            "reasons": list(self.reasons),
            "job_id": self.job_id,
            "parent": self.parent,
            "refs": list(self.refs),
        }


# ----- the record folder -------------------------------------------------------------
def _folder(env: Environment) -> Path:
    folder = env.home / _FOLDER
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


@contextlib.contextmanager
def _locked(env: Environment) -> Iterator[Path]:
    folder = _folder(env)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        os.close(fd)


def _check_id(request_id: str) -> str:
    rid = request_id.strip().lower()
    if not (len(rid) == 32 and all(c in "0123456789abcdef" for c in rid)):
        raise UsageError("a request id is 32 hex digits (tessera request ls)")
    return rid


def _load(folder: Path, request_id: str) -> dict[str, Any]:
    path = folder / f"{_check_id(request_id)}.json"
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"no request {request_id[:32]}") from None
    except ValueError:
        raise IntegrityError(f"the record of request {request_id[:12]} is damaged") from None
    return record


def _save(folder: Path, record: dict[str, Any]) -> None:
    path = folder / f"{record['id']}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def _view(record: dict[str, Any]) -> Request:
    return Request(
        id=record["id"],
        kind=record["kind"],
        state=record["state"],
        researcher=record["researcher"],
        purpose=record["purpose"],
        sql=record.get("sql"),
        tables=tuple(record.get("tables", ())),
        epsilon=record.get("epsilon"),
        filed_at=float(record["filed_at"]),
        decisions=tuple(Decision(**d) for d in record.get("log", [])),
        reasons=tuple(record.get("reasons", ())),
        job_id=record.get("job_id"),
        parent=record.get("parent"),
        refs=tuple(record.get("refs", ())),
    )


# ----- filing and listing ------------------------------------------------------------
def file_request(
    env: Environment,
    signer: Signer,
    *,
    kind: str = "sql",
    purpose: str,
    sql: str | None = None,
    epsilon: float | None = None,
    refs: Sequence[str] = (),
) -> Request:
    """File a request signed by ``signer`` (a researcher; for ``reidentify``, a steward
    or officer naming the pseudonyms or vault names in ``refs``)."""
    if kind == "reidentify":
        return _file_reidentify(env, signer, purpose=purpose, refs=refs)
    if kind != "sql" or not sql:
        raise UsageError("a request is --sql QUERY (or --reidentify PSEUDONYM)")
    tables = plan_query(env, sql).tables  # the SQL is checked before anything is signed
    body = request_body(
        researcher=signer.name, purpose=purpose, tables=tables, sql=sql, epsilon=epsilon
    )
    document = signer.sign(SignedDocument(body), context=REQUEST_CONTEXT)
    record = {
        "version": 1,
        "id": body["id"],
        "kind": "sql",
        "state": "pending",
        "researcher": signer.name,
        "purpose": body["purpose"],
        "sql": body["sql"],
        "tables": body["tables"],
        "epsilon": epsilon,
        "filed_at": body["filed_at"],
        "document": document.to_dict(),
        "decisions": [],
        "log": [],
    }
    with _locked(env) as folder:
        _save(folder, record)
    add_detail(request=body["id"])
    return _view(record)


def _file_reidentify(
    env: Environment, signer: Signer, *, purpose: str, refs: Sequence[str]
) -> Request:
    from tessera.workflows import reidentify as reid

    if not refs:
        raise UsageError("name the pseudonyms or vault objects to re-identify (--reidentify)")
    body = reid.reidentify_body(list(refs), purpose, signer.name)
    document = reid.sign_reidentify(body, signer)
    rid = str(body["nonce"])
    record = {
        "version": 1,
        "id": rid,
        "kind": "reidentify",
        "state": "pending",
        "researcher": signer.name,
        "purpose": purpose,
        "sql": None,
        "tables": [],
        "epsilon": None,
        "filed_at": float(body["issued_at"]),
        "refs": list(refs),
        "document": document.to_dict(),
        "decisions": [],
        "log": [{"by": signer.name, "decision": "approve", "reason": purpose, "at": time.time()}],
    }
    with _locked(env) as folder:
        _save(folder, record)
    add_detail(request=rid)
    return _view(record)


def list_requests(env: Environment, *, viewer: str | None = None) -> list[Request]:
    """Every request, newest first (``viewer``: only the ones this researcher filed)."""
    folder = env.home / _FOLDER
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except ValueError:
            continue
        if viewer is None or record.get("researcher") == viewer:
            out.append(_view(record))
    return sorted(out, key=lambda r: r.filed_at, reverse=True)


def show_request(env: Environment, request_id: str) -> Request:
    """One request; NotFoundError if there is none with this id."""
    return _view(_load(_folder(env), request_id))


# ----- deciding ----------------------------------------------------------------------
def _installed(env: Environment, tables: Sequence[str]) -> dict[str, TablePolicy | None]:
    """Each table's policy as the custodians hold it (asked once per table)."""
    return {table: installed_policy(env, table) for table in tables}


def _stewarded(policies: Mapping[str, TablePolicy | None], name: str) -> dict[str, TablePolicy]:
    """The tables whose policy names ``name`` as steward."""
    return {t: p for t, p in policies.items() if p is not None and p.steward == name}


def decide(
    env: Environment, request_id: str, signer: Signer, *, approve: bool, reason: str
) -> Request:
    """Approve or refuse a request (or release/withhold a held output) as ``signer``,
    the steward of its tables; a re-identification request is co-signed instead."""
    if not reason.strip():
        raise UsageError("a decision states its reason (--reason)")
    with _locked(env) as folder:
        record = _load(folder, request_id)
        kind = record["kind"]
        if kind == "reidentify":
            _cosign(record, signer, approve=approve, reason=reason)
        elif kind == "output":
            _decide_output(env, record, signer, approve=approve, reason=reason)
        else:
            _decide_request(env, record, signer, approve=approve, reason=reason)
        record["log"].append(
            {
                "by": signer.name,
                "decision": "approve" if approve else "refuse",
                "reason": reason.strip(),
                "at": round(time.time(), 3),
            }
        )
        _save(folder, record)
    add_detail(request=record["id"], decision="approve" if approve else "refuse")
    return _view(record)


def _decide_request(
    env: Environment, record: dict[str, Any], signer: Signer, *, approve: bool, reason: str
) -> None:
    if record["state"] not in ("pending", "approved"):
        raise PolicyError(f"the request is {record['state']} already")
    if signer.name == record["researcher"]:
        raise PolicyError(f"{signer.name} cannot approve or refuse their own request")
    policies = _installed(env, record["tables"])
    mine = _stewarded(policies, signer.name)
    if not mine:
        raise PolicyError(
            f"{signer.name} is not the steward of {', '.join(record['tables'])} "
            "(as the custodians' policies name them)"
        )
    body = SignedDocument.from_dict(record["document"]).body
    for table in mine:
        decision = decision_body(
            subject="request",
            target=record["id"],
            table=table,
            approve=approve,
            reason=reason,
            steward=signer.name,
            request=body,
        )
        signed = signer.sign(SignedDocument(decision), context=DECISION_CONTEXT)
        record["decisions"] = [d for d in record["decisions"] if d["body"]["table"] != table] + [
            signed.to_dict()
        ]
    if not approve:
        record["state"] = "refused"
        return
    needing = [t for t, p in policies.items() if p is not None and p.policy.approval_required]
    approved = {
        d["body"]["table"] for d in record["decisions"] if d["body"]["decision"] == "approve"
    }
    if all(t in approved for t in needing):
        record["state"] = "approved"


def _decide_output(
    env: Environment, record: dict[str, Any], signer: Signer, *, approve: bool, reason: str
) -> None:
    if record["state"] != "held":
        raise PolicyError(f"the output is {record['state']} already")
    mine = _stewarded(_installed(env, record["tables"]), signer.name)
    if not mine:
        raise PolicyError(f"{signer.name} is not the steward of {', '.join(record['tables'])}")
    checked = sorted(t for t, p in mine.items() if p.policy.output_checks is not None)
    state = "held"
    for table in checked or sorted(mine)[:1]:  # every table whose checks held it
        decision = decision_body(
            subject="output",
            target=str(record["job_id"]),
            table=table,
            approve=approve,
            reason=reason,
            steward=signer.name,
        )
        signed = signer.sign(SignedDocument(decision), context=DECISION_CONTEXT)
        answers = broadcast(
            env, "POST", f"/v1/held/{record['job_id']}/decision", json=signed.to_dict()
        )
        record["decisions"].append(signed.to_dict())
        states = {str(a.get("state")) for a in answers.values()}
        state = states.pop() if len(states) == 1 else "held"
        if state != "held":
            break
    record["state"] = state


def _cosign(record: dict[str, Any], signer: Signer, *, approve: bool, reason: str) -> None:
    from tessera.workflows import reidentify as reid

    if record["state"] not in ("pending", "approved"):
        raise PolicyError(f"the request is {record['state']} already")
    if not approve:
        record["state"] = "refused"
        return
    document = SignedDocument.from_dict(record["document"])
    if any(s.signer == signer.name for s in document.signatures):
        raise PolicyError(f"{signer.name} signed this request already (a second person must)")
    record["document"] = reid.cosign(document, signer).to_dict()
    record["state"] = "approved"


# ----- running and results -----------------------------------------------------------
def run_request(
    env: Environment, request_id: str, signer: Signer, *, out: Path | None = None
) -> dict[str, Any]:
    """Run an approved request as the person who filed it: the answer, or
    ``{"held": True, "request": OUTPUT ID, "reasons": [...]}`` when the custodians held
    its release back for the steward.  A re-identification request answers
    ``{"identities": {pseudonym: identity}}``, or, for kept originals (written to
    ``out``), ``{"originals": [{"name", "pseudonym", "path"}]}``."""
    with _locked(env) as folder:
        record = _load(folder, request_id)
    if record["researcher"] != signer.name:
        raise PolicyError(f"only {record['researcher']}, who filed the request, may run it")
    if record["state"] == "refused":
        raise PolicyError("the request was refused")
    if record["state"] in ("done", "held"):
        raise PolicyError(f"the request ran already ({record['state']}); an approval runs once")
    add_detail(request=record["id"])
    if record["kind"] == "reidentify":
        from tessera.workflows import reidentify as reid

        document = SignedDocument.from_dict(record["document"])
        refs = [str(r) for r in document.body.get("refs", [])]
        if refs and all(r.startswith("dicom-original/") for r in refs):
            if out is None:
                raise UsageError("say where the originals go (--out PATH)")
            originals = reid.run_fetch_originals(env.home, document, out, signer)
            _set_state(env, record["id"], "done")
            return {"originals": originals}
        identities = reid.run_reidentify(env.home, document, signer)
        _set_state(env, record["id"], "done")
        return {"identities": identities}
    approval = {
        "request": record["document"],
        "decisions": [d for d in record["decisions"] if d["body"]["decision"] == "approve"],
    }
    try:
        answer = run_sql(
            env, record["sql"], signer=signer, epsilon=record["epsilon"], approval=approval
        )
    except OutputHeldError as held:
        output = _record_held(env, held, record["sql"], record["tables"], signer, record["id"])
        _set_state(env, record["id"], "held")
        return {"held": True, "request": output.id, "reasons": list(held.reasons)}
    _set_state(env, record["id"], "done")
    return answer


def _set_state(env: Environment, request_id: str, state: str) -> None:
    with _locked(env) as folder:
        record = _load(folder, request_id)
        record["state"] = state
        _save(folder, record)


def _record_held(
    env: Environment,
    held: OutputHeldError,
    sql: str,
    tables: Sequence[str],
    signer: Signer,
    parent: str | None,
) -> Request:
    """File the ``output`` request that stands for a release the custodians held."""
    record = {
        "version": 1,
        "id": held.job_id,
        "kind": "output",
        "state": "held",
        "researcher": signer.name,
        "purpose": "a release held back by the disclosure checks",
        "sql": sql,
        "tables": sorted(tables),
        "epsilon": None,
        "filed_at": round(time.time(), 3),
        "job_id": held.job_id,
        "reasons": list(held.reasons),
        "parent": parent,
        "document": None,
        "decisions": [],
        "log": [],
    }
    with _locked(env) as folder:
        _save(folder, record)
    add_detail(request=held.job_id, held=True)
    return _view(record)


def run_sql_recorded(
    env: Environment,
    sql: str,
    *,
    signer: Signer,
    epsilon: float | None = None,
    min_group: int | None = None,
) -> dict[str, Any]:
    """:func:`run_sql`, filing an ``output`` request when the custodians hold the release
    back (then OutputHeldError names that request)."""
    try:
        return run_sql(env, sql, signer=signer, epsilon=epsilon, min_group=min_group)
    except OutputHeldError as held:
        tables = plan_query(env, sql).tables
        output = _record_held(env, held, sql, tables, signer, None)
        raise OutputHeldError(
            f"{held}; the steward decides (tessera request show {output.id})",
            job_id=held.job_id,
            reasons=held.reasons,
        ) from None


def request_result(env: Environment, request_id: str, signer: Signer) -> dict[str, Any] | None:
    """A held output's answer for its steward (review) or, once released, for the
    researcher; None for requests that are not held outputs."""
    record = _load(_folder(env), request_id)
    if record["kind"] != "output":
        return None
    job_id = str(record["job_id"])
    receiver = Receiver.new()  # the custodians seal their shares to it
    body = collect_body(job_id, signer.name, receiver.public)
    document = signer.sign(SignedDocument(body), context=COLLECT_CONTEXT)
    answers = broadcast(env, "POST", f"/v1/held/{job_id}/collect", json=document.to_dict())
    shares = {}
    plans = []
    for node, answer in answers.items():
        label = f"held:{job_id}:{node - 1}"
        opened = json.loads(open_sealed(receiver, answer.get("sealed"), label=label))
        own = {"party": answer.get("party"), "shares": opened}
        shares[node - 1] = np.array(result_shares(own, node - 1), dtype=object)
        plans.append(json.dumps(answer.get("params", {}).get("plan"), sort_keys=True))
    plan = json.loads(plans[0]) if plans else None
    if plan is None or len(set(plans)) != 1 or len({s.shape for s in shares.values()}) != 1:
        raise IntegrityError("the custodians returned different held results")
    try:
        values = reconstruct_array(shares, t=env.mpc_threshold, p=PRIME, check=True)
    except InconsistentSharesError:
        raise IntegrityError("the custodians' shares of the held result disagree") from None
    result = decode_result(SqlPlan.from_dict(plan), [int(v) for v in to_signed(values, PRIME)])
    add_detail(request=record["id"])
    return result
