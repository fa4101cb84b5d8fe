"""Hybrid key wrapping: ML-KEM-768 (FIPS 203) + X25519, combined with HKDF-SHA-256.

``wrap(public, secret)`` encrypts a short secret (a data key, a share) to a recipient so
that it stays safe while *either* ML-KEM-768 or X25519 holds: the AES-256-GCM key is
HKDF over both shared secrets, the ML-KEM ciphertext and both X25519 public keys (the
"X-Wing"-style combiner).  Layout of a wrapped blob::

    b"TWRP" | 0x01 | ML-KEM ciphertext (1088) | ephemeral X25519 public (32)
           | nonce (12) | AES-256-GCM(secret) with tag (len + 16)
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tessera.errors import IntegrityError

__all__ = ["WrapPrivateKey", "WrapPublicKey", "unwrap", "wrap"]

_MAGIC = b"TWRP\x01"
_CT = 1088
_X = 32
_NONCE = 12
_MLKEM_PUBLIC = 1184
_MLKEM_SEED = 64


class WrapPublicKey:
    """A recipient's public ML-KEM-768 + X25519 key pair."""

    __slots__ = ("_kem", "_x")

    def __init__(self, kem: mlkem.MLKEM768PublicKey, x: x25519.X25519PublicKey) -> None:
        self._kem, self._x = kem, x

    @classmethod
    def from_bytes(cls, raw: bytes) -> WrapPublicKey:
        """Load ML-KEM public key (1,184 bytes) || X25519 public key (32 bytes)."""
        if len(raw) != _MLKEM_PUBLIC + _X:
            raise ValueError(f"a hybrid public key has {_MLKEM_PUBLIC + _X} bytes")
        return cls(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUBLIC]),
            x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM_PUBLIC:]),
        )

    def to_bytes(self) -> bytes:
        """ML-KEM public key || X25519 public key."""
        return self._kem.public_bytes_raw() + self._x.public_bytes_raw()


class WrapPrivateKey:
    """A recipient's private ML-KEM-768 + X25519 keys (96 secret bytes)."""

    __slots__ = ("_kem", "_x")

    def __init__(self, kem: mlkem.MLKEM768PrivateKey, x: x25519.X25519PrivateKey) -> None:
        self._kem, self._x = kem, x

    @classmethod
    def generate(cls) -> WrapPrivateKey:
        """Fresh keys from the operating system's randomness."""
        return cls(mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> WrapPrivateKey:
        """Load ML-KEM seed (64 bytes) || X25519 private key (32 bytes)."""
        if len(raw) != _MLKEM_SEED + _X:
            raise ValueError(f"a hybrid private key has {_MLKEM_SEED + _X} bytes")
        return cls(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM_SEED]),
            x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM_SEED:]),
        )

    def to_bytes(self) -> bytes:
        """The secret seed bytes (protect them: see :mod:`tessera.keys.protect`)."""
        return self._kem.private_bytes_raw() + self._x.private_bytes_raw()

    @property
    def public_key(self) -> WrapPublicKey:
        """The matching public keys."""
        return WrapPublicKey(self._kem.public_key(), self._x.public_key())


def _derive(
    ss_kem: bytes, ss_x: bytes, ct: bytes, eph: bytes, recipient_x: bytes, ctx: bytes
) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tessera-wrap-v1|" + ctx)
    return hkdf.derive(ss_kem + ss_x + ct + eph + recipient_x)


def wrap(recipient: WrapPublicKey, secret: bytes, *, context: bytes = b"") -> bytes:
    """Encrypt ``secret`` to ``recipient``; only its private key (and ``context``) opens it."""
    ss_kem, ct = recipient._kem.encapsulate()
    ephemeral = x25519.X25519PrivateKey.generate()
    eph = ephemeral.public_key().public_bytes_raw()
    ss_x = ephemeral.exchange(recipient._x)
    key = _derive(ss_kem, ss_x, ct, eph, recipient._x.public_bytes_raw(), context)
    nonce = secrets.token_bytes(_NONCE)
    return _MAGIC + ct + eph + nonce + AESGCM(key).encrypt(nonce, secret, _MAGIC + context)


def unwrap(private: WrapPrivateKey, blob: bytes, *, context: bytes = b"") -> bytes:
    """The secret inside ``blob``; IntegrityError if it was not wrapped to this key."""
    head = len(_MAGIC) + _CT + _X + _NONCE
    if len(blob) < head + 16 or not blob.startswith(_MAGIC):
        raise IntegrityError("not a wrapped key for this recipient")
    ct = blob[len(_MAGIC) : len(_MAGIC) + _CT]
    eph = blob[len(_MAGIC) + _CT : len(_MAGIC) + _CT + _X]
    nonce = blob[head - _NONCE : head]
    try:
        ss_kem = private._kem.decapsulate(ct)
        ss_x = private._x.exchange(x25519.X25519PublicKey.from_public_bytes(eph))
    except ValueError:
        raise IntegrityError("not a wrapped key for this recipient") from None
    key = _derive(ss_kem, ss_x, ct, eph, private._x.public_key().public_bytes_raw(), context)
    try:
        return AESGCM(key).decrypt(nonce, blob[head:], _MAGIC + context)
    except InvalidTag:
        raise IntegrityError("not a wrapped key for this recipient") from None
