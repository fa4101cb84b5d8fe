"""Shamir over GF(p) in MPyC's convention: vectors, properties, MPyC cross-checks."""

from __future__ import annotations

import doctest
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpyc import finfields, thresha

from tessera.core import prime
from tessera.core.prime import (
    InconsistentSharesError,
    reconstruct,
    reconstruct_array,
    refresh,
    repair,
    share,
    share_array,
    to_signed,
    zero_sharing,
)
from tessera.core.rng import Drbg
from tessera.errors import InsufficientSharesError, InvalidShareError

P64 = 2**64 - 189  # MPyC SecInt(32)
P127 = 2**127 - 1
VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "prime_shamir.json").read_text())


def seeded(n: int = 0) -> Drbg:
    return Drbg.from_seed(n.to_bytes(32, "little"))


def test_doctests() -> None:
    assert doctest.testmod(prime).failed == 0


# ---- known answers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", VECTORS["valid"], ids=[f"prime_shamir.json[{i}]" for i in range(len(VECTORS["valid"]))]
)
def test_known_answer(case: dict[str, Any]) -> None:
    p, t, n = int(case["p"]), case["t"], case["n"]
    secret = int(case["secret"])
    coeffs = [np.array(int(c), dtype=object) for c in case["coeffs"]]
    expected = [int(s) for s in case["shares"]]
    got = prime._share_with_coeffs(np.array(secret % p, dtype=object), coeffs, n, p)
    assert [int(v) for v in got] == expected
    for parties in itertools.combinations(range(n), t + 1):
        assert reconstruct({i: expected[i] for i in parties}, t=t, p=p) == secret % p
    signed = to_signed(reconstruct(dict(enumerate(expected)), t=t, p=p), p)
    assert signed == (secret if abs(secret) <= p // 2 else secret % p - p)


@pytest.mark.parametrize(
    "case",
    VECTORS["invalid"],
    ids=[f"prime_shamir.json:invalid[{i}]" for i in range(len(VECTORS["invalid"]))],
)
def test_negative_vector(case: dict[str, Any]) -> None:
    p, t = int(case["p"]), case["t"]
    shares = {int(i): int(s) for i, s in case["shares"].items()}
    error = {
        "InconsistentSharesError": InconsistentSharesError,
        "InsufficientSharesError": InsufficientSharesError,
    }[case["error"]]
    with pytest.raises(error) as info:
        reconstruct(shares, t=t, p=p)
    if isinstance(info.value, InconsistentSharesError):
        assert list(info.value.parties) == case["bad_parties"]


# ---- properties ----------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([97, 2**31 - 1, P64, P127]),
    st.integers(1, 7).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))),
    st.lists(st.integers(-(2**80), 2**80), min_size=0, max_size=20),
    st.integers(0, 2**32),
    st.data(),
)
def test_any_t_plus_1_reconstruct(
    p: int, nt: tuple[int, int], values: list[int], seed: int, data: st.DataObject
) -> None:
    n, t = nt
    shares = share_array(np.array(values, dtype=object), n=n, t=t, p=p, rng=seeded(seed))
    assert shares.shape == (n, len(values))
    assert shares.dtype == object
    assert all(type(v) is int and 0 <= v < p for v in shares.reshape(-1))
    parties = data.draw(st.lists(st.integers(0, n - 1), min_size=t + 1, max_size=n, unique=True))
    got = reconstruct_array({i: shares[i] for i in parties}, t=t, p=p)
    assert got.tolist() == [v % p for v in values]


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 9), st.data())
def test_up_to_e_wrong_parties_are_named(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(0, n - 2))
    e = (n - t - 1) // 2
    shares = share_array(np.arange(6), n=n, t=t, p=P64, rng=seeded(n))
    bad = data.draw(st.lists(st.integers(0, n - 1), max_size=e, unique=True))
    for i in bad:
        shares[i, data.draw(st.integers(0, 5))] += data.draw(st.integers(1, P64 - 1))
    given_shares = {i: shares[i] for i in range(n)}
    if not bad:
        assert reconstruct_array(given_shares, t=t, p=P64).tolist() == list(range(6))
        return
    with pytest.raises(InconsistentSharesError) as info:
        reconstruct_array(given_shares, t=t, p=P64)
    assert list(info.value.parties) == sorted(bad)
    assert str(sorted(bad)[0]) in str(info.value)
    # check=False trusts the first t+1 parties blindly
    reconstruct_array(given_shares, t=t, p=P64, check=False)


