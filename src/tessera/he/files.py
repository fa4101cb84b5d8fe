"""The HE files and messages (each a :mod:`tessera.he.container`), and their sealing.

=====================  ==============  ==========================================================
format                 who holds it    what it holds
=====================  ==============  ==========================================================
tessera-he-bundle      anyone          public key, parameters, engine, the owner's wrapping key
tessera-he-keyset      the owner       the secret context, sealed (AES-256-GCM) under a key only
                                       the owner's own key unlocks
tessera-he-data-public the server      the ciphertexts, the columns' names and bounds
tessera-he-data        the client      the public part, the bundle, and the sealed part: the
                                       layout, the sentinel rows, row ids (AES-256-GCM under a
                                       fresh data key wrapped to the bundle's wrapping key)
tessera-he-answer      server->client  the job's output ciphertexts
tessera-he-result      the client      the answer, the job, the model, the sealed part
=====================  ==============  ==========================================================

Every file names the digest (SHA-256 of the file's bytes) of the bundle it was made
under, and data, answers and results also the digest of the public data: an answer for
other data, a bundle that does not match, or a key set of another bundle is refused by
name.  Sealed parts bind those digests as associated data, so they cannot be moved to
other data.  This module holds the keys' files; :mod:`tessera.he.datafiles` the data's
and :mod:`tessera.he.answers` the answers and results.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tessera.errors import InputError, IntegrityError
from tessera.he.container import digest, pack, unpack
from tessera.he.jobs import canonical
from tessera.he.params import Params

__all__ = [
    "Bundle",
    "KeySecret",
    "KeySetFile",
    "b64",
    "header_text",
    "seal",
    "unb64",
    "unseal",
]


def b64(data: bytes) -> str:
    """Base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, what: str) -> bytes:
    """The bytes of base64 ``text``; InputError naming ``what``."""
    try:
        if not isinstance(text, str):
            raise ValueError(what)
        return base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:
        raise InputError(f"{what} is not valid base64") from None


def header_text(header: dict[str, Any], key: str, what: str) -> str:
    """``header[key]`` as text; InputError naming ``what`` when missing or not text."""
    value = header.get(key)
    if not isinstance(value, str) or len(value) > 4096:
        raise InputError(f"{what}: missing or malformed {key}")
    return value


