"""The API routes (``/api/v1/...``): each checks the role, runs the matching command's
workflow and records one audit event (see :mod:`tessera.server.app`).

Every route is a coroutine that never blocks the event loop: the table list is kept in
memory (:class:`~tessera.server.cache.Watched`, read again in a worker thread when the
catalogue changes), the other workflows run in the shared worker threads, and secure
queries in the :class:`~tessera.server.queries.QueryPool`'s own threads, at most
``max_queries`` at once (503 with ``Retry-After`` beyond).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import TypeAdapter

from tessera.core.audit_sink import Action, AuditEvent
from tessera.dp.accounting import epsilon_for_rho
from tessera.server.auth import BEARER, CLIENT, Gate, address_of
from tessera.server.cache import Watched
from tessera.server.calls import RouteCalls
from tessera.server.models import (
    AuditEventRow,
    AuditReport,
    ErrorBody,
    Health,
    Me,
    OwnBalance,
    QueryAnswer,
    QueryBody,
    ScanReport,
    TableBalance,
    TableInfo,
    VaultObject,
)
from tessera.workflows import audit as audit_flow
from tessera.workflows.audit_cli import CommandCall
from tessera.workflows.users import User

__all__ = [
    "CALLS",
    "ERRORS",
    "Caller",
    "api_router",
    "in_thread",
    "own_balance",
    "signed_in",
    "table_list",
    "vouched",
]

_WHY = {
    400: "bad input",
    401: "no or unknown token",
    403: "role, policy or budget refusal",
    404: "no such route or object",
    405: "method not allowed",
    409: "conflict",
    413: "request body too large",
    422: "invalid request (parameters, body, unsupported SQL)",
    429: "locked out after failed sign-ins (Retry-After)",
    500: "internal error (details in the server log)",
    502: "a custodian or store failed",
    503: "unavailable (Retry-After)",
}
#: Every error a route may answer, all in one shape.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": why} for status, why in _WHY.items()
}
#: The command each route stands for in the audit log (an invalid request records it too).
CALLS = RouteCalls(
    {
        "/api/v1/tables": CommandCall(("table", "ls"), {}),
        "/api/v1/query": CommandCall(("query",), {}),
        "/api/v1/budget": CommandCall(("budget", "show"), {}),
        "/api/v1/vault": CommandCall(("vault", "ls"), {}),
        "/api/v1/audit/verify": CommandCall(("audit", "verify"), {}),
        "/api/v1/audit/events": CommandCall(("audit", "events"), {}),
        "/api/v1/monitor/alerts": CommandCall(("monitor", "scan"), {}),
        "/api/v1/budget/researchers": CommandCall(("budget", "researchers"), {}),
        "/api/v1/vault/verify": CommandCall(("vault", "verify"), {}),
        "/api/v1/vault/upload": CommandCall(("vault", "put"), {}),
        # GET /api/v1/requests (request ls) takes nothing that can be invalid
        "/api/v1/requests": CommandCall(("request", "file"), {}),
        "/api/v1/requests/{id}": CommandCall(("request", "show"), {}),
        "/api/v1/requests/{id}/approve": CommandCall(("request", "decide"), {}),
        "/api/v1/requests/{id}/refuse": CommandCall(("request", "decide"), {}),
        "/api/v1/requests/{id}/run": CommandCall(("request", "run"), {}),
        "/api/v1/requests/{id}/result": CommandCall(("request", "result"), {}),
    }
)
_READERS = ("researcher", "steward")


def own_balance(row: dict[str, Any]) -> OwnBalance:
    """A researcher's own figures from a ledger row: no table-wide totals."""
    delta = float(row["delta"])
    share = float(row.get("researcher_total_rho") or row["total_rho"])
    spent = float(row.get("researcher_spent_rho") or 0.0)
    left = max(share - spent, 0.0)
    policy = row.get("policy") or {}
    cap = policy.get("max_epsilon")
    return OwnBalance(
        table=str(row["table"]),
        researcher=str(row["researcher"]),
        delta=delta,
        default_epsilon=float(policy.get("default_epsilon", 0.0)),
        max_epsilon=None if cap is None else float(cap),
        share_rho=share,
        spent_rho=spent,
        spent_epsilon=epsilon_for_rho(spent, delta),
        remaining_rho=left,
        remaining_epsilon=epsilon_for_rho(left, delta),
    )


def vouched(checked: list[int], problems: list[str]) -> int:
    """How many of the custodians ``checked`` hold nothing against the log (a problem
    names its custodian: "custodian N witnessed ...")."""
    named = {int(n) for p in problems for n in re.findall(r"custodian (\d+)", p)}
    return len(set(checked) - named)


def _event_row(seq: int, ev: AuditEvent) -> AuditEventRow:
    count = ev.detail.get("count", 1)
    return AuditEventRow(
        seq=seq,
        recorded=ev.recorded.isoformat() if ev.recorded else None,
        action=ev.action,
        outcome=ev.outcome,
        user=ev.user,
        role=ev.role,
        address=ev.address,
        entity=ev.entity,
        count=count if isinstance(count, int) else 1,
    )


async def signed_in(
    request: Request, _: HTTPAuthorizationCredentials | None = Security(BEARER)
) -> User:
    """The dependency of every route that needs a token (``app.state.gate`` checks it)."""
    gate: Gate = request.app.state.gate
    return await gate.user_of(request)


