"""The recommender's decision model: one scenario per rule, and input validation."""

from __future__ import annotations

from typing import Any

import pytest

from tessera.errors import InputError
from tessera.risk import Request, RiskSummary, recommend
from tessera.risk.recommend import risk_level, suggest_epsilon

LOW = {"k_anonymity": 50, "prosecutor_highest": 0.02, "population_uniqueness": 0.0}
HIGH = {"k_anonymity": 1, "prosecutor_highest": 1.0, "population_uniqueness": 0.3}


@pytest.mark.parametrize(
    ("request_", "primary", "recommended"),
    [
        ({"output": "none"}, "vault", {"vault"}),
        (
            {"parties": 3, "output": "aggregate", "recipients": "internal", "risk": LOW},
            "secure_sql",
            {"vault", "secure_sql"},
        ),
        (
            {"parties": 3, "output": "aggregate", "recipients": "external", "risk": LOW},
            "secure_sql",
            {"vault", "secure_sql", "dp_release"},
        ),
        (
            {"parties": 1, "compute_trust": "untrusted", "output": "model", "risk": LOW},
            "homomorphic_encryption",
            {"vault", "secure_sql", "homomorphic_encryption"},
        ),
        (
            {"parties": 1, "output": "aggregate", "recipients": "public", "risk": LOW},
            "dp_release",
            {"vault", "dp_release"},
        ),
        (
            {"output": "record_level", "recipients": "external", "risk": LOW},
            "deidentification",
            {"vault", "deidentification"},
        ),
        (
            {"output": "record_level", "recipients": "external", "risk": HIGH},
            "deidentification",
            {"vault", "deidentification", "synthetic_data"},
        ),
        (
            {"output": "record_level", "recipients": "public", "sensitivity": "high"},
            "synthetic_data",
            {"vault", "synthetic_data"},
        ),
        (
            {"output": "record_level", "data_types": ["genomic"]},
            "synthetic_data",
            {"vault", "synthetic_data"},
        ),
        (
            {"output": "aggregate", "data_types": ["imaging"], "parties": 2, "risk": LOW},
            "vault",
            {"vault"},
        ),
    ],
)
def test_scenarios(request_: dict[str, Any], primary: str, recommended: set[str]) -> None:
    rec = recommend(request_)
    assert rec.primary == primary
    assert set(rec.recommended) == recommended
    assert rec.recommended[0] == primary
    for advice in rec.advice:
        assert advice.reasons, advice.mechanism


def test_epsilon_suggestion() -> None:
    r = Request.from_mapping({"sensitivity": "high", "recipients": "public", "queries": 4})
    assert suggest_epsilon(r) == (0.5, 0.125)
    rec = recommend(r)
    dp = next(a for a in rec.advice if a.mechanism == "dp_release")
    assert dp.recommended and dp.parameters["epsilon_per_release"] == 0.125
    assert any("0.125" in reason for reason in dp.reasons)


def test_target_k_by_recipient_and_override() -> None:
    def target(req: dict[str, Any]) -> int:
        rec = recommend({"output": "record_level", **req})
        return int(
            next(a for a in rec.advice if a.mechanism == "deidentification").parameters["target_k"]
        )

    assert target({"recipients": "internal"}) == 5
    assert target({"recipients": "external"}) == 11
    assert target({"recipients": "external", "target_k": 7}) == 7


def test_risk_levels() -> None:
    assert risk_level(RiskSummary()) == "unknown"
    assert risk_level(RiskSummary(**LOW)) == "low"
    assert risk_level(RiskSummary(k_anonymity=10)) == "medium"
    assert risk_level(RiskSummary(**HIGH)) == "high"
    assert risk_level(RiskSummary(direct_identifiers=1)) == "high"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"output": "everything"}, "output must be one of"),
        ({"parties": 0}, "parties must be an integer >= 1"),
        ({"parties": True}, "parties must be an integer"),
        ({"data_types": ["smell"]}, "data_types must be one of"),
        ({"colour": "red"}, "unknown request field: colour"),
        ({"risk": {"k": 3}}, "unknown risk field: k"),
        ({"risk": 3}, "risk must be a mapping"),
    ],
)
def test_invalid_requests(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Request.from_mapping(raw)


def test_as_dict_is_json_ready() -> None:
    import json

    doc = recommend({"parties": 2}).as_dict()
    assert json.loads(json.dumps(doc)) == doc
    assert {m["mechanism"] for m in doc["mechanisms"]} == {
        "vault",
        "secure_sql",
        "dp_release",
        "homomorphic_encryption",
        "deidentification",
        "synthetic_data",
    }
