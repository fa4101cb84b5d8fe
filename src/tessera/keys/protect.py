"""Private keys at rest: scrypt + AES-256-GCM under a passphrase, or explicitly bare.

A protected key file is one JSON document::

    {"format": "tessera-key", "version": 1, "kind": "ml-dsa-65",
     "encryption": "scrypt-aes256gcm", "scrypt": {"n": 32768, "r": 8, "p": 1},
     "salt": "<b64>", "nonce": "<b64>", "ciphertext": "<b64>"}

or, when the owner chose no passphrase (the embedded demo), ``"encryption": "none"``
with ``"key": "<b64>"`` — then the file's permissions (0600) are the only protection.
Every header field is bound to the ciphertext as associated data, so a file cannot be
re-labelled.  A wrong passphrase and a damaged file give the same IntegrityError.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tessera.errors import ConfigError, InputError, IntegrityError

__all__ = ["PASSPHRASE_ENV", "is_encrypted", "passphrase_from_env", "protect", "unprotect"]

PASSPHRASE_ENV = "TESSERA_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
FORMAT = "tessera-key"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1


def passphrase_from_env() -> bytes | None:
    """The passphrase from ``$TESSERA_PASSPHRASE`` (UTF-8), or None when unset or empty."""
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text.encode("ascii"), validate=True)


def _kdf(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def protect(secret: bytes, *, kind: str, passphrase: bytes | None) -> bytes:
    """The key-file bytes for ``secret``: encrypted under ``passphrase``, bare if None."""
    header: dict[str, Any] = {"format": FORMAT, "version": 1, "kind": kind}
    if passphrase is None:
        header["encryption"] = "none"
        return json.dumps({**header, "key": _b64(secret)}, indent=1).encode() + b"\n"
    if not passphrase:
        raise ValueError("an empty passphrase protects nothing; pass None for a bare key")
    header["encryption"] = "scrypt-aes256gcm"
    header["scrypt"] = {"n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    header["salt"], header["nonce"] = _b64(salt), _b64(nonce)
    key = _kdf(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ciphertext = AESGCM(key).encrypt(nonce, secret, _aad(header))
    return json.dumps({**header, "ciphertext": _b64(ciphertext)}, indent=1).encode() + b"\n"


def is_encrypted(blob: bytes) -> bool:
    """True if the key file needs a passphrase."""
    return _parse(blob).get("encryption") != "none"


def _parse(blob: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(blob)
    except (ValueError, UnicodeDecodeError):
        raise InputError("not a Tessera key file") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != 1:
        raise InputError("not a Tessera key file (format tessera-key version 1)")
    return doc


def unprotect(blob: bytes, *, kind: str, passphrase: bytes | None) -> bytes:
    """The secret inside a key file of ``kind``; IntegrityError on a wrong passphrase."""
    doc = _parse(blob)
    if doc.get("kind") != kind:
        raise InputError(f"key file holds a {doc.get('kind')!r} key, not {kind!r}")
    try:
        if doc.get("encryption") == "none":
            return _unb64(doc["key"])
        if doc.get("encryption") != "scrypt-aes256gcm":
            raise InputError(f"unknown key encryption {doc.get('encryption')!r}")
        if passphrase is None:
            raise ConfigError(f"the key is encrypted: set ${PASSPHRASE_ENV} to its passphrase")
        params = doc["scrypt"]
        n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
        if not (2 <= n <= 1 << 20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise InputError("key file has implausible scrypt parameters")
        header = {k: v for k, v in doc.items() if k != "ciphertext"}
        key = _kdf(passphrase, _unb64(doc["salt"]), n, r, p)
        return AESGCM(key).decrypt(_unb64(doc["nonce"]), _unb64(doc["ciphertext"]), _aad(header))
    except InvalidTag:
        raise IntegrityError("wrong passphrase or damaged key file") from None
    except (KeyError, TypeError, ValueError):
        raise InputError("key file is damaged (missing or malformed field)") from None
