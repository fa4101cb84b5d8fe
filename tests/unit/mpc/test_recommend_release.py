"""Recommendation documents: exact small treatments suppressed, DP flags (#18)."""

from __future__ import annotations

import pytest

from tessera.dp import Policy
from tessera.dp.plan import plan_release
from tessera.dp.release import postprocess
from tessera.errors import InputError, IntegrityError
from tessera.mpc.knn_spec import KnnJob
from tessera.tables.schema import Column, Schema
from tessera.workflows.dp import PrivateAnswer
from tessera.workflows.recommend import (
    Profile,
    build_job,
    dp_aggregates,
    exact_document,
    private_document,
    table_profile,
)

SCHEMA = Schema(
    (
        Column("age", "integer", 18, 90, nullable=False),
        Column("regimen", "categorical", categories=("A", "B", "C"), nullable=False),
        Column("ttf", "integer", 0, 3000, nullable=False),
        Column("failed", "boolean", nullable=False),
    )
)
PROFILE = Profile("regimen", "ttf", "failed", {"age": 1})


def _job(min_group: int = 5) -> KnnJob:
    job = build_job(SCHEMA, PROFILE, 100, mode="k")
    return KnnJob.from_json(job.to_json().replace('"min_group": 0', f'"min_group": {min_group}'))


def test_min_group_round_trips_and_is_checked() -> None:
    assert _job(5).min_group == 5
    with pytest.raises(InputError, match="min_group"):
        _job(500)


def test_exact_document_marks_what_the_mpc_suppressed() -> None:
    job = _job(5)
    # flags, then (count, time sum, failures) per treatment; B's cells zeroed in the MPC
    values = [1, 0, 1, 12, 12000, 3, 0, 0, 0, 8, 800, 8]
    doc = exact_document(job, SCHEMA, values, 20, 0.1)
    a, b, c = doc["treatments"]
    assert a["count"] == 12 and a["mean_time_to_failure"] == 1000 and not a["suppressed"]
    assert b["suppressed"] and b["count"] is None and b["mean_time_to_failure"] is None
    assert "fewer than 5" in b["note"]
    assert c["failure_share"] == 1.0 and doc["min_group"] == 5 and doc["k"] == 20
    with pytest.raises(IntegrityError, match="malformed"):
        exact_document(job, SCHEMA, [2, 0, 1, *values[3:]], 20, 0.1)


def test_dp_document_flags_uninformative_means() -> None:
    job = build_job(SCHEMA, PROFILE, 100, mode="k")
    policy = Policy.dp(total_epsilon=10.0, default_epsilon=0.5, min_group_size=2)
    plan = plan_release(policy, dp_aggregates(SCHEMA, job), cells=3, custodians=3, threshold=1)
    noisy = {"count": [3, 4000, 1], "sum:ttf": [3000, 4_000_000, 0], "sum:failed": [1, 900, 0]}
    doc = private_document(job, SCHEMA, PrivateAnswer(postprocess(plan, noisy)), 20, 0.1)
    few, many, gone = doc["treatments"]
    assert few["uninformative"]["mean_time_to_failure"] is True
    assert many["uninformative"] == {
        "count": False,
        "mean_time_to_failure": False,
        "failures": False,
        "failure_share": False,
    }
    assert gone["suppressed"] and "below 2" in gone["note"]


def test_the_profile_saved_with_the_table() -> None:
    manifest = {
        "name": "t",
        "recommend": {"treatment": "regimen", "time": "ttf", "weights": {"age": 1}},
    }
    assert table_profile(manifest) == Profile("regimen", "ttf", None, {"age": 1})
    with pytest.raises(InputError, match="give --profile"):
        table_profile({"name": "t"})


def test_human_cells_round_to_the_interval_and_flag() -> None:
    from tessera.cli.recommend import _with

    assert _with(1546.0, None, None) == "1546.0"
    assert _with(12, [3.0, 21.0], False) == "12 [3, 21]"
    assert _with(0.5, [0.1, 0.9], True, percent=True) == "50% [10%, 90%] (uninformative)"
    assert _with(811.349, [700.0, 920.0], False) == "811 [700, 920]"
