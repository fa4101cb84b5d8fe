"""Output checks of a recommendation (``knn`` job with ``checks.json``), real parties.

The threshold and zeros rules apply to the neighbour count of every treatment, which
the clear oracle (:func:`tessera.mpc.knn_spec.recommend_plain`) gives; dominance and
differencing are not computed for this job (None).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from party_jobs import PARTIES, Chunk, PartyResults, TableShares, prepare, run_parties

from tessera.mpc.knn_local import share_patient
from tessera.mpc.knn_seal import seal
from tessera.mpc.knn_spec import Feature, KnnJob, PatientQuery, recommend_plain

pytestmark = pytest.mark.integration

ACRO = {"version": 1, "threshold": 10, "p_percent": 10.0, "nk_n": 2, "nk_k": 90.0, "zeros": True}
FEATURES = (Feature("age", "numeric", 1, 0, 9), Feature("marker", "binary", 2))


def _key_and_cert() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "party")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, cert.public_bytes(serialization.Encoding.PEM)


def _recommend(
    tmp: Path, seed: int, k: int, checks: dict[str, Any] | None
) -> tuple[PartyResults, tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    rows, treatments = 80, 6
    values = np.stack([rng.integers(0, 10, rows), rng.integers(0, 2, rows)], axis=1)
    # treatment 5 never given: an empty treatment whatever the neighbours
    treatment = rng.choice(5, rows, p=[0.45, 0.3, 0.15, 0.07, 0.03])
    time, event = rng.integers(1, 3000, rows), rng.integers(0, 2, rows)
    job = KnnJob(rows, FEATURES, "regimen", treatments, "ttf", "failed")
    parts = {
        "age.val": values[:, 0],
        "age.sq": values[:, 0] ** 2,
        "marker.val": values[:, 1],
        "regimen.oh": np.eye(treatments, dtype=np.int64)[treatment],
        "ttf.val": time,
        "failed.val": event,
    }
    patient = {"age": 4, "marker": 1}
    keys = [_key_and_cert() for _ in range(PARTIES)]
    query = PatientQuery.build(job, patient, k=k)
    sealed = [
        seal(cert, share.astype("<u8").tobytes(), nonce="n0", party=i)
        for i, ((_, cert), share) in enumerate(zip(keys, share_patient(job, query), strict=True))
    ]
    params = {"job": job.to_json(), "alias": "t", "nonce": "n0", "patient": sealed}
    spec = {"type": "knn", "job_id": "1" * 32, "params": params}
    table = TableShares(parts, job.part_names(), [Chunk("H1", 0, rows)])
    folders = prepare(tmp, spec, {"t": table}, checks=checks)
    for i, folder in enumerate(folders):
        (folder / ".config").mkdir()
        (folder / ".config" / f"party_{i}.key").write_bytes(keys[i][0])
    want = recommend_plain(
        values, [1, 2], [4, 1], treatment, time, event, treatments=treatments, k=k
    )
    return run_parties(folders), want.counts


@pytest.mark.parametrize(("seed", "k"), [(1, 25), (2, 60)])
def test_treatment_counts_are_checked(tmp_path: Path, seed: int, k: int) -> None:
    res, counts = _recommend(tmp_path / "on", seed, k, ACRO)
    small = sum(1 for c in counts if 0 < c < 10)
    zeros = sum(1 for c in counts if c == 0)
    assert small >= 1 and zeros >= 1
    want = {"threshold": small, "dominance": None, "zeros": zeros, "differencing": None}
    assert all(m["checks"] == want for m in res.metas)
    assert all(c is None for c in res.cohorts)
    values = res.values()
    assert [values[3 * t] for t in range(len(counts))] == list(counts)

    plain, _ = _recommend(tmp_path / "off", seed, k, None)
    assert all("checks" not in m for m in plain.metas)
    assert json.dumps(plain.values()) == json.dumps(values)
