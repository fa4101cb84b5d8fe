"""Federation: custodians on their own hosts, with their own keys, pinned by a manifest.

The node side (each hospital's operator):

* :func:`node_init` makes the node's TLS key and self-signed certificate on its host,
  writes its ``node.toml`` and a join request (:class:`~tessera.keys.consortium.JoinRequest`);
* :func:`accept_manifest` installs a consortium manifest the node may accept (its first
  one, taken on trust after the operator compared the fingerprint, or a newer one
  signed by a quorum of the roster's stewards and officers) and lays out the data folder
  the node service runs from (:func:`materialize`).

The client side (the members' and researchers' machines):

* :func:`init_consortium` makes a client environment, its TLS key, the founder's
  signing key, roster 1 and manifest serial 1 from the nodes' join requests;
* :func:`propose` makes the next manifest (a node added, replaced or removed, a client
  added), signed by its proposer; :func:`cosign` adds a signature;
  :func:`push_manifest` hands it to every node and installs it here.

Nothing here holds authority a node does not check for itself: every node verifies the
signatures against the roster it holds (:func:`tessera.keys.consortium.admit_manifest`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tessera.config import Environment, NodeConfig, NodeSettings, StoreConfig
from tessera.errors import ConfigError, InputError, PolicyError, UsageError
from tessera.keys.consortium import (
    CONSORTIUM_CONTEXT,
    DEFAULT_QUORUM,
    ClientEntry,
    JoinRequest,
    Manifest,
    admit_manifest,
    cert_fingerprint,
)
from tessera.keys.documents import SignedDocument
from tessera.keys.people import Person, valid_name
from tessera.version import PROTOCOL_VERSION, __version__
from tessera.workflows.custodian import Custodian
from tessera.workflows.nodes_pki import self_signed_client, self_signed_node
from tessera.workflows.people import Signer, check_new_passphrase, create_key, first_roster

__all__ = [
    "CONSORTIUM_FILE",
    "JOIN_FILE",
    "accept_manifest",
    "cosign",
    "init_consortium",
    "installed_manifest",
    "join_as_client",
    "load_manifest_file",
    "local_manifest",
    "materialize",
    "node_init",
    "propose",
    "push_manifest",
    "read_join_request",
]

CONSORTIUM_FILE = "consortium.json"
JOIN_FILE = "join-request.json"
CUSTODIAN_DIR = "custodian"


def _write_json(path: Path, doc: Any, *, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no {what} at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None
    if len(text) > 16 << 20:
        raise InputError(f"{path} is too large for a {what}")
    try:
        return json.loads(text)
    except ValueError:
        raise InputError(f"{path} is not JSON (expected a {what})") from None


def read_join_request(path: Path) -> JoinRequest:
    """A join request from a file, checked."""
    return JoinRequest.from_dict(_read_json(path, "join request"))


def load_manifest_file(path: Path) -> tuple[Manifest, SignedDocument]:
    """A manifest document from a file (structure checked, signatures not)."""
    doc = SignedDocument.from_dict(_read_json(path, "consortium manifest"))
    return Manifest.from_body(doc.body), doc


# --- the node side ------------------------------------------------------------------


def node_init(
    config: Path,
    *,
    node_id: int,
    address: tuple[str, int],
    listen: tuple[str, int] | None = None,
    data: Path | None = None,
    name: str | None = None,
    store: dict[str, Any] | None = None,
    log: str = "text",
) -> tuple[NodeSettings, JoinRequest]:
    """Make a custodian's keys and configuration on its own host; its join request.

    The TLS key never leaves ``config``'s folder (``tls/node.key``, mode 0600).
    """
    if config.exists():
        raise ConfigError(f"{config} already exists: this host already has a node")
    if not 1 <= node_id <= 255:
        raise UsageError("--id must be between 1 and 255")
    folder = config.resolve().parent
    tls = folder / "tls"
    if (tls / "node.key").exists():
        raise ConfigError(f"{tls / 'node.key'} already exists")
    settings = NodeSettings(
        path=config.resolve(),
        id=node_id,
        listen=listen or address,
        address=address,
        data=(data or folder / "data").resolve(),
        tls_cert=tls / "node.crt",
        tls_key=tls / "node.key",
        consortium=(data or folder / "data").resolve() / CONSORTIUM_FILE,
        log=log,
    )
    pem = self_signed_node(tls, node_id, address[0])
    request = JoinRequest.from_dict(
        {
            "format": "tessera-join-request",
            "version": 1,
            "kind": "node",
            "name": valid_name(name or f"node-{node_id}"),
            "id": node_id,
            "host": address[0],
            "port": address[1],
            "store": dict(store) if store else None,
            "cert": pem,
            "protocol": PROTOCOL_VERSION,
            "software": __version__,
        }
    )
    settings.data.mkdir(parents=True, exist_ok=True)
    settings.save()
    _write_json(folder / JOIN_FILE, request.to_dict())
    return settings, request


def installed_manifest(settings: NodeSettings) -> tuple[Manifest, SignedDocument] | None:
    """The manifest this node installed, or None before it joined."""
    if not settings.consortium.exists():
        return None
    return load_manifest_file(settings.consortium)


def _custodian(settings: NodeSettings, manifest: Manifest) -> Custodian:
    root = settings.data / CUSTODIAN_DIR
    root.mkdir(parents=True, exist_ok=True)
    return Custodian(root, parties=manifest.n, threshold=manifest.mpc_threshold)


def accept_manifest(settings: NodeSettings, doc: SignedDocument) -> tuple[Manifest, bool]:
    """Install ``doc`` on this node if it may (see :func:`admit_manifest`); the manifest
    and whether this node is still one of its custodians.

    The node's own certificate must be the one the manifest pins for its seat; a manifest
    that no longer lists this node is installed (the node then stops serving).
    """
    held = installed_manifest(settings)
    current = held[0] if held else None
    roster = None
    if current is not None:
        custodian = _custodian(settings, current)
        try:
            roster = custodian.roster()
        except ConfigError:
            roster = None
        finally:
            custodian.close()
    manifest = admit_manifest(current, roster, doc)
    own = cert_fingerprint(settings.tls_cert.read_text(encoding="ascii"))
    seat = next((e for e in manifest.nodes if e.id == settings.id), None)
    member = seat is not None and seat.fingerprint == own
    if current is None and not member:
        pinned = f"pins {seat.fingerprint[:20]}" if seat else "has no such seat"
        raise PolicyError(
            f"this node (seat {settings.id}, certificate {own[:20]}) is not in the manifest: "
            f"seat {settings.id} {pinned}"
        )
    if manifest.protocol != PROTOCOL_VERSION:
        raise PolicyError(
            f"the consortium speaks protocol {manifest.protocol}; this node speaks "
            f"{PROTOCOL_VERSION} (tessera {__version__})"
        )
    _write_json(settings.consortium, doc.to_dict())
    if member:
        custodian = _custodian(settings, manifest)
        try:
            try:
                custodian.roster()
            except ConfigError:
                custodian.pin_roster(SignedDocument.from_dict(dict(manifest.roster)))
        finally:
            custodian.close()
        materialize(settings, manifest)
    return manifest, member


def materialize(settings: NodeSettings, manifest: Manifest) -> Environment:
    """Lay out the data folder the node service runs from: ``tessera.toml`` (the node
    set), ``pki/ca.crt`` (exactly the pinned certificates: nodes and clients) and the
    node's own certificate and key for its MPC party."""
    home = settings.data
    stores = [
        StoreConfig(
            e.id,
            (home / CUSTODIAN_DIR).as_uri()
            if e.id == settings.id
            else str(e.store.get("url", f"file:///nonexistent/node-{e.id}")),
        )
        for e in manifest.nodes
    ]
    env = Environment(
        home=home,
        name=manifest.name,
        threshold=manifest.threshold,
        stores=stores,
        nodes=[NodeConfig(e.id, e.host, e.port) for e in manifest.nodes],
        mpc_threshold=manifest.mpc_threshold,
        extra={"consortium": {"role": "node", "node": settings.id, "serial": manifest.serial}},
    )
    env.save()
    pki = home / "pki"
    pki.mkdir(exist_ok=True)
    bundle = "".join(e.cert for e in manifest.nodes) + "".join(c.cert for c in manifest.clients)
    _write_text(pki / "ca.crt", bundle)
    _write_text(pki / f"node-{settings.id}.crt", settings.tls_cert.read_text(encoding="ascii"))
    _write_text(
        pki / f"node-{settings.id}.key", settings.tls_key.read_text(encoding="ascii"), secret=True
    )
    return env


