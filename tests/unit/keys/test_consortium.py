"""The consortium manifest: who may change the node set, and what a node will pin."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tessera.errors import InputError, PolicyError
from tessera.keys import SigningKey, generate
from tessera.keys.consortium import (
    CONSORTIUM_CONTEXT,
    ClientEntry,
    JoinRequest,
    Manifest,
    NodeEntry,
    admit_manifest,
)
from tessera.keys.documents import SignedDocument
from tessera.keys.people import ROSTER_CONTEXT, Person, Roster
from tessera.workflows.nodes_pki import self_signed_client, self_signed_node

KEYS = {name: generate() for name in ("alice", "bob", "carol", "rita")}
ROLES = {"alice": ("steward", "officer"), "bob": ("steward",), "carol": ("officer",)}


def _roster(*names: str, serial: int = 1) -> tuple[Roster, dict[str, object]]:
    people = tuple(
        Person(n, frozenset(ROLES.get(n, ("researcher",))), KEYS[n].verify_key) for n in names
    )
    roster = Roster(serial, people)
    doc = SignedDocument(roster.body()).signed_by("alice", KEYS["alice"], context=ROSTER_CONTEXT)
    return roster, doc.to_dict()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("certs")
    out = {f"node{i}": self_signed_node(base / f"n{i}", i, f"10.0.0.{i}") for i in (1, 2, 3, 4)}
    out["node3b"] = self_signed_node(base / "n3b", 3, "10.0.0.3")
    out["wrong-seat"] = self_signed_node(base / "ws", 2, "10.0.0.3")
    out["client"] = self_signed_client(base / "c", "alice")
    return out


def _manifest(certs: dict[str, str], roster_doc: dict[str, object], **kw: object) -> Manifest:
    nodes = tuple(NodeEntry(i, f"h{i}", f"10.0.0.{i}", 8443, certs[f"node{i}"]) for i in (1, 2, 3))
    base = Manifest("c", 1, nodes, (ClientEntry("alice-client", certs["client"]),), 2, roster_doc)
    return replace(base, **kw)  # type: ignore[arg-type]


def _sign(manifest: Manifest, *names: str, keys: dict[str, SigningKey] = KEYS) -> SignedDocument:
    doc = SignedDocument(manifest.body())
    for n in names:
        doc = doc.signed_by(n, keys[n], context=CONSORTIUM_CONTEXT)
    return doc


def test_first_manifest_needs_its_roster_stewards(certs: dict[str, str]) -> None:
    roster, roster_doc = _roster("alice", "bob", "rita")
    m = _manifest(certs, roster_doc)
    with pytest.raises(PolicyError, match="needs 2"):
        admit_manifest(None, None, _sign(m, "alice"))
    with pytest.raises(PolicyError, match="needs 2"):  # a researcher does not count
        admit_manifest(None, None, _sign(m, "alice", "rita"))
    assert admit_manifest(None, None, _sign(m, "alice", "bob")) == m
    _, solo_doc = _roster("alice")
    solo = _manifest(certs, solo_doc)  # one privileged person: one signature (bootstrap)
    assert admit_manifest(None, None, _sign(solo, "alice")).serial == 1
    assert roster.get("bob") is not None


def test_changes_need_a_quorum_of_the_held_roster_and_a_newer_serial(certs: dict[str, str]) -> None:
    roster, roster_doc = _roster("alice", "bob", "carol")
    m1 = _manifest(certs, roster_doc)
    replaced = NodeEntry(3, "h3b", "10.0.0.3", 8444, certs["node3b"])
    m2 = m1.with_node(replaced)
    assert m2.serial == 2 and m2.node(3).port == 8444
    with pytest.raises(PolicyError, match="1 valid"):
        admit_manifest(m1, roster, _sign(m2, "alice"))
    assert admit_manifest(m1, roster, _sign(m2, "alice", "carol")) == m2
    with pytest.raises(PolicyError, match="not newer"):  # a replayed older manifest
        admit_manifest(m2, roster, _sign(m1, "alice", "bob"))
    # a signer whose key the held roster does not have counts for nothing
    mallory = {**KEYS, "bob": generate()}
    with pytest.raises(PolicyError, match="1 valid"):
        admit_manifest(m1, roster, _sign(m2, "alice", "bob", keys=mallory))
    # an edited body after signing
    doc = _sign(m2, "alice", "bob")
    forged = SignedDocument({**doc.body, "threshold": 3}, doc.signatures)
    with pytest.raises(PolicyError):
        admit_manifest(m1, roster, forged)


def test_certificates_are_checked_per_seat(certs: dict[str, str]) -> None:
    with pytest.raises(InputError, match="seat 3 only"):
        NodeEntry.from_dict(
            {"id": 3, "name": "x", "host": "10.0.0.3", "port": 1, "cert": certs["wrong-seat"]}
        )
    with pytest.raises(InputError, match="does not name its address"):
        NodeEntry.from_dict({"id": 1, "host": "10.9.9.9", "port": 1, "cert": certs["node1"]})
    with pytest.raises(InputError, match="no node seat"):
        ClientEntry.from_dict({"name": "evil", "cert": certs["node1"]})
    with pytest.raises(InputError, match="not a PEM"):
        NodeEntry.from_dict({"id": 1, "host": "10.0.0.1", "port": 1, "cert": "junk"})


def test_manifest_shape_rules(certs: dict[str, str]) -> None:
    _, roster_doc = _roster("alice")
    m = _manifest(certs, roster_doc)
    with pytest.raises(InputError, match="pinned twice"):
        m.with_node(NodeEntry(3, "dup", "10.0.0.1", 9000, certs["node1"]))
    with pytest.raises(InputError, match="3 to 255"):
        Manifest("c", 1, m.nodes[:2], (), 2, roster_doc)
    with pytest.raises(InputError, match="ids must be"):
        Manifest("c", 1, (*m.nodes[:2], replace(m.nodes[2], id=4)), (), 2, roster_doc)
    with pytest.raises(InputError, match="only the last seat"):
        m.without_node(1)
    four = m.with_node(NodeEntry(4, "h4", "10.0.0.4", 8443, certs["node4"]))
    assert four.without_node(4).n == 3
    assert Manifest.from_body(m.body()) == m
    assert m.fingerprint() != four.fingerprint()


def test_join_requests(certs: dict[str, str], tmp_path: Path) -> None:
    doc = {
        "format": "tessera-join-request",
        "version": 1,
        "kind": "node",
        "id": 2,
        "name": "h2",
        "host": "10.0.0.2",
        "port": 8443,
        "cert": certs["node2"],
    }
    req = JoinRequest.from_dict(doc)
    assert req.node_entry().fingerprint == req.fingerprint
    assert JoinRequest.from_dict(req.to_dict()) == req
    with pytest.raises(InputError, match="fingerprint does not match"):
        JoinRequest.from_dict({**doc, "fingerprint": "00" * 32})
    with pytest.raises(InputError, match="credential"):
        JoinRequest.from_dict({**doc, "store": {"url": "s3://b", "options": {"secret": "x"}}})
    with pytest.raises(InputError, match="not a Tessera join request"):
        JoinRequest.from_dict({"kind": "node"})
