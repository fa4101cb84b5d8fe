"""Node PKI of an embedded environment: a CA, one TLS certificate per custodian node and
a TLS client certificate for requesters.

Layout under ``HOME/pki``::

    ca.crt  ca.key                  the environment's CA (ECDSA P-256); ca.key is
                                    encrypted under the founder's passphrase
    node-I.crt  node-I.key          node I: TLS server/client cert, also its MPyC party cert
    client.crt  client.key          the requesters' TLS client certificate

TLS keys grant transport only: custodians run nothing that a person of their roster
did not sign (see :mod:`tessera.workflows.custodian`), so no file here holds authority.
A node's key stays unencrypted because the node runs unattended.

A node certificate names the node's host (IP or DNS) and ``MPyC party {I-1}``, the
server name MPyC checks when its parties connect with ``--ssl``.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tessera.config import Environment
from tessera.errors import IntegrityError

__all__ = [
    "PKI_DIR",
    "create_pki",
    "issue_node_certificates",
    "node_names",
    "pki_dir",
    "self_signed_client",
    "self_signed_node",
]

PKI_DIR = "pki"
_VALIDITY = _dt.timedelta(days=3650)


def pki_dir(home: Path) -> Path:
    """The PKI folder of an environment."""
    return home / PKI_DIR


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC) - _dt.timedelta(minutes=5)


def _load_ca(
    folder: Path, passphrase: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    try:
        key = serialization.load_pem_private_key(
            (folder / "ca.key").read_bytes(), password=passphrase
        )
    except (ValueError, TypeError):
        raise IntegrityError("wrong passphrase for the environment's CA key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("ca.key is not an EC key")
    return cert, key


def _san_for_host(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _issue(
    folder: Path,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    stem: str,
    cn: str,
    names: list[x509.GeneralName],
    *,
    server: bool,
) -> bytes:
    """Make ``stem.key`` and ``stem.crt`` in ``folder``, signed by ``ca`` or, when it
    is None, by the new key itself (a pinned certificate: federation); the PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert, ca_key = ca if ca is not None else (None, key)
    issuer = ca_cert.subject if ca_cert is not None else _name(cn)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write(folder / f"{stem}.key", _key_pem(key), secret=True)
    _write(folder / f"{stem}.crt", pem)
    return pem


def node_names(node_id: int, host: str) -> list[x509.GeneralName]:
    """What a node certificate names: its host, its seat, and loopback."""
    names = [
        _san_for_host(host),
        x509.DNSName(f"tessera-node-{node_id}"),
        x509.DNSName(f"MPyC party {node_id - 1}"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    return list(dict.fromkeys(names))  # host may be 127.0.0.1 or localhost


def self_signed_node(folder: Path, node_id: int, host: str) -> str:
    """A custodian's own TLS key and self-signed certificate (``node.key``,
    ``node.crt`` in ``folder``), made on its host: the PEM to pin."""
    folder.mkdir(parents=True, exist_ok=True)
    names = node_names(node_id, host)
    return _issue(folder, None, "node", f"tessera-node-{node_id}", names, server=True).decode()


def self_signed_client(folder: Path, name: str) -> str:
    """A client machine's TLS key and self-signed certificate (``client.key``,
    ``client.crt`` in ``folder``): the PEM to pin."""
    folder.mkdir(parents=True, exist_ok=True)
    return _issue(folder, None, "client", f"tessera-client-{name}", [], server=False).decode()


def issue_node_certificates(env: Environment, passphrase: bytes) -> None:
    """(Re-)issue every node's certificate for its configured host (after hosts change).

    ``passphrase`` unlocks the CA key (the founder's passphrase).
    """
    folder = pki_dir(env.home)
    _certify_nodes(env, folder, _load_ca(folder, passphrase))


def _certify_nodes(
    env: Environment, folder: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    for node in env.nodes:
        names = node_names(node.id, node.host)
        _issue(folder, ca, f"node-{node.id}", f"tessera-node-{node.id}", names, server=True)


def create_pki(env: Environment, passphrase: bytes) -> None:
    """Make the CA (its key encrypted under ``passphrase``), node and client certificates."""
    folder = pki_dir(env.home)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(f"Tessera CA {env.name}")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    encrypted = ca_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    _write(folder / "ca.key", encrypted, secret=True)
    _write(folder / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    _certify_nodes(env, folder, (ca_cert, ca_key))
    _issue(folder, (ca_cert, ca_key), "client", "tessera-requester", [], server=False)
