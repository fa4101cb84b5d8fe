"""BALP shaping: every action validates as a FHIR R4 AuditEvent and round-trips."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent

from tessera.audit import (
    AuditLog,
    MldsaSigner,
    fhir_bundle,
    from_fhir,
    to_fhir,
    validate_bundle,
    write_fhir_bundle,
)
from tessera.audit.fhir import ACTION_CODES, DCM
from tessera.core.audit_sink import Action, AuditEvent
from tessera.errors import InputError

WHEN = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


@pytest.mark.parametrize("action", [a.value for a in Action] + ["custom.thing"])
def test_every_action_validates_and_round_trips(action: str) -> None:
    event = AuditEvent(
        action,
        outcome="denied",
        user="alice",
        role="researcher",
        address="192.0.2.7",
        client="tessera-cli",
        source="node-2",
        entity="scan-1",
        entity_type="object",
        patient="pseudo-9f2",
        purpose="HRESCH",
        recorded=WHEN,
        detail={"bytes": 10, "job": "j-1", "sanctioned": False, "score": 0.25},
    )
    resource = to_fhir(event, "gateway.7", WHEN)
    FhirAuditEvent.model_validate(resource)
    assert from_fhir(resource) == event
    assert resource["type"]["system"] == DCM
    assert resource["outcome"] == "4"
    assert resource["meta"]["profile"][0].startswith("https://profiles.ihe.net/ITI/BALP/")


def test_dicom_codes_follow_the_issue() -> None:
    assert ACTION_CODES["vault.get"][0] == "110106"
    assert ACTION_CODES["query"][0] == "110112"
    assert ACTION_CODES["login"][:2] == ("110114", "110122")
    assert ACTION_CODES["security.alert"][0] == "110113"
    minimal = to_fhir(AuditEvent("login", outcome="failure"), "g.0", WHEN)
    FhirAuditEvent.model_validate(minimal)
    assert minimal["subtype"][0]["code"] == "110122"
    assert from_fhir(minimal).user == ""
    assert "entity" not in minimal and "extension" not in minimal


def test_bundle_validates_and_bad_bundle_is_refused(tmp_path: Path) -> None:
    signer = MldsaSigner.generate()
    log = AuditLog.create(tmp_path / "l", "gateway", signer.public_key, signer=signer)
    log.append([AuditEvent("login", user="u"), AuditEvent("vault.put", entity="x")])
    bundle = fhir_bundle(log)
    validate_bundle(bundle)
    assert len(bundle["entry"]) == 2
    out = tmp_path / "bundle.json"
    assert write_fhir_bundle(log, out) == 2 and out.exists()
    bundle["entry"][0]["resource"]["recorded"] = "yesterday"
    with pytest.raises(InputError, match="FHIR validation failed"):
        validate_bundle(bundle)
