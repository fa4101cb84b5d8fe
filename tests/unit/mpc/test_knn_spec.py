"""Job spec, patient encoding and the plaintext oracle of secure kNN recommendation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.errors import InputError
from tessera.mpc.knn_spec import Feature, KnnJob, PatientQuery, distances_plain, recommend_plain

from .test_knn_data import make_table


def test_job_json_round_trip() -> None:
    job = make_table(20, 1).job
    again = KnnJob.from_json(job.to_json())
    assert again == job
    assert again.part_names()[:3] == ["age.val", "age.sq", "cd4.val"]


def test_bounds_give_the_bit_lengths() -> None:
    job = make_table(1000, 1).job
    # 2*3^2 + 1*5^2 + 3*1^2 + (1+2+1+2) = 18 + 25 + 3 + 6 = 52
    assert job.max_distance == 52
    assert job.distance_bits == 6  # 53 fits in 6 bits
    assert job.index_bits == 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "top"}, "mode"),
        ({"rows": 0}, "no rows"),
        ({"treatments": 0}, "no treatments"),
        ({"threshold": 3}, "threshold"),
        ({"features": (Feature("a", "numeric", 1, 0, 9), Feature("a", "binary", 1))}, "duplicate"),
        ({"features": (Feature("a", "numeric", 1 << 20, 0, 1000),)}, "bits"),
    ],
)
def test_bad_jobs_are_refused(change: dict[str, object], message: str) -> None:
    base = {"rows": 5, "features": (Feature("a", "numeric", 1, 0, 9),), "treatment": "t"}
    base |= {"treatments": 2, "time": "ttf"}
    with pytest.raises(InputError, match=message):
        KnnJob(**(base | change))  # type: ignore[arg-type]


def test_bad_features_are_refused() -> None:
    with pytest.raises(InputError, match="kind"):
        Feature("a", "text", 1)
    with pytest.raises(InputError, match="non-negative"):
        Feature("a", "numeric", -1, 0, 3)
    with pytest.raises(InputError, match="binary"):
        Feature("a", "binary", 1, 0, 2)


def test_malformed_job_json_is_an_input_error() -> None:
    with pytest.raises(InputError, match="malformed"):
        KnnJob.from_json("{}")
    with pytest.raises(InputError, match="malformed"):
        KnnJob.from_json("not json")


def test_patient_values_are_checked() -> None:
    job = make_table(10, 2).job
    ok = {"age": 1, "cd4": 2, "line": 1, "m0": 0, "m1": 1, "m2": 0, "m3": 1}
    with pytest.raises(InputError, match="no value for cd4"):
        PatientQuery.build(job, {"age": 1}, k=3)
    with pytest.raises(InputError, match="outside"):
        PatientQuery.build(job, ok | {"line": 7}, k=3)
    with pytest.raises(InputError, match="integer"):
        PatientQuery.build(job, ok | {"age": 1.5}, k=3)  # type: ignore[dict-item]
    with pytest.raises(InputError, match="between 1 and"):
        PatientQuery.build(job, ok, k=11)
    with pytest.raises(InputError, match="exactly one"):
        PatientQuery.build(job, ok)
    with pytest.raises(InputError, match="mode"):
        PatientQuery.build(job, ok, radius=3)
    q = PatientQuery.build(job, ok, k=10)
    assert q.secrets()[-1] == 10 and len(q.secrets()) == len(job.features) + 2


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 60))
def test_encoded_query_gives_the_same_distances(seed: int, rows: int) -> None:
    """What the custodians compute, sq @ w + x @ v + offset, is the defined distance."""
    t = make_table(rows, seed)
    rng = np.random.default_rng(seed + 1)
    patient = {f.name: int(rng.integers(f.lo, f.hi + 1)) for f in t.job.features}
    q = PatientQuery.build(t.job, patient, k=1)
    w = np.array([f.weight for f in t.job.features])
    expected = distances_plain(t.values, w, [patient[f.name] for f in t.job.features])
    got = (t.values**2) @ w + t.values @ np.array(q.vector) + q.offset
    assert got.tolist() == expected.tolist()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 60), k=st.integers(1, 60))
def test_oracle_selects_exactly_k_by_distance_then_index(seed: int, rows: int, k: int) -> None:
    k = min(k, rows)
    t = make_table(rows, seed)
    w = [f.weight for f in t.job.features]
    patient = [f.lo for f in t.job.features]
    res = recommend_plain(
        t.values, w, patient, t.treatment, t.time, t.event, treatments=t.job.treatments, k=k
    )
    d = distances_plain(t.values, w, patient)
    chosen = sorted(range(rows), key=lambda i: (int(d[i]), i))[:k]  # the documented rule
    counts = [sum(1 for i in chosen if t.treatment[i] == c) for c in range(t.job.treatments)]
    sums = [sum(int(t.time[i]) for i in chosen if t.treatment[i] == c) for c in range(7)]
    assert res.selected == k == sum(res.counts)
    assert list(res.counts) == counts
    assert list(res.time_sums) == sums


def test_oracle_radius_mode_and_radius_bits() -> None:
    t = make_table(50, 3, mode="radius")
    w = [f.weight for f in t.job.features]
    patient = {f.name: f.lo for f in t.job.features}
    q = [patient[f.name] for f in t.job.features]
    res = recommend_plain(
        t.values, w, q, t.treatment, t.time, None, treatments=t.job.treatments, radius=10
    )
    assert res.selected == int((distances_plain(t.values, w, q) <= 10).sum())
    assert res.events is None
    query = PatientQuery.build(t.job, patient, radius=10)
    assert sum(b << i for i, b in enumerate(query.radius_bits)) == 11
    big = PatientQuery.build(t.job, patient, radius=10**9)  # clamped to the bound
    assert sum(b << i for i, b in enumerate(big.radius_bits)) == t.job.max_distance + 1