def test_too_many_wrong_is_detected_without_names() -> None:
    shares = share_array([5], n=4, t=1, p=P64, rng=seeded())
    shares[0, 0] += 1
    shares[3, 0] += 7  # e = 1, two wrong
    with pytest.raises(InconsistentSharesError, match="too many") as info:
        reconstruct_array(dict(enumerate(shares)), t=1, p=P64)
    assert info.value.parties == ()
    assert isinstance(info.value, InvalidShareError)


def test_t_shares_of_different_secrets_look_alike() -> None:
    """With t = 1 a single share is uniform: its mean is ~p/2 whatever the secret."""
    p = 1009
    for secret in (0, 500):
        shares = share_array(np.full(20000, secret), n=3, t=1, p=p, rng=seeded(secret))
        counts = np.bincount(shares[1].astype(np.int64), minlength=p)
        expected = 20000 / p
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < p + 6 * (2 * p) ** 0.5  # ~6 sigma above the chi-square mean


# ---- dtypes, scalars, shapes ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint64, np.bool_, object])
def test_input_dtypes(dtype: Any) -> None:
    values = np.array([0, 1, 1, 0], dtype=dtype)
    shares = share_array(values, n=3, t=1, p=P64, rng=seeded())
    out = reconstruct_array({0: shares[0], 1: shares[1]}, t=1, p=P64)
    assert out.tolist() == [int(v) for v in values]


def test_negatives_map_to_p_minus() -> None:
    shares = share_array([-1, -(2**40), 2**63], n=3, t=1, p=P64, rng=seeded())
    out = reconstruct_array(dict(enumerate(shares)), t=1, p=P64)
    assert out.tolist() == [P64 - 1, P64 - 2**40, 2**63]
    assert to_signed(out, P64).tolist() == [-1, -(2**40), 2**63 - P64]
    assert to_signed(P64 - 3, P64) == -3
    assert to_signed(np.uint64(5), P64) == 5


def test_multidimensional_and_scalar() -> None:
    values = np.arange(24).reshape(2, 3, 4) - 10
    shares = share_array(values, n=5, t=2, p=P127, rng=seeded())
    assert shares.shape == (5, 2, 3, 4)
    out = reconstruct_array({4: shares[4], 1: shares[1], 2: shares[2]}, t=2, p=P127)
    assert np.array_equal(to_signed(out, P127), values)
    scalar = share(-42, n=4, t=1, p=P64, rng=seeded())
    assert len(scalar) == 4
    assert to_signed(reconstruct({2: scalar[2], 3: scalar[3]}, t=1, p=P64), P64) == -42


def test_column_of_30000() -> None:
    values = np.arange(-15000, 15000, dtype=np.int64)
    shares = share_array(values, n=3, t=1, p=P64)
    out = reconstruct_array(dict(enumerate(shares)), t=1, p=P64)
    assert np.array_equal(to_signed(out, P64).astype(np.int64), values)


def test_misuse() -> None:
    with pytest.raises(ValueError):
        share_array([1], n=3, t=3, p=P64)
    with pytest.raises(ValueError):
        share_array([1], n=3, t=-1, p=P64)
    with pytest.raises(ValueError):
        share_array([1], n=200, t=1, p=97)
    with pytest.raises(TypeError):
        share_array(np.array([1.5]), n=3, t=1, p=P64)
    with pytest.raises(TypeError):
        share_array(np.array([1.5], dtype=object), n=3, t=1, p=P64)
    with pytest.raises(InsufficientSharesError):
        reconstruct_array({0: np.array([1])}, t=1, p=P64)
    with pytest.raises(ValueError, match="same shape"):
        reconstruct_array({0: np.array([1]), 1: np.array([1, 2])}, t=1, p=P64)
    with pytest.raises(ValueError, match="party"):
        reconstruct_array({-1: np.array([1]), 1: np.array([1])}, t=1, p=P64)


# ---- refresh, repair ----------------------------------------------------------------------


