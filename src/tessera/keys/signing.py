"""ML-DSA-65 signatures (FIPS 204) through pyca/cryptography.

A :class:`SigningKey` is kept as its 32-byte seed (FIPS 204 ``xi``), from which the
full private key is re-derived; a :class:`VerifyKey` is the 1,952-byte public key.
Signatures are 3,309 bytes.  Every signature is made under a *context* string (FIPS 204
domain separation), so a signature made for one purpose (a vault manifest, an MPC job)
never verifies for another.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from tessera.errors import IntegrityError

__all__ = ["SEED_SIZE", "SIGNATURE_SIZE", "SigningKey", "VerifyKey", "generate"]

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 1952
SIGNATURE_SIZE = 3309


class VerifyKey:
    """An ML-DSA-65 public key: checks signatures."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: mldsa.MLDSA65PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes_raw()

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerifyKey:
        """Load a raw 1,952-byte public key; ValueError if it is not one."""
        if len(raw) != PUBLIC_KEY_SIZE:
            raise ValueError(f"an ML-DSA-65 public key has {PUBLIC_KEY_SIZE} bytes")
        return cls(mldsa.MLDSA65PublicKey.from_public_bytes(raw))

    def to_bytes(self) -> bytes:
        """The raw public key."""
        return self._raw

    @property
    def key_id(self) -> str:
        """A short fingerprint: the first 16 hex digits of SHA-256 of the public key."""
        return hashlib.sha256(self._raw).hexdigest()[:16]

    def verify(self, message: bytes, signature: bytes, *, context: bytes = b"") -> None:
        """Return if ``signature`` signs ``message`` under ``context``; else IntegrityError."""
        try:
            self._key.verify(signature, message, context or None)
        except (InvalidSignature, ValueError):
            raise IntegrityError("signature does not verify") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyKey(ml-dsa-65, {self.key_id})"


class SigningKey:
    """An ML-DSA-65 private key (held as its 32-byte seed)."""

    __slots__ = ("_key", "_seed")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"an ML-DSA-65 seed has {SEED_SIZE} bytes")
        self._seed = bytes(seed)
        self._key = mldsa.MLDSA65PrivateKey.from_seed_bytes(self._seed)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the operating system's randomness."""
        return cls(mldsa.MLDSA65PrivateKey.generate().private_bytes_raw())

    def seed_bytes(self) -> bytes:
        """The secret 32-byte seed (protect it: see :mod:`tessera.keys.protect`)."""
        return self._seed

    @property
    def verify_key(self) -> VerifyKey:
        """The matching public key."""
        return VerifyKey(self._key.public_key())

    @property
    def key_id(self) -> str:
        """The fingerprint of the public key."""
        return self.verify_key.key_id

    def sign(self, message: bytes, *, context: bytes = b"") -> bytes:
        """Sign ``message`` under ``context`` (at most 255 bytes; FIPS 204 domain separation)."""
        if len(context) > 255:
            raise ValueError("context must be at most 255 bytes")
        return self._key.sign(message, context or None)

    def __repr__(self) -> str:
        return f"SigningKey(ml-dsa-65, {self.key_id})"


def generate() -> SigningKey:
    """A fresh ML-DSA-65 signing key."""
    return SigningKey.generate()
