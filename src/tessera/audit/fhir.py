"""Shape :class:`~tessera.core.audit_sink.AuditEvent` records as FHIR R4 AuditEvents (IHE BALP).

The resource follows the IHE Basic Audit Log Patterns: ``type`` is a DICOM audit event
code (110106 Export, 110112 Query, 110114 User Authentication, 110113 Security Alert …),
``subtype`` carries the login/logout or security-alert DICOM subtype plus the Tessera
action, ``agent`` holds the user (requestor, role, network address) and the client
application, ``source`` the node that recorded it, ``entity`` the object/table/fragment,
the pseudonymous patient, and ``purposeOfEvent`` the v3 ActReason.  Tessera's free-form,
non-secret ``detail`` travels as ``urn:tessera:detail:<key>`` extensions, so
:func:`from_fhir` gives back exactly the event that was recorded.

These plain dicts are what the log stores and hashes; :mod:`tessera.audit.export` checks
them against the ``fhir.resources`` R4 models when it writes a Bundle.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tessera.core.audit_sink import AuditEvent, DetailValue

__all__ = ["ACTION_CODES", "DCM", "from_fhir", "to_fhir"]

DCM = "http://dicom.nema.org/resources/ontology/DCM"
TESSERA_ACTION = "urn:tessera:audit-action"
DETAIL_URL = "urn:tessera:detail:"
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"

_DCM_DISPLAY = {
    "110100": "Application Activity",
    "110101": "Audit Log Used",
    "110103": "DICOM Instances Accessed",
    "110104": "DICOM Instances Transferred",
    "110106": "Export",
    "110107": "Import",
    "110110": "Patient Record",
    "110112": "Query",
    "110113": "Security Alert",
    "110114": "User Authentication",
    "110122": "Login",
    "110123": "Logout",
    "110129": "Security Configuration",
    "110132": "Use of Restricted Function",
}

#: Tessera action -> (DICOM event type, DICOM subtype or "", FHIR action C/R/U/D/E).
ACTION_CODES: dict[str, tuple[str, str, str]] = {
    "login": ("110114", "110122", "E"),
    "logout": ("110114", "110123", "E"),
    "vault.put": ("110107", "", "C"),
    "vault.get": ("110106", "", "R"),
    "vault.rm": ("110103", "", "D"),
    "vault.verify": ("110103", "", "E"),
    "vault.repair": ("110103", "", "U"),
    "fragment.store": ("110104", "", "C"),
    "fragment.fetch": ("110104", "", "R"),
    "fragment.verify": ("110103", "", "E"),
    "table.import": ("110107", "", "C"),
    "query": ("110112", "", "E"),
    "recommend": ("110112", "", "E"),
    "export": ("110106", "", "R"),
    "dicom.receive": ("110104", "", "C"),
    "dicom.deidentify": ("110103", "", "U"),
    "dicom.reidentify": ("110110", "110132", "R"),
    "policy.change": ("110113", "110129", "U"),
    "budget.change": ("110113", "110129", "U"),
    "mpc.job": ("110100", "", "E"),
    "mpc.abort": ("110100", "", "E"),
    "audit.verify": ("110101", "", "E"),
    "security.alert": ("110113", "", "E"),
    "request.file": ("110100", "", "C"),
    "request.decide": ("110113", "110129", "U"),
    "output.hold": ("110100", "", "E"),
    "output.release": ("110106", "", "R"),
}
_OTHER = ("110100", "", "E")

#: FHIR R4 AuditEvent.outcome: 0 success, 4 minor failure, 8 serious failure.
_OUTCOME_CODE = {"success": "0", "failure": "4", "denied": "4", "not_found": "4", "error": "8"}
_ENTITY_CODES = {  # Tessera entity type -> (audit-entity-type, object-role)
    "object": ("2", "4"),
    "fragment": ("2", "4"),
    "table": ("2", "4"),
    "dataset": ("2", "4"),
    "query": ("2", "24"),
    "job": ("2", "20"),
    "policy": ("2", "13"),
    "budget": ("2", "13"),
    "user": ("1", "11"),
    "log": ("2", "13"),
    "request": ("2", "13"),
    "output": ("2", "4"),
}


def _coding(system: str, code: str, display: str = "") -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _detail_extension(key: str, value: DetailValue) -> dict[str, Any]:
    url = DETAIL_URL + key
    if isinstance(value, bool):
        return {"url": url, "valueBoolean": value}
    if isinstance(value, int):
        return {"url": url, "valueInteger": value}
    if isinstance(value, float):
        return {"url": url, "valueDecimal": value}
    return {"url": url, "valueString": str(value)}


_BALP_BY_ACTION = {"C": "Create", "R": "Read", "U": "Update", "D": "Delete", "E": "Execute"}


def _profile(action: str, fhir_action: str) -> str:
    if action == "login":
        return _BALP + "IHE.BasicAudit.Login"
    if action == "logout":
        return _BALP + "IHE.BasicAudit.Logout"
    if action in ("query", "recommend"):
        return _BALP + "IHE.BasicAudit.Query"
    return _BALP + "IHE.BasicAudit." + _BALP_BY_ACTION[fhir_action]


def _recorded(when: datetime) -> str:
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def to_fhir(event: AuditEvent, resource_id: str, recorded: datetime) -> dict[str, Any]:
    """The FHIR R4 AuditEvent (as a JSON-ready dict) for ``event`` stamped ``recorded``."""
    type_code, subtype, fhir_action = ACTION_CODES.get(event.action, _OTHER)
    subtypes = [_coding(TESSERA_ACTION, event.action)]
    if subtype:
        subtypes.insert(0, _coding(DCM, subtype, _DCM_DISPLAY[subtype]))
    user_agent: dict[str, Any] = {
        "type": {"coding": [_coding(_PARTICIPATION, "IRCP")]},
        "who": {"identifier": {"value": event.user or "anonymous"}},
        "requestor": True,
    }
    if event.role:
        user_agent["role"] = [{"text": event.role}]
    if event.address:
        user_agent["network"] = {"address": event.address, "type": "2"}
    agents = [user_agent]
    if event.client:
        agents.append(
            {
                "type": {"coding": [_coding(DCM, "110150", "Application")]},
                "who": {"display": event.client},
                "requestor": False,
            }
        )
    source = event.source or "gateway"
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": resource_id,
        "meta": {"profile": [_profile(event.action, fhir_action)]},
        "type": _coding(DCM, type_code, _DCM_DISPLAY[type_code]),
        "subtype": subtypes,
        "action": fhir_action,
        "recorded": _recorded(recorded),
        "outcome": _OUTCOME_CODE[event.outcome],
        "outcomeDesc": event.outcome,
        "agent": agents,
        "source": {
            "site": source,
            "observer": {"display": source},
            "type": [_coding(_SOURCE_TYPE, "4")],
        },
    }
    if event.purpose:
        resource["purposeOfEvent"] = [{"coding": [_coding(_ACT_REASON, event.purpose)]}]
    entities: list[dict[str, Any]] = []
    if event.entity:
        etype, role = _ENTITY_CODES.get(event.entity_type, ("2", "4"))
        entity: dict[str, Any] = {
            "what": {"identifier": {"value": event.entity}},
            "type": _coding(_ENTITY_TYPE, etype),
            "role": _coding(_OBJECT_ROLE, role),
        }
        if event.entity_type:
            entity["description"] = event.entity_type
        entities.append(entity)
    if event.patient:
        entities.append(
            {
                "what": {"identifier": {"value": event.patient}},
                "type": _coding(_ENTITY_TYPE, "1", "Person"),
                "role": _coding(_OBJECT_ROLE, "1", "Patient"),
                "description": "pseudonymous patient",
            }
        )
    if entities:
        resource["entity"] = entities
    if event.detail:
        resource["extension"] = [
            _detail_extension(k, event.detail[k]) for k in sorted(event.detail)
        ]
    return resource


def _identifier(ref: dict[str, Any]) -> str:
    return str(ref.get("identifier", {}).get("value", ref.get("display", "")))


def from_fhir(resource: dict[str, Any]) -> AuditEvent:
    """The Tessera event recorded in a resource made by :func:`to_fhir`."""
    action = next(
        (c["code"] for c in resource.get("subtype", []) if c.get("system") == TESSERA_ACTION),
        resource["type"]["code"],
    )
    user = role = address = client = ""
    for agent in resource.get("agent", []):
        if agent.get("requestor"):
            user = _identifier(agent.get("who", {}))
            roles = agent.get("role") or [{}]
            role = str(roles[0].get("text", ""))
            address = str(agent.get("network", {}).get("address", ""))
        else:
            client = _identifier(agent.get("who", {}))
    if user == "anonymous":
        user = ""
    entity = entity_type = patient = ""
    for item in resource.get("entity", []):
        value = _identifier(item.get("what", {}))
        if item.get("role", {}).get("code") == "1" and item.get("type", {}).get("code") == "1":
            patient = value
        else:
            entity, entity_type = value, str(item.get("description", ""))
    purpose = ""
    if resource.get("purposeOfEvent"):
        purpose = resource["purposeOfEvent"][0]["coding"][0]["code"]
    detail: dict[str, DetailValue] = {}
    for ext in resource.get("extension", []):
        url = str(ext.get("url", ""))
        if url.startswith(DETAIL_URL):
            key = url[len(DETAIL_URL) :]
            for kind in ("valueBoolean", "valueInteger", "valueDecimal", "valueString"):
                if kind in ext:
                    detail[key] = ext[kind]
                    break
    recorded = datetime.strptime(resource["recorded"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return AuditEvent(
        action=action,
        outcome=str(resource.get("outcomeDesc", "success")),
        user=user,
        role=role,
        address=address,
        client=client,
        source=str(resource.get("source", {}).get("site", "")),
        entity=entity,
        entity_type=entity_type,
        patient=patient,
        purpose=purpose,
        recorded=recorded,
        detail=detail,
    )
