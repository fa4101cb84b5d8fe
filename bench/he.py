"""Homomorphic encryption: packed CKKS vs python-paillier and one ciphertext per patient.

Tessera's packed CKKS next to python-paillier and to CKKS with one ciphertext per patient,
in the same run.

The workload: 20,000 patients x 16 features.  Encrypt the table; on the server, the
statistics (per-column sum, mean and variance) and logistic scores w.x + b for every
patient; decrypt both answers (with the sentinel checks).  Ours goes through the same
bytes as the real flow (data, answers serialised and parsed; the server loads and checks
every ciphertext), in one process.  The covariance matrix (136 products per chunk) is
timed on its own line.

Baselines, measured here on fewer patients and extrapolated linearly to the full table:

* python-paillier 1.5 (2048-bit modulus): additively homomorphic only, so the client
  encrypts x and x^2 (variance) for every patient; the server adds, and multiplies by the
  weights for the scores; the client decrypts the sums and every patient's score;
* CKKS with one ciphertext per patient (the same parameters as ours): a patient's 16
  features in one ciphertext; the server adds, squares and multiplies by the weight
  vector; the client decrypts the sums and one ciphertext per patient, summing its slots.

    python bench/he.py [--rows 20000] [--features 16] [--baseline-patients 500] [--json]
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from envelope import Run, emit, figure, progress_to_stderr, result
from tessera.he import engine as he_engine
from tessera.he.answers import Answer
from tessera.he.datafiles import PublicData, SealedInfo
from tessera.he.files import Bundle, KeySecret, KeySetFile
from tessera.he.jobs import Job, Model
from tessera.he.packing import Stream
from tessera.he.params import params_for_depth
from tessera.he.session import answer_job, encrypt_streams, open_answer

BUDGET_S = 5.0


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cohort(rows: int, features: int, seed: int = 7) -> tuple[np.ndarray, list[Stream], np.ndarray]:
    rng = np.random.default_rng(seed)
    streams = [Stream(f"f{j}", 0.0, 100.0 + 50.0 * j) for j in range(features)]
    values = np.stack([rng.uniform(0.1, 0.9, rows) * s.hi for s in streams], 1)
    weights = rng.normal(0.0, 1.0, features) / np.array([s.hi for s in streams])
    return values, streams, weights


def _keys() -> tuple[Bundle, he_engine.KeyMaterial, int, float]:
    """A key set: its bundle, its material, the sealed key set's size, keygen seconds."""
    params = params_for_depth(1)
    material, t_keygen = timed(lambda: he_engine.keygen(params))
    bundle = Bundle(
        secrets.token_hex(16), "bench", "bench", "tenseal", params, bytes(1216),
        material.public_context, "now",
    )  # fmt: skip
    keyset = KeySetFile.create(
        bundle,
        KeySecret(material.secret_context, bytes(96), bundle.to_bytes()),
        kek=secrets.token_bytes(32),
        owner_key="bench",
    ).to_bytes()
    return bundle, material, len(keyset), t_keygen


