"""Signed tree heads (ML-DSA-65) and the signer seam.

A tree head commits to the first ``size`` entries of one log (its ``origin``) with the
RFC 9162 root.  The signed bytes are a small text checkpoint in the spirit of C2SP
``tlog-checkpoint``::

    tessera-audit-sth/v1
    <origin>
    <size>
    <base64 root>
    <timestamp, ms since the epoch>

The audit package takes any :class:`Signer` (``tessera.keys.SigningKey`` fits, and so does
:class:`MldsaSigner` here); verification uses ``cryptography``'s ML-DSA-65 directly.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from tessera.errors import InputError

__all__ = [
    "MldsaSigner",
    "Signer",
    "TreeHead",
    "load_or_create_signer",
    "verify_head",
]

_PREFIX = b"tessera-audit-sth/v1\n"
SEED_SIZE = 32


class Signer(Protocol):
    """Signs tree heads (an ML-DSA-65 private key, wherever it is kept)."""

    def sign(self, message: bytes) -> bytes:
        """The signature over ``message``."""
        ...


class MldsaSigner:
    """An ML-DSA-65 key held in memory (from ``cryptography``)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError("an ML-DSA-65 seed has 32 bytes")
        self._key = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)

    @classmethod
    def generate(cls) -> MldsaSigner:
        """A fresh key from the operating system's randomness."""
        return cls(mldsa.MLDSA65PrivateKey.generate().private_bytes_raw())

    @property
    def public_key(self) -> bytes:
        """The raw ML-DSA-65 public key (1,952 bytes)."""
        return self._key.public_key().public_bytes_raw()

    def seed(self) -> bytes:
        """The secret seed (write it only to a 0600 file)."""
        return self._key.private_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``."""
        return self._key.sign(message)


def load_or_create_signer(path: Path) -> MldsaSigner:
    """The signing key stored at ``path`` (a 32-byte seed, mode 0600), made on first use."""
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        signer = MldsaSigner.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(signer.seed())
        os.replace(tmp, path)
        return signer
    if len(seed) != SEED_SIZE:
        raise InputError(f"{path} is not an audit signing key")
    return MldsaSigner(seed)


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed commitment to the first ``size`` entries of log ``origin``."""

    origin: str
    size: int
    root: bytes
    timestamp_ms: int
    signature: bytes = b""

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return (
            _PREFIX
            + (
                f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"
                f"{self.timestamp_ms}\n"
            ).encode()
        )

    def signed(self, signer: Signer) -> TreeHead:
        """This head with a signature by ``signer``."""
        return TreeHead(
            self.origin, self.size, self.root, self.timestamp_ms, signer.sign(self.message())
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "origin": self.origin,
            "size": self.size,
            "root": self.root.hex(),
            "timestamp_ms": self.timestamp_ms,
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TreeHead:
        """Parse :meth:`to_json` output; InputError if it is malformed."""
        try:
            head = cls(
                str(data["origin"]),
                int(data["size"]),
                bytes.fromhex(str(data["root"])),
                int(data["timestamp_ms"]),
                base64.b64decode(str(data["signature"]), validate=True),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"malformed tree head ({exc.__class__.__name__})") from None
        if head.size < 0 or len(head.root) != 32:
            raise InputError("malformed tree head")
        return head


def verify_head(head: TreeHead, public_key: bytes) -> bool:
    """True iff ``head`` carries a valid ML-DSA-65 signature by ``public_key``."""
    try:
        key = mldsa.MLDSA65PublicKey.from_public_bytes(public_key)
        key.verify(head.signature, head.message())
    except (InvalidSignature, ValueError):
        return False
    return True
