"""One custodian's escrow: sealed objects, deposits, and releases only under a quorum."""

from __future__ import annotations

import json
import math
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
from tessera.keys.ephemeral import Receiver
from tessera.keys.ephemeral import open_sealed as open_to
from tessera.keys.people import ROSTER_CONTEXT, Person, Roster, admit_roster
from tessera.workflows.escrow import (
    REIDENTIFY_CONTEXT,
    RUN_CONTEXT,
    Escrow,
    combine_key,
    encode_share,
    is_sealed,
    open_sealed,
    open_with_shares,
    seal,
)
from tessera.workflows.escrow_run import run_body, share_label
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


RECEIVER = Receiver.new()  # the requester's one-time key


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

    def run(
        self, req: dict[str, Any], by: str = "", receiver: Any = RECEIVER, **changes: Any
    ) -> dict[str, Any]:
        """A run document for ``req`` signed by ``by`` (its requester unless named)."""
        body = req.get("body", {})
        run = run_body(str(body.get("nonce", "0" * 32)), RECEIVER.public, now=self.now)
        run["receiver"] = receiver.public if isinstance(receiver, Receiver) else receiver
        run.update(changes)
        signer = PEOPLE[by or str(body.get("requested_by", "stella"))]
        return signer.sign(SignedDocument(run), context=RUN_CONTEXT).to_dict()

    def release(self, req: dict[str, Any], **run: Any) -> dict[str, Any]:
        """``escrow.release`` of ``req`` with its requester's run document."""
        return self.escrow.release({"request": req, "run": self.run(req, **run)})


def opened(answer: dict[str, Any], req: dict[str, Any], receiver: Receiver = RECEIVER) -> Any:
    """The released shares, opened with ``receiver``: {name: [{"digest", "share"}]}."""
    nonce = req["body"]["nonce"]
    return {
        name: [
            {
                "digest": i["digest"],
                "share": open_to(
                    receiver, i["sealed"], label=share_label(nonce, name, i["digest"])
                ).decode(),
            }
            for i in items
        ]
        for name, items in answer["released"].items()
    }


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
    req = request("stella", "otto")
    released = opened(world.release(req), req)[REF]
    assert [r["digest"] for r in released] == [world.sealed.digest, again.digest]
    assert released[0]["share"] == encode_share(world.sealed.shares[0])


def test_two_privileged_signers_release_once(world: World) -> None:
    doc = request("stella", "otto")
    answer = world.release(doc)
    assert opened(answer, doc)[REF] == [
        {"digest": world.sealed.digest, "share": encode_share(world.sealed.shares[0])}
    ]
    assert encode_share(world.sealed.shares[0]) not in json.dumps(answer)  # sealed only
    with pytest.raises(ReplayError, match="used already"):
        world.release(doc)
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
        world.release(request(*signers))
    assert world.outcomes() == ["denied"]
    assert world.audit.events[0].detail["released"] == 0


def test_the_same_person_twice_counts_once(world: World) -> None:
    doc = request("stella")
    doc["signatures"].append(dict(doc["signatures"][0]))
    with pytest.raises(PolicyError, match="this request has 1"):
        world.release(doc)


def test_strangers_and_forgeries_do_not_count(world: World) -> None:
    body = reidentify_body([REF], "complaint", "stella")
    doc = PEOPLE["stella"].sign(SignedDocument(body), context=REIDENTIFY_CONTEXT)
    forged = Signer("otto", generate()).sign(doc, context=REIDENTIFY_CONTEXT)  # otto's name
    stranger = Signer("zed", generate()).sign(doc, context=REIDENTIFY_CONTEXT)
    for attempt in (forged, stranger):
        with pytest.raises(PolicyError, match="this request has 1"):
            world.release(attempt.to_dict())
    # a signature under another context (a roster's) does not count either
    other = PEOPLE["otto"].sign(doc, context=ROSTER_CONTEXT)
    with pytest.raises(PolicyError, match="this request has 1"):
        world.release(other.to_dict())
    # the body changed after signing: nobody's signature holds
    tampered = cosign(SignedDocument.from_dict(doc.to_dict()), PEOPLE["otto"]).to_dict()
    tampered["body"]["refs"] = ["dicom-identity/TS0000000000000000000A"]
    with pytest.raises(PolicyError, match="this request has 0"):
        world.release(tampered)


def test_reason_age_and_requester_checked(world: World) -> None:
    with pytest.raises(PolicyError, match="needs a reason"):
        world.release(request("stella", "otto", reason="  "))
    with pytest.raises(ReplayError, match=r"8\.0 days ago"):
        world.release(request("stella", "otto", issued_at=int(world.now) - 8 * 86400))
    with pytest.raises(ReplayError, match="future"):
        world.release(request("stella", "otto", issued_at=int(world.now) + 3600))
    with pytest.raises(PolicyError, match="not signed by the person it names"):
        world.release(request("otto", "olga", requested_by="stella"))
    with pytest.raises(InputError):
        world.release(request("stella", "otto", nonce="not-hex"))
    with pytest.raises(IntegrityError, match="unsigned"):
        world.release({"body": {"format": "tessera-reidentify"}, "signatures": []})
    assert set(world.outcomes()) == {"denied"} and len(world.outcomes()) == 6
    # six days old is still fine
    world.release(request("stella", "otto", issued_at=int(world.now) - 6 * 86400))