def ours(values: np.ndarray, streams: list[Stream], weights: np.ndarray) -> dict[str, Any]:
    bundle, material, keyset_bytes, t_keygen = _keys()
    params = bundle.params
    client = he_engine.open_public("tenseal", params, material.public_context)
    secret = he_engine.open_secret("tenseal", params, material.secret_context)

    def encrypt() -> tuple[bytes, SealedInfo]:
        blobs, layout, sentinels = encrypt_streams(client, values, streams)
        data = PublicData.create(
            kind="table", bundle=bundle, streams=tuple(streams), chunks=layout.chunks,
            ciphertexts=blobs, created="now",
        )  # fmt: skip
        return data.raw, SealedInfo(layout, sentinels)

    (raw, info), t_encrypt = timed(encrypt)
    model = Model("bench", "logistic", tuple(s.name for s in streams), tuple(weights), -0.5)

    def serve(job: Job, with_model: bool) -> bytes:
        server = he_engine.open_public("tenseal", params, bundle.public_context)
        answer = answer_job(
            server, PublicData.from_bytes(raw), job, model if with_model else None,
            engine_name="tenseal",
        )  # fmt: skip
        return answer.to_bytes()

    def decrypt(answer: bytes, job: Job, with_model: bool) -> dict[str, Any]:
        public = PublicData.from_bytes(raw)
        return open_answer(
            secret, Answer.from_bytes(answer), job=job, model=model if with_model else None,
            data_digest=public.digest, bundle_digest=bundle.digest, public=public.header,
            info=info,
        ).document  # fmt: skip

    stats_job, score_job, cov_job = Job("variance"), Job("scores", model="bench"), Job("covariance")
    stats_answer, t_stats = timed(lambda: serve(stats_job, False))
    score_answer, t_scores = timed(lambda: serve(score_job, True))
    stats, t_dec_stats = timed(lambda: decrypt(stats_answer, stats_job, False))
    scores, t_dec_scores = timed(lambda: decrypt(score_answer, score_job, True))
    cov_answer, t_cov = timed(lambda: serve(cov_job, False))
    cov, t_dec_cov = timed(lambda: decrypt(cov_answer, cov_job, False))

    total = t_encrypt + t_stats + t_scores + t_dec_stats + t_dec_scores
    return {
        "params": params.describe(),
        "keygen_s": t_keygen,
        "encrypt_s": t_encrypt,
        "statistics_s": t_stats,
        "scores_s": t_scores,
        "decrypt_s": t_dec_stats + t_dec_scores,
        "total_s": total,
        "covariance_s": t_cov + t_dec_cov,
        "chunks": info.layout.chunks,
        "sentinels": len(info.layout.sentinels),
        "bytes": {
            "bundle": len(bundle.to_bytes()),
            "keyset_sealed": keyset_bytes,
            "data": len(raw),
            "ciphertext": len(PublicData.from_bytes(raw).ciphertexts[0]),
            "statistics_answer": len(stats_answer),
            "scores_answer": len(score_answer),
            "covariance_answer": len(cov_answer),
        },
        "errors": _errors(values, weights, stats, scores, cov),
    }


def _errors(
    values: np.ndarray, weights: np.ndarray, stats: dict, scores: dict, cov: dict
) -> dict[str, float]:
    """How far our results are from numpy's on the plaintext."""
    means = np.array([c["mean"] for c in stats["columns"]])
    variances = np.array([c["variance"] for c in stats["columns"]])
    z = values @ weights - 0.5
    got = np.array([s["score"] for s in scores["scores"]])
    matrix = np.array(cov["covariance"]["matrix"])
    return {
        "mean_relative": float(np.max(np.abs(means - values.mean(0)) / values.mean(0))),
        "variance_relative": float(
            np.max(np.abs(variances - values.var(0, ddof=1)) / values.var(0, ddof=1))
        ),
        "covariance_relative": float(
            np.max(np.abs(matrix - np.cov(values.T))) / np.abs(np.cov(values.T)).max()
        ),
        "score_absolute": float(np.max(np.abs(got - z))),
    }


def paillier(values: np.ndarray, weights: np.ndarray, factor: float) -> dict[str, Any]:
    """python-paillier on ``values`` (the first patients), extrapolated by ``factor``."""
    import phe

    (public, private), t_keygen = timed(lambda: phe.generate_paillier_keypair(n_length=2048))
    rows, features = values.shape

    def encrypt() -> list[list[Any]]:
        return [
            [public.encrypt(float(v)) for v in row] + [public.encrypt(float(v * v)) for v in row]
            for row in values
        ]

    cipher, t_encrypt = timed(encrypt)

    def statistics() -> list[Any]:
        sums = list(cipher[0])
        for row in cipher[1:]:
            sums = [a + b for a, b in zip(sums, row, strict=True)]
        return sums

    sums, t_stats = timed(statistics)

    def scores() -> list[Any]:
        out = []
        for row in cipher:
            acc = row[0] * float(weights[0])
            for j in range(1, features):
                acc = acc + row[j] * float(weights[j])
            out.append(acc + (-0.5))
        return out

    encrypted_scores, t_scores = timed(scores)
    (_, _), t_dec_sums = timed(lambda: ([private.decrypt(s) for s in sums], None))
    got, t_dec_scores = timed(lambda: [private.decrypt(s) for s in encrypted_scores])
    error = float(np.max(np.abs(np.array(got) - (values @ weights - 0.5))))
    size = (cipher[0][0].ciphertext(be_secure=False).bit_length() + 7) // 8
    measured = {
        "encrypt_s": t_encrypt,
        "statistics_s": t_stats,
        "scores_s": t_scores,
        "decrypt_s": t_dec_sums + t_dec_scores,
    }
    extrapolated = {
        "encrypt_s": t_encrypt * factor,
        "statistics_s": t_stats * factor,
        "scores_s": t_scores * factor,
        "decrypt_s": t_dec_sums + t_dec_scores * factor,
    }
    return {
        "patients_measured": rows,
        "keygen_s": t_keygen,
        "measured": measured,
        "extrapolated": extrapolated,
        "total_s": sum(extrapolated.values()),
        "ciphertext_bytes": size,
        "bytes_per_patient": size * 2 * features,
        "score_absolute_error": error,
    }


