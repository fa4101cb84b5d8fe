"""Signed documents: a JSON body and one or more ML-DSA-65 signatures over it.

Rosters, table policies and MPC jobs cross process boundaries as::

    {"body": {...}, "signatures": [{"signer": "<name>", "key_id": "<16 hex>",
                                    "signature": "<hex>"}]}

Every signature covers :func:`canonical_bytes` of the body under a FIPS 204 context
string naming the document's kind, so a signature made for one kind (a policy) never
verifies for another (a job).  Several people can sign the same body (the two-person
rule); :func:`verified_signers` returns the names whose signatures check out against
the keys a verifier already trusts, never the names a document claims.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tessera.errors import InputError, IntegrityError
from tessera.keys.signing import SIGNATURE_SIZE, SigningKey, VerifyKey

__all__ = ["Signature", "SignedDocument", "canonical_bytes", "verified_signers"]

_MAX_SIGNATURES = 8


def canonical_bytes(body: Mapping[str, Any]) -> bytes:
    """The exact bytes a signature covers (sorted keys, no spaces, UTF-8)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Signature:
    """One person's signature over a document body."""

    signer: str
    key_id: str
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        """The JSON form."""
        return {"signer": self.signer, "key_id": self.key_id, "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, doc: Any) -> Signature:
        """Parse one signature entry; InputError if malformed."""
        if not isinstance(doc, dict):
            raise InputError("a signature is an object")
        signer, key_id, sig = doc.get("signer"), doc.get("key_id"), doc.get("signature")
        if not (isinstance(signer, str) and isinstance(key_id, str) and isinstance(sig, str)):
            raise InputError("a signature needs signer, key_id and signature")
        if len(sig) != 2 * SIGNATURE_SIZE:
            raise InputError("a signature has the wrong length")
        try:
            raw = bytes.fromhex(sig)
        except ValueError:
            raise InputError("a signature is not hex") from None
        return cls(signer[:64], key_id[:64], raw)


@dataclass(frozen=True)
class SignedDocument:
    """A body (JSON object) and the signatures over it, under one context."""

    body: dict[str, Any]
    signatures: tuple[Signature, ...] = ()

    def signed_by(self, name: str, key: SigningKey, *, context: bytes) -> SignedDocument:
        """A copy with ``name``'s signature added (replacing an earlier one of theirs)."""
        sig = Signature(name, key.key_id, key.sign(canonical_bytes(self.body), context=context))
        kept = tuple(s for s in self.signatures if s.signer != name)
        return SignedDocument(self.body, (*kept, sig))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"body": self.body, "signatures": [s.to_dict() for s in self.signatures]}

    @classmethod
    def from_dict(cls, doc: Any) -> SignedDocument:
        """Parse a signed document; InputError if malformed (signatures are not checked)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("body"), dict):
            raise InputError("not a signed document (no body)")
        sigs = doc.get("signatures")
        if not isinstance(sigs, list) or not sigs:
            raise IntegrityError("unsigned document")
        if len(sigs) > _MAX_SIGNATURES:
            raise InputError("too many signatures")
        body = dict(doc["body"])
        try:
            canonical_bytes(body)
        except (UnicodeEncodeError, RecursionError):  # lone surrogates ("\ud800"), deep nesting
            raise InputError("a signed document's body is not valid Unicode JSON") from None
        return cls(body, tuple(Signature.from_dict(s) for s in sigs))


def verified_signers(
    document: SignedDocument, trusted: Mapping[str, VerifyKey], *, context: bytes
) -> set[str]:
    """The names in ``trusted`` whose signatures on ``document`` verify under ``context``.

    A signature by a name that is not trusted, or that does not verify, is ignored; the
    caller decides whether the names left are enough.
    """
    message = canonical_bytes(document.body)
    names: set[str] = set()
    for sig in document.signatures:
        key = trusted.get(sig.signer)
        if key is None or key.key_id != sig.key_id:
            continue
        try:
            key.verify(message, sig.signature, context=context)
        except IntegrityError:
            continue
        names.add(sig.signer)
    return names
