"""Per-custodian private inputs inside a signed, broadcast MPC job.

Every custodian receives the same signed job, but each must get only *its own* share of
the patient.  The requester seals party i's share to node i's P-256 key (the key of its
node certificate, which the node also hands its MPyC party for ``--ssl``): ephemeral
ECDH, HKDF-SHA-256, AES-256-GCM, with the job's random ``nonce`` and the party index as
associated data (a sealed share cannot be moved to another party or job).  The other
custodians see only ciphertexts; the job signature covers them, so none can be swapped.
"""

from __future__ import annotations

import secrets
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tessera.errors import InputError, InvalidShareError

__all__ = ["open_sealed", "seal"]

_INFO = b"tessera-knn-private-input-v1"


def _key(shared: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(shared)


def _aad(nonce: str, party: int) -> bytes:
    return _INFO + b"|" + nonce.encode() + b"|" + str(party).encode()


def seal(certificate_pem: bytes, data: bytes, *, nonce: str, party: int) -> dict[str, str]:
    """``data`` sealed to the P-256 key of ``certificate_pem`` (a node certificate)."""
    public = x509.load_pem_x509_certificate(certificate_pem).public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise InputError("the node certificate does not hold an EC key")
    ephemeral = ec.generate_private_key(public.curve)
    key = _key(ephemeral.exchange(ec.ECDH(), public))
    iv = secrets.token_bytes(12)
    ct = AESGCM(key).encrypt(iv, data, _aad(nonce, party))
    epk = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return {"epk": epk.hex(), "iv": iv.hex(), "ct": ct.hex()}


def open_sealed(private_key_pem: bytes, blob: Any, *, nonce: str, party: int) -> bytes:
    """The data sealed for this node; InvalidShareError if it was not sealed to it."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InputError("the node key is not an EC key")
    try:
        epk = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, bytes.fromhex(blob["epk"]))
        shared = key.exchange(ec.ECDH(), epk)
        return AESGCM(_key(shared)).decrypt(
            bytes.fromhex(blob["iv"]), bytes.fromhex(blob["ct"]), _aad(nonce, party)
        )
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise InvalidShareError("the sealed private input does not open") from None
