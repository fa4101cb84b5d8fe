"""The server's answer to a job, and the result file ``tessera he run`` writes.

See :mod:`tessera.he.files` for the table of every HE format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.errors import InputError
from tessera.he.container import pack, unpack
from tessera.he.datafiles import DataFile, PublicData
from tessera.he.files import header_text
from tessera.he.jobs import Job, Model

__all__ = ["Answer", "ResultFile"]


@dataclass(frozen=True)
class Answer:
    """The server's answer to one job."""

    header: dict[str, Any]
    ciphertexts: tuple[bytes, ...]

    @property
    def outputs(self) -> list[tuple[str, int]]:
        """(name, ciphertext count) per output, in order."""
        return [(str(o["name"]), int(o["count"])) for o in self.header["outputs"]]

    @classmethod
    def create(
        cls,
        *,
        data: PublicData,
        job: Job,
        model: Model | None,
        outputs: list[tuple[str, list[bytes]]],
        seconds: float,
        engine: str,
    ) -> Answer:
        """The answer for ``job`` on ``data``."""
        header = {
            "format": "tessera-he-answer",
            "version": 1,
            "data_digest": data.digest,
            "bundle_digest": data.bundle_digest,
            "job_digest": job.digest,
            "model_digest": model.digest if model else None,
            "outputs": [{"name": name, "count": len(blobs)} for name, blobs in outputs],
            "engine": engine,
            "seconds": seconds,
        }
        return cls(header, tuple(b for _, blobs in outputs for b in blobs))

    def to_bytes(self) -> bytes:
        """The message's bytes."""
        return pack(self.header, list(self.ciphertexts))

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "the server's answer") -> Answer:
        """Parse and check the structure."""
        box = unpack(data, expect="tessera-he-answer", what=what)
        outputs = box.header.get("outputs")
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict)
            and isinstance(o.get("name"), str)
            and type(o.get("count")) is int
            and o["count"] > 0
            for o in outputs
        ):
            raise InputError(f"{what} lists malformed outputs")
        if sum(int(o["count"]) for o in outputs) != len(box.blobs):
            raise InputError(f"{what} does not hold the ciphertexts it lists")
        return cls(dict(box.header), box.blobs)

    def parts(self) -> list[list[bytes]]:
        """The ciphertexts grouped by output."""
        out, offset = [], 0
        for _, count in self.outputs:
            out.append(list(self.ciphertexts[offset : offset + count]))
            offset += count
        return out


@dataclass(frozen=True)
class ResultFile:
    """What ``tessera he run`` writes: everything ``decrypt`` needs besides the key set."""

    header: dict[str, Any]
    answer: bytes
    sealed: bytes

    @classmethod
    def create(
        cls,
        *,
        data: DataFile,
        public_header: dict[str, Any],
        job: Job,
        model: Model | None,
        answer: bytes,
        server: str,
        received: str,
    ) -> ResultFile:
        """A result file for ``answer`` to ``job`` on ``data``."""
        header = {
            "format": "tessera-he-result",
            "version": 1,
            "job": job.to_dict(),
            "job_digest": job.digest,
            "model": model.to_dict() if model else None,
            "model_digest": model.digest if model else None,
            "data_digest": data.data_digest,
            "bundle_digest": data.bundle_digest,
            "data": data.header,
            "public": public_header,
            "server": server,
            "received": received,
        }
        return cls(header, answer, data.sealed)

    def to_bytes(self) -> bytes:
        """The file's bytes."""
        return pack(self.header, [self.answer, self.sealed])

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "result file") -> ResultFile:
        """Parse the file (the answer and sealed part are checked when decrypted)."""
        box = unpack(data, expect="tessera-he-result", what=what, max_blobs=2)
        if len(box.blobs) != 2:
            raise InputError(f"{what} is missing parts")
        for key in ("data_digest", "bundle_digest", "job_digest"):
            header_text(box.header, key, what)
        for key in ("data", "public", "job"):
            if not isinstance(box.header.get(key), dict):
                raise InputError(f"{what}: missing or malformed {key}")
        return cls(dict(box.header), *box.blobs)

    @property
    def job(self) -> Job:
        """The job asked for."""
        return Job.from_dict(self.header["job"])

    @property
    def model(self) -> Model | None:
        """The model the server said it used (None for other jobs)."""
        doc = self.header.get("model")
        return None if doc is None else Model.from_dict(doc)
