"""Custodians witness the audit logs: the gateway's, and each other's.

Every custodian keeps, in its own store folder (``<store>/witness/<origin>.json``), the
largest signed head it accepted of each other log, with the log's pinned key; it
accepts a new head only with an RFC 9162 consistency proof from the held one and
co-signs what it holds with its own audit key.  It witnesses the gateway's newest head
whenever it accepts a job (:func:`witness_gateway`, refusing the job when the gateway
log is inconsistent with what it holds) and on ``tessera audit cross-check``
(:func:`publish`, through ``POST /v1/audit/witness``).

``tessera audit verify`` asks every custodian what it holds (``GET /v1/audit/witness``)
and compares with the log (:func:`custodian_check`): a custodian holding a larger head
means the log was truncated or rolled back, another key means the log was replaced by a
fresh one, another root at the same size means a fork.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessera.audit import AuditLog, TreeHead, VerifyReport, Witness, verify_head
from tessera.audit.witness import cosignature_message, verify_cosignature
from tessera.config import CONFIG_NAME, Environment
from tessera.errors import ChainBrokenError, InputError, TesseraError
from tessera.workflows.audit import (
    GATEWAY,
    CrossCheck,
    cross_check,
    load_signer,
    log_folder,
    node_ids,
    note_verify,
    open_log,
    verify_log,
)
from tessera.workflows.custodian import store_root
from tessera.workflows.nodes import ensure_nodes

__all__ = [
    "CustodianCheck",
    "WitnessedReport",
    "cross_check_all",
    "custodian_check",
    "observe_head",
    "publish",
    "verify_witnessed",
    "witness_folder",
    "witness_gateway",
    "witnessed",
]

_MAX_PROOF = 64


def witness_folder(env: Environment, node_id: int) -> Path:
    """Where custodian ``node_id`` keeps the heads it witnessed (its store folder)."""
    return store_root(env, node_id) / "witness"


def _name(node_id: int) -> str:
    return f"node-{node_id}"


def _cosigned(env: Environment, node_id: int, head: TreeHead, key: bytes) -> dict[str, Any]:
    signer = load_signer(log_folder(env.home, node_id), _name(node_id))
    signature = signer.sign(cosignature_message(_name(node_id), head))
    return {
        "witness": _name(node_id),
        "head": head.to_json(),
        "public_key": key.hex(),
        "cosignature": base64.b64encode(signature).decode(),
    }


def _observe(witness: Witness, log: AuditLog, head: TreeHead) -> TreeHead:
    size = log.size
    if head.size > size:  # a head for entries the log does not have: let observe name it
        return witness.observe(head, log.public_key, [])
    return witness.observe_log(head, log.public_key, size, log.consistency_proof)


def witness_gateway(env: Environment, node_id: int) -> TreeHead | None:
    """Custodian ``node_id`` witnesses the gateway log's newest signed head (job time).

    ChainBrokenError when the log is gone, shrank, forked or changed its key since the
    head this custodian holds; None when there is no gateway log or head yet.
    """
    witness = Witness(witness_folder(env, node_id))
    held = witness.latest(GATEWAY)
    folder = log_folder(env.home)
    if not (folder / "log.json").exists():
        if held is not None:
            raise ChainBrokenError(
                f"the gateway audit log is gone: custodian {node_id} witnessed size {held.size}"
            )
        return None
    log = AuditLog(folder)
    head = log.latest_head()
    if head is None:
        if held is not None:
            raise ChainBrokenError(
                f"the gateway audit log has no signed head: custodian {node_id} witnessed "
                f"size {held.size}"
            )
        return None
    if held is not None and held == head:  # nothing new since the last job: no lock
        return held
    return _observe(witness, log, head)


def _parse_request(doc: Any) -> tuple[TreeHead, bytes, list[bytes]]:
    if not isinstance(doc, dict):
        raise InputError("a witness request is an object")
    try:
        head = TreeHead.from_json(doc["head"])
        key = bytes.fromhex(str(doc["public_key"]))
        raw = doc.get("proof", [])
        if not isinstance(raw, list) or len(raw) > _MAX_PROOF:
            raise ValueError("proof")
        proof = [bytes.fromhex(str(p)) for p in raw]
    except (KeyError, TypeError, ValueError):
        raise InputError("malformed witness request") from None
    if any(len(p) != 32 for p in proof) or len(key) > 4096:
        raise InputError("malformed witness request")
    return head, key, proof


def observe_head(env: Environment, node_id: int, doc: Any) -> dict[str, Any]:
    """``POST /v1/audit/witness``: accept a head with its consistency proof and co-sign
    it (ChainBrokenError when it is inconsistent with the held one)."""
    head, key, proof = _parse_request(doc)
    if head.origin == _name(node_id):
        raise InputError("a custodian does not witness its own log")
    witness = Witness(witness_folder(env, node_id))
    held = witness.observe(head, key, proof)
    return _cosigned(env, node_id, held, key)


def witnessed(env: Environment, node_id: int) -> dict[str, Any]:
    """``GET /v1/audit/witness``: every head this custodian holds, co-signed."""
    folder = witness_folder(env, node_id)
    witness = Witness(folder)
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        heads = witness.heads(path.stem)
        key = witness.pinned_key(path.stem)
        if heads and key is not None:
            out.append(_cosigned(env, node_id, heads[-1], key))
    return {"witness": _name(node_id), "heads": out}


# ----- the requester's side: cross-check and verify --------------------------------------


def _environment(home: Path) -> Environment | None:
    if not (home / CONFIG_NAME).is_file():
        return None
    env = Environment.load(home)
    return env if env.nodes else None


def _held(
    answer: Any, cosigner: tuple[str, bytes] | None = None
) -> dict[str, tuple[TreeHead, bytes]]:
    """origin -> (head, pinned key) from a ``GET /v1/audit/witness`` answer; with
    ``cosigner`` (witness name, its audit public key) every co-signature is checked."""
    out: dict[str, tuple[TreeHead, bytes]] = {}
    try:
        for item in answer["heads"]:
            head = TreeHead.from_json(item["head"])
            signature = base64.b64decode(str(item["cosignature"]), validate=True)
            if cosigner is not None and not verify_cosignature(
                cosigner[0], head, signature, cosigner[1]
            ):
                raise ChainBrokenError(
                    f"{cosigner[0]}'s co-signature of {head.origin} does not verify"
                )
            out[head.origin] = (head, bytes.fromhex(str(item["public_key"])))
    except (KeyError, TypeError, ValueError):
        raise InputError("a custodian answered with a malformed witness document") from None
    return out


def _cosigner(home: Path, node_id: int) -> tuple[str, bytes] | None:
    """Custodian ``node_id``'s name and audit public key, when its log is here."""
    folder = log_folder(home, node_id)
    if not (folder / "log.json").exists():
        return None
    return _name(node_id), AuditLog(folder).public_key


