"""The data's files: the public part the server receives, the sealed part, the data file.

See :mod:`tessera.he.files` for the table of every HE format.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.errors import InputError, IntegrityError
from tessera.he.container import Container, digest, pack, unpack
from tessera.he.files import Bundle, b64, header_text, seal, unb64, unseal
from tessera.he.jobs import canonical
from tessera.he.packing import Layout, Stream
from tessera.he.params import Params

__all__ = ["MAX_CHUNKS", "MAX_STREAMS", "DataFile", "PublicData", "SealedInfo", "open_sealed"]

MAX_STREAMS = 4096
MAX_CHUNKS = 50_000


@dataclass(frozen=True)
class PublicData:
    """Encrypted data as the server receives it."""

    header: dict[str, Any]
    streams: tuple[Stream, ...]
    params: Params
    ciphertexts: tuple[bytes, ...]
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def chunks(self) -> int:
        """Ciphertexts per stream."""
        return int(self.header["chunks"])

    @property
    def kind(self) -> str:
        """``table`` or ``image``."""
        return str(self.header["kind"])

    @property
    def bundle_digest(self) -> str:
        """The digest of the bundle the data is encrypted under."""
        return str(self.header["bundle_digest"])

    @property
    def voxel_mm3(self) -> float | None:
        """An image's voxel volume (mm^3)."""
        value = self.header.get("voxel_mm3")
        return float(value) if isinstance(value, int | float) else None

    def cipher(self, stream: int, chunk: int) -> bytes:
        """The bytes of ciphertext (stream, chunk)."""
        return self.ciphertexts[stream * self.chunks + chunk]

    @classmethod
    def create(
        cls,
        *,
        kind: str,
        bundle: Bundle,
        streams: tuple[Stream, ...],
        chunks: int,
        ciphertexts: list[bytes],
        created: str,
        voxel_mm3: float | None = None,
    ) -> PublicData:
        """The public part of a new data set (``ciphertexts`` stream-major)."""
        header: dict[str, Any] = {
            "format": "tessera-he-data-public",
            "version": 1,
            "data": secrets.token_hex(16),
            "kind": kind,
            "bundle_digest": bundle.digest,
            "engine": bundle.engine,
            "params": bundle.params.to_dict(),
            "chunks": chunks,
            "streams": [s.to_dict() for s in streams],
            "created": created,
        }
        if voxel_mm3 is not None:
            header["voxel_mm3"] = voxel_mm3
        raw = pack(header, ciphertexts)
        return cls.from_bytes(raw)

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "encrypted data") -> PublicData:
        """Parse and check the structure (the ciphertexts are checked by the engine)."""
        box = unpack(data, expect="tessera-he-data-public", what=what)
        h = box.header
        params = Params.from_dict(h.get("params"))
        raw_streams = h.get("streams")
        chunks = h.get("chunks")
        if not isinstance(raw_streams, list) or not 0 < len(raw_streams) <= MAX_STREAMS:
            raise InputError(f"{what} lists no columns or too many")
        if type(chunks) is not int or not 0 < chunks <= MAX_CHUNKS:
            raise InputError(f"{what} has an implausible number of chunks")
        streams = tuple(Stream.from_dict(s) for s in raw_streams)
        if len({s.name for s in streams}) != len(streams):
            raise InputError(f"{what} names a column twice")
        if h.get("kind") not in ("table", "image"):
            raise InputError(f"{what} is neither a table nor an image")
        voxel = h.get("voxel_mm3")
        if voxel is not None and (
            isinstance(voxel, bool) or not isinstance(voxel, int | float) or not 0 < voxel < 1e9
        ):
            raise InputError(f"{what} states an implausible voxel size")
        for key in ("data", "bundle_digest", "engine"):
            header_text(h, key, what)
        if len(box.blobs) != len(streams) * chunks:
            raise InputError(f"{what} holds {len(box.blobs)} ciphertexts, not columns x chunks")
        return cls(dict(h), streams, params, box.blobs, bytes(data))

    @property
    def digest(self) -> str:
        """SHA-256 of the public part: the data set's identity."""
        return digest(self.raw)


