"""The three steps of the flow on bytes: encrypt (client), answer (server), open (client).

These functions take and return the files of :mod:`tessera.he.files`; the workflows add
keys, people, CSV and DICOM reading, and the network.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.errors import InputError, IntegrityError
from tessera.he.answers import Answer
from tessera.he.datafiles import PublicData, SealedInfo
from tessera.he.engine import PublicEngine, SecretEngine
from tessera.he.evaluate import EncryptedSet, Output, evaluate, plan_outputs
from tessera.he.jobs import Job, Model
from tessera.he.packing import Layout, Stream, pack, plan_layout, scale_columns, sentinel_values
from tessera.he.results import summarize
from tessera.he.verify import Verdict, check_answer

__all__ = ["Opened", "answer_job", "encrypt_streams", "load_set", "open_answer"]

#: Polynomials an answer's ciphertext has: every product is relinearised.
MAX_POLYS = 2


def encrypt_streams(
    engine: PublicEngine,
    values: npt.NDArray[np.float64],
    streams: Sequence[Stream],
) -> tuple[list[bytes], Layout, npt.NDArray[np.float64]]:
    """Scale, pack and encrypt ``values`` (rows x streams, real units).

    Returns the ciphertexts (stream-major), the layout and the sentinel rows; the last two
    are the client's secrets.
    """
    scaled = scale_columns(np.asarray(values, dtype=np.float64), streams)
    layout = plan_layout(scaled.shape[0], engine.params.slots)
    sentinels = sentinel_values(streams, layout)
    slots = pack(scaled, layout, sentinels)
    blobs = [
        engine.dump(engine.encrypt(slots[s, c]))
        for s in range(len(streams))
        for c in range(layout.chunks)
    ]
    return blobs, layout, sentinels


def load_set(engine: PublicEngine, data: PublicData) -> EncryptedSet:
    """The server's view of ``data``: every ciphertext loaded and checked to be a fresh
    encryption under the bundle (InputError naming the first that is not)."""
    cipher = []
    for s in range(len(data.streams)):
        column = []
        for c in range(data.chunks):
            try:
                column.append(engine.load(data.cipher(s, c), max_polys=2, fresh=True))
            except InputError as exc:
                raise InputError(f"ciphertext {s * data.chunks + c + 1}: {exc}") from None
        cipher.append(column)
    return EncryptedSet(data.kind, data.streams, data.chunks, cipher, data.voxel_mm3)


def answer_job(
    engine: PublicEngine, data: PublicData, job: Job, model: Model | None, *, engine_name: str
) -> Answer:
    """Compute ``job`` on ``data`` (what the untrusted server does)."""
    if job.kind == "scores" and model is not None:
        job.link_for(model)  # a linear model with a sigmoid link is refused up front
    if job.depth > engine.params.depth:
        raise InputError(
            f"the job needs multiplicative depth {job.depth}; the data's key set has "
            f"{engine.params.depth} (tessera he keygen --depth {job.depth})"
        )
    started = time.perf_counter()
    loaded = load_set(engine, data)
    results = evaluate(engine, loaded, job, model)
    outputs = [(out.name, [engine.dump(c) for c in cts]) for out, cts in results]
    return Answer.create(
        data=data,
        job=job,
        model=model,
        outputs=outputs,
        seconds=time.perf_counter() - started,
        engine=engine_name,
    )


def _decrypt(
    engine: SecretEngine, answer: Answer, outputs: Sequence[Output], chunks: int
) -> list[list[npt.NDArray[np.float64]]]:
    """Every output's values, once the answer has the shape the job implies."""
    shapes = [(o.name, chunks if o.per_chunk else 1) for o in outputs]
    if answer.outputs != shapes:
        raise IntegrityError("refused: the answer does not have the outputs the job asked for")
    decrypted = []
    for out, blobs in zip(outputs, answer.parts(), strict=True):
        values = []
        for blob in blobs:
            try:
                values.append(engine.decrypt(engine.load(blob, max_polys=MAX_POLYS, fresh=False)))
            except InputError:
                raise IntegrityError(
                    f"refused: output {out.name} holds something that is not a ciphertext "
                    "of this key"
                ) from None
        decrypted.append(values)
    return decrypted


@dataclass(frozen=True)
class Opened:
    """A decrypted, checked answer and the result document."""

    verdict: Verdict
    document: dict[str, Any]
    outputs: tuple[Output, ...]
    reduced: tuple[Any, ...]


def open_answer(
    engine: SecretEngine,
    answer: Answer,
    *,
    job: Job,
    model: Model | None,
    data_digest: str,
    bundle_digest: str,
    public: dict[str, Any],
    info: SealedInfo,
) -> Opened:
    """Decrypt ``answer``, check it against the sentinels and summarise it.

    IntegrityError with a one-line reason when the answer is for other data, another job
    or model, has the wrong shape, or fails the sentinel checks.
    """
    head = answer.header
    if head.get("data_digest") != data_digest or head.get("bundle_digest") != bundle_digest:
        raise IntegrityError("refused: the answer is for other data or another key bundle")
    if head.get("job_digest") != job.digest:
        raise IntegrityError("refused: the answer is for another job")
    if head.get("model_digest") != (model.digest if model else None):
        raise IntegrityError("refused: the answer was computed with another model")
    streams = tuple(Stream.from_dict(s) for s in public.get("streams", []))
    outputs = plan_outputs(job, str(public.get("kind")), streams)
    layout = info.layout
    if int(public.get("chunks", -1)) != layout.chunks:
        raise IntegrityError("refused: the data's sealed part does not match its ciphertexts")
    decrypted = _decrypt(engine, answer, outputs, layout.chunks)
    voxel = public.get("voxel_mm3")
    voxel_mm3 = float(voxel) if isinstance(voxel, int | float) else None
    verdict, reduced = check_answer(
        outputs,
        decrypted,
        layout=layout,
        sentinels=info.sentinels,
        streams=streams,
        job=job,
        model=model,
        voxel_mm3=voxel_mm3,
    )
    if not verdict.ok:
        raise IntegrityError(verdict.reason())
    document = summarize(
        job,
        reduced,
        streams,
        layout.rows,
        model=model,
        ids=info.ids,
        voxel_mm3=voxel_mm3,
    )
    return Opened(verdict, document, tuple(outputs), tuple(reduced))
