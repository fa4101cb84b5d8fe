"""One custodian's escrow: sealed objects, deposits, and releases only under a quorum."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tessera.core.audit_sink import MemoryAuditSink
from tessera.errors import (
    InputError,
    InsufficientSharesError,
    IntegrityError,
    PolicyError,
    ReplayError,
    UsageError,
)
from tessera.keys import generate
from tessera.keys.documents import SignedDocument
from tessera.keys.people import ROSTER_CONTEXT, Person, Roster, admit_roster
from tessera.workflows.escrow import (
    REIDENTIFY_CONTEXT,
    Escrow,
    combine_key,
    encode_share,
    is_sealed,
    open_sealed,
    open_with_shares,
    seal,
)
from tessera.workflows.people import Signer
from tessera.workflows.reidentify import cosign, reidentify_body, sign_reidentify

PEOPLE = {n: Signer(n, generate()) for n in ("stella", "otto", "olga", "rita")}
ROLES = {
    "stella": ("steward",),
    "otto": ("officer",),
    "olga": ("officer",),
    "rita": ("researcher",),
}
REF = "dicom-identity/TS0123456789ABCDEF0123"
SECRET = b'{"PatientName": "Doe^Jane", "PatientID": "ID-4711"}'


def roster(quorum: int = 2) -> Roster:
    people = tuple(Person(n, frozenset(ROLES[n]), s.key.verify_key) for n, s in PEOPLE.items())
    return Roster(1, people, quorum)


class World:
    def __init__(self, root: Path, quorum: int = 2) -> None:
        self.roster = roster(quorum)
        self.audit = MemoryAuditSink()
        self.now = time.time()
        self.escrow = Escrow(
            root, node_id=1, roster=lambda: self.roster, audit=self.audit, clock=lambda: self.now
        )
        self.sealed = seal(REF, SECRET, parties=3, t=1)
        item = {
            "name": REF,
            "digest": self.sealed.digest,
            "share": encode_share(self.sealed.shares[0]),
            "node": 1,
        }
        assert self.escrow.deposit({"deposits": [item]}) == 1

    def outcomes(self) -> list[str]:
        return [e.outcome for e in self.audit.events]


@pytest.fixture
def world(tmp_path: Path) -> Any:
    w = World(tmp_path / "node")
    yield w
    w.escrow.close()


def request(*signers: str, **changes: Any) -> dict[str, Any]:
    body = reidentify_body([REF], "complaint 2024-17", signers[0])
    body.update(changes)
    doc = SignedDocument(body)
    for name in signers:
        doc = PEOPLE[name].sign(doc, context=REIDENTIFY_CONTEXT)
    return doc.to_dict()


def test_sealed_objects_open_with_any_t_plus_one_shares_only() -> None:
    sealed = seal(REF, SECRET, parties=3, t=1)
    assert is_sealed(sealed.envelope) and SECRET not in sealed.envelope
    assert b"Doe" not in sealed.envelope and b"4711" not in sealed.envelope
    for pair in ((1, 2), (1, 3), (2, 3)):
        key = combine_key({i: sealed.shares[i - 1] for i in pair}, 1)
        assert open_sealed(REF, sealed.envelope, key) == SECRET
    with pytest.raises(InsufficientSharesError):
        combine_key({1: sealed.shares[0]}, 1)
    key = combine_key({1: sealed.shares[0], 2: sealed.shares[1]}, 1)
    with pytest.raises(IntegrityError):  # bound to its vault name
        open_sealed("dicom-identity/TS0000000000000000000", sealed.envelope, key)
    tampered = sealed.envelope[:-1] + bytes([sealed.envelope[-1] ^ 1])
    with pytest.raises(IntegrityError):
        open_sealed(REF, tampered, key)
    wrong = {1: sealed.shares[0], 2: (sealed.shares[1] + 1)}
    with pytest.raises(IntegrityError):
        open_sealed(REF, sealed.envelope, combine_key(wrong, 1))
    # a wrong share among more than t+1 is detected, and outvoted by the others
    bad = {1: sealed.shares[0], 2: sealed.shares[1] + 5, 3: sealed.shares[2]}
    with pytest.raises(IntegrityError, match="disagree"):
        combine_key(bad, 1)
    assert open_with_shares(REF, sealed.envelope, bad, 1) == SECRET
    with pytest.raises(IntegrityError):
        open_with_shares(REF, sealed.envelope, {1: bad[1], 2: bad[2]}, 1)


def test_deposits_are_never_replaced(world: World) -> None:
    held = {"name": REF, "digest": world.sealed.digest, "node": 1}
    same = {**held, "share": encode_share(world.sealed.shares[0])}
    assert world.escrow.deposit({"deposits": [same]}) == 0  # the same share again: fine
    other = {**held, "share": encode_share(world.sealed.shares[1])}
    with pytest.raises(PolicyError, match="already deposited"):
        world.escrow.deposit({"deposits": [other]})
    with pytest.raises(InputError, match="another custodian"):
        world.escrow.deposit({"deposits": [{**same, "node": 2}]})
    with pytest.raises(InputError):
        world.escrow.deposit({"deposits": [{**same, "share": "zz"}]})
    # a retry after a failed vault write (another envelope) is kept next to the first
    again = seal(REF, SECRET, parties=3, t=1)
    item = {"name": REF, "digest": again.digest, "share": encode_share(again.shares[0]), "node": 1}
    assert world.escrow.deposit({"deposits": [item]}) == 1
    released = world.escrow.release(request("stella", "otto"))["released"][REF]
    assert [r["digest"] for r in released] == [world.sealed.digest, again.digest]


def test_two_privileged_signers_release_once(world: World) -> None:
    doc = request("stella", "otto")
    answer = world.escrow.release(doc)
    assert answer["released"][REF] == [
        {"digest": world.sealed.digest, "share": encode_share(world.sealed.shares[0])}
    ]
    with pytest.raises(ReplayError, match="used already"):
        world.escrow.release(doc)
    assert world.outcomes() == ["success", "denied"]
    event = world.audit.events[0]
    assert event.action == "dicom.reidentify" and event.source == "node-1"
    assert event.detail["signers"] == "otto,stella" and event.detail["refs"] == REF
    assert event.detail["reason"] == "complaint 2024-17" and event.patient == REF.split("/")[1]
    recorded = json.dumps([[str(v) for v in e.detail.values()] for e in world.audit.events])
    assert encode_share(world.sealed.shares[0]) not in recorded


@pytest.mark.parametrize(
    ("signers", "has"),
    [
        (("stella",), 1),
        (("stella", "rita"), 1),  # a researcher does not count
        (("rita",), 0),
    ],
)
def test_too_few_privileged_signers_refused(
    world: World, signers: tuple[str, ...], has: int
) -> None:
    with pytest.raises(
        PolicyError, match=f"needs 2 signatures of stewards or officers; this request has {has}"
    ):
        world.escrow.release(request(*signers))
    assert world.outcomes() == ["denied"]
    assert world.audit.events[0].detail["released"] == 0


def test_the_same_person_twice_counts_once(world: World) -> None:
    doc = request("stella")
    doc["signatures"].append(dict(doc["signatures"][0]))
    with pytest.raises(PolicyError, match="this request has 1"):
        world.escrow.release(doc)


def test_strangers_and_forgeries_do_not_count(world: World) -> None:
    body = reidentify_body([REF], "complaint", "stella")
    doc = PEOPLE["stella"].sign(SignedDocument(body), context=REIDENTIFY_CONTEXT)
    forged = Signer("otto", generate()).sign(doc, context=REIDENTIFY_CONTEXT)  # otto's name
    stranger = Signer("zed", generate()).sign(doc, context=REIDENTIFY_CONTEXT)
    for attempt in (forged, stranger):
        with pytest.raises(PolicyError, match="this request has 1"):
            world.escrow.release(attempt.to_dict())
    # a signature under another context (a roster's) does not count either
    other = PEOPLE["otto"].sign(doc, context=ROSTER_CONTEXT)
    with pytest.raises(PolicyError, match="this request has 1"):
        world.escrow.release(other.to_dict())
    # the body changed after signing: nobody's signature holds
    tampered = cosign(SignedDocument.from_dict(doc.to_dict()), PEOPLE["otto"]).to_dict()
    tampered["body"]["refs"] = ["dicom-identity/TS0000000000000000000A"]
    with pytest.raises(PolicyError, match="this request has 0"):
        world.escrow.release(tampered)


def test_reason_age_and_requester_checked(world: World) -> None:
    with pytest.raises(PolicyError, match="needs a reason"):
        world.escrow.release(request("stella", "otto", reason="  "))
    with pytest.raises(ReplayError, match=r"8\.0 days ago"):
        world.escrow.release(request("stella", "otto", issued_at=int(world.now) - 8 * 86400))
    with pytest.raises(ReplayError, match="future"):
        world.escrow.release(request("stella", "otto", issued_at=int(world.now) + 3600))
    with pytest.raises(PolicyError, match="not signed by the person it names"):
        world.escrow.release(request("otto", "olga", requested_by="stella"))
    with pytest.raises(InputError):
        world.escrow.release(request("stella", "otto", nonce="not-hex"))
    with pytest.raises(IntegrityError, match="unsigned"):
        world.escrow.release({"body": {"format": "tessera-reidentify"}, "signatures": []})
    assert set(world.outcomes()) == {"denied"} and len(world.outcomes()) == 6
    # six days old is still fine
    world.escrow.release(request("stella", "otto", issued_at=int(world.now) - 6 * 86400))


def test_a_refused_request_can_be_cosigned_later(world: World) -> None:
    body = reidentify_body([REF], "complaint", "stella")
    alone = sign_reidentify(body, PEOPLE["stella"])
    with pytest.raises(PolicyError):
        world.escrow.release(alone.to_dict())
    both = cosign(alone, PEOPLE["olga"])
    assert world.escrow.release(both.to_dict())["released"][REF]


def test_legacy_names_are_approved_with_nothing_released(world: World) -> None:
    legacy = "dicom-identity/TS00000000000000000001"
    doc = request("stella", "otto", refs=[legacy])
    assert world.escrow.release(doc)["released"] == {legacy: []}
    assert world.outcomes() == ["success"]


def test_the_rosters_quorum_applies(tmp_path: Path) -> None:
    one = World(tmp_path / "one", quorum=1)
    assert one.escrow.release(request("stella"))["released"][REF]
    three = World(tmp_path / "three", quorum=3)
    with pytest.raises(PolicyError, match="needs 3 signatures"):
        three.escrow.release(request("stella", "otto"))
    assert three.escrow.release(request("stella", "otto", "olga"))["released"][REF]


def test_lowering_the_quorum_needs_two_privileged_signers() -> None:
    current = roster(3)
    lower = current.with_reidentify_quorum(1)
    assert Roster.from_body(lower.body()).reidentify_quorum == 1
    assert "reidentify_quorum" not in roster().body()  # the default is left out
    doc = PEOPLE["stella"].sign(SignedDocument(lower.body()), context=ROSTER_CONTEXT)
    with pytest.raises(PolicyError, match="quorum drops from 3 to 1"):
        admit_roster(current, doc)
    both = PEOPLE["otto"].sign(doc, context=ROSTER_CONTEXT)
    assert admit_roster(current, both).reidentify_quorum == 1
    higher = current.with_reidentify_quorum(4)
    one = PEOPLE["stella"].sign(SignedDocument(higher.body()), context=ROSTER_CONTEXT)
    assert admit_roster(current, one).reidentify_quorum == 4  # raising it: one signer
    kept = admit_roster(current, one).replaced(
        Person("zoe", frozenset({"researcher"}), generate().verify_key)
    )
    assert kept.reidentify_quorum == 4
    for bad in (0, 9, "2", True):
        with pytest.raises(InputError):
            Roster.from_body({**current.body(), "reidentify_quorum": bad})


def test_client_helpers_validate() -> None:
    with pytest.raises(UsageError, match="reason"):
        reidentify_body([REF], " ", "stella")
    body = reidentify_body(["TS0123456789ABCDEF0123"], "why", "stella")
    assert body["refs"] == [REF] and len(body["nonce"]) == 32
    with pytest.raises(UsageError, match="requester"):
        sign_reidentify(body, PEOPLE["otto"])