@dataclass(frozen=True)
class SealedInfo:
    """The client's secrets about a data set: layout, sentinel rows, units, row ids."""

    layout: Layout
    sentinels: npt.NDArray[np.float64]
    columns: list[dict[str, Any]] | None = None
    table: str | None = None
    ids: list[str] | None = None
    source: str = ""

    def to_bytes(self) -> bytes:
        """The plaintext of the sealed part."""
        header = {
            "format": "tessera-he-sealed",
            "version": 1,
            "layout": self.layout.to_dict(),
            "shape": list(self.sentinels.shape),
            "columns": self.columns,
            "table": self.table,
            "source": self.source,
        }
        ids = canonical(self.ids).decode() if self.ids is not None else ""
        values = np.ascontiguousarray(self.sentinels, dtype="<f8").tobytes()
        return pack(header, [values, ids.encode()])

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedInfo:
        """Inverse of :meth:`to_bytes`."""
        box = unpack(data, expect="tessera-he-sealed", what="sealed part", max_blobs=2)
        h = box.header
        layout = Layout.from_dict(h.get("layout"))
        shape = h.get("shape")
        if (
            not isinstance(shape, list)
            or len(shape) != 3
            or shape[1:] != [layout.chunks, len(layout.sentinels)]
            or len(box.blobs) != 2
            or len(box.blobs[0]) != 8 * int(np.prod(shape))
        ):
            raise InputError("the sealed part is malformed")
        sentinels = np.frombuffer(box.blobs[0], dtype="<f8").reshape(shape).astype(np.float64)
        ids = None
        if box.blobs[1]:
            ids = json.loads(box.blobs[1])
            if not isinstance(ids, list) or len(ids) != layout.rows:
                raise InputError("the sealed row ids are malformed")
        columns = h.get("columns")
        table = h.get("table")
        return cls(
            layout,
            sentinels,
            columns,
            table if isinstance(table, str) else None,
            ids,
            str(h.get("source", "")),
        )


def _aad(data_digest: str, bundle_digest: str) -> bytes:
    return f"tessera-he-sealed|{data_digest}|{bundle_digest}".encode()


def open_sealed(
    nonce: bytes, sealed: bytes, key: bytes, data_digest: str, bundle_digest: str
) -> SealedInfo:
    """The sealed part of a data set (IntegrityError if it was moved or altered)."""
    plain = unseal(nonce, sealed, key, _aad(data_digest, bundle_digest), "the data's sealed part")
    return SealedInfo.from_bytes(plain)


@dataclass(frozen=True)
class DataFile:
    """The client's encrypted data set: public part, bundle, sealed part."""

    header: dict[str, Any]
    public: bytes
    bundle: bytes
    sealed: bytes

    @property
    def wrapped_key(self) -> bytes:
        """The sealed part's data key, wrapped to the bundle's wrapping key."""
        return unb64(self.header.get("wrapped_key"), "the data's wrapped key")

    @property
    def nonce(self) -> bytes:
        """The sealed part's nonce."""
        return unb64(self.header.get("nonce"), "the data's nonce")

    @property
    def data_digest(self) -> str:
        """The public part's digest."""
        return str(self.header["data_digest"])

    @property
    def bundle_digest(self) -> str:
        """The bundle's digest."""
        return str(self.header["bundle_digest"])

    @classmethod
    def create(
        cls,
        public: PublicData,
        bundle: Bundle,
        info: SealedInfo,
        *,
        data_key: bytes,
        wrapped_key: bytes,
    ) -> DataFile:
        """Seal ``info`` under ``data_key`` (wrapped to the owner as ``wrapped_key``)."""
        nonce, sealed = seal(info.to_bytes(), data_key, _aad(public.digest, bundle.digest))
        header = {
            "format": "tessera-he-data",
            "version": 1,
            "data_digest": public.digest,
            "bundle_digest": bundle.digest,
            "owner": bundle.owner,
            "keyset": bundle.name,
            "kind": public.kind,
            "table": info.table,
            "streams": [s.name for s in public.streams],
            "wrapped_key": b64(wrapped_key),
            "nonce": b64(nonce),
        }
        return cls(header, public.raw, bundle.to_bytes(), sealed)

    def to_bytes(self) -> bytes:
        """The file's bytes."""
        return pack(self.header, [self.public, self.bundle, self.sealed])

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "encrypted data file") -> DataFile:
        """Parse the file; InputError when it is not one, IntegrityError when its parts
        do not match the digests it names."""
        box: Container = unpack(data, expect="tessera-he-data", what=what, max_blobs=3)
        if len(box.blobs) != 3:
            raise InputError(f"{what} is missing parts")
        out = cls(dict(box.header), *box.blobs)
        for key in ("data_digest", "bundle_digest"):
            header_text(out.header, key, what)
        if digest(out.public) != out.data_digest or digest(out.bundle) != out.bundle_digest:
            raise IntegrityError(f"{what} is damaged or was altered (a digest does not match)")
        return out
