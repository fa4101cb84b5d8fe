"""Prosecutor / journalist / marketer risk (ARX definitions) and uniqueness models."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.special import digamma, polygamma

from tessera.errors import InputError
from tessera.risk import assess, estimate_uniqueness
from tessera.risk.reident import reidentification_risk
from tessera.risk.uniqueness import pitman, snb, zayatz

QI = ["age", "zip"]


def test_prosecutor_hand_values(hand: pl.DataFrame) -> None:
    r = assess(hand, QI, detect_identifiers=False)
    p = r.reidentification.prosecutor
    assert p.highest == 1.0
    assert p.average == pytest.approx(3 / 6)  # classes per record
    assert p.records_at_risk == 1.0  # 1/3, 1/2, 1 all above 0.2
    assert p.records_at_highest_risk == pytest.approx(1 / 6)
    # no population: the data is its own population (ARX)
    assert r.reidentification.journalist == p
    assert r.reidentification.marketer == pytest.approx(0.5)


def test_threshold_counts_records_above_it(hand: pl.DataFrame) -> None:
    r = assess(hand, QI, threshold=0.4, detect_identifiers=False)
    assert r.reidentification.prosecutor.records_at_risk == pytest.approx(3 / 6)


def test_journalist_with_population_table(hand: pl.DataFrame) -> None:
    population = pl.concat([hand, hand, hand.filter(pl.col("age") == 30)])
    # population class sizes: A: 3+3+3 = 9, B: 4, C: 2
    r = assess(hand, QI, population_table=population, detect_identifiers=False)
    j = r.reidentification.journalist
    assert j.highest == pytest.approx(1 / 2)
    assert j.average == pytest.approx((3 / 9 + 2 / 4 + 1 / 2) / 6)
    assert r.reidentification.marketer == pytest.approx(j.average)
    assert r.reidentification.population_model == "population table"


def test_population_table_must_contain_the_sample(hand: pl.DataFrame) -> None:
    with pytest.raises(InputError, match="not contained"):
        assess(hand, QI, population_table=hand.head(3), detect_identifiers=False)


def test_journalist_from_population_size(hand: pl.DataFrame) -> None:
    r = assess(hand, QI, population=60, detect_identifiers=False)
    j = r.reidentification.journalist
    assert j.highest == pytest.approx(0.1)  # F = f * N/n = 10 f
    assert j.average == pytest.approx(0.05)
    assert r.uniqueness is not None and r.uniqueness.sample_uniques == 1


def test_population_smaller_than_sample(hand: pl.DataFrame) -> None:
    with pytest.raises(InputError, match="smaller than the sample"):
        assess(hand, QI, population=5)


def test_bad_threshold() -> None:
    with pytest.raises(ValueError, match="threshold"):
        reidentification_risk(np.array([1, 2]), threshold=0)


def _digamma(x: np.ndarray) -> np.ndarray:
    return np.asarray(digamma(x))


def _trigamma(x: np.ndarray) -> np.ndarray:
    return np.asarray(polygamma(1, x))


def test_digamma_trigamma_known_values() -> None:
    """The special functions the Pitman estimator uses (scipy.special)."""
    euler = 0.5772156649015329
    x = np.array([1.0, 0.5, 2.0, 100.0])
    assert _digamma(x)[0] == pytest.approx(-euler, abs=1e-13)
    assert _digamma(x)[1] == pytest.approx(-euler - 2 * math.log(2), abs=1e-13)
    assert _digamma(x)[2] == pytest.approx(1 - euler, abs=1e-13)
    assert _trigamma(x)[0] == pytest.approx(math.pi**2 / 6, rel=1e-11)
    assert _trigamma(x)[1] == pytest.approx(math.pi**2 / 2, rel=1e-11)


def test_zayatz_by_hand() -> None:
    # Two uniques and one pair, n = 4, N = 8.
    sizes = np.array([1, 1, 2])
    n, big_n = 4, 8

    def h(i: int) -> float:  # P(exactly one of i population members in the sample)
        return i * math.comb(big_n - i, n - 1) / math.comb(big_n, n)

    prob = (2 / 3 * h(1)) / (2 / 3 * h(1) + 1 / 3 * h(2))
    assert zayatz(sizes, big_n) == pytest.approx(2 * prob / (n / big_n))


def test_no_sample_uniques_means_no_population_uniques() -> None:
    e = estimate_uniqueness(np.array([2, 3, 5]), 1000)
    assert e.dankar == 0.0 and e.dankar_model == "none"


def _population(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cols = [rng.zipf(1.6, size) % 200, rng.integers(0, 2, size), rng.integers(0, 90, size)]
    return np.ravel_multi_index(cols, (200, 2, 90))


@pytest.mark.parametrize(("fraction", "model"), [(0.05, "pitman"), (0.3, None), (0.5, None)])
def test_estimates_track_true_population_uniques(fraction: float, model: str | None) -> None:
    big_n = 100_000
    key = _population(1, big_n)
    values, counts = np.unique(key, return_counts=True)
    truth = int((counts == 1).sum())
    rng = np.random.default_rng(2)
    sample = key[rng.choice(big_n, int(big_n * fraction), replace=False)]
    _, sizes = np.unique(sample, return_counts=True)
    e = estimate_uniqueness(sizes.astype(np.int64), big_n)
    if model is not None:
        assert e.dankar_model == model
    assert e.dankar == pytest.approx(truth, rel=0.25)
    for value in (e.pitman, e.zayatz, e.snb):
        assert math.isnan(value) or value == pytest.approx(truth, rel=0.6)
    d = e.as_dict()
    assert d["population_uniqueness"] == pytest.approx(e.dankar / big_n)
    sampled_truth = np.count_nonzero(np.isin(sample, values[counts == 1]))
    share = sampled_truth / e.sample_uniques  # sample uniques that are population uniques
    assert d["sample_uniques_population_unique"] == pytest.approx(share, rel=0.3)


def test_models_need_enough_information() -> None:
    sizes = np.array([1, 1, 1, 3])  # no class of size 2: SNB cannot be fitted
    assert math.isnan(snb(sizes, 100))
    assert pitman(np.array([2, 2]), 100) == 0.0