def test_zero_sharing_and_refresh() -> None:
    zeros = zero_sharing((3,), n=4, t=2, p=P64, rng=seeded(1))
    assert reconstruct_array(dict(enumerate(zeros)), t=2, p=P64).tolist() == [0, 0, 0]
    assert zeros.any()
    old = share_array([7, -8, 9], n=4, t=2, p=P64, rng=seeded(2))
    new = refresh(old, t=2, p=P64, rng=seeded(3))
    assert not (new == old).any()
    assert to_signed(reconstruct_array(dict(enumerate(new)), t=2, p=P64), P64).tolist() == [
        7,
        -8,
        9,
    ]
    mixed = {0: old[0], 1: old[1], 2: new[2]}
    assert reconstruct_array(mixed, t=2, p=P64, check=False).tolist() != [7, P64 - 8, 9]
    with pytest.raises(InconsistentSharesError):
        reconstruct_array({**mixed, 3: new[3]}, t=2, p=P64)


def test_repair() -> None:
    shares = share_array([1, 2, 3], n=5, t=2, p=P64, rng=seeded(4))
    fixed = repair({0: shares[0], 2: shares[2], 4: shares[4]}, 3, t=2, p=P64)
    assert fixed.tolist() == shares[3].tolist()
    shares[4, 1] += 1
    with pytest.raises(InconsistentSharesError):
        repair({0: shares[0], 1: shares[1], 2: shares[2], 4: shares[4]}, 3, t=2, p=P64)


# ---- MPyC cross-checks ----------------------------------------------------------------


@pytest.mark.parametrize("p", [P64, 2**61 - 1, P127])
def test_our_shares_recombine_in_mpyc(p: int) -> None:
    field = finfields.GF(p)
    values = [0, 1, -1, 12345, -(2**31)]
    n, t = 5, 2
    shares = share_array(values, n=n, t=t, p=p, rng=seeded(5))
    for parties in [(0, 1, 2), (2, 3, 4), (0, 2, 4)]:
        points = [(i + 1, [field(int(v)) for v in shares[i]]) for i in parties]
        got = [int(v.value) for v in thresha.recombine(field, points)]
        assert got == [v % p for v in values]


@pytest.mark.parametrize("p", [P64, P127])
def test_mpyc_shares_reconstruct_here(p: int) -> None:
    field = finfields.GF(p)
    values = [0, 7, -7, 2**40]
    n, t = 4, 1
    theirs = thresha.random_split(field, [field(v) for v in values], t, n)
    arrays = {i: np.array([int(s) for s in theirs[i]], dtype=object) for i in range(n)}
    out = reconstruct_array(arrays, t=t, p=p)  # checks all four agree
    assert to_signed(out, p).tolist() == values


# ---- robust reconstruction -------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 9), st.data())
def test_reconstruct_robust_corrects_scattered_errors(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(0, n - 2))
    e = (n - t - 1) // 2
    values = np.arange(-20, 20)
    shares = share_array(values, n=n, t=t, p=P64, rng=seeded(n + 100))
    named: set[int] = set()
    for pos in data.draw(st.lists(st.integers(0, 39), max_size=6, unique=True)):
        # each position gets its own <= e wrong parties, so different parties overall
        for i in data.draw(st.lists(st.integers(0, n - 1), max_size=e, unique=True)):
            shares[i, pos] = (shares[i, pos] + 1) % P64
            named.add(i)
    out, bad = prime.reconstruct_robust(dict(enumerate(shares)), t=t, p=P64)
    assert to_signed(out, P64).tolist() == values.tolist()
    assert bad == sorted(named)


def test_party_wrong_only_at_the_last_position_is_named() -> None:
    shares = share_array(np.arange(30000), n=5, t=1, p=P64, rng=seeded(6))
    shares[2, -1] = (shares[2, -1] + 1) % P64
    shares[4, 0] = (shares[4, 0] + 1) % P64
    with pytest.raises(InconsistentSharesError) as info:
        reconstruct_array(dict(enumerate(shares)), t=1, p=P64)
    assert info.value.parties == (2, 4)
    out, bad = prime.reconstruct_robust(dict(enumerate(shares)), t=1, p=P64)
    assert bad == [2, 4]
    assert out.tolist() == list(range(30000))


def test_reconstruct_robust_gives_up_loudly() -> None:
    shares = share_array([1, 2], n=4, t=1, p=P64, rng=seeded(7))
    shares[0, 1] += 1
    shares[1, 1] += 1
    with pytest.raises(InconsistentSharesError, match="too many"):
        prime.reconstruct_robust(dict(enumerate(shares)), t=1, p=P64)
    with pytest.raises(InsufficientSharesError):
        prime.reconstruct_robust({0: shares[0]}, t=1, p=P64)


def test_exported_members() -> None:
    assert sorted(prime.__all__) == prime.__all__
    for name in prime.__all__:
        assert hasattr(prime, name)
