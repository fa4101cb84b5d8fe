"""The routes the console's vault and budget views need, beside :mod:`.routes`.

::

    GET  /api/v1/vault/verify            vault verify --json, one cell per object and store
    POST /api/v1/vault/upload?name=N[&replace=true][&scheme=S]   the body: the file
    GET  /api/v1/budget/researchers      every researcher's own balance on each DP table

An upload is streamed to an unnamed temporary file under ``HOME/gateway/uploads`` in
chunks (never held in memory whole), then split into fragments by the vault's put, as
``tessera vault put`` does: a name already in the vault is refused (409
``name_exists``) before the body is read, unless ``replace=true``.  Only the vault's
owner writes to it: the signed-in steward's own key must be the one that signs the
vault's manifests (``[vault] signing_key``), else 403.  The upload route alone accepts a
body larger than the gateway's usual limit (:class:`BodyLimits`, up to
:data:`UPLOAD_MAX`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from tessera.config import Environment
from tessera.dp.accounting import epsilon_for_rho
from tessera.errors import ForbiddenError, UsageError
from tessera.server.auth import Gate
from tessera.server.errors import InvalidRequestError
from tessera.server.guard import Guard
from tessera.server.models import NAME_MAX, OwnBalance, ResearcherBalance, VaultHealth, VaultPut
from tessera.server.routes import CALLS, ERRORS, Caller, in_thread, own_balance
from tessera.workflows.audit_cli import CommandCall, add_detail
from tessera.workflows.people import Signer
from tessera.workflows.users import User

__all__ = [
    "UPLOAD_MAX",
    "UPLOAD_PATH",
    "BodyLimits",
    "NameExistsError",
    "console_router",
    "health_grid",
    "receive_into",
]

UPLOAD_PATH = "/api/v1/vault/upload"
#: The largest file the console uploads (bytes); the CLI has no such limit.
UPLOAD_MAX = 16 * 1024**3
#: Bytes gathered from the request before each write to the temporary file.
CHUNK = 1024 * 1024
_BINARY_BODY = {
    "requestBody": {
        "required": True,
        "description": "the file's bytes, as they are",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


class NameExistsError(UsageError):
    """A put over a name already in the vault, without ``replace``."""

    code = "name_exists"
    http_status = 409


class UploadInterruptedError(UsageError):
    """The client went away before the whole file arrived."""

    code = "upload_interrupted"
    http_status = 400


class BodyLimits:
    """:class:`~tessera.server.guard.Guard` with a larger body limit on some paths."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        max_body: int,
        larger: Mapping[str, int] | None = None,
    ) -> None:
        self.default = Guard(app, max_body=max_body)
        self.larger = {path: Guard(app, max_body=size) for path, size in (larger or {}).items()}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        await self.larger.get(path, self.default)(scope, receive, send)


def _cell(problems: list[str], unreachable: bool) -> str:
    if unreachable:
        return "unreachable"
    if not problems:
        return "healthy"
    return "missing" if all("missing" in p for p in problems) else "damaged"


def health_grid(doc: dict[str, Any], stores: list[int]) -> dict[str, Any]:
    """``vault verify --json`` with ``stores`` and, per object, a cell per store:
    healthy, damaged, missing (every problem a missing fragment) or unreachable."""
    away = {str(u["store"]) for u in doc.get("unreachable", [])}
    ids = [str(s) for s in stores]
    objects = []
    for obj in doc["objects"]:
        by_store: dict[str, list[str]] = {}
        for p in obj["problems"]:
            by_store.setdefault(str(p["store"]), []).append(str(p["problem"]))
        cells = {sid: _cell(by_store.get(sid, []), sid in away) for sid in ids}
        objects.append({**obj, "cells": cells})
    return {**doc, "objects": objects, "stores": ids}


def _with_share(own: OwnBalance) -> ResearcherBalance:
    share = epsilon_for_rho(own.share_rho, own.delta)
    return ResearcherBalance(**own.model_dump(), share_epsilon=share)


def _check_name(name: str) -> None:
    if len(name.encode()) > NAME_MAX or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidRequestError(f"name: 1 to {NAME_MAX} bytes of printable text")


def _writable_vault(env: Environment, signer: Signer) -> Any:
    from tessera.workflows.vault import open_vault, vault_owner

    owner = vault_owner(env)
    if signer.name != owner:
        raise ForbiddenError(f"only the vault's owner ({owner}) may write to it")
    return open_vault(env, write=True, signer=signer.key)


def _upload_folder(home: Path) -> Path:
    folder = home / "gateway" / "uploads"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