def in_thread(work: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """``work`` as a coroutine function that runs it in a shared worker thread."""

    async def run() -> Any:
        return await run_in_threadpool(work)

    return run


def table_list(gate: Gate) -> Watched[bytes]:
    """``tessera table ls --json`` as the answer's bytes, read again when a manifest in
    ``HOME/tables`` is added, replaced or removed (the folder's own time changes)."""
    from tessera.workflows.tables import list_tables

    adapter = TypeAdapter(list[TableInfo])

    def load() -> bytes:
        return adapter.dump_json(adapter.validate_python(list_tables(gate.env)))

    return Watched([gate.home / "tables"], load)


Caller = Annotated[User, Depends(signed_in)]


def api_router(gate: Gate) -> APIRouter:
    """The ``/api/v1`` routes over ``gate`` (which ``app.state.gate`` must hold)."""
    router = APIRouter(prefix="/api/v1", responses=ERRORS)

    @router.get("/health", response_model=Health, summary="Liveness and the node count")
    async def health() -> Health:
        return Health(status="ok", nodes=gate.env.n, threshold=gate.env.threshold)

    @router.get("/me", response_model=Me, summary="Who the token belongs to (a sign-in)")
    async def me(request: Request, user: Caller) -> Me:
        await gate.record(
            AuditEvent(
                Action.LOGIN,
                user=user.name,
                role=user.role,
                address=address_of(request),
                client=CLIENT,
                source="gateway",
                detail={"method": "token"},
            )
        )
        return Me(name=user.name, role=user.role)

    listing = table_list(gate)

    @router.get("/tables", response_model=list[TableInfo], summary="The catalogue's tables")
    async def tables(request: Request, user: Caller) -> Any:
        async def work() -> Response:
            body = listing.fresh()
            if body is None:
                body = await run_in_threadpool(listing.refresh)
            return Response(body, media_type="application/json")

        return await gate.audited(request, user, CALLS["/api/v1/tables"], _READERS, work)

    @router.post("/query", response_model=QueryAnswer, summary="Run secure SQL (DP or exact)")
    async def query(request: Request, body: QueryBody, user: Caller) -> Any:
        from tessera.workflows.requests import run_sql_recorded

        call = CommandCall(("query",), {"sql": body.sql, "epsilon": body.epsilon})

        def run() -> Any:  # a release the custodians hold is filed for its steward (409)
            signer = gate.signer_of(request, user)
            return run_sql_recorded(gate.env, body.sql, epsilon=body.epsilon, signer=signer)

        async def work() -> Any:
            return await gate.queries.run(run)

        return await gate.audited(request, user, call, _READERS, work)

    _budget_and_vault_routes(router, gate)
    _officer_routes(router, gate)
    return router


def _budget_and_vault_routes(router: APIRouter, gate: Gate) -> None:
    @router.get(
        "/budget",
        response_model=list[OwnBalance] | list[TableBalance],
        summary="DP budgets: a researcher's own, or every table's (steward, officer)",
    )
    async def budget(request: Request, user: Caller) -> Any:
        from tessera.workflows.policies import node_budgets

        def work() -> Any:
            if user.role == "researcher":
                return [own_balance(r) for r in node_budgets(gate.env, researcher=user.name)]
            rows = node_budgets(gate.env)
            for row in rows:
                row["spent_epsilon"] = epsilon_for_rho(float(row["spent_rho"]), float(row["delta"]))
            return rows

        roles = ("researcher", "steward", "officer")
        return await gate.audited(request, user, CALLS["/api/v1/budget"], roles, in_thread(work))

    @router.get("/vault", response_model=list[VaultObject], summary="The vault's objects")
    async def vault(request: Request, user: Caller) -> Any:
        from tessera.workflows.vault import listing, open_vault

        def work() -> Any:
            return listing(open_vault(gate.env))

        call = CALLS["/api/v1/vault"]
        return await gate.audited(request, user, call, ("steward",), in_thread(work))


def _officer_routes(router: APIRouter, gate: Gate) -> None:
    @router.get(
        "/audit/verify",
        response_model=AuditReport,
        summary="Verify the audit log, and compare it with what the custodians witnessed",
    )
    async def audit_verify(request: Request, user: Caller) -> Any:
        from tessera.workflows.audit_witness import verify_witnessed

        def work() -> Any:
            result = verify_witnessed(gate.home)
            return {
                **result.to_json(),
                "vouched": vouched(result.custodians.checked, result.custodians.problems),
                "nodes": gate.env.n,
            }

        call = CALLS["/api/v1/audit/verify"]
        return await gate.audited(request, user, call, ("officer",), in_thread(work))

    @router.get(
        "/audit/events", response_model=list[AuditEventRow], summary="The newest audit events"
    )
    async def audit_events(
        request: Request,
        user: Caller,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> Any:
        def work() -> Any:
            return [
                _event_row(seq, ev) for seq, ev in audit_flow.gateway_log(gate.home).tail(limit)
            ]

        call = CALLS["/api/v1/audit/events"]
        return await gate.audited(request, user, call, ("officer",), in_thread(work))

    @router.get("/monitor/alerts", response_model=ScanReport, summary="The monitor's alerts")
    async def alerts(request: Request, user: Caller) -> Any:
        from tessera.workflows.monitor import scan_environment

        def work() -> Any:
            return scan_environment(gate.home).to_json()

        call = CALLS["/api/v1/monitor/alerts"]
        return await gate.audited(request, user, call, ("officer",), in_thread(work))
