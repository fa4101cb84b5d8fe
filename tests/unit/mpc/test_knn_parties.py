"""Three real MPyC party processes on loopback against the plaintext oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tessera.errors import BackendError, IntegrityError
from tessera.mpc.knn_local import reconstruct_result, run_local_parties, share_patient
from tessera.mpc.knn_spec import PatientQuery, recommend_plain

from .test_knn_data import Table, make_table

pytestmark = pytest.mark.integration


def _run(t: Table, tmp_path: Path, patient: dict[str, int], **mode: int) -> None:
    query = PatientQuery.build(t.job, patient, **mode)
    inputs = t.party_inputs()
    for i, share in enumerate(share_patient(t.job, query)):
        inputs[i]["patient"] = share
    run = run_local_parties(t.job, inputs, tmp_path, timeout=300)
    got = reconstruct_result(t.job, run.shares)
    q = [patient[f.name] for f in t.job.features]
    w = [f.weight for f in t.job.features]
    expected = recommend_plain(
        t.values, w, q, t.treatment, t.time, t.event, treatments=t.job.treatments, **mode
    )
    assert got == expected
    # Tampering with one party's result share is detected, not silently used.
    bad = [s.copy() for s in run.shares]
    bad[2][0, 0] ^= np.uint64(1)
    with pytest.raises(IntegrityError):
        reconstruct_result(t.job, bad)


@pytest.mark.parametrize("k", [1, 37, 150])
def test_k_nearest_with_ties_equals_the_oracle(tmp_path: Path, k: int) -> None:
    t = make_table(150, seed=k)
    patient = {f.name: f.lo + (f.hi - f.lo) // 2 for f in t.job.features}
    _run(t, tmp_path, patient, k=k)


def test_radius_mode_equals_the_oracle(tmp_path: Path) -> None:
    t = make_table(120, seed=5, mode="radius")
    patient = {f.name: f.hi for f in t.job.features}
    _run(t, tmp_path, patient, radius=20)


def test_a_failing_party_stops_the_run(tmp_path: Path) -> None:
    t = make_table(30, seed=9)
    inputs = t.party_inputs()
    query = PatientQuery.build(t.job, {f.name: f.lo for f in t.job.features}, k=3)
    for i, share in enumerate(share_patient(t.job, query)):
        inputs[i]["patient"] = share
    del inputs[1]["patient"]  # party 1 cannot start its part of the computation
    with pytest.raises(BackendError, match="MPC party 1 failed"):
        run_local_parties(t.job, inputs, tmp_path, timeout=120)