async def receive_into(request: Request, sink: IO[bytes]) -> int:
    """Write the request's body to ``sink`` in chunks of about :data:`CHUNK` bytes
    (each write in a worker thread); the number of bytes written."""
    size = 0
    pending = bytearray()
    try:
        async for part in request.stream():
            pending += part
            if len(pending) >= CHUNK:
                await run_in_threadpool(sink.write, bytes(pending))
                size += len(pending)
                pending.clear()
    except ClientDisconnect:
        raise UploadInterruptedError("the upload was interrupted") from None
    if pending:
        await run_in_threadpool(sink.write, bytes(pending))
        size += len(pending)
    await run_in_threadpool(sink.flush)
    return size


def console_router(gate: Gate) -> APIRouter:
    """The vault health grid, the browser upload and per-researcher budgets."""
    router = APIRouter(prefix="/api/v1", responses=ERRORS)
    _vault_routes(router, gate)

    @router.get(
        "/budget/researchers",
        response_model=list[ResearcherBalance],
        summary="Each researcher's own balance on every DP table (steward, officer)",
    )
    async def researcher_budgets(request: Request, user: Caller) -> Any:
        from tessera.workflows.people import roster_from_nodes
        from tessera.workflows.policies import node_budgets

        def work() -> Any:
            people = roster_from_nodes(gate.env).people
            names = sorted(p.name for p in people if "researcher" in p.roles)
            return [
                _with_share(own_balance(row))
                for name in names
                for row in node_budgets(gate.env, researcher=name)
            ]

        call = CALLS["/api/v1/budget/researchers"]
        return await gate.audited(request, user, call, ("steward", "officer"), in_thread(work))

    return router


def _vault_routes(router: APIRouter, gate: Gate) -> None:
    @router.get(
        "/vault/verify",
        response_model=VaultHealth,
        summary="Check every fragment of every object (a cell per object and store)",
    )
    async def vault_verify(request: Request, user: Caller) -> Any:
        from tessera.vault import verify as verify_objects
        from tessera.workflows.vault import open_vault

        def work() -> Any:
            vault = open_vault(gate.env)
            result = verify_objects(vault, None)
            damaged = sorted({p.store for o in result.objects for p in o.problems})
            if damaged:  # which stores hold the bad fragments, as the command notes
                add_detail(stores=",".join(map(str, damaged)), damaged_objects=len(result.objects))
            return health_grid(result.to_json(), [s.id for s in vault.stores])

        call = CALLS["/api/v1/vault/verify"]
        return await gate.audited(request, user, call, ("steward", "officer"), in_thread(work))

    @router.post(
        "/vault/upload",
        response_model=VaultPut,
        summary="Store the request's body in the vault as NAME (the vault's owner only)",
        openapi_extra=_BINARY_BODY,
    )
    async def vault_upload(
        request: Request,
        user: Caller,
        name: Annotated[str, Query(min_length=1, max_length=NAME_MAX)],
        replace: bool = False,
        scheme: Literal["shamir", "ssms"] | None = None,
    ) -> Any:
        call = CommandCall(("vault", "put"), {"name": name, "replace": replace})

        async def work() -> Any:
            return await _upload(gate, request, user, name, replace=replace, scheme=scheme)

        return await gate.audited(request, user, call, ("steward",), work)


async def _upload(
    gate: Gate, request: Request, user: User, name: str, *, replace: bool, scheme: str | None
) -> Any:
    """Refuse early (name, owner, a taken name), then stream the body and put it."""
    from tessera.vault.record import NameTakenError
    from tessera.workflows.vault import vault_settings

    _check_name(name)
    signer = await run_in_threadpool(gate.signer_of, request, user)
    vault = await run_in_threadpool(_writable_vault, gate.env, signer)
    taken = "is already in the vault; upload with replace=true to replace it"
    if not replace and name in await run_in_threadpool(vault.manifests):
        raise NameExistsError(f"{name!r} {taken}")
    chosen = scheme or str(vault_settings(gate.env)["scheme"])
    folder = await run_in_threadpool(_upload_folder, gate.home)
    with tempfile.TemporaryFile(dir=folder) as spool:  # unnamed: gone if the process dies
        size = await receive_into(request, spool)
        add_detail(size=size)

        def put() -> Any:
            spool.seek(0)
            return vault.put(spool, size, name, scheme=chosen, replace=replace)

        try:
            result = await run_in_threadpool(put)
        except NameTakenError:  # another upload of the name won meanwhile
            raise NameExistsError(f"{name!r} {taken}") from None
    return result.to_json()
