"""The audit log's head-signing key at rest: sealed under an unlock key kept elsewhere.

``signing.key`` (next to the log) is one JSON document::

    {"format": "tessera-audit-key", "version": 1, "origin": "gateway",
     "encryption": "aes256gcm", "unlock_id": "<hex, 8 bytes>", "nonce": "<b64>",
     "public_key": "<hex>", "ciphertext": "<b64: the 32-byte ML-DSA-65 seed + tag>"}

The AES-256-GCM key is HKDF-SHA-256 over a 32-byte **unlock key** that is *not* in the
environment folder (where it is kept is the caller's choice, see
:mod:`tessera.workflows.audit`); every header field is bound as associated data, so the
file cannot be relabelled for another log.  Read from disk alone, the file is not a
usable key.  The seed is never written in the clear; a legacy bare 32-byte seed file is
read once and sealed in place (:func:`load_or_create_sealed_signer`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tessera.audit.heads import SEED_SIZE, MldsaSigner
from tessera.errors import InputError, IntegrityError

__all__ = [
    "UNLOCK_SIZE",
    "load_or_create_sealed_signer",
    "open_signer",
    "seal_signer",
    "unlock_id",
]

FORMAT = "tessera-audit-key"
UNLOCK_SIZE = 32
_INFO = b"tessera-audit-key/v1"


def unlock_id(unlock: bytes) -> str:
    """A public fingerprint of an unlock key (names which key a file needs)."""
    return hashlib.sha256(b"tessera-audit-unlock-id\x00" + unlock).hexdigest()[:16]


def _aead(unlock: bytes, salt: bytes) -> AESGCM:
    if len(unlock) != UNLOCK_SIZE:
        raise InputError(f"an audit unlock key has {UNLOCK_SIZE} bytes")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(unlock)
    return AESGCM(key)


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def seal_signer(signer: MldsaSigner, origin: str, unlock: bytes) -> bytes:
    """The ``signing.key`` bytes for ``signer`` of log ``origin``, sealed under ``unlock``."""
    nonce = secrets.token_bytes(12)
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "origin": origin,
        "encryption": "aes256gcm",
        "unlock_id": unlock_id(unlock),
        "nonce": base64.b64encode(nonce).decode(),
        "public_key": signer.public_key.hex(),
    }
    ciphertext = _aead(unlock, nonce).encrypt(nonce, signer.seed(), _aad(header))
    doc = {**header, "ciphertext": base64.b64encode(ciphertext).decode()}
    return json.dumps(doc, indent=1).encode() + b"\n"


def open_signer(blob: bytes, origin: str, unlock: bytes) -> MldsaSigner:
    """The signer sealed in ``blob``; IntegrityError when ``unlock`` is not its key."""
    try:
        doc = json.loads(blob)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError("the audit signing key file is not a sealed key") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1:
        raise InputError("the audit signing key file is not a sealed key (tessera-audit-key v1)")
    if doc.get("origin") != origin:
        raise IntegrityError("the audit signing key file belongs to another log")
    if doc.get("unlock_id") != unlock_id(unlock):
        raise IntegrityError("the audit signing key is sealed under another unlock key")
    header = {k: v for k, v in doc.items() if k != "ciphertext"}
    try:
        nonce = base64.b64decode(str(doc["nonce"]), validate=True)
        ciphertext = base64.b64decode(str(doc["ciphertext"]), validate=True)
        seed = _aead(unlock, nonce).decrypt(nonce, ciphertext, _aad(header))
        signer = MldsaSigner(seed)
    except InvalidTag:
        raise IntegrityError("the audit signing key file is damaged") from None
    except (KeyError, ValueError):
        raise InputError("the audit signing key file is damaged (malformed field)") from None
    if signer.public_key.hex() != doc.get("public_key"):
        raise IntegrityError("the audit signing key file is damaged (public key)")
    return signer


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_or_create_sealed_signer(path: Path, origin: str, unlock: bytes) -> MldsaSigner:
    """The signer sealed at ``path`` (made and sealed on first use).

    A legacy file holding a bare 32-byte seed is sealed in place on first read.
    """
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        signer = MldsaSigner.generate()
        _write_private(path, seal_signer(signer, origin, unlock))
        return signer
    if len(blob) == SEED_SIZE:  # written in the clear by an older version: seal it now
        signer = MldsaSigner(blob)
        _write_private(path, seal_signer(signer, origin, unlock))
        return signer
    return open_signer(blob, origin, unlock)
