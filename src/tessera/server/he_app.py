"""The untrusted HE server: accepts key bundles, ciphertexts and jobs; never a secret key.

Routes (JSON errors ``{"error": code, "message": one line}`` with the status of the
Tessera error behind them)::

    GET  /v1/health                 {"service": "tessera-he", "version": 1, "limits": {...}}
    GET  /v1/models                 the models this server holds (name, kind, features, digest)
    GET  /v1/models/{name}          one model's JSON (clients check answers with it)
    HEAD /v1/bundles/{hex}          200 when held, 404 otherwise
    PUT  /v1/bundles/{hex}          a key bundle whose SHA-256 is hex (a secret key: 400)
    HEAD /v1/data/{hex}             200 when held
    PUT  /v1/data/{hex}             public encrypted data (every ciphertext is checked)
    POST /v1/jobs                   {"data": hex, "job": {...}} -> the answer (octet-stream)

Every body is read up to its limit and refused beyond it (413), before it is parsed;
whatever does not parse, does not match its digest, or does not hold valid ciphertexts
of its bundle is refused (400) and not kept.  Uploads are kept in memory, least recently
used first out past ``max_store`` bytes (a client uploads again after a 404).  At most
``max_jobs`` jobs run at once, more are refused with 503 and ``Retry-After``.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tessera.errors import InputError, NotFoundError, TesseraError, UsageError
from tessera.he import engine as he_engine
from tessera.he.container import digest
from tessera.he.datafiles import PublicData
from tessera.he.files import Bundle
from tessera.he.jobs import Job, Model
from tessera.he.session import answer_job, load_set
from tessera.server.errors import (
    InvalidRequestError,
    RequestTooLargeError,
    RouteNotFoundError,
    ServiceUnavailableError,
)

__all__ = ["HEService", "Limits", "create_he_app", "load_models"]

SERVICE = "tessera-he"
_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_JOB_BODY = 64 << 10


@dataclass(frozen=True)
class Limits:
    """The server's limits (bytes, and jobs at once)."""

    max_upload: int = 512 << 20
    max_store: int = 2048 << 20
    max_jobs: int = 2

    def to_dict(self) -> dict[str, int]:
        """The JSON form (``/v1/health``)."""
        return {
            "max_upload_bytes": self.max_upload,
            "max_store_bytes": self.max_store,
            "max_jobs": self.max_jobs,
        }


class _Store:
    """Uploads by digest, in memory, least recently used out first (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._limit = limit
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return
            self._items[key] = value
            self._size += len(value)
            while self._size > self._limit and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)


class BusyError(ServiceUnavailableError):
    """Every job slot is taken."""

    code = "busy"


class ConflictError(TesseraError):
    """The request names something this server holds differently (or not yet)."""

    code = "conflict"
    http_status = 409


def _hex(value: str) -> str:
    if not _HEX.match(value):
        raise InvalidRequestError("the path names no SHA-256 digest (64 lower-case hex digits)")
    return value


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestTooLargeError(f"the body exceeds this server's limit of {limit} bytes")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"the body exceeds this server's limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _error(exc: TesseraError) -> JSONResponse:
    message = " ".join(str(exc).split()) or exc.code
    headers = {"Retry-After": "5"} if isinstance(exc, ServiceUnavailableError) else None
    return JSONResponse(
        {"error": exc.code, "message": message}, status_code=exc.http_status, headers=headers
    )


class HEService:
    """What the routes do: the server's state (models, uploads, job slots) and its work."""

    def __init__(self, models: Mapping[str, Model], limits: Limits) -> None:
        self.models = dict(models)
        self.limits = limits
        self.bundles = _Store(limits.max_store)
        self.datasets = _Store(limits.max_store)
        self.slots = threading.BoundedSemaphore(limits.max_jobs)

    def model(self, name: str) -> Model:
        """The model called ``name`` (404 when not held)."""
        model = self.models.get(name)
        if model is None:
            raise NotFoundError(f"this server holds no model {name!r}")
        return model

    def put_bundle(self, key: str, body: bytes) -> dict[str, Any]:
        """Check and keep a key bundle (a secret key in it: refused, not kept)."""
        if digest(body) != f"sha256:{key}":
            raise InputError("the key bundle does not match the digest it was sent under")
        bundle = Bundle.from_bytes(body)
        he_engine.open_public(bundle.engine, bundle.params, bundle.public_context)
        self.bundles.put(key, body)
        return {"digest": bundle.digest, "params": bundle.params.to_dict()}

    def _engine_for(self, data: PublicData) -> tuple[Bundle, he_engine.PublicEngine]:
        raw = self.bundles.get(data.bundle_digest.removeprefix("sha256:"))
        if raw is None:
            raise ConflictError("the data's key bundle is not here: upload it first")
        bundle = Bundle.from_bytes(raw)
        if bundle.params != data.params or bundle.engine != data.header.get("engine"):
            raise InputError("the data's parameters do not match its key bundle")
        engine = he_engine.open_public(bundle.engine, bundle.params, bundle.public_context)
        return bundle, engine

    def put_data(self, key: str, body: bytes) -> dict[str, Any]:
        """Check (every ciphertext a fresh encryption under its bundle) and keep data."""
        if digest(body) != f"sha256:{key}":
            raise InputError("the data does not match the digest it was sent under")
        data = PublicData.from_bytes(body)
        _, engine = self._engine_for(data)
        load_set(engine, data)
        self.datasets.put(key, body)
        return {"digest": f"sha256:{key}"}

    def run(self, data_key: str, job: Job) -> bytes:
        """The answer to ``job`` on the data held under ``data_key``."""
        raw = self.datasets.get(data_key)
        if raw is None:
            raise NotFoundError("no such data here (upload it)")
        data = PublicData.from_bytes(raw)
        bundle, engine = self._engine_for(data)
        model = None
        if job.model is not None:
            model = self.model(job.model)
            if job.model_digest is not None and job.model_digest != model.digest:
                raise ConflictError(
                    f"model {model.name} here has digest {model.digest}, not the one the job names"
                )
        return answer_job(engine, data, job, model, engine_name=bundle.engine).to_bytes()