def per_patient(values: np.ndarray, weights: np.ndarray, factor: float) -> dict[str, Any]:
    """CKKS with one ciphertext per patient (TenSEAL, the same parameters as ours)."""
    import tenseal as ts

    params = params_for_depth(1)
    material = he_engine.keygen(params)
    secret_ctx = ts.context_from(material.secret_context)
    public_ctx = ts.context_from(material.public_context)
    w = weights.tolist()

    cipher, t_encrypt = timed(lambda: [ts.ckks_vector(public_ctx, row.tolist()) for row in values])

    def statistics() -> tuple[Any, Any]:
        total = cipher[0] + 0.0
        squares = cipher[0] * cipher[0]
        for c in cipher[1:]:
            total = total + c
            squares = squares + c * c
        return total, squares

    (total, squares), t_stats = timed(statistics)
    encrypted_scores, t_scores = timed(lambda: [c * w for c in cipher])

    def decrypt() -> list[float]:
        for c in (total, squares):
            ts.ckks_vector_from(secret_ctx, c.serialize()).decrypt()
        return [
            sum(ts.ckks_vector_from(secret_ctx, c.serialize()).decrypt()) - 0.5
            for c in encrypted_scores
        ]

    got, t_decrypt = timed(decrypt)
    size = len(cipher[0].serialize())
    extrapolated = {
        "encrypt_s": t_encrypt * factor,
        "statistics_s": t_stats * factor,
        "scores_s": t_scores * factor,
        "decrypt_s": t_decrypt * factor,
    }
    return {
        "patients_measured": len(values),
        "extrapolated": extrapolated,
        "total_s": sum(extrapolated.values()),
        "ciphertext_bytes": size,
        "bytes_per_patient": size,
        "score_absolute_error": float(np.max(np.abs(np.array(got) - (values @ weights - 0.5)))),
    }


def _rows(doc: dict[str, Any], rows: int, patients: int, features: int) -> list[dict[str, Any]]:
    mine, pail, each = doc["ours"], doc["paillier"], doc["per_patient_ckks"]
    stages = {k.removesuffix("_s") + " s": mine[k] for k in STAGES}
    ours = figure("packed CKKS (encrypt, statistics, scores, decrypt)", mine["total_s"], "s",
                  stages)  # fmt: skip
    what = f"{rows:,} patients: encrypt, sum/mean/variance, logistic scores, decrypt"
    return [
        result(
            what,
            ours,
            figure(f"python-paillier, extrapolated from {patients}", pail["total_s"], "s"),
            ratio_of="baseline / ours",
            group="vs python-paillier",
            target=">= 100",
            met=pail["total_s"] / mine["total_s"] >= 100,
        ),
        result(
            what,
            ours,
            figure(f"CKKS, one ciphertext per patient, from {patients}", each["total_s"], "s"),
            ratio_of="baseline / ours",
            group="vs one ciphertext per patient",
        ),
        result(
            "our total on this machine",
            figure("packed CKKS", mine["total_s"], "s"),
            target=f"<= {BUDGET_S:g} s",
            met=mine["total_s"] <= BUDGET_S,
        ),
        result(
            f"covariance matrix ({features * (features + 1) // 2} products per chunk), server "
            "and decrypt",
            figure("packed CKKS", mine["covariance_s"], "s"),
        ),
    ]


