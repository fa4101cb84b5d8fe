"""The roster: who may change it, and how many signatures each change needs."""

from __future__ import annotations

import pytest

from tessera.errors import InputError, IntegrityError, PolicyError
from tessera.keys import SigningKey, generate
from tessera.keys.documents import SignedDocument
from tessera.keys.people import ROSTER_CONTEXT, Person, Roster, admit_roster

KEYS = {name: generate() for name in ("ann", "bob", "cat", "dan", "eve")}


def person(name: str, *roles: str, key: SigningKey | None = None) -> Person:
    return Person(name, frozenset(roles), (key or KEYS[name]).verify_key)


def signed(roster: Roster, *names: str, keys: dict[str, SigningKey] = KEYS) -> SignedDocument:
    doc = SignedDocument(roster.body())
    for name in names:
        doc = doc.signed_by(name, keys[name], context=ROSTER_CONTEXT)
    return doc


ONE = Roster(1, (person("ann", "steward", "officer", "researcher"),))


def test_bootstrap_lets_the_founder_add_a_second_officer_alone() -> None:
    new = ONE.replaced(person("bob", "officer"))
    assert admit_roster(ONE, signed(new, "ann")).get("bob") is not None


def test_privileged_changes_need_two_once_two_exist() -> None:
    two = Roster(2, (*ONE.people, person("bob", "officer")))
    eve_steward = two.replaced(person("eve", "steward"))
    with pytest.raises(PolicyError, match="second"):
        admit_roster(two, signed(eve_steward, "ann"))
    assert admit_roster(two, signed(eve_steward, "ann", "bob")).get("eve") is not None
    # a researcher needs one privileged signature
    assert admit_roster(two, signed(two.replaced(person("cat", "researcher")), "bob"))
    # removing a privileged person, or swapping their key, needs two as well
    with pytest.raises(PolicyError, match="removed"):
        admit_roster(two, signed(two.without("bob"), "ann"))
    swapped = two.replaced(person("bob", "officer", key=KEYS["dan"]))
    with pytest.raises(PolicyError, match="key changes"):
        admit_roster(two, signed(swapped, "ann"))


def test_researchers_strangers_and_forgeries_change_nothing() -> None:
    two = Roster(2, (*ONE.people, person("cat", "researcher")))
    grow = two.replaced(person("dan", "researcher"))
    with pytest.raises(PolicyError, match="steward or officer"):
        admit_roster(two, signed(grow, "cat"))
    # a stranger's key signing under a trusted name does not count
    fake = {"ann": KEYS["eve"]}
    with pytest.raises(PolicyError, match="steward or officer"):
        admit_roster(two, signed(grow, "ann", keys=fake))
    # a valid signature on another body does not carry over
    doc = signed(grow, "ann")
    tampered = SignedDocument({**doc.body, "serial": 9}, doc.signatures)
    with pytest.raises(PolicyError):
        admit_roster(two, tampered)


def test_rollback_and_malformed_rosters_refused() -> None:
    two = ONE.replaced(person("bob", "officer"))
    with pytest.raises(PolicyError, match="not newer"):
        admit_roster(two, signed(ONE, "ann"))
    with pytest.raises(InputError):
        Roster(1, (person("ann", "officer"), person("ann", "steward")))
    with pytest.raises(InputError):
        Person("x", frozenset({"admin"}), KEYS["ann"].verify_key)
    with pytest.raises(InputError):
        Roster.from_body({"format": "tessera-roster", "version": 1, "serial": "1", "people": []})
    emptied = Roster(2, (person("ann", "researcher"),))
    with pytest.raises(PolicyError, match="at least one"):
        admit_roster(ONE, signed(emptied, "ann"))


def test_documents_round_trip_and_reject_junk() -> None:
    doc = signed(ONE, "ann")
    again = SignedDocument.from_dict(doc.to_dict())
    assert again == doc
    for junk in ({}, {"body": 1}, {"body": {}, "signatures": "x"}):
        with pytest.raises((InputError, IntegrityError)):
            SignedDocument.from_dict(junk)
    with pytest.raises(InputError, match="length"):
        SignedDocument.from_dict(
            {"body": {}, "signatures": [{"signer": "a", "key_id": "b", "signature": "00"}]}
        )
