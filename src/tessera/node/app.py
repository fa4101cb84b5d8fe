"""The custodian node's HTTP API (FastAPI), served over mutual TLS by :mod:`tessera.node.__main__`.

Routes (all JSON unless noted)::

    GET  /v1/health                           {"node": I, "status": "ok"}
    GET  /v1/mpc-port                         {"port": P}   a free port for an MPyC party
    GET  /v1/tables                           [manifest, ...]
    PUT  /v1/tables/{name}/chunks/{chunk}     body: npz shares; header X-Tessera-Manifest
    POST /v1/jobs                             {"job": {...}, "signature": hex} -> shares
"""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from tessera.errors import (
    TesseraError,
)
from tessera.node.service import NodeService

__all__ = ["create_app"]

_MAX_BODY = 1 << 30


def create_app(service: NodeService) -> FastAPI:
    """The node API for ``service``."""
    app = FastAPI(title=f"Tessera custodian node {service.node_id}", docs_url=None, redoc_url=None)

    @app.exception_handler(TesseraError)
    async def _error(request: Request, exc: TesseraError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "message": str(exc)}, status_code=exc.http_status)

    @app.get("/v1/health", operation_id="node-health")
    def health() -> dict[str, Any]:
        return {"node": service.node_id, "status": "ok"}

    @app.get("/v1/mpc-port", operation_id="node-mpc-port")
    def mpc_port(request: Request) -> dict[str, Any]:
        host = next(n.host for n in service.env.nodes if n.id == service.node_id)
        return {"port": service.free_port(host)}

    @app.get("/v1/tables", operation_id="node-tables")
    def tables() -> list[dict[str, Any]]:
        return service.tables()

    @app.put("/v1/tables/{name}/chunks/{chunk}", operation_id="node-append")
    async def append(name: str, chunk: str, request: Request) -> dict[str, Any]:
        raw = request.headers.get("x-tessera-manifest", "")
        try:
            manifest = json.loads(base64.urlsafe_b64decode(raw.encode()))
        except (ValueError, json.JSONDecodeError):
            from tessera.errors import InputError

            raise InputError("missing or malformed X-Tessera-Manifest header") from None
        body = await request.body()
        if len(body) > _MAX_BODY:
            from tessera.errors import InputError

            raise InputError("chunk too large")
        await run_in_threadpool(service.append_chunk, name, chunk, manifest, body)
        return {"stored": chunk}

    @app.post("/v1/jobs", operation_id="node-run-job")
    async def run_job(request: Request) -> dict[str, Any]:
        try:
            envelope = json.loads(await request.body())
        except json.JSONDecodeError:
            from tessera.errors import InputError

            raise InputError("job is not JSON") from None
        result: dict[str, Any] = await run_in_threadpool(service.run_job, envelope)
        return result

    return app
