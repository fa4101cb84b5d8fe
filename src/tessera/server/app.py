"""The gateway: a REST API and a web console over one environment (``tessera serve``).

Routes (JSON; every one but ``/api/v1/health`` and the console's files needs
``Authorization: Bearer <token>``, see :mod:`tessera.workflows.users`)::

    GET  /api/v1/health                  {"status": "ok"}
    GET  /api/v1/me                      {"name", "role"}                     any role
    GET  /api/v1/tables                  [table, ...]                          researcher, steward
    POST /api/v1/query                   {"sql", "epsilon"?} -> query document researcher, steward
    GET  /api/v1/budget                  [balance, ...] (a researcher: own)    researcher, steward
    GET  /api/v1/vault                   [object, ...]                         steward
    GET  /api/v1/audit/verify            the audit verify document            officer
    GET  /api/v1/audit/events?limit=N    the newest events, newest first       officer
    GET  /api/v1/monitor/alerts          the monitor scan document             officer
    GET  /                               the web console (console.html/js/css)

Answers are the ``--json`` documents of the matching commands.  Every authenticated
request is one event in the gateway's audit log (user, role, client address; a query
as its SHA-256, never its text); a missing or wrong token is a ``login`` failure, so
the monitor's brute-force rules see attacks on the API too.  Errors are
``{"error": code, "message": ...}`` with the status of the TesseraError.  The console
is static: no inline script (its Content-Security-Policy forbids it), the token lives
in the tab's sessionStorage and travels only in the Authorization header.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from tessera.config import Environment
from tessera.core.audit_sink import Action, AuditEvent, DetailValue
from tessera.errors import (
    AuthenticationError,
    ForbiddenError,
    TesseraError,
    TooManyAttemptsError,
    UsageError,
)
from tessera.workflows import audit as audit_flow
from tessera.workflows.audit_cli import CommandCall, collecting_detail, command_event, outcome_of
from tessera.workflows.users import User, authenticate

__all__ = ["CLIENT", "Throttle", "create_app"]

CLIENT = "tessera-gateway"
_STATIC = {
    "/": ("console.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class QueryBody(BaseModel):
    """``POST /api/v1/query``."""

    sql: str = Field(min_length=1, max_length=20_000)
    epsilon: float | None = Field(default=None, gt=0)


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


class Throttle:
    """Failed sign-ins per client address in a sliding window; past ``limit``, every
    attempt from that address is refused until the oldest failure leaves the window
    (a guessed token then cannot be tried, right or wrong)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit >= 1 and window_s > 0")
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(address, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def wait_s(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        with self._lock:
            now = self.clock()
            failures = self._recent(address, now)
            if len(failures) < self.limit:
                return 0.0
            return failures[0] + self.window_s - now

    def failed(self, address: str) -> None:
        """Count one failed sign-in from ``address``."""
        with self._lock:
            now = self.clock()
            self._recent(address, now).append(now)


def create_app(
    home: Path,
    *,
    max_failed_logins: int = 20,
    window_s: float = 600.0,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The gateway over the environment in ``home``; ``max_failed_logins`` failed
    sign-ins from one address within ``window_s`` seconds lock that address out until
    the window moves on."""
    env = Environment.load(home)
    throttle = Throttle(max_failed_logins, window_s, clock)
    app = FastAPI(title="Tessera gateway", docs_url=None, redoc_url=None, openapi_url=None)

    def record(event: AuditEvent) -> None:
        audit_flow.gateway_log(home).append([event])

    @app.exception_handler(TesseraError)
    async def _error(request: Request, exc: TesseraError) -> JSONResponse:
        return JSONResponse(
            {"error": exc.code, "message": str(exc)}, status_code=exc.http_status, headers=_HEADERS
        )

    def login_failure(request: Request, reason: str) -> None:
        record(
            AuditEvent(
                Action.LOGIN,
                outcome="failure",
                address=_address(request),
                client=CLIENT,
                source="gateway",
                detail={"method": "token", "path": request.url.path, "reason": reason},
            )
        )

    def user_of(request: Request) -> User:
        address = _address(request)
        wait = throttle.wait_s(address)
        if wait > 0:
            login_failure(request, "throttled")
            raise TooManyAttemptsError(
                f"too many failed sign-ins from {address}; try again in {math.ceil(wait)} s"
            )
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        user = authenticate(home, token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            throttle.failed(address)
            login_failure(request, "no token" if not token.strip() else "unknown token")
            raise AuthenticationError("a valid API token is needed (Authorization: Bearer ...)")
        request.state.token = token.strip()  # unlocks the user's own signing key, per request
        return user

    def signer_of(request: Request, user: User) -> Any:
        """The user's own key, decrypted with their token (the gateway holds no key)."""
        from tessera.workflows.people import unlock

        token = str(request.state.token).encode()
        return unlock(env, user.name, token, record=False, gateway=True)

    def audited(
        request: Request,
        user: User,
        call: CommandCall,
        roles: tuple[str, ...],
        work: Callable[[], Any],
    ) -> Any:
        """Run ``work`` for ``user`` if their role allows; record one event either way."""
        error: BaseException | None = None
        with collecting_detail() as extra:
            try:
                if user.role not in roles:
                    raise ForbiddenError(
                        f"role {user.role!r} may not do this ({', '.join(roles)} only)"
                    )
                return work()
            except BaseException as exc:
                error = exc
                raise
            finally:
                outcome, code = outcome_of(error) or ("error", "internal_error")
                detail: dict[str, DetailValue] = {"path": request.url.path}
                event = command_event(call, outcome, code, user=user.name, extra=extra)
                record(
                    replace(
                        event,
                        role=user.role,
                        address=_address(request),
                        client=CLIENT,
                        detail={**event.detail, **detail},
                    )
                )

    @app.middleware("http")
    async def _security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for key, value in _HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.get("/api/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "nodes": env.n, "threshold": env.threshold}

    @app.get("/api/v1/me")
    def me(request: Request, user: User = Depends(user_of)) -> dict[str, Any]:
        # The console's sign-in: a login success, as a failed token is a login failure.
        record(
            AuditEvent(
                Action.LOGIN,
                user=user.name,
                role=user.role,
                address=_address(request),
                client=CLIENT,
                source="gateway",
                detail={"method": "token"},
            )
        )
        return {"name": user.name, "role": user.role}

    @app.get("/api/v1/tables")
    def tables(request: Request, user: User = Depends(user_of)) -> Any:
        from tessera.workflows.tables import list_tables

        call = CommandCall(("table", "ls"), {})
        return audited(request, user, call, ("researcher", "steward"), lambda: list_tables(env))

    @app.post("/api/v1/query")
    async def query(request: Request, body: QueryBody, user: User = Depends(user_of)) -> Any:
        from tessera.workflows.query import run_sql

        call = CommandCall(("query",), {"sql": body.sql, "epsilon": body.epsilon})
        return await run_in_threadpool(
            audited,
            request,
            user,
            call,
            ("researcher", "steward"),
            lambda: run_sql(env, body.sql, epsilon=body.epsilon, signer=signer_of(request, user)),
        )

    @app.get("/api/v1/budget")
    def budget(request: Request, user: User = Depends(user_of)) -> Any:
        from tessera.workflows.policies import node_budgets

        who = user.name if user.role == "researcher" else None

        def work() -> Any:
            return node_budgets(env, researcher=who)

        call = CommandCall(("budget", "show"), {})
        return audited(request, user, call, ("researcher", "steward"), work)

    @app.get("/api/v1/vault")
    def vault(request: Request, user: User = Depends(user_of)) -> Any:
        from tessera.workflows.vault import listing, open_vault

        def work() -> Any:
            return listing(open_vault(env))

        return audited(request, user, CommandCall(("vault", "ls"), {}), ("steward",), work)

    @app.get("/api/v1/audit/verify")
    def audit_verify(request: Request, user: User = Depends(user_of)) -> Any:
        def work() -> Any:
            return audit_flow.verify_log(home).to_json()

        call = CommandCall(("audit", "verify"), {})
        return audited(request, user, call, ("officer",), work)

    @app.get("/api/v1/audit/events")
    def audit_events(request: Request, limit: int = 50, user: User = Depends(user_of)) -> Any:
        if not 1 <= limit <= 1000:
            raise UsageError("limit must be between 1 and 1000")

        def work() -> Any:
            return [
                {
                    "seq": seq,
                    "recorded": ev.recorded.isoformat() if ev.recorded else None,
                    "action": ev.action,
                    "outcome": ev.outcome,
                    "user": ev.user,
                    "role": ev.role,
                    "address": ev.address,
                    "entity": ev.entity,
                }
                for seq, ev in audit_flow.gateway_log(home).tail(limit)
            ]

        call = CommandCall(("audit", "events"), {})
        return audited(request, user, call, ("officer",), work)

    @app.get("/api/v1/monitor/alerts")
    def alerts(request: Request, user: User = Depends(user_of)) -> Any:
        from tessera.workflows.monitor import scan_environment

        call = CommandCall(("monitor", "scan"), {})
        return audited(request, user, call, ("officer",), lambda: scan_environment(home).to_json())

    for route, (name, media) in _STATIC.items():
        app.get(route, include_in_schema=False)(_static_file(name, media))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204, headers=_HEADERS)

    return app


def _static_file(name: str, media: str) -> Callable[[], Response]:
    data = (resources.files("tessera.server") / "static" / name).read_bytes()

    def serve() -> Response:
        return Response(data, media_type=media, headers=_HEADERS)

    return serve
