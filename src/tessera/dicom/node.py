"""A DICOM node: a pynetdicom C-STORE SCP that de-identifies what it receives.

With an ``originals`` sink the node also keeps each instance exactly as it arrived
(pynetdicom's encoded data set, before any decoding, behind the file meta it was sent
with) under the same relative name as its de-identified copy
(``<pseudonym>/<new SOP Instance UID>.dcm``): names carry no identifiers, and the
de-identified copy's name is the link to its original.  Quarantined and failed
instances are refused (the sender keeps them) and no original is kept for them.

With an ``audit`` sink the node emits one ``dicom.receive`` event per instance it was
sent (DICOM 110104 DICOM Instances Transferred): outcome ``success`` when stored,
``failure`` when quarantined or failed (``detail["status"]`` says which); the agent is
the sending AE (its title, address); the entity and patient are the *pseudonym* (never
the PatientID or name); ``detail`` holds the SOP Class UID, the stored name
(``<pseudonym>/<new UID>.dcm``) and whether the original was kept.  No reason text is
recorded (an error message could quote a data element).  An instance whose event cannot
be recorded is refused (out of resources: the sender keeps it and may resend).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tessera.core.audit_sink import Action, AuditEvent, AuditSink, DetailValue
from tessera.dicom.files import Outcome, deidentify_instance
from tessera.dicom.profile import Profile
from tessera.dicom.pseudonym import Pseudonymizer
from tessera.dicom.stores import IdentityStore, ObjectSink
from tessera.errors import UsageError

__all__ = ["Receiver", "start_scp"]

_SUCCESS = 0x0000
_CANNOT_UNDERSTAND = 0xC000
_OUT_OF_RESOURCES = 0xA700


@dataclass
class Receiver:
    """De-identifies each received instance and stores it; counts what happened."""

    profile: Profile
    pseudo: Pseudonymizer
    sink: ObjectSink
    identities: IdentityStore
    keep_burned_in: bool = False
    originals: ObjectSink | None = None
    on_outcome: Callable[[Outcome, str | None], None] | None = None
    audit: AuditSink | None = None
    counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle_store(self, event: Any) -> Dataset | int:
        """The EVT_C_STORE handler: returns the C-STORE status."""
        original: bytes | None = None
        ds: Dataset | None = None
        try:
            if self.originals is not None:  # the bytes as sent, before anything changes ds
                original = event.encoded_dataset(include_meta=True)
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as exc:
            outcome = Outcome("failed", f"not a readable DICOM data set ({type(exc).__name__})")
        else:
            outcome = deidentify_instance(
                ds, self.profile, self.pseudo, keep_burned_in=self.keep_burned_in
            )
        where = None
        with self._lock:
            if outcome.status == "deidentified" and outcome.data and outcome.name:
                try:
                    report = outcome.report
                    if report is not None and report.identity and report.pseudonym:
                        self.identities.put(report.pseudonym, report.identity)
                    if self.originals is not None and original is not None:
                        self.originals.put(outcome.name, original)  # first: never a copy
                    where = self.sink.put(outcome.name, outcome.data)  # without its original
                except Exception as exc:
                    outcome = Outcome("failed", f"cannot store ({type(exc).__name__})")
            if self.audit is not None:
                try:
                    self.audit.emit(self._event(event, ds, outcome, kept=original is not None))
                except Exception as exc:  # never store what the trail does not show
                    outcome = Outcome(
                        "failed", f"cannot store the audit event ({exc.__class__.__name__})"
                    )
            self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if self.on_outcome is not None:
            self.on_outcome(outcome, where)
        if outcome.status == "deidentified":
            return _SUCCESS
        status = Dataset()
        status.Status = (
            _OUT_OF_RESOURCES if "store" in (outcome.reason or "") else _CANNOT_UNDERSTAND
        )
        status.ErrorComment = (outcome.reason or outcome.status)[:64]
        return status

    def _pseudonym(self, ds: Dataset | None, outcome: Outcome) -> str:
        """The patient pseudonym, also for an instance refused before de-identification."""
        if outcome.report is not None and outcome.report.pseudonym:
            return outcome.report.pseudonym
        if ds is None:
            return ""
        try:  # keyed as in tessera.dicom.engine.deidentify (name + birth date without ID)
            pid = str(ds.get("PatientID", "") or "")
            issuer = str(ds.get("IssuerOfPatientID", "") or "")
            if not pid:
                pid = f"{ds.get('PatientName', '')}\x00{ds.get('PatientBirthDate', '')}"
            return self.pseudo.patient(pid, issuer)
        except Exception:  # an unreadable element: no patient to name
            return ""

    def _event(self, event: Any, ds: Dataset | None, outcome: Outcome, *, kept: bool) -> AuditEvent:
        """The ``dicom.receive`` event for one instance (pseudonym only, no reason text)."""
        stored = outcome.status == "deidentified"
        pseudonym = self._pseudonym(ds, outcome)
        detail: dict[str, DetailValue] = {"status": "stored" if stored else outcome.status}
        sop_class = getattr(getattr(event, "request", None), "AffectedSOPClassUID", None)
        if sop_class:
            detail["sop_class"] = str(sop_class)
        if stored and outcome.name:
            detail["object"] = outcome.name
            detail["original_kept"] = kept and self.originals is not None
        requestor = getattr(getattr(event, "assoc", None), "requestor", None)
        return AuditEvent(
            Action.DICOM_RECEIVE,
            outcome="success" if stored else "failure",
            user=str(getattr(requestor, "ae_title", "") or "").strip(),
            address=str(getattr(requestor, "address", "") or ""),
            client="dicom",
            source="gateway",
            entity=pseudonym,
            entity_type="patient" if pseudonym else "",
            patient=pseudonym,
            detail=detail,
        )


def start_scp(receiver: Receiver, host: str, port: int, ae_title: str) -> Any:
    """Start a non-blocking C-STORE SCP; returns the server (``server_address``, ``shutdown``)."""
    title = ae_title.strip()
    if not title or len(title) > 16 or not title.isascii() or "\\" in title:
        raise UsageError("the AE title must be 1-16 ASCII characters")
    ae = AE(ae_title=title)
    for context in AllStoragePresentationContexts:  # compressed syntaxes too, as received
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.maximum_pdu_size = 0
    try:
        return ae.start_server(
            (host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, receiver.handle_store)]
        )
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
