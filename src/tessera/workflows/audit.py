"""Audit use cases: where logs live in an environment, appending, verifying, cross-checks.

Layout under an environment home::

    HOME/audit/                 the gateway log (origin "gateway") + signing.key
    HOME/audit/witness/         heads of the node logs the gateway has accepted
    HOME/nodes/<i>/audit/       node i's log (origin "node-<i>") + signing.key
    HOME/nodes/<i>/audit/witness/  heads of the gateway and the other nodes node i accepted

Node services call :func:`node_log` (an ``AuditSink``) to append, and :func:`cross_check`
to publish their heads and check everyone else's.  The signing key sits next to its log
(0600); the pinned public keys held by the witnesses are what make re-signing a rewritten
log with a fresh key detectable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.audit import AuditLog, TreeHead, VerifyReport, Witness, load_or_create_signer
from tessera.core.audit_sink import Action, AuditEvent
from tessera.errors import ChainBrokenError, NotFoundError, UsageError

__all__ = [
    "CrossCheck",
    "cross_check",
    "gateway_log",
    "log_folder",
    "node_ids",
    "node_log",
    "open_log",
    "record",
    "verify_log",
]

GATEWAY = "gateway"


def log_folder(home: Path, node: int | None = None) -> Path:
    """The folder of the gateway log (``node`` None) or of node ``node``'s log."""
    if node is None:
        return home / "audit"
    if node < 1:
        raise UsageError("node ids start at 1")
    return home / "nodes" / str(node) / "audit"


def _origin(node: int | None) -> str:
    return GATEWAY if node is None else f"node-{node}"


def open_log(folder: Path, origin: str, *, create: bool = True) -> AuditLog:
    """The log in ``folder`` with its signing key (made, with the log, on first use)."""
    if not (folder / "log.json").exists():
        if not create:
            raise NotFoundError(f"no audit log at {folder}")
        signer = load_or_create_signer(folder / "signing.key")
        return AuditLog.create(folder, origin, signer.public_key, signer=signer)
    return AuditLog(folder, signer=load_or_create_signer(folder / "signing.key"))


def gateway_log(home: Path, *, create: bool = True) -> AuditLog:
    """The gateway's audit log of environment ``home``."""
    return open_log(log_folder(home), GATEWAY, create=create)


def node_log(home: Path, node: int, *, create: bool = True) -> AuditLog:
    """Custodian node ``node``'s audit log (an AuditSink the node service emits into)."""
    return open_log(log_folder(home, node), _origin(node), create=create)


def node_ids(home: Path) -> list[int]:
    """The nodes of ``home`` that have an audit log."""
    root = home / "nodes"
    if not root.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in root.iterdir()
        if p.name.isdigit() and (p / "audit" / "log.json").exists()
    )


def record(home: Path, events: Sequence[AuditEvent], *, node: int | None = None) -> TreeHead:
    """Append ``events`` to the gateway log (or node ``node``'s) under one signed head."""
    if not events:
        raise UsageError("nothing to record")
    log = gateway_log(home) if node is None else node_log(home, node)
    return log.append(events)


def _witnessed(home: Path, origin: str) -> tuple[bytes | None, list[TreeHead]]:
    """Pinned key and every head of ``origin`` that the other parties accepted."""
    folders = [log_folder(home) / "witness"] + [
        log_folder(home, i) / "witness" for i in node_ids(home)
    ]
    heads: list[TreeHead] = []
    pinned: bytes | None = None
    for folder in folders:
        witness = Witness(folder)
        seen = witness.heads(origin)
        if seen and pinned is None:
            pinned = witness.pinned_key(origin)
        heads.extend(seen)
    return pinned, heads


def verify_log(home: Path, *, node: int | None = None, note: bool = True) -> VerifyReport:
    """Verify one log against its signed heads and the heads others witnessed.

    With ``note`` the check itself is recorded in the gateway log (DICOM 110101 Audit Log
    Used; a failed node log is recorded as a failure, which the monitor turns into an
    audit-log tampering alert).  A gateway log that fails is left untouched.
    """
    log = gateway_log(home, create=False) if node is None else node_log(home, node, create=False)
    pinned, witnessed = _witnessed(home, log.origin)
    report = log.verify(trusted_key=pinned, witnessed=witnessed)
    if note:
        detail: dict[str, str | int] = {"entries": report.entries}
        if report.first_bad is not None:
            detail["first_bad"] = report.first_bad
        event = AuditEvent(
            Action.AUDIT_VERIFY,
            outcome="success" if report.ok else "failure",
            user="tessera",
            source=GATEWAY,
            entity=log.origin,
            entity_type="log",
            detail=detail,
        )
        # Never append to a gateway log that failed: new entries would move the evidence.
        if node is not None or report.ok:
            gateway_log(home).append([event])
    return report


@dataclass(frozen=True)
class CrossCheck:
    """One party's check of another log's newest signed head."""

    observer: str
    origin: str
    size: int
    ok: bool
    problem: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "observer": self.observer,
            "origin": self.origin,
            "size": self.size,
            "ok": self.ok,
            "problem": self.problem,
        }


def cross_check(home: Path) -> list[CrossCheck]:
    """Every party (gateway, nodes) checks every other log's newest head for consistency."""
    parties: list[tuple[str, Path, AuditLog | None]] = []
    if (log_folder(home) / "log.json").exists():
        parties.append((GATEWAY, log_folder(home), gateway_log(home)))
    for i in node_ids(home):
        parties.append((_origin(i), log_folder(home, i), node_log(home, i)))
    results: list[CrossCheck] = []
    for observer, folder, _ in parties:
        witness = Witness(folder / "witness")
        for origin, _, log in parties:
            if origin == observer or log is None:
                continue
            head = log.latest_head()
            if head is None:
                continue
            last = witness.latest(origin)
            try:
                proof = log.consistency_proof(last.size, head.size) if last else []
                if last is not None and head.size < last.size:
                    proof = []
                witness.observe(head, log.public_key, proof)
                results.append(CrossCheck(observer, origin, head.size, True, None))
            except (ChainBrokenError, UsageError) as exc:
                results.append(CrossCheck(observer, origin, head.size, False, str(exc)))
    return results
