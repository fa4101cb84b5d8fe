"""Vault manifests: what a name means, signed with the owner's key (ML-DSA-65).

A manifest binds a file name to the object holding its fragments and to their
content.  Encoded form (``tessera-manifest`` version 2)::

    b"TSMF" | version (1 byte) | body length (4 bytes, big endian) | body (canonical JSON)
           | signature length (2 bytes) | signature

The body is ``{"name", "size", "created", "created_ns", "object_id", "generation",
"scheme", "k", "n", "entry_id", "key_id", "tags"}``; the signature covers magic, version
and body under the context ``tessera-vault-manifest-v1``.  ``tags`` is the SHA-256 of
the block tag lists every fragment carries (see :mod:`tessera.vault.tags`), so the
signature binds the data itself, not only its object id and size: fragments of another
generation or object, however self-consistent, do not match it.  Version 1 manifests
(written before ``tags`` existed) are still read, with ``tags`` empty: their content is
checked by the fragments' own tags only, until ``tessera vault refresh`` re-signs them.

The vault never stores a manifest in the clear: each is secret-shared k-of-n across the
stores (``catalog/<entry id>``), so the catalogue of names, sizes and dates is as
protected as the files.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tessera.errors import IntegrityError, InvalidShareError

__all__ = [
    "SIGNING_CONTEXT",
    "Manifest",
    "Signer",
    "Verifier",
    "decode",
    "digest",
    "encode",
    "is_entry_id",
]

MAGIC = b"TSMF"
VERSION = 2
READABLE_VERSIONS = (1, 2)
SIGNING_CONTEXT = b"tessera-vault-manifest-v1"


class Signer(Protocol):
    """Signs manifests (``tessera.keys.SigningKey`` is one)."""

    @property
    def key_id(self) -> str:
        """Fingerprint of the public key."""
        ...

    def sign(self, message: bytes, *, context: bytes = b"") -> bytes:
        """A signature of ``message`` under ``context``."""
        ...


class Verifier(Protocol):
    """Checks manifest signatures (``tessera.keys.VerifyKey`` is one)."""

    def verify(self, message: bytes, signature: bytes, *, context: bytes = b"") -> None:
        """Return if valid, else raise IntegrityError."""
        ...


@dataclass(frozen=True)
class Manifest:
    """One version of one named file in the vault."""

    name: str
    size: int
    created: str  # ISO 8601, UTC
    created_ns: int
    object_id: str  # 32 hex digits
    generation: int
    scheme: str
    k: int
    n: int
    entry_id: str  # 32 hex digits: the catalogue entry holding this manifest
    key_id: str
    tags: str = ""  # SHA-256 (hex) of the fragments' tag lists; "" in version 1

    def data_path(self) -> str:
        """Where each store keeps its fragment of this object."""
        return f"data/{self.object_id}.{self.generation}"

    def catalog_path(self) -> str:
        """Where each store keeps its fragment of this manifest."""
        return f"catalog/{self.entry_id}"

    def order_key(self) -> tuple[int, str]:
        """Newer versions of a name sort later (ties broken by entry id)."""
        return (self.created_ns, self.entry_id)


def _body(manifest: Manifest) -> bytes:
    return json.dumps(asdict(manifest), sort_keys=True, separators=(",", ":")).encode()


def digest(manifest: Manifest) -> str:
    """SHA-256 (hex) of the manifest's canonical body: what the catalogue record commits to."""
    return hashlib.sha256(_body(manifest)).hexdigest()


def encode(manifest: Manifest, signer: Signer) -> bytes:
    """The signed manifest bytes."""
    body = _body(manifest)
    head = MAGIC + bytes([VERSION]) + struct.pack(">I", len(body))
    signature = signer.sign(head + body, context=SIGNING_CONTEXT)
    return head + body + struct.pack(">H", len(signature)) + signature


def decode(data: bytes, verifier: Verifier) -> Manifest:
    """Check the signature and parse; InvalidShareError if the bytes are not a manifest."""
    if len(data) < 9 or data[:4] != MAGIC:
        raise InvalidShareError("catalogue entry is not a Tessera manifest")
    if data[4] not in READABLE_VERSIONS:
        raise InvalidShareError(f"unsupported manifest version {data[4]}")
    (length,) = struct.unpack(">I", data[5:9])
    body = data[9 : 9 + length]
    rest = data[9 + length :]
    if len(body) != length or len(rest) < 2:
        raise InvalidShareError("catalogue entry is truncated")
    (sig_len,) = struct.unpack(">H", rest[:2])
    signature = rest[2 : 2 + sig_len]
    if len(signature) != sig_len:
        raise InvalidShareError("catalogue entry is truncated")
    try:
        verifier.verify(data[: 9 + length], signature, context=SIGNING_CONTEXT)
    except IntegrityError:
        raise IntegrityError("manifest signature does not verify (not the owner's key?)") from None
    try:
        fields: dict[str, Any] = json.loads(body)
        if not isinstance(fields, dict) or (data[4] == 1) == ("tags" in fields):
            raise TypeError("tags belong to version 2 exactly")
        manifest = Manifest(**fields)
    except (ValueError, TypeError, RecursionError):
        raise InvalidShareError("signed manifest has an unexpected shape") from None
    _check_fields(manifest)
    return manifest


_HEX = frozenset("0123456789abcdef")


def is_entry_id(text: str) -> bool:
    """Whether ``text`` has the form of an object or catalogue entry id (32 hex digits)."""
    return len(text) == 32 and set(text) <= _HEX


def _check_fields(m: Manifest) -> None:
    """Signed is not the same as well formed: ids become store paths, sizes loop bounds."""
    ints = (m.size, m.created_ns, m.generation, m.k, m.n)
    strs = (m.name, m.created, m.object_id, m.scheme, m.entry_id, m.key_id, m.tags)
    ok = all(type(v) is int and v >= 0 for v in ints) and all(type(v) is str for v in strs)
    ok = ok and is_entry_id(m.object_id) and is_entry_id(m.entry_id)
    ok = ok and 2 <= m.k <= m.n <= 255 and m.generation < 1 << 32
    if not ok:
        raise InvalidShareError("signed manifest has an unexpected shape")
