"""Sealing each custodian's private input to its node key inside a broadcast job."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tessera.errors import InvalidShareError
from tessera.mpc.knn_seal import open_sealed, seal


def _node() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MPyC party 0")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem


def test_seal_opens_only_for_its_node_party_and_job() -> None:
    cert, key = _node()
    _, other_key = _node()
    blob = seal(cert, b"patient share", nonce="n1", party=0)
    assert b"patient share".hex() not in blob["ct"]
    assert open_sealed(key, blob, nonce="n1", party=0) == b"patient share"
    with pytest.raises(InvalidShareError):
        open_sealed(other_key, blob, nonce="n1", party=0)
    with pytest.raises(InvalidShareError):
        open_sealed(key, blob, nonce="n1", party=1)
    with pytest.raises(InvalidShareError):
        open_sealed(key, blob, nonce="n2", party=0)
    tampered = dict(blob, ct=("00" if blob["ct"][:2] != "00" else "11") + blob["ct"][2:])
    with pytest.raises(InvalidShareError):
        open_sealed(key, tampered, nonce="n1", party=0)
    with pytest.raises(InvalidShareError):
        open_sealed(key, {"epk": "zz"}, nonce="n1", party=0)