def _logs(home: Path) -> list[AuditLog]:
    logs = []
    if (log_folder(home) / "log.json").exists():
        logs.append(open_log(log_folder(home), GATEWAY, create=False))
    logs += [open_log(log_folder(home, i), _name(i), create=False) for i in node_ids(home)]
    return logs


def publish(home: Path) -> list[tuple[str, str, int, str | None]]:
    """Send every log's newest head to every custodian (with the consistency proof from
    the head it holds): (witness, origin, size, problem or None) per pair."""
    env = _environment(home)
    if env is None:
        return []
    clients = ensure_nodes(env)  # first: a node starting opens its own log
    results: list[tuple[str, str, int, str | None]] = []
    try:
        logs = _logs(home)
        for log in logs:
            log.sign_pending()
        for i, client in clients.items():
            held = _held(client.request("GET", "/v1/audit/witness"))
            for log in logs:
                head = log.latest_head()
                if head is None or log.origin == _name(i):
                    continue
                old = held.get(log.origin)
                proof = []
                if old is not None and 0 < old[0].size < head.size:
                    proof = [p.hex() for p in log.consistency_proof(old[0].size, head.size)]
                doc = {"head": head.to_json(), "public_key": log.public_key.hex(), "proof": proof}
                try:
                    client.request("POST", "/v1/audit/witness", json=doc)
                    results.append((_name(i), log.origin, head.size, None))
                except TesseraError as exc:
                    results.append((_name(i), log.origin, head.size, str(exc)))
    finally:
        for client in clients.values():
            client.close()
    return results


