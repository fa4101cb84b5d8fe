"""The stored form of one entry (log version 2): Tessera's own compact event record.

A version-1 log stored each entry as the compact JSON of its FHIR AuditEvent (about
1.3 KB for a failed sign-in, most of it code-system URLs and display text that follow
from the action).  Version 2 stores only the event's own fields, in a fixed order, empty
ones left out (about 0.3 KB); the FHIR resource is derived on reading with
:func:`tessera.audit.fhir.to_fhir`, which is deterministic, so an export is unchanged::

    {"action":"login","outcome":"failure","user":"anonymous","address":"10.0.0.7",
     "client":"tessera-gateway","source":"gateway","recorded":"2026-03-01T10:00:00.000000Z",
     "detail":{"method":"token"}}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tessera.core.audit_sink import AuditEvent, DetailValue

__all__ = ["RECORD_FORMAT", "decode", "encode"]

RECORD_FORMAT = "tessera-event/v1"
_FIELDS = (
    "action",
    "outcome",
    "user",
    "role",
    "address",
    "client",
    "source",
    "entity",
    "entity_type",
    "patient",
    "purpose",
)
_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def encode(event: AuditEvent, recorded: datetime) -> bytes:
    """The compact ASCII JSON record of ``event`` stamped ``recorded``."""
    doc: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(event, name)
        if value:
            doc[name] = value
    doc["recorded"] = recorded.astimezone(UTC).strftime(_TIME)
    if event.detail:
        doc["detail"] = dict(event.detail)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode()


def decode(body: bytes) -> AuditEvent:
    """The event in a record made by :func:`encode` (ValueError, TypeError or KeyError
    when it is not one)."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or not set(doc) <= {*_FIELDS, "recorded", "detail"}:
        raise ValueError("not an audit record")
    values: dict[str, str] = {}
    for name in _FIELDS:
        value = doc.get(name, "")
        if not isinstance(value, str):
            raise TypeError(f"{name} is not text")
        values[name] = value
    detail = doc.get("detail", {})
    if not isinstance(detail, dict):
        raise TypeError("detail is not an object")
    clean: dict[str, DetailValue] = {}
    for key, value in detail.items():
        if not isinstance(value, str | int | float | bool):
            raise TypeError("a detail value is not a scalar")
        clean[key] = value
    recorded = datetime.strptime(str(doc["recorded"]), _TIME).replace(tzinfo=UTC)
    return AuditEvent(
        values.pop("action"),
        outcome=values.pop("outcome") or "success",
        recorded=recorded,
        detail=clean,
        **values,
    )
