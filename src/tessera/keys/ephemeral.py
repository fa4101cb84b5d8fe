"""One-time receiver keys: what a custodian hands out is sealed to the collector's key.

A person who collects shares from the custodians (a held result, escrowed key shares)
makes a fresh X25519 key pair, puts its public half in the document they sign, and
keeps the private half in memory.  Each custodian seals what it hands out to that key:
ephemeral X25519, HKDF-SHA-256, AES-256-GCM, with a label naming what is sealed as
associated data.  Another custodian that saw the signed document and replays it gets
only ciphertexts it cannot open.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tessera.errors import InputError, IntegrityError

__all__ = ["Receiver", "open_sealed", "seal_to"]

_INFO = b"tessera-sealed-to-receiver-v1"


def _raw(key: x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key(shared: bytes, epk: bytes, receiver: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + receiver, info=_INFO)
    return hkdf.derive(shared)


@dataclass(frozen=True)
class Receiver:
    """A one-time key pair; :attr:`public` (base64) goes into the signed document."""

    private: x25519.X25519PrivateKey = field(repr=False)

    @classmethod
    def new(cls) -> Receiver:
        """A fresh key pair (from the operating system's randomness)."""
        return cls(x25519.X25519PrivateKey.generate())

    @property
    def public(self) -> str:
        """The public key, base64 (32 bytes)."""
        return base64.b64encode(_raw(self.private.public_key())).decode("ascii")


def seal_to(public: Any, data: bytes, *, label: str) -> dict[str, str]:
    """``data`` sealed to the receiver key ``public`` (base64); InputError if malformed."""
    try:
        raw = base64.b64decode(str(public), validate=True)
        receiver = x25519.X25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        raise InputError("the receiver key is not a base64 X25519 public key") from None
    ephemeral = x25519.X25519PrivateKey.generate()
    epk = _raw(ephemeral.public_key())
    key = _key(ephemeral.exchange(receiver), epk, raw)
    iv = secrets.token_bytes(12)
    ct = AESGCM(key).encrypt(iv, data, _INFO + b"|" + label.encode())
    return {"epk": epk.hex(), "iv": iv.hex(), "ct": ct.hex()}


def open_sealed(receiver: Receiver, blob: Any, *, label: str) -> bytes:
    """What was sealed to ``receiver`` under ``label``; IntegrityError if it does not open."""
    try:
        epk = bytes.fromhex(blob["epk"])
        shared = receiver.private.exchange(x25519.X25519PublicKey.from_public_bytes(epk))
        key = _key(shared, epk, _raw(receiver.private.public_key()))
        return AESGCM(key).decrypt(
            bytes.fromhex(blob["iv"]), bytes.fromhex(blob["ct"]), _INFO + b"|" + label.encode()
        )
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise IntegrityError("what a custodian sealed to this collector does not open") from None
