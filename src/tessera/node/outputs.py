"""A custodian node's airlock desk: screening releases, steward decisions, collection.

The node's party computes the disclosure checks inside the MPC; :meth:`OutputDesk.screen`
reads the counts it opened and either lets the result go to the requester or keeps it in
the custodian's :class:`~tessera.workflows.airlock.Airlock` for the steward.  Decisions
and collections arrive over ``/v1/held/...`` (:mod:`tessera.node.app`).  Every hold,
decision and collection, allowed or refused, is an event in the node's own audit log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tessera.core.audit_sink import Action, AuditEvent
from tessera.errors import TesseraError
from tessera.keys.documents import SignedDocument
from tessera.keys.ephemeral import seal_to
from tessera.workflows.airlock import Airlock, reasons_of
from tessera.workflows.custodian import Admission

if TYPE_CHECKING:
    from tessera.node.service import NodeService

__all__ = ["OutputDesk"]

_log = logging.getLogger(__name__)


class OutputDesk:
    """The airlock of ``service`` (one custodian node)."""

    def __init__(self, service: NodeService, airlock: Airlock) -> None:
        self.service = service
        self.airlock = airlock
        self.custodian = service.custodian
        self.node_id = service.node_id
        self.party = service.party

    def screen(self, admission: Admission, result: dict[str, Any]) -> dict[str, Any]:
        """``result``, or a notice that this custodian holds it back for the steward (the
        checks its own party computed found a disclosure risk)."""
        checks = admission.checks
        if checks is None:
            return result
        job = admission.job
        folder = self.service.root / "jobs" / str(job["job_id"])
        cohort = folder / "cohort.npy"
        reasons = reasons_of(result.get("meta", {}).get("checks"), checks)
        if reasons:
            read = [self.chunk_ids(str(item["table"])) for item in job["inputs"]]
            self.airlock.hold(job, admission.requester, result, reasons, cohort, read)
            self._record_output(job, admission.requester, Action.OUTPUT_HOLD, "success", reasons)
            return {"party": self.party, "node": self.node_id, "held": True,
                    "job_id": job["job_id"], "reasons": reasons}  # fmt: skip
        if len(job["inputs"]) == 1 and cohort.exists():
            table = str(job["inputs"][0]["table"])
            chunks = self.chunk_ids(table)
            self.airlock.remember(admission.requester, table, chunks, cohort, str(job["job_id"]))
        return result

    def chunk_ids(self, table: str) -> list[str]:
        """The ids of the chunks of ``table`` this custodian holds, in order (the rows of
        a cohort follow them; a job reads them all, see ``check_chunks``)."""
        try:
            manifest = self.service.store.manifest(table)
        except TesseraError:
            return []
        return [str(c["id"]) for c in manifest.get("chunks", [])]

    def decide(self, job_id: str, document: SignedDocument) -> dict[str, Any]:
        """The steward's decision on a held release (``POST /v1/held/{job}/decision``)."""
        tables = self.airlock.tables_of(job_id)
        policies = {t: self.custodian.table_policy(t) for t in tables}
        try:
            done = self.airlock.decide(job_id, document, self.custodian.roster(), policies)
        except TesseraError as exc:
            self._record_output({"job_id": job_id}, "", Action.OUTPUT_RELEASE, "denied", [str(exc)])
            raise
        released = self.airlock.release_cohort(job_id)
        if released is not None:
            self.airlock.remember(*released)
        outcome = "denied" if done["state"] == "withheld" else "success"
        why = [f"{done['state']} by {done['steward']}"]
        self._record_output(
            {"job_id": job_id}, done["requester"], Action.OUTPUT_RELEASE, outcome, why
        )
        return done

    def collect(self, job_id: str, document: SignedDocument) -> dict[str, Any]:
        """This custodian's share of a held release for its steward or, once released,
        its researcher (``POST /v1/held/{job}/collect``)."""
        tables = self.airlock.tables_of(job_id)
        policies = {t: self.custodian.table_policy(t) for t in tables}
        try:
            result, by, why = self.airlock.collect(
                job_id, document, self.custodian.roster(), policies
            )
        except TesseraError as exc:
            self._record_output({"job_id": job_id}, "", Action.OUTPUT_RELEASE, "denied", [str(exc)])
            raise
        self._record_output({"job_id": job_id}, by, Action.OUTPUT_RELEASE, "success", [why])
        shares = json.dumps(result.get("shares", [])).encode()
        sealed = seal_to(document.body["receiver"], shares, label=f"held:{job_id}:{self.party}")
        return {"party": self.party, "node": self.node_id, "params": result.get("params"),
                "sealed": sealed}  # fmt: skip

    def _record_output(
        self, job: Mapping[str, Any], user: str, action: Action, outcome: str, why: list[str]
    ) -> None:
        """One airlock event in this node's log (never raises)."""
        event = AuditEvent(
            action,
            outcome=outcome,
            user=user,
            source=f"node-{self.node_id}",
            entity=str(job.get("job_id", ""))[:32],
            entity_type="output",
            detail={"why": "; ".join(why)[:500]},
        )
        try:
            self.service.audit.emit(event)
        except Exception as exc:  # auditing never breaks the airlock
            _log.warning("node %d: audit event not recorded (%s)", self.node_id, type(exc).__name__)