STAGES = ("encrypt_s", "statistics_s", "scores_s", "decrypt_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--baseline-patients", type=int, default=500)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    run = Run(
        "he",
        __doc__,
        {"rows": args.rows, "features": args.features, "baseline_patients": args.baseline_patients},
    )
    with progress_to_stderr(args.json):
        doc = measure(args.rows, args.features, args.baseline_patients)
        report(doc, args.rows, args.features)
    if args.json:
        notes = [
            "baselines measured on the first patients and extrapolated linearly",
            "python-paillier encrypts x and x^2 (no ciphertext products); 2048-bit modulus",
        ]
        rows = _rows(doc, args.rows, min(args.baseline_patients, args.rows), args.features)
        emit(run.document(rows, notes, **doc))


def measure(rows: int, features: int, patients: int) -> dict[str, Any]:
    values, streams, weights = cohort(rows, features)
    mine = ours(values, streams, weights)
    few = values[:patients]
    factor = rows / len(few)
    pail = paillier(few, weights, factor)
    each = per_patient(few, weights, factor)
    return {
        "ours": mine,
        "paillier": pail,
        "per_patient_ckks": each,
        "ratio_paillier": pail["total_s"] / mine["total_s"],
        "ratio_per_patient": each["total_s"] / mine["total_s"],
        "within_budget": mine["total_s"] <= BUDGET_S,
    }


def report(doc: dict[str, Any], rows: int, features: int) -> None:
    mine, pail, each = doc["ours"], doc["paillier"], doc["per_patient_ckks"]
    few = pail["patients_measured"]
    print(f"{rows} patients x {features} features; {mine['params']}")
    print(f"{'stage':<14}{'ours':>10}{'paillier':>12}{'per-patient':>13}   (seconds; baselines "
          f"extrapolated from {few} patients)")  # fmt: skip
    for stage in STAGES:
        print(
            f"{stage[:-2]:<14}{mine[stage]:>10.3f}{pail['extrapolated'][stage]:>12.1f}"
            f"{each['extrapolated'][stage]:>13.1f}"
        )
    print(f"{'total':<14}{mine['total_s']:>10.3f}{pail['total_s']:>12.1f}{each['total_s']:>13.1f}")
    print(
        f"ratio: paillier / ours {doc['ratio_paillier']:.0f}x, per-patient CKKS / ours "
        f"{doc['ratio_per_patient']:.0f}x; ours within {BUDGET_S:g} s: {doc['within_budget']}"
    )
    print(f"covariance matrix ({features}x{features}), server and decrypt: "
          f"{mine['covariance_s']:.3f} s")  # fmt: skip
    b = mine["bytes"]
    print(
        f"sizes: bundle {b['bundle']:,} B (public + relinearisation keys), sealed key set "
        f"{b['keyset_sealed']:,} B, one ciphertext {b['ciphertext']:,} B, data {b['data']:,} B "
        f"({mine['chunks']} chunks x {features}), answers: statistics "
        f"{b['statistics_answer']:,} B, scores {b['scores_answer']:,} B, covariance "
        f"{b['covariance_answer']:,} B"
    )
    print(
        f"baseline sizes: paillier {pail['ciphertext_bytes']:,} B per value, "
        f"{pail['bytes_per_patient'] * rows:,} B for the table (x and x^2); per-patient "
        f"CKKS {each['ciphertext_bytes']:,} B per patient, "
        f"{each['bytes_per_patient'] * rows:,} B"
    )
    e = mine["errors"]
    print(
        f"errors vs numpy: means {e['mean_relative']:.2e} (relative), variances "
        f"{e['variance_relative']:.2e}, covariance {e['covariance_relative']:.2e}, scores "
        f"{e['score_absolute']:.2e} (absolute); paillier scores {pail['score_absolute_error']:.2e}"
    )


if __name__ == "__main__":
    main()
