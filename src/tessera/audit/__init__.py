"""Tamper-evident audit trail: FHIR R4 AuditEvents (IHE BALP) in a signed Merkle log.

* :class:`AuditLog` — append-only RFC 9162 log on disk, ML-DSA-65 signed tree heads,
  inclusion/consistency proofs, :meth:`AuditLog.verify` naming the first bad entry;
  it is an ``AuditSink`` (``tessera.core.audit_sink``) so any package can emit into it.
  Heads are batched (``head_every``, ``sign_pending``, ``close``); entries are stored as
  compact event records (:mod:`tessera.audit.record`), FHIR is derived when read.
* :class:`Witness` — keeps the largest head of each other log and checks it only ever
  grows (consistency proofs); :func:`~tessera.audit.witness.cosignature_message`.
* :mod:`tessera.audit.keyfile` — the head-signing key sealed under an unlock key.
* :func:`to_fhir` / :func:`from_fhir` — the BALP shaping; :func:`write_fhir_bundle`.
"""

from tessera.audit.export import fhir_bundle, validate_bundle, write_fhir_bundle
from tessera.audit.fhir import from_fhir, to_fhir
from tessera.audit.heads import MldsaSigner, Signer, TreeHead, load_or_create_signer, verify_head
from tessera.audit.log import AuditLog, VerifyReport
from tessera.audit.witness import Witness

__all__ = [
    "AuditLog",
    "MldsaSigner",
    "Signer",
    "TreeHead",
    "VerifyReport",
    "Witness",
    "fhir_bundle",
    "from_fhir",
    "load_or_create_signer",
    "to_fhir",
    "validate_bundle",
    "verify_head",
    "write_fhir_bundle",
]
