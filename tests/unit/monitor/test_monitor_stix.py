"""STIX 2.1 export: the required objects, TLP, ATT&CK ids, no account names, validation."""

from __future__ import annotations

import json

import pytest

from tessera.errors import InputError
from tessera.monitor import Alert, to_stix, validate_stix
from tessera.monitor.stix import pseudonym


def test_bundle_validates_and_holds_every_object_type(alerts: list[Alert]) -> None:
    bundle = to_stix(alerts)
    validate_stix(bundle)
    types = {o["type"] for o in bundle["objects"]}
    assert {
        "identity",
        "indicator",
        "sighting",
        "observed-data",
        "incident",
        "attack-pattern",
        "relationship",
        "ipv4-addr",
        "user-account",
    } <= types
    amber = "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82"
    for obj in bundle["objects"]:
        if obj["type"] not in ("ipv4-addr", "user-account"):
            assert obj["object_marking_refs"] == [amber]
    techniques = {
        ref["external_id"]
        for o in bundle["objects"]
        if o["type"] == "attack-pattern"
        for ref in o["external_references"]
    }
    assert {"T1110.003", "T1110.001", "T1070", "T1530"} <= techniques
    spray = next(o for o in bundle["objects"] if o.get("name") == "Password spraying")
    assert spray["pattern"].startswith("[ipv4-addr:value = '203.0.113.")


def test_account_names_do_not_leave(alerts: list[Alert]) -> None:
    text = json.dumps(to_stix(alerts, tlp="red"))
    users = {a.subject["user"] for a in alerts if a.subject.get("user")}
    assert users
    for user in users:
        assert f"'{user}'" not in text and f" {user} " not in text
        assert pseudonym(user, "tessera") in text
    assert "5e9bf4b9" not in pseudonym("x", "other")  # salted, stable
    assert pseudonym("x", "s") == pseudonym("x", "s") != pseudonym("x", "t")


def test_bad_tlp_and_broken_bundle_are_refused(alerts: list[Alert]) -> None:
    with pytest.raises(InputError, match="TLP"):
        to_stix(alerts, tlp="purple")
    bundle = to_stix(alerts[:2])
    indicator = next(o for o in bundle["objects"] if o["type"] == "indicator")
    indicator["pattern"] = "[ipv4-addr:value = "
    with pytest.raises(InputError, match="STIX validation failed"):
        validate_stix(bundle)