def seal(plain: bytes, key: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """(nonce, AES-256-GCM ciphertext) of ``plain`` under ``key`` bound to ``aad``."""
    nonce = secrets.token_bytes(12)
    return nonce, AESGCM(key).encrypt(nonce, plain, aad)


def unseal(nonce: bytes, sealed: bytes, key: bytes, aad: bytes, what: str) -> bytes:
    """Inverse of :func:`seal`; IntegrityError naming ``what`` on any mismatch."""
    try:
        return AESGCM(key).decrypt(nonce, sealed, aad)
    except (InvalidTag, ValueError):
        raise IntegrityError(f"{what} does not open: wrong key, or altered") from None


# -- bundle ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    """The public key bundle: what a server (and anyone who encrypts) needs."""

    keyset: str
    name: str
    owner: str
    engine: str
    params: Params
    wrap_public: bytes
    public_context: bytes
    created: str
    raw: bytes = field(default=b"", compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """The file's bytes."""
        if self.raw:
            return self.raw
        header = {
            "format": "tessera-he-bundle",
            "version": 1,
            "keyset": self.keyset,
            "name": self.name,
            "owner": self.owner,
            "engine": self.engine,
            "params": self.params.to_dict(),
            "wrap_public": b64(self.wrap_public),
            "created": self.created,
            "holds": "public and relinearisation keys (no secret key, no rotation keys)",
        }
        return pack(header, [self.public_context])

    @property
    def digest(self) -> str:
        """SHA-256 of the file: the bundle's identity."""
        return digest(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "key bundle") -> Bundle:
        """Parse a bundle file; InputError when it is not one."""
        box = unpack(data, expect="tessera-he-bundle", what=what, max_blobs=1)
        h = box.header
        if len(box.blobs) != 1:
            raise InputError(f"{what} holds no public context")
        return cls(
            keyset=header_text(h, "keyset", what),
            name=header_text(h, "name", what),
            owner=header_text(h, "owner", what),
            engine=header_text(h, "engine", what),
            params=Params.from_dict(h.get("params")),
            wrap_public=unb64(h.get("wrap_public"), f"{what}'s wrapping key"),
            public_context=box.blobs[0],
            created=header_text(h, "created", what),
            raw=bytes(data),
        )

    def describe(self) -> dict[str, Any]:
        """The JSON description (``tessera he key show``)."""
        return {
            "name": self.name,
            "owner": self.owner,
            "keyset": self.keyset,
            "bundle_digest": self.digest,
            "engine": self.engine,
            "params": self.params.to_dict(),
            "bundle_bytes": len(self.to_bytes()),
            "created": self.created,
        }


# -- key set ---------------------------------------------------------------------------
@dataclass(frozen=True)
class KeySecret:
    """What the key set seals: the secret context, the wrapping key, the bundle's bytes."""

    secret_context: bytes
    wrap_private: bytes
    bundle: bytes


@dataclass(frozen=True)
class KeySetFile:
    """The owner's key set on disk: a public header and the sealed secrets."""

    header: dict[str, Any]
    nonce: bytes
    sealed: bytes

    @property
    def name(self) -> str:
        """The key set's name."""
        return str(self.header["name"])

    @property
    def owner(self) -> str:
        """The person whose key unlocks it."""
        return str(self.header["owner"])

    @property
    def bundle_digest(self) -> str:
        """The digest of its public bundle."""
        return str(self.header["bundle_digest"])

    @property
    def keyset(self) -> str:
        """The key set's id."""
        return str(self.header["keyset"])

    @classmethod
    def create(cls, bundle: Bundle, secret: KeySecret, *, kek: bytes, owner_key: str) -> KeySetFile:
        """Seal ``secret`` under ``kek`` (derived from the owner's own key)."""
        header = {
            "format": "tessera-he-keyset",
            "version": 1,
            "keyset": bundle.keyset,
            "name": bundle.name,
            "owner": bundle.owner,
            "owner_key": owner_key,
            "engine": bundle.engine,
            "params": bundle.params.to_dict(),
            "bundle_digest": bundle.digest,
            "protection": "AES-256-GCM under HKDF-SHA256 of the owner's ML-DSA-65 key",
            "created": bundle.created,
        }
        inner = pack(
            {"format": "tessera-he-secret", "version": 1, "keyset": bundle.keyset},
            [secret.secret_context, secret.wrap_private, secret.bundle],
        )
        nonce, sealed = seal(inner, kek, canonical(header))
        return cls(header, nonce, sealed)

    def to_bytes(self) -> bytes:
        """The file's bytes."""
        return pack({**self.header, "nonce": b64(self.nonce)}, [self.sealed])

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "key set") -> KeySetFile:
        """Parse the file (nothing is decrypted)."""
        box = unpack(data, expect="tessera-he-keyset", what=what, max_blobs=1)
        header = dict(box.header)
        nonce = unb64(header.pop("nonce", None), f"{what}'s nonce")
        for key in ("keyset", "name", "owner", "owner_key", "bundle_digest", "engine"):
            header_text(header, key, what)
        Params.from_dict(header.get("params"))
        if len(box.blobs) != 1:
            raise InputError(f"{what} holds no sealed secret")
        return cls(header, nonce, box.blobs[0])

    def open(self, kek: bytes) -> KeySecret:
        """The secrets; IntegrityError with the wrong key or a damaged file."""
        plain = unseal(self.nonce, self.sealed, kek, canonical(self.header), "the key set")
        box = unpack(plain, expect="tessera-he-secret", what="key set", max_blobs=3)
        if box.header.get("keyset") != self.keyset or len(box.blobs) != 3:
            raise IntegrityError("the key set's sealed part belongs to another key set")
        secret = KeySecret(*box.blobs)
        if digest(secret.bundle) != self.bundle_digest:
            raise IntegrityError("the key set's bundle does not match its digest")
        return secret
