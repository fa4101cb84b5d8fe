"""The audit seam: one event record and the ``AuditSink`` Protocol every package emits into.

Packages on any layer describe what they did with an :class:`AuditEvent` and hand it to
whatever :class:`AuditSink` they were given; they never import ``tessera.audit``.  The
workflows layer passes the real Merkle log (``tessera.audit.AuditLog`` is an
``AuditSink``); tests pass a :class:`MemoryAuditSink`.

Rules for emitters (the record is kept forever and shown to patients and auditors):

* nothing secret: no key material, no passwords, no plaintext query values or file
  contents, no direct patient identifiers — use the pseudonym and a query *hash*;
* ``action`` comes from :class:`Action` where one fits (other dotted names are kept
  and exported as "other");
* ``outcome`` is one of :data:`OUTCOMES`;
* ``recorded`` may be left ``None``: the log stamps the time (UTC) when it appends.

Example::

    sink.emit(AuditEvent(Action.VAULT_GET, user="alice", entity="scan-17",
                         entity_type="object", source="gateway",
                         detail={"job": "j-42", "bytes": 1048576}))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "OUTCOMES",
    "Action",
    "AuditEvent",
    "AuditSink",
    "DetailValue",
    "MemoryAuditSink",
    "NullAuditSink",
]

DetailValue = str | int | float | bool

#: success; failure (e.g. wrong password, integrity check failed); denied (policy or
#: permission refusal, HTTP 403); not_found (HTTP 404); error (the system failed).
OUTCOMES = frozenset({"success", "failure", "denied", "not_found", "error"})


class Action(StrEnum):
    """Well-known Tessera operations (the audit package maps them to DICOM audit codes)."""

    LOGIN = "login"
    LOGOUT = "logout"
    VAULT_PUT = "vault.put"
    VAULT_GET = "vault.get"
    VAULT_RM = "vault.rm"
    VAULT_VERIFY = "vault.verify"
    VAULT_REPAIR = "vault.repair"
    FRAGMENT_STORE = "fragment.store"
    FRAGMENT_FETCH = "fragment.fetch"
    FRAGMENT_VERIFY = "fragment.verify"
    TABLE_IMPORT = "table.import"
    QUERY = "query"
    RECOMMEND = "recommend"
    EXPORT = "export"
    DICOM_RECEIVE = "dicom.receive"
    DICOM_DEIDENTIFY = "dicom.deidentify"
    DICOM_REIDENTIFY = "dicom.reidentify"
    POLICY_CHANGE = "policy.change"
    BUDGET_CHANGE = "budget.change"
    MPC_JOB = "mpc.job"
    MPC_ABORT = "mpc.abort"
    AUDIT_VERIFY = "audit.verify"
    SECURITY_ALERT = "security.alert"
    REQUEST_FILE = "request.file"
    REQUEST_DECIDE = "request.decide"
    OUTPUT_HOLD = "output.hold"
    OUTPUT_RELEASE = "output.release"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One thing that happened; every field is safe to keep and to show (no secrets)."""

    action: str
    outcome: str = "success"
    user: str = ""
    role: str = ""
    address: str = ""
    client: str = ""
    source: str = ""
    entity: str = ""
    entity_type: str = ""
    patient: str = ""
    purpose: str = ""
    recorded: datetime | None = None
    detail: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.action:
            raise ValueError("an audit event needs an action")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}")
        if self.recorded is not None and self.recorded.utcoffset() is None:
            raise ValueError("recorded must be timezone-aware (UTC)")


@runtime_checkable
class AuditSink(Protocol):
    """Anything that accepts audit events (the Merkle log, a node's log, a test list)."""

    def emit(self, event: AuditEvent) -> None:
        """Record ``event``; raise a TesseraError if it cannot be recorded."""
        ...


class NullAuditSink:
    """Drops every event (for callers that were given no log)."""

    def emit(self, event: AuditEvent) -> None:
        """Ignore ``event``."""


class MemoryAuditSink:
    """Keeps events in a list, in order (for tests and for batching before a log)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        """Append ``event`` to :attr:`events`."""
        self.events.append(event)