def _write_text(path: Path, text: str, *, secret: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
    os.replace(tmp, path)


# --- the client side ----------------------------------------------------------------


def init_consortium(
    home: Path,
    *,
    founder: str,
    passphrase: bytes,
    requests: Sequence[JoinRequest],
    threshold: int | None = None,
    quorum: int = DEFAULT_QUORUM,
    name: str | None = None,
) -> tuple[Environment, SignedDocument]:
    """Make ``home`` a client environment of a new consortium: its TLS key, the
    founder's signing key and roster 1, and manifest serial 1 (signed by the founder),
    from the nodes' (and other clients') join requests."""
    check_new_passphrase(passphrase)
    valid_name(founder)
    home = home.resolve()
    if (home / "tessera.toml").exists():
        raise ConfigError(f"{home} already holds a Tessera environment")
    nodes = [r.node_entry() for r in requests if r.kind == "node"]
    clients = [ClientEntry(r.name, r.cert) for r in requests if r.kind == "client"]
    n = len(nodes)
    k = threshold if threshold is not None else n // 2 + 1
    existed = home.exists()
    try:
        skeleton = Environment(home, name or home.name or "consortium", max(2, k), [], [], 0)
        home.mkdir(parents=True, exist_ok=True)
        signer, roster_doc = first_roster(skeleton, founder, passphrase)
        client_pem = self_signed_client(home / "pki", founder)
        manifest = Manifest(
            skeleton.name,
            1,
            tuple(nodes),
            (ClientEntry(f"{founder}-client", client_pem), *clients),
            k,
            roster_doc.to_dict(),
            quorum,
            PROTOCOL_VERSION,
        )
        doc = signer.sign(SignedDocument(manifest.body()), context=CONSORTIUM_CONTEXT)
        env = install_locally(home, manifest, doc)
    except BaseException:
        if not existed:
            shutil.rmtree(home, ignore_errors=True)
        else:
            for leftover in ("keys", "pki"):
                shutil.rmtree(home / leftover, ignore_errors=True)
        raise
    return env, doc


def join_as_client(
    home: Path, doc: SignedDocument, *, person: str, passphrase: bytes
) -> tuple[Environment, JoinRequest]:
    """Make ``home`` a client environment of an existing consortium (``doc``: its
    manifest, whose fingerprint the caller compared): this machine's TLS key, the
    person's signing key, and the join request a steward adds with ``tessera consortium
    add-client`` (the machine's certificate and the person's public key)."""
    check_new_passphrase(passphrase)
    valid_name(person)
    home = home.resolve()
    if (home / "tessera.toml").exists():
        raise ConfigError(f"{home} already holds a Tessera environment")
    manifest = admit_manifest(None, None, doc)  # self-consistent: its own stewards signed it
    existed = home.exists()
    try:
        home.mkdir(parents=True, exist_ok=True)
        skeleton = Environment(home, manifest.name, manifest.threshold, [], [], 0)
        key = create_key(skeleton, person, passphrase)
        pem = self_signed_client(home / "pki", person)
        env = install_locally(home, manifest, doc)
        request = JoinRequest(
            "client",
            f"{person}-client",
            pem,
            protocol=PROTOCOL_VERSION,
            software=__version__,
            person=Person(person, frozenset({"researcher"}), key.verify_key),
        )
        _write_json(home / JOIN_FILE, request.to_dict())
    except BaseException:
        if not existed:
            shutil.rmtree(home, ignore_errors=True)
        raise
    return env, request


def install_locally(home: Path, manifest: Manifest, doc: SignedDocument) -> Environment:
    """Make (or update) the client environment at ``home`` for ``manifest``: the node
    set, the vault stores the nodes named, and the pinned node certificates."""
    try:
        old: Environment | None = Environment.load(home)
    except ConfigError:
        old = None
    stores = [
        StoreConfig(
            e.id,
            str(e.store.get("url", f"file:///nonexistent/node-{e.id}")),
            dict(e.store.get("options", {})),
        )
        for e in manifest.nodes
    ]
    extra = dict(old.extra) if old else {}
    extra["consortium"] = {"role": "client", "serial": manifest.serial}
    env = Environment(
        home=home,
        name=manifest.name,
        threshold=manifest.threshold,
        stores=stores,
        nodes=[NodeConfig(e.id, e.host, e.port) for e in manifest.nodes],
        mpc_threshold=manifest.mpc_threshold,
        extra=extra,
    )
    env.check()
    _write_text(home / "pki" / "ca.crt", "".join(e.cert for e in manifest.nodes))
    for e in manifest.nodes:  # what patient shares are sealed to (recommend)
        _write_text(home / "pki" / f"node-{e.id}.crt", e.cert)
    _write_json(home / CONSORTIUM_FILE, doc.to_dict())
    env.save()
    return env


def local_manifest(env: Environment) -> tuple[Manifest, SignedDocument]:
    """The manifest this client environment installed."""
    if "consortium" not in env.extra:
        raise ConfigError(
            f"{env.home} is an embedded environment, not a consortium's client "
            "(make one: tessera init DIR --consortium --node REQUEST ...)"
        )
    return load_manifest_file(env.home / CONSORTIUM_FILE)


def propose(
    env: Environment,
    change: Callable[[Manifest], Manifest],
    signer: Signer,
    *,
    roster_doc: dict[str, Any] | None = None,
) -> SignedDocument:
    """The next manifest after ``change``, carrying the roster the nodes hold now
    (``roster_doc``), signed by ``signer``."""
    current, _ = local_manifest(env)
    new = change(current)
    if roster_doc is not None:
        new = replace(new, roster=roster_doc)
    Manifest.from_body(new.body())  # every rule again, on the JSON form
    return signer.sign(SignedDocument(new.body()), context=CONSORTIUM_CONTEXT)


def cosign(doc: SignedDocument, signer: Signer) -> SignedDocument:
    """``doc`` with ``signer``'s signature added."""
    Manifest.from_body(doc.body)
    return signer.sign(doc, context=CONSORTIUM_CONTEXT)


def current_roster_document(env: Environment) -> dict[str, Any]:
    """The signed roster the custodians hold now (they must agree)."""
    from tessera.errors import TesseraError
    from tessera.workflows.nodes import NodeClient

    docs: list[dict[str, Any]] = []
    for node in env.nodes:  # one by one: the node being replaced may be down
        client = NodeClient(env, node.id, node.host, node.port)
        try:
            docs.append(client.request("GET", "/v1/roster"))
        except TesseraError:
            continue
        finally:
            client.close()
    distinct = {json.dumps(d, sort_keys=True) for d in docs}
    if len(distinct) > 1:
        raise PolicyError("the custodians hold different rosters: settle that first")
    if len(docs) < env.n // 2 + 1:
        raise PolicyError(
            f"only {len(docs)} of {env.n} custodians answer: a majority must, to read the roster"
        )
    return docs[0]


def push_manifest(env: Environment, doc: SignedDocument) -> dict[int, str]:
    """Hand ``doc`` to every node of the old and the new node set; install it here once
    a majority of the new set accepted it.  Per node: "installed", or why it refused or
    could not be reached (a new node not yet started installs it with ``node join``)."""
    from tessera.errors import TesseraError
    from tessera.workflows.nodes import NodeClient

    new = Manifest.from_body(doc.body)
    current, _ = local_manifest(env)
    targets: dict[int, list[NodeConfig]] = {}
    for n in env.nodes:
        targets.setdefault(n.id, []).append(n)
    for e in new.nodes:
        node = NodeConfig(e.id, e.host, e.port)
        if node not in targets.setdefault(e.id, []):
            targets[e.id].append(node)
    bundle = env.home / "pki" / f".push-{os.getpid()}.crt"
    certs = {e.cert for e in current.nodes} | {e.cert for e in new.nodes}
    _write_text(bundle, "".join(sorted(certs)))
    outcome: dict[int, str] = {}
    try:
        for node_id, nodes in sorted(targets.items()):
            for node in nodes:
                client = NodeClient(env, node_id, node.host, node.port, cafile=bundle)
                try:
                    client.request("POST", "/v1/consortium", json=doc.to_dict())
                    outcome[node_id] = "installed"
                except TesseraError as exc:
                    outcome.setdefault(node_id, str(exc))
                finally:
                    client.close()
    finally:
        bundle.unlink(missing_ok=True)
    accepted = sum(1 for e in new.nodes if outcome.get(e.id) == "installed")
    if accepted < new.n // 2 + 1:
        reasons = "; ".join(why for why in outcome.values() if why != "installed")
        raise PolicyError(
            f"only {accepted} of {new.n} nodes installed manifest serial {new.serial}: {reasons}"
        )
    if new.serial > current.serial:
        install_locally(env.home, new, doc)
    return outcome
