"""Send a job to an untrusted HE server and keep its answer: ``tessera he run``.

Nothing here needs a secret: the data file carries its public part and its bundle.  The
client uploads the bundle and the public data (each under its SHA-256, skipped when the
server already holds it), reads the model a scores job names (and pins its digest in
the job it sends: the server refuses a job naming another version), and writes a result
file with the answer, the job, the model and the data's sealed part.  The answer is
checked only for its shape and digests here; ``tessera he decrypt`` checks its content.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import httpx

from tessera.errors import (
    BackendError,
    InputError,
    IntegrityError,
    NotFoundError,
    PolicyError,
    StorageUnavailableError,
    TesseraError,
    UsageError,
)
from tessera.he.answers import Answer, ResultFile
from tessera.he.datafiles import DataFile, PublicData
from tessera.he.evaluate import affine_model, plan_outputs, score_range
from tessera.he.jobs import SIGMOID_POLY_RANGE, Job, Model
from tessera.workflows.he import write_atomic

__all__ = ["RunSummary", "read_job", "run_job"]

MAX_ANSWER = 4 << 30
SERVICE = "tessera-he"


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What ``tessera he run`` did."""

    out: Path
    job: Job
    model: Model | None
    uploaded: list[str]
    answer_bytes: int
    server_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "out": str(self.out),
            "job": self.job.to_dict(),
            "job_digest": self.job.digest,
            "model_digest": self.model.digest if self.model else None,
            "uploaded": self.uploaded,
            "answer_bytes": self.answer_bytes,
            "server_seconds": self.server_seconds,
        }


def read_job(path: Path) -> Job:
    """A job from its YAML (or JSON) file."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"no job file at {path}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise InputError(f"{path} is not valid YAML") from None
    return Job.from_dict(doc)


def _refusal(response: httpx.Response) -> TesseraError:
    """The server's error as a Tessera error (its one-line message)."""
    try:
        doc = response.json()
        message = str(doc.get("message") or doc.get("error"))
    except ValueError:
        message = f"HTTP {response.status_code}"
    text = f"the server refused: {message}"
    status = response.status_code
    if status == 404:
        return NotFoundError(text)
    if status in (400, 409, 413, 422):
        return InputError(text)
    if status == 403:
        return PolicyError(text)
    return BackendError(text)


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise StorageUnavailableError(
            f"the HE server at {client.base_url} did not answer ({exc.__class__.__name__})"
        ) from None


def _upload(client: httpx.Client, kind: str, key: str, body: bytes) -> bool:
    hexa = key.removeprefix("sha256:")
    if _call(client, "HEAD", f"/v1/{kind}/{hexa}").status_code == 200:
        return False
    response = _call(client, "PUT", f"/v1/{kind}/{hexa}", content=body)
    if response.status_code not in (200, 201):
        raise _refusal(response)
    return True


def _model(client: httpx.Client, job: Job) -> tuple[Job, Model | None]:
    if job.model is None:
        return job, None
    response = _call(client, "GET", f"/v1/models/{job.model}")
    if response.status_code != 200:
        raise _refusal(response)
    try:
        model = Model.from_dict(response.json())
    except ValueError:
        raise InputError("the server's model is not JSON") from None
    if model.name != job.model:
        raise IntegrityError(f"the server sent model {model.name!r} for {job.model!r}")
    if job.model_digest is not None and job.model_digest != model.digest:
        raise IntegrityError(
            f"the server's model {model.name} ({model.digest[:19]}…) is not the version the "
            "job pins (model_digest)"
        )
    return dataclasses.replace(job, model_digest=model.digest), model


def _check_job(job: Job, model: Model | None, public: PublicData) -> None:
    """Refuse here what the server would refuse (or could only answer wrongly)."""
    if job.depth > public.params.depth:
        raise InputError(
            f"the job needs multiplicative depth {job.depth}; the data's key set has "
            f"{public.params.depth} (tessera he keygen --depth {job.depth})"
        )
    plan_outputs(job, public.kind, public.streams)
    if model is not None:
        weights, intercept = affine_model(model, public.streams)
        if job.link_for(model) == "polynomial":
            low, high = score_range(weights, intercept)
            if max(abs(low), abs(high)) > SIGMOID_POLY_RANGE:
                raise InputError(
                    f"model {model.name} reaches scores of {low:.3g} to {high:.3g} within the "
                    f"columns' bounds, outside the polynomial's range [-{SIGMOID_POLY_RANGE:g}, "
                    f"{SIGMOID_POLY_RANGE:g}]: use link sigmoid"
                )


def run_job(
    server: str,
    job: Job,
    data_path: Path,
    out: Path,
    *,
    timeout: float = 600.0,
    verify: bool | str = True,
) -> RunSummary:
    """Run ``job`` on the data in ``data_path`` at ``server``; write the result to ``out``."""
    try:
        data = DataFile.from_bytes(data_path.read_bytes(), what=str(data_path))
    except FileNotFoundError:
        raise NotFoundError(f"no encrypted data file at {data_path}") from None
    public = PublicData.from_bytes(data.public)
    base = server if server.endswith("/") else server + "/"
    if not base.startswith(("http://", "https://")):
        raise UsageError("--server must be an http:// or https:// URL")
    with httpx.Client(base_url=base, timeout=timeout, verify=verify) as client:
        health = _call(client, "GET", "/v1/health")
        if health.status_code != 200 or _service(health) != SERVICE:
            raise BackendError(f"{base} is not a Tessera HE server")
        job, model = _model(client, job)
        _check_job(job, model, public)
        uploaded = []
        if _upload(client, "bundles", data.bundle_digest, data.bundle):
            uploaded.append("bundle")
        if _upload(client, "data", data.data_digest, data.public):
            uploaded.append("data")
        body = {"data": data.data_digest, "job": job.to_dict()}
        with client.stream("POST", "/v1/jobs", json=body) as response:
            if response.status_code != 200:
                response.read()
                raise _refusal(response)
            raw = _read_capped(response)
    answer = Answer.from_bytes(raw)
    head = answer.header
    if (head.get("data_digest"), head.get("bundle_digest"), head.get("job_digest")) != (
        data.data_digest,
        data.bundle_digest,
        job.digest,
    ):
        raise IntegrityError("the server answered for other data or another job")
    received = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    result = ResultFile.create(
        data=data,
        public_header=public.header,
        job=job,
        model=model,
        answer=raw,
        server=base,
        received=received,
    )
    write_atomic(out, result.to_bytes())
    seconds = head.get("seconds")
    return RunSummary(
        out, job, model, uploaded, len(raw), float(seconds) if isinstance(seconds, float) else 0.0
    )


def _service(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return ""
    return str(doc.get("service", "")) if isinstance(doc, dict) else ""


def _read_capped(response: httpx.Response) -> bytes:
    parts, size = [], 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER:
                raise InputError("the server's answer is larger than any answer can be")
            parts.append(chunk)
    except httpx.HTTPError as exc:
        raise StorageUnavailableError(
            f"the HE server broke off its answer ({exc.__class__.__name__})"
        ) from None
    return b"".join(parts)
