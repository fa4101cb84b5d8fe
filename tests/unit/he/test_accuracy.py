"""Answers within a stated bound of numpy: relative error <= 1e-4 on means, absolute
error <= 1e-3 on scores; the engine refuses what is not a fresh ciphertext of its bundle."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.errors import InputError
from tessera.he import engine as he_engine
from tessera.he.answers import Answer
from tessera.he.datafiles import PublicData
from tessera.he.jobs import SIGMOID_POLY_ERROR, Job, Model
from tessera.he.packing import Stream
from tessera.he.session import Opened, answer_job, open_answer
from tessera.he.verify import cubic

from .conftest import Keys, Table, cohort, encrypt_table


def run(table: Table, job: Job, model: Model | None = None) -> Opened:
    keys = table.keys
    wire = PublicData.from_bytes(table.data.raw)  # the server parses what it received
    answer = answer_job(keys.public, wire, job, model, engine_name="tenseal")
    return open_answer(
        keys.secret,
        Answer.from_bytes(answer.to_bytes()),
        job=job,
        model=model,
        data_digest=table.data.digest,
        bundle_digest=keys.bundle.digest,
        public=table.data.header,
        info=table.info,
    )


def test_sums_means_variances_and_covariance_match_numpy(table: Table) -> None:
    doc = run(table, Job("covariance")).document
    x = table.values
    means = np.array([c["mean"] for c in doc["columns"]])
    assert np.max(np.abs(means - x.mean(0)) / np.abs(x.mean(0))) <= 1e-4
    sums = np.array([c["sum"] for c in doc["columns"]])
    assert np.max(np.abs(sums - x.sum(0)) / np.abs(x.sum(0))) <= 1e-4
    variances = np.array([c["variance"] for c in doc["columns"]])
    assert np.max(np.abs(variances - x.var(0, ddof=1)) / x.var(0, ddof=1)) <= 1e-4
    cov = np.array(doc["covariance"]["matrix"])
    assert np.max(np.abs(cov - np.cov(x.T))) <= 1e-4 * np.abs(np.cov(x.T)).max()
    assert doc["rows"] == len(x)
    only = run(table, Job("mean", columns=("c2",))).document
    assert [c["name"] for c in only["columns"]] == ["c2"]


def test_linear_and_logistic_scores_match_numpy(table: Table) -> None:
    rng = np.random.default_rng(5)
    names = tuple(s.name for s in table.streams)
    w = rng.normal(0, 0.02, len(names))
    for kind in ("linear", "logistic"):
        model = Model("m", kind, names, tuple(w.tolist()), -1.5)
        doc = run(table, Job("scores", model="m"), model).document
        z = table.values @ w - 1.5
        got = np.array([s["score"] for s in doc["scores"]])
        assert np.max(np.abs(got - z)) <= 1e-3
        if kind == "logistic":
            p = np.array([s["probability"] for s in doc["scores"]])
            assert np.max(np.abs(p - 1 / (1 + np.exp(-z)))) <= 1e-3


def test_polynomial_sigmoid_on_the_server(keys3: Keys) -> None:
    values, streams = cohort(3000, 3, seed=9)
    table = encrypt_table(keys3, values, streams)
    weights = (0.03, -0.02, 0.01)
    model = Model("p", "logistic", tuple(s.name for s in streams), weights, -0.5)
    doc = run(table, Job("scores", model="p", link="polynomial"), model).document
    z = values @ np.array(weights) - 0.5
    got = np.array([s["probability"] for s in doc["scores"]])
    assert np.max(np.abs(got - cubic(z))) <= 1e-3
    assert np.max(np.abs(got - 1 / (1 + np.exp(-z)))) <= SIGMOID_POLY_ERROR + 1e-3
    wide = Model("w", "logistic", model.features, (1.0, 1.0, 1.0), 0.0)
    with pytest.raises(InputError, match="polynomial sigmoid holds on"):
        run(table, Job("scores", model="w", link="polynomial"), wide)


def test_imaging_volume_and_mean_intensity(keys1: Keys) -> None:
    rng = np.random.default_rng(2)
    hu = rng.normal(40, 30, (6, 40, 40)).clip(-1024, 3071)
    mask = np.zeros(hu.shape, dtype=bool)
    mask[2:5, 10:22, 12:20] = True
    streams = (Stream("intensity", -1024, 3071), Stream("mask", 0, 1, binary=True))
    values = np.stack([hu.ravel(), mask.ravel().astype(float)], 1)
    from tessera.he.session import encrypt_streams

    blobs, layout, sentinels = encrypt_streams(keys1.public, values, streams)
    data = PublicData.create(
        kind="image", bundle=keys1.bundle, streams=streams, chunks=layout.chunks,
        ciphertexts=blobs, created="now", voxel_mm3=0.8 * 0.8 * 2.5,
    )  # fmt: skip
    from tessera.he.datafiles import SealedInfo

    doc = run(
        Table(keys1, values, streams, data, SealedInfo(layout, sentinels)), Job("imaging")
    ).document
    assert doc["voxels"] == int(mask.sum())
    assert abs(doc["volume_mm3"] - mask.sum() * 1.6) <= 1e-6 * mask.sum() * 1.6
    assert abs(doc["mean_intensity"] - hu[mask].mean()) <= 1e-4 * abs(hu[mask].mean())


def test_bundle_holds_no_secret_and_a_secret_context_is_refused(keys1: Keys) -> None:
    import tenseal as ts

    ctx = ts.context_from(keys1.bundle.public_context)
    assert not ctx.has_secret_key() and not ctx.is_private() and not ctx.has_galois_keys()
    with pytest.raises(InputError, match="holds a secret key"):
        he_engine.open_public("tenseal", keys1.bundle.params, keys1.secret_context)


def test_malformed_ciphertexts_are_refused_without_crashing(keys1: Keys, table: Table) -> None:
    good = table.data.ciphertexts[0]
    engine = keys1.public
    assert engine.load(good, max_polys=2, fresh=True) is not None
    rng = np.random.default_rng(4)
    broken = [b"", b"\0" * 64, good[:100], good[: len(good) // 2], rng.bytes(5000)]
    for offset in (3, 40, 200, len(good) // 2, len(good) - 8):
        flipped = bytearray(good)
        flipped[offset] ^= 0xFF
        broken.append(bytes(flipped))
    refused = 0
    for blob in broken:
        try:
            engine.load(blob, max_polys=2, fresh=True)
        except InputError:
            refused += 1
    assert refused >= len(broken) - 3  # a flip inside a coefficient still parses (then
    # the sentinels catch it); everything structurally wrong is refused, nothing crashes
    answer = answer_job(keys1.public, table.data, Job("sum"), None, engine_name="tenseal")
    product = engine.dump(engine.load(answer.ciphertexts[0], max_polys=4, fresh=False))
    assert product
    with pytest.raises(InputError, match="not a fresh encryption"):
        other = answer_job(keys1.public, table.data, Job("variance"), None, engine_name="tenseal")
        engine.load(other.ciphertexts[-1], max_polys=4, fresh=True)


def test_a_job_deeper_than_the_key_set_is_refused(table: Table) -> None:
    model = Model("m", "logistic", ("c0",), (0.01,), 0.0)
    with pytest.raises(InputError, match="depth 3"):
        run(table, Job("scores", model="m", link="polynomial"), model)
