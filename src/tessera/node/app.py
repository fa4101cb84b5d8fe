"""The custodian node's HTTP API (FastAPI), served over mutual TLS by :mod:`tessera.node.__main__`.

Routes (all JSON unless noted)::

    GET  /v1/health                           {"node": I, "status": "ok", "version", "protocol"}
    GET  /v1/version | /v1/ready | /v1/consortium, POST /v1/consortium
                                              see :mod:`tessera.node.federated`
    GET  /v1/mpc-port                         {"port": P}   a free port for an MPyC party
    GET  /v1/tables                           [manifest, ...]
    PUT  /v1/tables/{name}/chunks/{chunk}     body: npz shares; header X-Tessera-Manifest
    POST /v1/tables/{name}/change             remove or widen it (a steward's signed document)
    POST /v1/jobs                             {"job": {...}, "signatures": [...]} -> shares
    POST /v1/jobs/{job_id}/abort              stop this node's party of a refused job
    GET  /v1/held?researcher=NAME             releases held back for their steward
    POST /v1/held/{job_id}/decision           the steward's signed decision: release/withhold
    POST /v1/held/{job_id}/collect            a signed collect document -> this node's share
    GET  /v1/roster                           the pinned roster (signed document)
    POST /v1/roster                           install a newer roster (signed document)
    GET  /v1/policies/{table}                 the table's signed policy, or {"policy": null}
    POST /v1/policies                         install a signed table policy
    GET  /v1/budgets?researcher=NAME          this custodian's ledger balances
    GET  /v1/tables/{name}/validation         per chunk: validated, failed or not checked
    GET  /v1/audit/witness                    the audit heads this custodian witnessed
    POST /v1/audit/witness                    {"head", "public_key", "proof"}: witness and
                                              co-sign a log's head (403 if inconsistent)
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from tessera.errors import InputError, TesseraError
from tessera.keys.documents import SignedDocument
from tessera.node.escrow import add_escrow_routes
from tessera.node.federated import FederationHooks, add_federation_routes
from tessera.node.service import NodeService
from tessera.version import PROTOCOL_VERSION, __version__

__all__ = ["create_app"]

_MAX_BODY = 1 << 30
_MAX_DOC = 64 << 20


def parse_body(body: bytes) -> Any:
    """A request body's JSON document; InputError if too large, not JSON or too deep."""
    if len(body) > _MAX_DOC:
        raise InputError("document too large")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InputError("the body is not JSON (or is nested too deeply)") from None


def parse_manifest_header(raw: str) -> Any:
    """The table manifest in an ``X-Tessera-Manifest`` header (base64url JSON)."""
    try:
        return json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, RecursionError):
        raise InputError("missing or malformed X-Tessera-Manifest header") from None


async def _json(request: Request) -> Any:
    return parse_body(await request.body())


