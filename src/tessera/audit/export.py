"""Export the log as a FHIR R4 Bundle, validated with the ``fhir.resources`` models."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tessera.audit.log import AuditLog
from tessera.errors import EngineUnavailableError, InputError

__all__ = ["fhir_bundle", "validate_bundle", "write_fhir_bundle"]


def fhir_bundle(log: AuditLog, start: int = 0) -> dict[str, Any]:
    """A ``collection`` Bundle of the log's AuditEvents from entry ``start`` on."""
    entries = [
        {"fullUrl": f"urn:tessera:audit:{resource['id']}", "resource": resource}
        for _, resource in log.records(start)
    ]
    return {
        "resourceType": "Bundle",
        "id": f"{log.origin}-audit",
        "type": "collection",
        "entry": entries,
    }


def validate_bundle(bundle: dict[str, Any]) -> None:
    """Raise InputError unless ``bundle`` validates against the FHIR R4 models."""
    try:
        from fhir.resources.R4B.bundle import Bundle
    except ImportError:  # pragma: no cover - the audit extra is missing
        raise EngineUnavailableError(
            "FHIR export needs fhir.resources: pip install 'tessera-tde[audit]'"
        ) from None
    from pydantic import ValidationError

    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InputError(f"FHIR validation failed at {where}: {first.get('msg')}") from None


def write_fhir_bundle(log: AuditLog, out: Path) -> int:
    """Validate and write the Bundle to ``out`` atomically; return the entry count."""
    bundle = fhir_bundle(log)
    validate_bundle(bundle)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(bundle, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return len(bundle["entry"])
