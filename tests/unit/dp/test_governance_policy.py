"""Approval and output-check rules in a table policy: JSON form, strictest, weakenings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tessera.dp.policy import OutputChecks, Policy, strictest, weakenings
from tessera.errors import InputError


def test_round_trip_and_old_documents() -> None:
    gated = replace(Policy.none(), approval_required=True, output_checks=OutputChecks(12))
    doc = gated.to_dict()
    assert doc["approval"] == "required" and doc["output_checks"]["threshold"] == 12
    assert Policy.from_dict(doc) == gated
    old = Policy.none().to_dict()
    del old["approval"], old["output_checks"]  # a policy signed before these rules existed
    parsed = Policy.from_dict(old)
    assert not parsed.approval_required and parsed.output_checks is None


@pytest.mark.parametrize(
    "change",
    [
        {"approval": "sometimes"},
        {"output_checks": {"threshold": 0}},
        {"output_checks": {"zeros": "yes"}},
        {"output_checks": {"nk_n": 3}},
        {"output_checks": {"p_percent": 101}},
        {"output_checks": []},
    ],
)
def test_malformed_rules_refused(change: dict[str, object]) -> None:
    doc = {**Policy.none().to_dict(), **change}
    with pytest.raises(InputError, match="not a valid privacy policy"):
        Policy.from_dict(doc)


def test_weakenings_name_each_loosened_rule() -> None:
    strict = replace(Policy.none(), approval_required=True, output_checks=OutputChecks())
    assert weakenings(strict, strict) == []
    assert weakenings(Policy.none(), strict) == []  # tightening needs one signature
    assert weakenings(strict, Policy.none()) == [
        "approval no longer required",
        "output checking switched off",
    ]
    looser = replace(strict, output_checks=OutputChecks(threshold=5, zeros=False))
    assert weakenings(strict, looser) == [
        "output check threshold 10 -> 5",
        "zeros no longer checked",
    ]
    dominance = replace(strict, output_checks=OutputChecks(p_percent=5.0))
    assert weakenings(strict, dominance) == ["a looser dominance rule"]


def test_strictest_of_several_tables() -> None:
    a = replace(Policy.none(), output_checks=OutputChecks(threshold=10, differencing=False))
    b = replace(Policy.none(min_group_size=3), approval_required=True,
                output_checks=OutputChecks(threshold=20, nk_k=80.0))  # fmt: skip
    both = strictest([a, b])
    assert both.approval_required
    assert both.output_checks == OutputChecks(threshold=20, nk_k=80.0, differencing=True)
    assert strictest([Policy.none()]).output_checks is None