def create_app(service: NodeService, hooks: FederationHooks | None = None) -> FastAPI:
    """The node API for ``service`` (``hooks``: a federated node's manifest updates)."""

    @contextlib.asynccontextmanager
    async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
        # a running job holds a worker thread: keep as many free for everything else
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, service.max_jobs + 40)
        yield
        # uvicorn re-raises SIGTERM after its graceful shutdown (no atexit): sign the
        # audit entries still waiting for their batch's head now
        service.close_audit()

    app = FastAPI(
        title=f"Tessera custodian node {service.node_id}",
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan,
    )

    @app.middleware("http")
    async def _activity(request: Request, call_next: Any) -> Any:
        service.request_started()
        try:
            return await call_next(request)
        finally:
            service.request_ended()

    @app.exception_handler(TesseraError)
    async def _error(request: Request, exc: TesseraError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "message": str(exc)}, status_code=exc.http_status)

    @app.get("/v1/health", operation_id="node-health")
    def health() -> dict[str, Any]:
        return {
            "node": service.node_id,
            "status": "ok",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
        }

    @app.get("/v1/mpc-port", operation_id="node-mpc-port")
    def mpc_port(request: Request) -> dict[str, Any]:
        host = next(n.host for n in service.env.nodes if n.id == service.node_id)
        return {"port": service.free_port(host)}

    @app.get("/v1/tables", operation_id="node-tables")
    def tables() -> list[dict[str, Any]]:
        return service.tables()

    @app.put("/v1/tables/{name}/chunks/{chunk}", operation_id="node-append")
    async def append(name: str, chunk: str, request: Request) -> dict[str, Any]:
        manifest = parse_manifest_header(request.headers.get("x-tessera-manifest", ""))
        body = await request.body()
        if len(body) > _MAX_BODY:
            raise InputError("chunk too large")
        await run_in_threadpool(service.append_chunk, name, chunk, manifest, body)
        return {"stored": chunk}

    @app.post("/v1/tables/{name}/change", operation_id="node-change-table")
    async def change_table(name: str, request: Request) -> dict[str, Any]:
        document = SignedDocument.from_dict(await _json(request))
        if document.body.get("table") != name:
            raise InputError("the change names another table")
        result: dict[str, Any] = await run_in_threadpool(service.change_table, document)
        return result

    @app.get("/v1/roster", operation_id="node-roster")
    def roster() -> dict[str, Any]:
        return service.custodian.roster_document()

    @app.post("/v1/roster", operation_id="node-install-roster")
    async def install_roster(request: Request) -> dict[str, Any]:
        document = SignedDocument.from_dict(await _json(request))
        roster = await run_in_threadpool(service.custodian.install_roster, document)
        return {"serial": roster.serial, "people": len(roster.people)}

    @app.get("/v1/policies/{table}", operation_id="node-policy")
    def policy(table: str) -> dict[str, Any]:
        return {"policy": service.custodian.policy_document(table)}

    @app.post("/v1/policies", operation_id="node-install-policy")
    async def install_policy(request: Request) -> dict[str, Any]:
        document = SignedDocument.from_dict(await _json(request))
        installed = await run_in_threadpool(service.custodian.install_policy, document)
        return {"table": installed.table, "serial": installed.serial}

    @app.get("/v1/tables/{name}/validation", operation_id="node-validation")
    def validation(name: str) -> dict[str, Any]:
        manifest = service.store.manifest(name)
        return {"chunks": service.custodian.validation(name, manifest)}

    @app.get("/v1/budgets", operation_id="node-budgets")
    def budgets(researcher: str | None = None) -> list[dict[str, Any]]:
        ledger = service.custodian.ledger
        return [
            ledger.balance(name, researcher).to_dict()
            for name, p in ledger.policies().items()
            if p.is_private
        ]

    @app.get("/v1/audit/witness", operation_id="node-witnessed")
    def witnessed() -> dict[str, Any]:
        return service.witnessed()

    @app.post("/v1/audit/witness", operation_id="node-witness")
    async def witness(request: Request) -> dict[str, Any]:
        doc = await _json(request)
        result: dict[str, Any] = await run_in_threadpool(service.witness, doc)
        return result

    @app.get("/v1/held", operation_id="node-held")
    def held(researcher: str | None = None) -> list[dict[str, Any]]:
        return service.held(researcher)

    @app.post("/v1/held/{job_id}/decision", operation_id="node-decide-held")
    async def decide_held(job_id: str, request: Request) -> dict[str, Any]:
        document = SignedDocument.from_dict(await _json(request))
        result: dict[str, Any] = await run_in_threadpool(service.outputs.decide, job_id, document)
        return result

    @app.post("/v1/held/{job_id}/collect", operation_id="node-collect-held")
    async def collect_held(job_id: str, request: Request) -> dict[str, Any]:
        document = SignedDocument.from_dict(await _json(request))
        result: dict[str, Any] = await run_in_threadpool(service.outputs.collect, job_id, document)
        return result

    @app.post("/v1/jobs/{job_id}/abort", operation_id="node-abort-job")
    async def abort(job_id: str) -> dict[str, Any]:
        # on the event loop (a lock and a kill): never queued behind the jobs' threads
        return {"aborted": service.abort(job_id[:64])}

    @app.post("/v1/jobs", operation_id="node-run-job")
    async def run_job(request: Request) -> dict[str, Any]:
        envelope = await _json(request)
        with service.job_slot():  # NodeBusyError (503) at once when every slot is taken
            result: dict[str, Any] = await run_in_threadpool(service.run_job, envelope)
        return result

    add_escrow_routes(app, service)
    add_federation_routes(app, service, hooks or FederationHooks(None, lambda _: None))
    return app