@dataclass
class CustodianCheck:
    """What the custodians hold of one log, compared with the log."""

    checked: list[int] = field(default_factory=list)
    unreachable: str | None = None
    problems: list[str] = field(default_factory=list)
    no_custodians: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "checked": self.checked,
            "unreachable": self.unreachable,
            "problems": self.problems,
            "no_custodians": self.no_custodians,
        }


def _short(root: bytes) -> str:
    return root.hex()[:8] + ".."


def compare(log: AuditLog, entries: int, node_id: int, head: TreeHead, key: bytes) -> str | None:
    """Why what custodian ``node_id`` holds disagrees with ``log`` (None: it agrees)."""
    who = f"custodian {node_id} witnessed size {head.size} (root {_short(head.root)})"
    if key != log.public_key:
        return f"replaced by a fresh log: {who} under another signing key"
    if not verify_head(head, key):
        return f"custodian {node_id} holds a head with a bad signature"
    if head.size > entries:
        return f"rolled back: {who} but the log has {entries} entries"
    ours = log.root_at(head.size)
    if ours != head.root:
        return f"forked: {who} but the log's first {head.size} entries have root {_short(ours)}"
    return None


def custodian_check(home: Path, log: AuditLog, entries: int) -> CustodianCheck:
    """Ask every custodian (but the log's own) what it holds of ``log`` and compare."""
    result = CustodianCheck()
    env = _environment(home)
    if env is None:
        result.no_custodians = True
        return result
    try:
        clients = ensure_nodes(env)
    except TesseraError as exc:
        result.unreachable = f"could not reach the custodians: {exc}"
        return result
    try:
        for i, client in clients.items():
            if log.origin == _name(i):
                continue
            try:
                answer = client.request("GET", "/v1/audit/witness")
            except TesseraError as exc:
                result.unreachable = f"could not reach custodian {i}: {exc}"
                continue
            try:
                held = _held(answer, _cosigner(home, i))
            except TesseraError as exc:
                result.problems.append(str(exc))
                continue
            result.checked.append(i)
            if log.origin in held:
                problem = compare(log, entries, i, *held[log.origin])
                if problem is not None:
                    result.problems.append(problem)
    finally:
        for client in clients.values():
            client.close()
    return result


def cross_check_all(home: Path) -> list[CrossCheck]:
    """The local cross-check of the log folders, then every custodian witnesses every
    log's newest head through its API (refusing an inconsistent one)."""
    results = cross_check(home)
    for observer, origin, size, problem in publish(home):
        results.append(CrossCheck(observer, origin, size, problem is None, problem))
    return results


@dataclass(frozen=True)
class WitnessedReport:
    """``tessera audit verify``: the log's own check and the custodians' heads."""

    report: VerifyReport
    custodians: CustodianCheck
    offline: bool

    @property
    def problem(self) -> str | None:
        """The first thing that does not hold (None: verified): what a custodian holds
        comes first, since it names who saw the newer log."""
        if self.custodians.problems:
            return self.custodians.problems[0]
        if self.report.problem is not None:
            return self.report.problem
        return None if self.offline else self.custodians.unreachable

    @property
    def ok(self) -> bool:
        """The log verifies and every reachable custodian agrees (all reached, unless
        offline)."""
        return self.report.ok and self.problem is None

    def to_json(self) -> dict[str, Any]:
        """The ``audit verify --json`` document."""
        return {
            **self.report.to_json(),
            "ok": self.ok,
            "problem": self.problem,
            "custodians": self.custodians.to_json(),
            "offline": self.offline,
        }


def verify_witnessed(
    home: Path, *, node: int | None = None, offline: bool = False
) -> WitnessedReport:
    """Verify one log, then compare it with what the custodians witnessed (unless
    ``offline``); the check is recorded as :func:`verify_log` does."""
    report = verify_log(home, node=node, note=False)
    origin = GATEWAY if node is None else _name(node)
    if offline:
        check = CustodianCheck()
    else:
        folder = log_folder(home, node)
        check = custodian_check(home, AuditLog(folder), report.entries)
    result = WitnessedReport(report, check, offline)
    note_verify(home, node, origin, report, ok=result.ok)
    return result
