"""Who is asking, and one audit event per request: the gateway's sign-in, lockout and
audit wiring (see :mod:`tessera.server.app`).

Nothing here blocks the event loop: an accepted token is found in memory
(:class:`~tessera.server.cache.Tokens`, one ``stat`` of ``users.json``), an unknown one
is looked up in a worker thread, and events go to the log through the
:class:`~tessera.server.journal.Journal` (the request waits for its event on a future).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer

from tessera.config import Environment
from tessera.core.audit_sink import Action, AuditEvent, DetailValue
from tessera.errors import AuthenticationError, ForbiddenError, TesseraError, TooManyAttemptsError
from tessera.server.cache import Tokens
from tessera.server.journal import Journal
from tessera.server.queries import QueryPool
from tessera.server.throttle import Digest, Throttle, account_key, address_key
from tessera.workflows.audit_cli import CommandCall, collecting_detail, command_event, outcome_of
from tessera.workflows.users import User

__all__ = ["BEARER", "CLIENT", "TOKEN_MAX", "Gate"]

CLIENT = "tessera-gateway"
#: Tokens are 43 characters; anything much longer is not one (and is not hashed).
TOKEN_MAX = 256
#: The OpenAPI security scheme (the header is read by :meth:`Gate.user_of` itself).
BEARER = HTTPBearer(auto_error=False, description="the API token from tessera user add")


def address_of(request: Request) -> str:
    """The client's address (a forwarded one only from a configured proxy: uvicorn's)."""
    return request.client.host if request.client else ""


@dataclass
class Gate:
    """The environment, its lockout, its audit log and its query slots, shared by every
    route."""

    home: Path
    env: Environment
    throttle: Throttle
    refused: Digest  # attempts refused while locked out: one event per address and window
    failures: Digest  # failed sign-ins from everywhere: individually up to a bound
    queries: QueryPool = field(default_factory=QueryPool)
    journal: Journal = field(init=False)
    tokens: Tokens = field(init=False)

    def __post_init__(self) -> None:
        self.journal = Journal(self.home)
        self.tokens = Tokens(self.home)

    async def record(self, event: AuditEvent) -> None:
        """Append ``event`` to the gateway's log (returns once it is there)."""
        await self.journal.record(event)

    async def login_failure(self, request: Request, reason: str) -> None:
        """A ``login`` failure event, or nothing when it is one of a flood (counted)."""
        digest, key = (
            (self.refused, address_of(request)) if reason == "throttled" else (self.failures, "")
        )
        count = digest.note(key)
        if count is None:
            return
        detail: dict[str, DetailValue] = {
            "method": "token",
            "path": request.url.path,
            "reason": reason,
        }
        if count > 1:
            detail["count"] = count
        await self.record(
            AuditEvent(
                Action.LOGIN,
                outcome="failure",
                address=address_of(request),
                client=CLIENT,
                source="gateway",
                detail=detail,
            )
        )

    async def user_of(self, request: Request) -> User:
        """The user whose token the request carries; 401, or 429 while locked out."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        keys = [address_key(address_of(request))]
        if token:
            keys.append(account_key(token))
        wait = self.throttle.wait_s(*keys)
        if wait > 0:
            await self.login_failure(request, "throttled")
            error = TooManyAttemptsError(
                f"too many failed sign-ins; try again in {math.ceil(wait)} s"
            )
            error.retry_after_s = wait  # type: ignore[attr-defined]
            raise error
        user = None
        if 0 < len(token) <= TOKEN_MAX:
            user = self.tokens.cached(token)
            if user is None:
                user = await run_in_threadpool(self.tokens.authenticate, token)
        if user is None:
            self.throttle.failed(*keys)
            await self.login_failure(request, "unknown token" if token else "no token")
            raise AuthenticationError("a valid API token is needed (Authorization: Bearer ...)")
        request.state.token = token  # unlocks the user's own signing key, per request
        request.state.user = user
        return user

    def signer_of(self, request: Request, user: User) -> Any:
        """The user's own key, decrypted with their token (the gateway holds no key)."""
        from tessera.workflows.people import unlock

        token = str(request.state.token).encode()
        return unlock(self.env, user.name, token, record=False, gateway=True)

    def event(
        self,
        request: Request,
        user: User,
        call: CommandCall,
        outcome: str,
        code: str,
        /,
        **extra: Any,
    ) -> AuditEvent:
        """The event of ``user``'s request ``call`` (the command's event, from the web);
        ``extra`` is detail, whatever its keys (a workflow adds ``request=ID``)."""
        event = command_event(call, outcome, code, user=user.name, extra=extra)
        return replace(
            event,
            role=user.role,
            address=address_of(request),
            client=CLIENT,
            detail={**event.detail, "path": request.url.path},
        )

    async def audited(
        self,
        request: Request,
        user: User,
        call: CommandCall,
        roles: tuple[str, ...],
        work: Callable[[], Awaitable[Any]],
    ) -> Any:
        """Await ``work()`` for ``user`` if their role allows; record one event either
        way (the answer waits for it, unless the request was cancelled)."""
        error: BaseException | None = None
        with collecting_detail() as extra:
            try:
                if user.role not in roles:
                    raise ForbiddenError(
                        f"role {user.role!r} may not do this ({', '.join(roles)} only)"
                    )
                return await work()
            except BaseException as exc:
                error = exc
                raise
            finally:
                outcome, code = outcome_of(error) or ("error", "internal_error")
                done = self.journal.submit(self.event(request, user, call, outcome, code, **extra))
                if not isinstance(error, asyncio.CancelledError):
                    await asyncio.wrap_future(done)

    def invalid(self, request: Request, error: TesseraError, calls: dict[str, CommandCall]) -> None:
        """Audit a signed-in user's request refused as invalid (422) before it ran."""
        user = getattr(request.state, "user", None)
        call = calls.get(request.url.path)
        if isinstance(user, User) and call is not None:  # a worker thread: may block
            self.journal.record_sync(self.event(request, user, call, "failure", error.code))
