"""Requests through the gateway: researchers file and run them, stewards decide.

::

    POST /api/v1/requests                {"kind", "purpose", "sql", "epsilon"?}   researcher
    GET  /api/v1/requests                a researcher's own; every one for stewards, officers
    GET  /api/v1/requests/{id}           one (a researcher: only her own)
    POST /api/v1/requests/{id}/approve   {"reason"}                         steward, officer
    POST /api/v1/requests/{id}/refuse    {"reason"}                         steward, officer
    POST /api/v1/requests/{id}/run       a query answer, or {"held": true, ...}   researcher
    GET  /api/v1/requests/{id}/result    a held output for its steward, a released one
                                         for its researcher

Each is one audit event (``request.file``, ``request.decide`` …, the request's id in the
detail); the gateway signs with the user's own key, unlocked by their token
(:meth:`~tessera.server.auth.Gate.signer_of`).  The work is
:mod:`tessera.workflows.requests`'s, imported when a route first runs: without it the
routes answer 503.  Another researcher's request is answered 404, as if it did not
exist.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam

from tessera.errors import NotFoundError
from tessera.server.auth import Gate
from tessera.server.errors import ServiceUnavailableError
from tessera.server.models import DecisionBody, HeldOutput, QueryAnswer, RequestBody, RequestDoc
from tessera.server.routes import ERRORS, Caller, in_thread
from tessera.workflows.audit_cli import CommandCall, add_detail
from tessera.workflows.users import User

__all__ = ["request_router"]

RequestId = Annotated[
    str, PathParam(pattern=r"^[0-9a-f]{32}$", description="the request's id (32 hex digits)")
]
_DECIDERS = ("steward", "officer")
_EVERYONE = ("researcher", "steward", "officer")


def _flow() -> ModuleType:
    """:mod:`tessera.workflows.requests` (503 while this installation lacks it)."""
    try:
        return importlib.import_module("tessera.workflows.requests")
    except ImportError:
        raise ServiceUnavailableError("requests are not available on this gateway") from None


def _doc(found: Any) -> dict[str, Any]:
    doc = found.to_dict() if hasattr(found, "to_dict") else dict(found)
    return dict(doc)


def _visible(gate: Gate, user: User, request_id: str) -> dict[str, Any]:
    """The request, if ``user`` may see it (a researcher: her own); 404 otherwise."""
    add_detail(request=request_id)
    doc = _doc(_flow().show_request(gate.env, request_id))
    if user.role == "researcher" and doc.get("researcher") != user.name:
        raise NotFoundError(f"no request {request_id}")
    return doc


def request_router(gate: Gate) -> APIRouter:
    """The ``/api/v1/requests`` routes over ``gate``."""
    router = APIRouter(prefix="/api/v1", responses=ERRORS)

    @router.post("/requests", response_model=RequestDoc, summary="File a request")
    async def file(request: Request, body: RequestBody, user: Caller) -> Any:
        def work() -> Any:
            signer = gate.signer_of(request, user)
            filed = _flow().file_request(
                gate.env,
                signer,
                kind=body.kind,
                purpose=body.purpose,
                sql=body.sql,
                epsilon=body.epsilon,
            )
            doc = _doc(filed)
            add_detail(request=str(doc.get("id", "")))
            return doc

        call = CommandCall(("request", "file"), {})
        return await gate.audited(request, user, call, ("researcher",), in_thread(work))

    @router.get(
        "/requests",
        response_model=list[RequestDoc],
        summary="Requests: a researcher's own, or everyone's (steward, officer)",
    )
    async def listing(request: Request, user: Caller) -> Any:
        def work() -> Any:
            viewer = user.name if user.role == "researcher" else None
            return [_doc(r) for r in _flow().list_requests(gate.env, viewer=viewer)]

        call = CommandCall(("request", "ls"), {})
        return await gate.audited(request, user, call, _EVERYONE, in_thread(work))

    @router.get("/requests/{request_id}", response_model=RequestDoc, summary="One request")
    async def show(request: Request, request_id: RequestId, user: Caller) -> Any:
        call = CommandCall(("request", "show"), {})
        work = in_thread(lambda: _visible(gate, user, request_id))
        return await gate.audited(request, user, call, _EVERYONE, work)

    _decision_routes(router, gate)
    _run_routes(router, gate)
    return router


def _decision_routes(router: APIRouter, gate: Gate) -> None:
    async def decide(
        request: Request, request_id: str, body: DecisionBody, user: User, approve: bool
    ) -> Any:
        def work() -> Any:
            add_detail(request=request_id, decision="approve" if approve else "refuse")
            signer = gate.signer_of(request, user)
            decided = _flow().decide(
                gate.env, request_id, signer, approve=approve, reason=body.reason
            )
            return _doc(decided)

        call = CommandCall(("request", "decide"), {})
        return await gate.audited(request, user, call, _DECIDERS, in_thread(work))

    @router.post(
        "/requests/{request_id}/approve",
        response_model=RequestDoc,
        summary="Approve a pending request, or release a held output (steward, officer)",
    )
    async def approve(
        request: Request, request_id: RequestId, body: DecisionBody, user: Caller
    ) -> Any:
        return await decide(request, request_id, body, user, approve=True)

    @router.post(
        "/requests/{request_id}/refuse",
        response_model=RequestDoc,
        summary="Refuse a pending request, or withhold a held output (steward, officer)",
    )
    async def refuse(
        request: Request, request_id: RequestId, body: DecisionBody, user: Caller
    ) -> Any:
        return await decide(request, request_id, body, user, approve=False)


def _run_routes(router: APIRouter, gate: Gate) -> None:
    @router.post(
        "/requests/{request_id}/run",
        response_model=QueryAnswer | HeldOutput,
        summary="Run an approved request: its answer, or held for the steward",
    )
    async def run(request: Request, request_id: RequestId, user: Caller) -> Any:
        def work() -> Any:
            _visible(gate, user, request_id)
            signer = gate.signer_of(request, user)
            return _flow().run_request(gate.env, request_id, signer)

        async def queued() -> Any:
            return await gate.queries.run(work)

        call = CommandCall(("request", "run"), {})
        return await gate.audited(request, user, call, ("researcher",), queued)

    @router.get(
        "/requests/{request_id}/result",
        response_model=QueryAnswer,
        summary="A held output's result (its steward) or a released one (its researcher)",
    )
    async def result(request: Request, request_id: RequestId, user: Caller) -> Any:
        def work() -> Any:
            _visible(gate, user, request_id)
            signer = gate.signer_of(request, user)
            found = _flow().request_result(gate.env, request_id, signer)
            if found is None:
                raise NotFoundError(f"request {request_id} has no result to show")
            return found

        call = CommandCall(("request", "result"), {})
        return await gate.audited(request, user, call, _EVERYONE, in_thread(work))
