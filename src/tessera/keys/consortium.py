"""The consortium manifest: who the custodians are, and who may change that.

A federated consortium has no CA.  Each custodian makes its own TLS key on its own host
(``tessera node init``) and hands over a :class:`JoinRequest`: its self-signed
certificate, its address and where its fragment store is.  The members turn the
requests into a :class:`Manifest`, a signed document every node and client pins:

* ``nodes``: each custodian's seat (id), address, pinned certificate and store;
* ``clients``: the TLS certificates of the people's and the gateway's machines that
  may call the custodians (transport only: authority stays with signatures);
* ``threshold`` (k for vault files) and ``mpc_threshold`` (t for secret tables);
* ``roster``: the signed roster of people and roles at the time (what a node that
  joins pins as its first roster);
* ``quorum``: how many distinct stewards or officers must sign a change.

Trust is by exact certificate: a node's TLS trust store holds the pinned certificates
and nothing else, so no key anywhere can add a node; only a new manifest can.  A node
accepts a new manifest (:func:`admit_manifest`) only when its serial is newer than the
one it holds and ``quorum`` stewards or officers of the roster it holds signed it (fewer
only while the roster has fewer privileged people).  The first manifest a node sees is
taken on trust: its operator compares :func:`Manifest.fingerprint` out of band.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tessera.errors import InputError, PolicyError
from tessera.keys.documents import SignedDocument, canonical_bytes, verified_signers
from tessera.keys.people import PRIVILEGED, ROSTER_CONTEXT, Person, Roster, valid_name

__all__ = [
    "CONSORTIUM_CONTEXT",
    "DEFAULT_QUORUM",
    "ClientEntry",
    "JoinRequest",
    "Manifest",
    "NodeEntry",
    "admit_manifest",
    "cert_fingerprint",
    "check_seat_certificate",
    "short_fingerprint",
]

CONSORTIUM_CONTEXT = b"tessera-consortium-v1"
MANIFEST_FORMAT = "tessera-consortium"
REQUEST_FORMAT = "tessera-join-request"
DEFAULT_QUORUM = 2
_MAX_NODES = 255
_MAX_CERT = 8192
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_STORE_SECRETS = ("key", "secret", "password", "token", "credential", "passphrase")


def cert_fingerprint(pem: str) -> str:
    """SHA-256 of a certificate's DER encoding, hex."""
    return hashlib.sha256(_load_cert(pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def short_fingerprint(hex_digest: str) -> str:
    """The first 80 bits of a fingerprint in groups of four, to read aloud."""
    head = hex_digest[:20].upper()
    return " ".join(head[i : i + 4] for i in range(0, len(head), 4))


def _load_cert(pem: str) -> x509.Certificate:
    if not isinstance(pem, str) or len(pem) > _MAX_CERT:
        raise InputError("a certificate is a PEM text of at most 8 KiB")
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise InputError("not a PEM certificate") from None


def _dns_names(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    return set(ext.value.get_values_for_type(x509.DNSName))


def _seat_names(cert: x509.Certificate) -> set[int]:
    seats = set()
    names = _dns_names(cert) | {
        str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    }
    for name in names:
        if m := re.fullmatch(r"MPyC party (\d+)", name):
            seats.add(int(m.group(1)))
        elif m := re.fullmatch(r"tessera-node-(\d+)", name):
            seats.add(int(m.group(1)) - 1)
    return seats


def _check_self_signed(cert: x509.Certificate, what: str) -> None:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InputError(f"{what}: the certificate's key must be ECDSA P-256")
    if cert.issuer != cert.subject:
        raise InputError(f"{what}: the certificate must be self-signed (pinned, no CA)")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, Exception) as exc:  # InvalidSignature is not a ValueError
        raise InputError(f"{what}: the certificate's self-signature does not verify") from exc
    if cert.not_valid_after_utc <= _dt.datetime.now(_dt.UTC):
        raise InputError(f"{what}: the certificate expired")


def check_seat_certificate(pem: str, node_id: int, host: str) -> None:
    """Refuse a node certificate unless it is self-signed, names MPyC seat ``node_id-1``
    and no other, and covers ``host`` (InputError naming the problem)."""
    cert = _load_cert(pem)
    what = f"node {node_id}"
    _check_self_signed(cert, what)
    seats = _seat_names(cert)
    if seats != {node_id - 1}:
        raise InputError(
            f"{what}: the certificate must name seat {node_id} only (it names "
            f"{sorted(s + 1 for s in seats) or 'none'}); make it with tessera node init --id"
        )
    if not _covers(cert, host):
        raise InputError(f"{what}: the certificate does not name its address {host}")


def _covers(cert: x509.Certificate, host: str) -> bool:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower() in {n.lower() for n in ext.value.get_values_for_type(x509.DNSName)}
    return ip in ext.value.get_values_for_type(x509.IPAddress)


def _valid_host(host: Any) -> str:
    if not isinstance(host, str):
        raise InputError("an address host must be a string")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not _HOST.match(host):
        raise InputError(f"invalid host name {host[:60]!r}")
    return host


def _valid_port(port: Any) -> int:
    if type(port) is not int or not 1 <= port <= 65535:
        raise InputError("a port must be an integer from 1 to 65535")
    return port


def _valid_store(store: Any) -> dict[str, Any]:
    if store is None:
        return {}
    if not isinstance(store, dict) or not isinstance(store.get("url"), str):
        raise InputError("a store is {url, options}")
    options = store.get("options", {})
    if not isinstance(options, dict):
        raise InputError("store options must be an object")
    for key in options:
        if any(word in str(key).lower() for word in _STORE_SECRETS):
            raise InputError(
                f"store option {key!r} looks like a credential: credentials stay on the "
                "machines that use the store (environment variables), never in a manifest"
            )
    return {"url": store["url"][:2048], "options": dict(options)}


@dataclass(frozen=True)
class NodeEntry:
    """One custodian of the consortium."""

    id: int
    name: str
    host: str
    port: int
    cert: str
    store: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the pinned certificate."""
        return cert_fingerprint(self.cert)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        doc: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "cert": self.cert,
        }
        if self.store:
            doc["store"] = self.store
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> NodeEntry:
        """Parse and check one node entry."""
        if not isinstance(doc, dict):
            raise InputError("a node entry is an object")
        node_id = doc.get("id")
        if type(node_id) is not int or not 1 <= node_id <= _MAX_NODES:
            raise InputError("a node id is an integer from 1 to 255")
        entry = cls(
            node_id,
            valid_name(str(doc.get("name", f"node-{node_id}"))),
            _valid_host(doc.get("host")),
            _valid_port(doc.get("port")),
            str(doc.get("cert", "")),
            _valid_store(doc.get("store")),
        )
        check_seat_certificate(entry.cert, entry.id, entry.host)
        return entry


@dataclass(frozen=True)
class ClientEntry:
    """A machine (a person's or the gateway's) whose TLS certificate the nodes accept."""

    name: str
    cert: str

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the pinned certificate."""
        return cert_fingerprint(self.cert)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"name": self.name, "cert": self.cert}

    @classmethod
    def from_dict(cls, doc: Any) -> ClientEntry:
        """Parse and check one client entry (self-signed, naming no MPC seat)."""
        if not isinstance(doc, dict):
            raise InputError("a client entry is an object")
        entry = cls(valid_name(str(doc.get("name", ""))), str(doc.get("cert", "")))
        cert = _load_cert(entry.cert)
        _check_self_signed(cert, f"client {entry.name}")
        if _seat_names(cert):
            raise InputError(f"client {entry.name}: a client certificate must name no node seat")
        return entry


@dataclass(frozen=True)
class JoinRequest:
    """What a custodian (or a client machine) hands the members to be let in."""

    kind: str  # "node" | "client"
    name: str
    cert: str
    id: int | None = None
    host: str | None = None
    port: int | None = None
    store: dict[str, Any] = field(default_factory=dict)
    protocol: int = 1
    software: str = ""
    person: Person | None = None  # a client's person, whose key the roster may add

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate to pin."""
        return cert_fingerprint(self.cert)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        doc: dict[str, Any] = {
            "format": REQUEST_FORMAT,
            "version": 1,
            "kind": self.kind,
            "name": self.name,
            "cert": self.cert,
            "fingerprint": self.fingerprint,
            "protocol": self.protocol,
            "software": self.software,
        }
        if self.kind == "node":
            doc.update(id=self.id, host=self.host, port=self.port, store=self.store or None)
        if self.person is not None:
            doc["person"] = {
                "name": self.person.name,
                "key_id": self.person.key.key_id,
                "key": base64.b64encode(self.person.key.to_bytes()).decode("ascii"),
            }
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> JoinRequest:
        """Parse and check a join request (the certificate must match its fingerprint)."""
        if not isinstance(doc, dict) or doc.get("format") != REQUEST_FORMAT:
            raise InputError("not a Tessera join request (format tessera-join-request)")
        kind = doc.get("kind")
        if kind == "node":
            entry = NodeEntry.from_dict(doc)
            request = cls(
                "node", entry.name, entry.cert, entry.id, entry.host, entry.port, entry.store
            )
        elif kind == "client":
            client = ClientEntry.from_dict(doc)
            person = None
            if doc.get("person") is not None:
                entry = doc["person"]
                if not isinstance(entry, dict):
                    raise InputError("a join request's person is {name, key}")
                person = Person.from_dict({**entry, "roles": ["researcher"]})
            request = cls("client", client.name, client.cert, person=person)
        else:
            raise InputError("a join request's kind is node or client")
        protocol = doc.get("protocol", 1)
        if type(protocol) is not int:
            raise InputError("a join request's protocol is an integer")
        claimed = doc.get("fingerprint")
        if claimed is not None and claimed != request.fingerprint:
            raise InputError("the join request's fingerprint does not match its certificate")
        return replace(request, protocol=protocol, software=str(doc.get("software", ""))[:64])

    def node_entry(self) -> NodeEntry:
        """The manifest entry for a node request."""
        if self.kind != "node" or self.id is None or self.host is None or self.port is None:
            raise InputError(f"{self.name}: not a node's join request")
        return NodeEntry(self.id, self.name, self.host, self.port, self.cert, self.store)


@dataclass(frozen=True)
class Manifest:
    """A consortium's node set, clients, thresholds and roster (one serial)."""

    name: str
    serial: int
    nodes: tuple[NodeEntry, ...]
    clients: tuple[ClientEntry, ...]
    threshold: int
    roster: Mapping[str, Any]
    quorum: int = DEFAULT_QUORUM
    protocol: int = 1

    def __post_init__(self) -> None:
        n = len(self.nodes)
        if not 3 <= n <= _MAX_NODES:
            raise InputError(f"a consortium has 3 to {_MAX_NODES} custodians (this one: {n})")
        if sorted(e.id for e in self.nodes) != list(range(1, n + 1)):
            raise InputError(f"node ids must be 1..{n}, each once")
        if type(self.serial) is not int or self.serial < 1:
            raise InputError("a manifest's serial is a positive integer")
        if type(self.threshold) is not int or not 2 <= self.threshold <= n:
            raise InputError(f"threshold must be between 2 and {n}")
        if type(self.quorum) is not int or not 1 <= self.quorum <= 8:
            raise InputError("quorum must be an integer from 1 to 8")
        if type(self.protocol) is not int:
            raise InputError("a manifest's protocol is an integer")
        prints = [e.fingerprint for e in self.nodes] + [c.fingerprint for c in self.clients]
        if len(set(prints)) != len(prints):
            raise InputError("a certificate is pinned twice")
        addresses = [(e.host, e.port) for e in self.nodes]
        if len(set(addresses)) != len(addresses):
            raise InputError("two nodes share an address")
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise InputError("a client name appears twice")

    @property
    def n(self) -> int:
        """Number of custodians."""
        return len(self.nodes)

    @property
    def mpc_threshold(self) -> int:
        """t = (n-1)//2: honest majority for secret tables."""
        return (self.n - 1) // 2

    def node(self, node_id: int) -> NodeEntry:
        """The entry of seat ``node_id``."""
        for entry in self.nodes:
            if entry.id == node_id:
                return entry
        raise InputError(f"no node {node_id} in the consortium")

    def roster_object(self) -> Roster:
        """The embedded roster."""
        return Roster.from_body(SignedDocument.from_dict(dict(self.roster)).body)

    def body(self) -> dict[str, Any]:
        """The signed body."""
        return {
            "format": MANIFEST_FORMAT,
            "version": 1,
            "name": self.name,
            "serial": self.serial,
            "protocol": self.protocol,
            "threshold": self.threshold,
            "mpc_threshold": self.mpc_threshold,
            "quorum": self.quorum,
            "nodes": [e.to_dict() for e in sorted(self.nodes, key=lambda e: e.id)],
            "clients": [c.to_dict() for c in sorted(self.clients, key=lambda c: c.name)],
            "roster": dict(self.roster),
        }

    def fingerprint(self) -> str:
        """SHA-256 of the canonical body: what operators compare out of band."""
        return hashlib.sha256(canonical_bytes(self.body())).hexdigest()

    def next(self, **changes: Any) -> Manifest:
        """The next serial with ``changes``."""
        return replace(self, serial=self.serial + 1, **changes)

    def with_node(self, entry: NodeEntry) -> Manifest:
        """The next serial, with ``entry`` added or replacing the node of its seat."""
        kept = tuple(e for e in self.nodes if e.id != entry.id)
        return self.next(nodes=(*kept, entry))

    def without_node(self, node_id: int) -> Manifest:
        """The next serial, without the highest seat ``node_id`` (ids stay 1..n)."""
        self.node(node_id)
        if node_id != self.n:
            raise InputError(
                f"only the last seat ({self.n}) can be removed; replace node {node_id} "
                "with a new one instead (tessera consortium add-node with --id "
                f"{node_id})"
            )
        return self.next(
            nodes=tuple(e for e in self.nodes if e.id != node_id),
            threshold=min(self.threshold, self.n - 1),
        )

    def with_client(self, entry: ClientEntry) -> Manifest:
        """The next serial, with ``entry`` added or replacing the client of that name."""
        kept = tuple(c for c in self.clients if c.name != entry.name)
        return self.next(clients=(*kept, entry))

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Manifest:
        """Parse and check a manifest body; InputError naming what is wrong."""
        if body.get("format") != MANIFEST_FORMAT or body.get("version") != 1:
            raise InputError("not a Tessera consortium manifest (format tessera-consortium)")
        nodes, clients = body.get("nodes"), body.get("clients", [])
        if not isinstance(nodes, list) or not isinstance(clients, list):
            raise InputError("a manifest lists nodes and clients")
        if len(nodes) > _MAX_NODES or len(clients) > 1000:
            raise InputError("a manifest lists too many nodes or clients")
        roster = body.get("roster")
        if not isinstance(roster, dict):
            raise InputError("a manifest carries the signed roster")
        manifest = cls(
            str(body.get("name", "consortium"))[:64],
            body.get("serial"),  # type: ignore[arg-type]  # checked in __post_init__
            tuple(NodeEntry.from_dict(d) for d in nodes),
            tuple(ClientEntry.from_dict(d) for d in clients),
            body.get("threshold"),  # type: ignore[arg-type]
            roster,
            body.get("quorum", DEFAULT_QUORUM),
            body.get("protocol", 1),
        )
        if body.get("mpc_threshold", manifest.mpc_threshold) != manifest.mpc_threshold:
            raise InputError("mpc_threshold must be (n-1)//2")
        manifest.roster_object()  # parses
        return manifest


def _signers_needed(manifest_quorum: int, roster: Roster) -> tuple[int, set[str]]:
    privileged = {p.name for p in roster.people if p.roles & PRIVILEGED}
    return min(manifest_quorum, max(1, len(privileged))), privileged


def _quorum_signers(doc: SignedDocument, roster: Roster, quorum: int, what: str) -> set[str]:
    needed, privileged = _signers_needed(quorum, roster)
    trusted = {name: key for name, key in roster.keys().items() if name in privileged}
    signers = verified_signers(doc, trusted, context=CONSORTIUM_CONTEXT)
    if len(signers) < needed:
        raise PolicyError(
            f"{what} needs {needed} signature(s) of the roster's stewards or officers; "
            f"it has {len(signers)} valid ({', '.join(sorted(signers)) or 'none'})"
        )
    return signers


def admit_manifest(
    current: Manifest | None, roster: Roster | None, doc: SignedDocument
) -> Manifest:
    """The manifest in ``doc`` if a node holding ``current`` (and ``roster``) may install it.

    First manifest (``current`` None): its own roster's stewards or officers must have
    signed it, ``quorum`` of them (taken on trust otherwise: the operator compares its
    fingerprint).  Later ones: a newer serial, signed by ``current.quorum`` stewards or
    officers of ``roster`` (the roster the node holds now).
    """
    new = Manifest.from_body(doc.body)
    embedded = SignedDocument.from_dict(dict(new.roster))
    embedded_roster = Roster.from_body(embedded.body)
    if not verified_signers(
        embedded,
        {p.name: p.key for p in embedded_roster.people if p.privileged},
        context=ROSTER_CONTEXT,
    ):
        raise PolicyError("the manifest's roster is not signed by one of its own stewards")
    if current is None:
        _quorum_signers(doc, roster or embedded_roster, new.quorum, "the consortium manifest")
        return new
    if new.serial <= current.serial:
        raise PolicyError(
            f"consortium manifest serial {new.serial} is not newer than the installed "
            f"serial {current.serial}"
        )
    _quorum_signers(doc, roster or current.roster_object(), current.quorum, "a node-set change")
    return new
