"""A federated custodian's extra routes: its consortium manifest, readiness, version.

Routes (JSON, mutual TLS like every node route)::

    GET  /v1/version       {"version": "0.1.0", "protocol": 1}
    GET  /v1/ready         200 {"ready": true, "checks": {...}} once the node can take
                           jobs (manifest installed, roster pinned, data folder
                           writable); 503 with the failing checks otherwise
    GET  /v1/consortium    the installed manifest (signed document), or {"manifest": null}
    POST /v1/consortium    install a newer manifest: accepted only when a quorum of the
                           roster's stewards or officers signed it
                           (:func:`tessera.keys.consortium.admit_manifest`); the node
                           then restarts its listener with the new pinned certificates,
                           or stops when the manifest no longer lists it
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from tessera.config import NodeSettings
from tessera.core.audit_sink import Action, AuditEvent
from tessera.errors import ConfigError, InputError, TesseraError
from tessera.keys.documents import SignedDocument
from tessera.node.service import NodeService
from tessera.version import PROTOCOL_VERSION, __version__
from tessera.workflows.federation import accept_manifest, installed_manifest

__all__ = ["FederationHooks", "add_federation_routes", "readiness"]

_MAX_DOC = 16 << 20
_log = logging.getLogger(__name__)


class FederationHooks:
    """What the serving loop learns from the routes: a new manifest to restart with."""

    def __init__(self, settings: NodeSettings | None, on_change: Callable[[bool], None]) -> None:
        self.settings = settings
        self.on_change = on_change
        self.lock = threading.Lock()


def readiness(service: NodeService, settings: NodeSettings | None) -> dict[str, bool]:
    """The node's readiness checks, by name."""
    checks: dict[str, bool] = {}
    if settings is not None:
        try:
            checks["manifest"] = installed_manifest(settings) is not None
        except TesseraError:
            checks["manifest"] = False
    try:
        service.custodian.roster()
        checks["roster"] = True
    except ConfigError:
        checks["roster"] = False
    try:
        fd, name = tempfile.mkstemp(dir=service.root, prefix=".ready-")
        os.close(fd)
        os.unlink(name)
        checks["data_writable"] = True
    except OSError:
        checks["data_writable"] = False
    return checks


def add_federation_routes(app: FastAPI, service: NodeService, hooks: FederationHooks) -> None:
    """Add the version, readiness and consortium routes to ``app``."""

    @app.get("/v1/version", operation_id="node-version")
    def version() -> dict[str, Any]:
        return {"version": __version__, "protocol": PROTOCOL_VERSION}

    @app.get("/v1/ready", operation_id="node-ready")
    def ready() -> JSONResponse:
        checks = readiness(service, hooks.settings)
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/v1/consortium", operation_id="node-consortium")
    def consortium() -> dict[str, Any]:
        held = installed_manifest(hooks.settings) if hooks.settings is not None else None
        return held[1].to_dict() if held else {"manifest": None}

    @app.post("/v1/consortium", operation_id="node-install-consortium")
    async def install(request: Request) -> dict[str, Any]:
        body = await request.body()
        if len(body) > _MAX_DOC:
            raise InputError("document too large")
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError):
            raise InputError("the body is not JSON") from None
        document = SignedDocument.from_dict(raw)
        settings = hooks.settings
        if settings is None:
            raise ConfigError("this node runs an embedded environment, not a consortium")

        def apply() -> tuple[int, bool]:
            with hooks.lock:
                try:
                    manifest, member = accept_manifest(settings, document)
                except TesseraError as exc:
                    _audit(service, document, "denied", exc.code)
                    raise
            _audit(service, document, "success", f"serial {manifest.serial}")
            return manifest.serial, member

        serial, member = await run_in_threadpool(apply)
        hooks.on_change(member)
        return {"node": service.node_id, "serial": serial, "member": member}


def _audit(service: NodeService, document: SignedDocument, outcome: str, note: str) -> None:
    signers = ",".join(sorted(s.signer for s in document.signatures))[:200]
    event = AuditEvent(
        Action.POLICY_CHANGE,
        outcome=outcome,
        user=signers,
        role="steward",
        source=f"node-{service.node_id}",
        entity="consortium",
        entity_type="consortium",
        detail={"change": "consortium manifest", "note": note[:80]},
    )
    try:
        service.audit.emit(event)
    except Exception as exc:  # auditing never breaks the change
        _log.warning("node %d: audit event not recorded (%s)", service.node_id, type(exc).__name__)