def create_he_app(models: Mapping[str, Model] | None = None, limits: Limits = Limits()) -> FastAPI:
    """The HE server's application."""
    service = HEService(models or {}, limits)
    app = FastAPI(title="Tessera HE server", version="1", docs_url=None, redoc_url=None)
    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TesseraError)
    async def _tessera(request: Request, exc: TesseraError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(InvalidRequestError("the request does not match the API"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error(RouteNotFoundError("no such route"))
        return JSONResponse(
            {"error": "http_error", "message": str(exc.detail)}, status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"error": "internal_error", "message": "internal error"}, status_code=500
        )


def _add_routes(app: FastAPI, service: HEService) -> None:
    limits = service.limits

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {
            "service": SERVICE,
            "version": 1,
            "limits": limits.to_dict(),
            "models": len(service.models),
        }

    @app.get("/v1/models")
    def list_models() -> list[dict[str, Any]]:
        held = sorted(service.models.values(), key=lambda m: m.name)
        return [
            {"name": m.name, "kind": m.kind, "features": list(m.features), "digest": m.digest,
             "description": m.description}
            for m in held
        ]  # fmt: skip

    @app.get("/v1/models/{name}")
    def get_model(name: str) -> dict[str, Any]:
        return service.model(name).to_dict()

    @app.head("/v1/bundles/{key}")
    @app.get("/v1/bundles/{key}")
    def has_bundle(key: str) -> dict[str, Any]:
        if service.bundles.get(_hex(key)) is None:
            raise NotFoundError("no such key bundle here (upload it)")
        return {"digest": f"sha256:{key}"}

    @app.put("/v1/bundles/{key}", status_code=201)
    async def put_bundle(key: str, request: Request) -> dict[str, Any]:
        body = await _body(request, limits.max_upload)
        return await run_in_threadpool(service.put_bundle, _hex(key), body)

    @app.head("/v1/data/{key}")
    @app.get("/v1/data/{key}")
    def has_data(key: str) -> dict[str, Any]:
        if service.datasets.get(_hex(key)) is None:
            raise NotFoundError("no such data here (upload it)")
        return {"digest": f"sha256:{key}"}

    @app.put("/v1/data/{key}", status_code=201)
    async def put_data(key: str, request: Request) -> dict[str, Any]:
        body = await _body(request, limits.max_upload)
        return await run_in_threadpool(service.put_data, _hex(key), body)

    @app.post("/v1/jobs")
    async def run_job(request: Request) -> Response:
        data_key, job = _job_request(await _body(request, MAX_JOB_BODY))
        if not service.slots.acquire(blocking=False):
            raise BusyError("every job slot is busy; try again shortly")
        try:
            answer = await run_in_threadpool(service.run, data_key, job)
        finally:
            service.slots.release()
        return Response(answer, media_type="application/octet-stream")


def _job_request(body: bytes) -> tuple[str, Job]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError("the job request is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), str):
        raise InputError("the job request names no data ({'data': hex, 'job': {...}})")
    return _hex(doc["data"].removeprefix("sha256:")), Job.from_dict(doc.get("job"))


def load_models(paths: list[Any]) -> dict[str, Model]:
    """Models from JSON files; UsageError naming a bad file."""
    out: dict[str, Model] = {}
    for path in paths:
        try:
            model = Model.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{path}: not a readable model file ({exc.__class__.__name__})"
            ) from None
        except InputError as exc:
            raise UsageError(f"{path}: {exc}") from None
        if model.name in out:
            raise UsageError(f"{path}: a second model named {model.name}")
        out[model.name] = model
    return out
