"""A server that drops, alters or skips work, or answers for other data, another job or
another model, is caught by the sentinels; decrypting refuses with a one-line reason.

Each test plays the cheating server with the public bundle (all a server has)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tessera.errors import IntegrityError
from tessera.he.answers import Answer
from tessera.he.datafiles import PublicData
from tessera.he.evaluate import EncryptedSet, evaluate, plan_outputs
from tessera.he.jobs import Job, Model
from tessera.he.session import Opened, answer_job, load_set, open_answer
from tessera.he.verify import check_answer, escape_probability

from .conftest import Table, cohort, encrypt_table


def _open(table: Table, answer: Answer, job: Job, model: Model | None = None) -> Opened:
    return open_answer(
        table.keys.secret,
        Answer.from_bytes(answer.to_bytes()),
        job=job,
        model=model,
        data_digest=table.data.digest,
        bundle_digest=table.keys.bundle.digest,
        public=table.data.header,
        info=table.info,
    )


def _answer(table: Table, job: Job, outputs: list, model: Model | None = None) -> Answer:
    engine = table.keys.public
    return Answer.create(
        data=table.data,
        job=job,
        model=model,
        outputs=[(out.name, [engine.dump(c) for c in cts]) for out, cts in outputs],
        seconds=0.0,
        engine="tenseal",
    )


def _refused(table: Table, answer: Answer, job: Job, model: Model | None = None) -> str:
    with pytest.raises(IntegrityError) as caught:
        _open(table, answer, job, model)
    message = str(caught.value)
    assert message.startswith("refused: ") and "\n" not in message
    return message


def _model(table: Table) -> Model:
    names = tuple(s.name for s in table.streams)
    return Model("m", "logistic", names, (0.01, -0.02, 0.015, 0.005), -1.0)


def test_the_honest_answer_passes(table: Table) -> None:
    job = Job("variance")
    opened = _open(
        table, answer_job(table.keys.public, table.data, job, None, engine_name="x"), job
    )
    assert opened.verdict.ok and opened.verdict.checked > 0


def test_dropping_a_chunk_is_detected(table: Table) -> None:
    full = load_set(table.keys.public, table.data)
    dropped = dataclasses.replace(
        full, chunks=full.chunks - 1, cipher=[column[:-1] for column in full.cipher]
    )
    job = Job("sum")
    message = _refused(table, _answer(table, job, evaluate(table.keys.public, dropped, job)), job)
    assert "sentinel checks failed" in message


def test_skipping_the_products_is_detected(table: Table) -> None:
    job = Job("variance")
    honest = evaluate(table.keys.public, load_set(table.keys.public, table.data), job)
    sums = {out.streams[0]: cts for out, cts in honest if out.kind == "sum"}
    lazy = [(out, sums[out.streams[0]] if out.kind == "prod" else cts) for out, cts in honest]
    assert "prod:" in _refused(table, _answer(table, job, lazy), job)


def test_scaling_every_value_is_detected(table: Table) -> None:
    job = Job("mean")
    engine = table.keys.public
    honest = evaluate(engine, load_set(engine, table.data), job)
    skewed = [(out, [engine.mul_scalar(c, 1.001) for c in cts]) for out, cts in honest]
    _refused(table, _answer(table, job, skewed), job)


def test_an_answer_for_other_data_is_detected(table: Table) -> None:
    values, streams = cohort(6000, 4, seed=99)
    other = encrypt_table(table.keys, values, streams)
    job = Job("covariance")
    replay = answer_job(table.keys.public, other.data, job, None, engine_name="x")
    relabelled = Answer({**replay.header, "data_digest": table.data.digest}, replay.ciphertexts)
    assert "not computed on this data" in _refused(table, relabelled, job)
    # and as sent, the answer names the other data: refused before decrypting
    with pytest.raises(IntegrityError, match="other data"):
        _open(table, replay, job)


def test_other_weights_under_the_models_name_are_detected(table: Table) -> None:
    model = _model(table)
    job = Job("scores", model="m")
    other = dataclasses.replace(model, weights=(0.01, -0.02, 0.015, 0.006))
    engine = table.keys.public
    outputs = evaluate(engine, load_set(engine, table.data), job, other)
    assert "score" in _refused(table, _answer(table, job, outputs, model), job, model)


def test_swapped_chunks_of_scores_are_detected(table: Table) -> None:
    model = _model(table)
    job = Job("scores", model="m")
    engine = table.keys.public
    [(out, cts)] = evaluate(engine, load_set(engine, table.data), job, model)
    _refused(table, _answer(table, job, [(out, cts[::-1])], model), job, model)


def test_structural_lies_are_refused(table: Table) -> None:
    job = Job("sum")
    honest = answer_job(table.keys.public, table.data, job, None, engine_name="x")
    other_job = Answer({**honest.header, "job_digest": Job("mean").digest}, honest.ciphertexts)
    with pytest.raises(IntegrityError, match="another job"):
        _open(table, other_job, job)
    garbage = Answer(honest.header, (b"\x00" * 100, *honest.ciphertexts[1:]))
    with pytest.raises(IntegrityError, match="not a ciphertext of this key"):
        _open(table, garbage, job)
    pairs = zip(honest.outputs[:-1], honest.ciphertexts, strict=False)
    fewer = Answer.create(
        data=table.data, job=job, model=None, outputs=[(name, [b]) for (name, _), b in pairs],
        seconds=0.0, engine="x",
    )  # fmt: skip
    with pytest.raises(IntegrityError, match="outputs the job asked for"):
        _open(table, fewer, job)


def test_altering_blind_slots_is_caught_with_the_stated_probability(table: Table) -> None:
    """One homomorphic alteration shows the effect is additive; then 300 blind single-slot
    alterations are caught at the rate z / S the docs state."""
    job = Job("sum")
    engine, secret = table.keys.public, table.keys.secret
    layout = table.info.layout
    honest = evaluate(engine, load_set(engine, table.data), job)
    delta = np.zeros(layout.slots)
    delta[7] = 0.01

    def opened(c: object) -> np.ndarray:
        return secret.decrypt(secret.load(engine.dump(c), max_polys=4, fresh=False))

    altered = engine.add(honest[0][1][0], engine.encrypt(delta))
    diff = opened(altered) - opened(honest[0][1][0])
    assert abs(diff[7] - 0.01) < 1e-6 and np.max(np.abs(np.delete(diff, 7))) < 1e-6
    outputs = plan_outputs(job, "table", table.streams)
    plain = [[opened(c) for c in cts] for _, cts in honest]
    rng = np.random.default_rng(11)
    caught = 0
    trials = 300
    for _ in range(trials):
        tampered = [list(p) for p in plain]
        slot = int(rng.integers(layout.slots))
        tampered[0][0] = tampered[0][0].copy()
        tampered[0][0][slot] += 0.01  # in range: only a sentinel can tell
        verdict, _ = check_answer(
            outputs, tampered, layout=layout, sentinels=table.info.sentinels,
            streams=table.streams, job=job,
        )  # fmt: skip
        caught += not verdict.ok
    rate = len(layout.sentinels) / layout.slots
    spread = 5 * np.sqrt(trials * rate * (1 - rate))
    assert abs(caught - trials * rate) <= spread
    assert escape_probability(1, len(layout.sentinels), layout.slots) == pytest.approx(1 - rate)


def test_escape_probability() -> None:
    assert escape_probability(0, 96, 4096) == 1.0
    assert escape_probability(100, 96, 4096) == pytest.approx((1 - 96 / 4096) ** 100, rel=0.05)
    assert escape_probability(4001, 96, 4096) == 0.0
    assert escape_probability(2, 1, 2) == 0.0


def test_an_unusable_encrypted_set_is_refused(table: Table) -> None:
    wire = PublicData.from_bytes(table.data.raw)
    stale = dataclasses.replace(wire, ciphertexts=(wire.ciphertexts[0][:-5], *wire.ciphertexts[1:]))
    from tessera.errors import InputError

    with pytest.raises(InputError, match="ciphertext 1"):
        load_set(table.keys.public, stale)
    assert isinstance(load_set(table.keys.public, wire), EncryptedSet)
