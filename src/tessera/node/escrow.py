"""The custodian node's escrow routes: key shares of escrowed objects, released only
under a quorum of people (:mod:`tessera.workflows.escrow`).

Routes (JSON, mutual TLS like every node route)::

    PUT  /v1/escrow          {"deposits": [{"name", "digest", "share", "node"}]}
                             -> {"stored": N}; refused (403) if it would replace a
                             share this custodian holds
    POST /v1/escrow/release  {"request": a signed re-identification request,
                              "run": the requester's signed run document}
                             -> {"node": I, "released": {name: [{"digest", "sealed"}]}}
                             each share sealed to the run document's one-time receiver
                             key, never in the clear (an empty list for a name without
                             a deposit: a legacy object); refused (400/403) unless the
                             request is approved and its requester signed the run
                             document in the last 5 minutes; every release and refusal
                             is in this node's audit log

The :class:`~tessera.workflows.escrow.Escrow` behind them is made on first use, one per
service, from the service's folder, pinned roster and audit log.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from tessera.errors import InputError
from tessera.node.service import NodeService
from tessera.workflows.escrow import Escrow

__all__ = ["add_escrow_routes"]

_MAX_BODY = 16 << 20


async def _document(request: Request) -> Any:
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise InputError("document too large")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InputError("the body is not JSON (or is nested too deeply)") from None


def add_escrow_routes(app: FastAPI, service: NodeService) -> None:
    """Add ``PUT /v1/escrow`` and ``POST /v1/escrow/release`` to the node API ``app``."""
    lock = threading.Lock()
    made: list[Escrow] = []

    def escrow() -> Escrow:
        with lock:
            if not made:
                made.append(
                    Escrow(
                        service.root,
                        node_id=service.node_id,
                        roster=service.custodian.roster,
                        audit=service.audit,
                    )
                )
            return made[0]

    @app.put("/v1/escrow", operation_id="node-escrow-deposit")
    async def deposit(request: Request) -> dict[str, Any]:
        doc = await _document(request)
        stored = await run_in_threadpool(escrow().deposit, doc)
        return {"stored": stored}

    @app.post("/v1/escrow/release", operation_id="node-escrow-release")
    async def release(request: Request) -> dict[str, Any]:
        doc = await _document(request)
        result: dict[str, Any] = await run_in_threadpool(escrow().release, doc)
        return result