def test_a_refused_request_can_be_cosigned_later(world: World) -> None:
    body = reidentify_body([REF], "complaint", "stella")
    alone = sign_reidentify(body, PEOPLE["stella"])
    with pytest.raises(PolicyError):
        world.release(alone.to_dict())
    both = cosign(alone, PEOPLE["olga"])
    assert world.release(both.to_dict())["released"][REF]


def test_legacy_names_are_approved_with_nothing_released(world: World) -> None:
    legacy = "dicom-identity/TS00000000000000000001"
    doc = request("stella", "otto", refs=[legacy])
    assert world.release(doc)["released"] == {legacy: []}
    assert world.outcomes() == ["success"]


def test_the_rosters_quorum_applies(tmp_path: Path) -> None:
    one = World(tmp_path / "one", quorum=1)
    assert one.release(request("stella"))["released"][REF]
    three = World(tmp_path / "three", quorum=3)
    with pytest.raises(PolicyError, match="needs 3 signatures"):
        three.release(request("stella", "otto"))
    assert three.release(request("stella", "otto", "olga"))["released"][REF]


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


# ----- the run document: shares only for the requester, sealed to their one-time key -----
def test_shares_open_only_with_the_runners_receiver(world: World) -> None:
    req = request("stella", "otto")
    answer = world.release(req)
    share = encode_share(world.sealed.shares[0])
    assert share not in json.dumps(answer) and "share" not in answer["released"][REF][0]
    assert opened(answer, req)[REF][0]["share"] == share
    with pytest.raises(IntegrityError):
        opened(answer, req, Receiver.new())
    sealed = answer["released"][REF][0]["sealed"]
    with pytest.raises(IntegrityError):  # bound to the request, the object and the digest
        open_to(RECEIVER, sealed, label=share_label("0" * 32, REF, world.sealed.digest))


def test_a_custodian_replaying_the_request_gets_nothing_it_can_open(world: World) -> None:
    """otto co-signed (and runs a custodian): he replays stella's approved request."""
    req = request("stella", "otto")
    mine = Receiver.new()
    with pytest.raises(InputError, match="run document"):
        world.escrow.release({"request": req})  # no run document
    with pytest.raises(InputError, match="run document"):
        world.escrow.release({"request": req, "run": None})
    with pytest.raises(InputError):
        world.escrow.release(req)  # the bare request, as before the run document
    with pytest.raises(
        PolicyError, match=r"not signed by the person who filed the request \(stella\)"
    ):
        world.release(req, by="otto", receiver=mine)  # his own run document
    stranger = Signer("stella", generate())  # her name, another key
    forged = stranger.sign(SignedDocument(run_body(req["body"]["nonce"], mine.public, world.now)),
                           context=RUN_CONTEXT)  # fmt: skip
    with pytest.raises(PolicyError, match="not signed by the person"):
        world.escrow.release({"request": req, "run": forged.to_dict()})
    hers = world.run(req)  # stella's run document, seen by otto: his own key swapped in
    hers["body"]["receiver"] = mine.public
    with pytest.raises(PolicyError, match="not signed by the person"):
        world.escrow.release({"request": req, "run": hers})
    with pytest.raises(PolicyError, match="another re-identification request"):
        world.release(req, nonce="f" * 32)
    assert world.outcomes() == ["denied"] * 7
    assert all(e.detail["released"] == 0 for e in world.audit.events)
    # her run document as it is: only ciphertexts for her key
    answer = world.escrow.release({"request": req, "run": world.run(req)})
    assert encode_share(world.sealed.shares[0]) not in json.dumps(answer)
    with pytest.raises(IntegrityError):
        opened(answer, req, mine)
    recorded = json.dumps([[str(v) for v in e.detail.values()] for e in world.audit.events])
    assert encode_share(world.sealed.shares[0]) not in recorded


def test_the_run_document_is_fresh(world: World) -> None:
    req = request("stella", "otto")
    with pytest.raises(ReplayError, match="600 s ago"):
        world.release(req, issued_at=world.now - 600)
    with pytest.raises(ReplayError, match="future"):
        world.release(req, issued_at=world.now + 600)
    assert opened(world.release(req, issued_at=int(world.now) - 290), req)[REF]


@pytest.mark.parametrize("issued", [1e300, math.nan, math.inf, -math.inf, -1, 10**400, True, "1"])
def test_a_malformed_run_issued_at_is_an_input_error(world: World, issued: Any) -> None:
    req = request("stella", "otto")
    with pytest.raises(InputError, match="issued_at") as caught:
        world.release(req, issued_at=issued)
    assert "\n" not in str(caught.value)
    assert world.outcomes() == ["denied"]


ZERO_KEY = "A" * 43 + "="  # 32 zero bytes: a low-order X25519 point


@pytest.mark.parametrize("receiver", ["", "not base64!", "AAAA", ZERO_KEY, None, 7, "x" * 5000])
def test_a_malformed_receiver_key_is_refused(world: World, receiver: Any) -> None:
    req = request("stella", "otto")
    with pytest.raises(InputError, match="receiver"):
        world.release(req, receiver=receiver)
    assert world.outcomes() == ["denied"]
    assert opened(world.release(req), req)[REF]  # the nonce was not used up
