"""Key files on disk: private keys protected at rest, public keys in the clear.

Files are written atomically (temporary name, then ``os.replace``); private key files
get mode 0600.  Public key files are JSON::

    {"format": "tessera-public-key", "version": 1, "kind": "ml-dsa-65", "key": "<b64>"}
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

from tessera.errors import InputError, NotFoundError
from tessera.keys.protect import protect, unprotect
from tessera.keys.signing import SigningKey, VerifyKey

__all__ = [
    "KIND_SIGNING",
    "read_signing_key",
    "read_verify_key",
    "write_signing_key",
    "write_verify_key",
]

KIND_SIGNING = "ml-dsa-65"


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"no {what} at {path}") from None


def write_signing_key(path: Path, key: SigningKey, *, passphrase: bytes | None) -> None:
    """Store ``key`` at ``path`` (0600), encrypted under ``passphrase`` unless it is None."""
    _write_atomic(path, protect(key.seed_bytes(), kind=KIND_SIGNING, passphrase=passphrase), 0o600)


def read_signing_key(path: Path, *, passphrase: bytes | None) -> SigningKey:
    """Load a signing key; ConfigError if it is encrypted and no passphrase was given."""
    seed = unprotect(_read(path, "signing key"), kind=KIND_SIGNING, passphrase=passphrase)
    try:
        return SigningKey(seed)
    except ValueError:
        raise InputError(f"{path} does not hold an ML-DSA-65 key") from None


def write_verify_key(path: Path, key: VerifyKey) -> None:
    """Store a public key at ``path`` (0644)."""
    doc = {
        "format": "tessera-public-key",
        "version": 1,
        "kind": KIND_SIGNING,
        "key_id": key.key_id,
        "key": base64.b64encode(key.to_bytes()).decode("ascii"),
    }
    _write_atomic(path, json.dumps(doc, indent=1).encode() + b"\n", 0o644)


def read_verify_key(path: Path) -> VerifyKey:
    """Load a public key written by :func:`write_verify_key`."""
    try:
        doc = json.loads(_read(path, "public key"))
        if doc.get("format") != "tessera-public-key" or doc.get("kind") != KIND_SIGNING:
            raise ValueError("wrong format")
        return VerifyKey.from_bytes(base64.b64decode(doc["key"], validate=True))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"{path} is not a Tessera ML-DSA-65 public key file") from None
